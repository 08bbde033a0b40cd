"""How cost grows: the ``scale-curve`` result (``l2pop.bench.scale_curve``) as a table, a
plot and a computed verdict per figure, for ``docs/benchmarks.md`` and the terminal.

The verdict compares each figure at the largest host count measured with the same figure
at the smallest: its growth exponent ``b = log(value ratio) / log(host ratio)`` (1: the
figure is proportional to the hosts) is called ``linear`` within ``LINEAR_BAND``,
``sublinear`` below it (``about constant`` as well when ``|b| < FLAT_BELOW``) and
``superlinear`` above it. Nothing is decided in advance: a figure that is missing at either
end has no verdict.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from l2pop.bench.formatting import num, run_command, table
from l2pop.bench.plots import _pyplot
from l2pop.bench.targets import TIMES

#: exponents called linear, and below which (in magnitude) a figure is about constant
LINEAR_BAND = (0.85, 1.15)
FLAT_BELOW = 0.15

#: the table's columns: (header, key of a size, digits)
CURVE_FIELDS = (
    ("hosts", "hosts", 0),
    ("networks", "networks", 0),
    ("ports", "ports", 0),
    ("agent-swarm processes", "swarms", 0),
    ("server start s", "server_start_s", 1),
    ("initial sync s", "initial_sync_s", 1),
    ("restart resync s", "restart_resync_s", 1),
    ("server RSS MiB", "server_rss_mib", 0),
    ("server CPU ms/event (heartbeats subtracted)", "server_cpu_ms_per_event_net", 2),
    ("server CPU ms/event (gross)", "server_cpu_ms_per_event", 2),
    ("p50 ms", "p50_ms", 1),
    ("p99 ms", "p99_ms", 1),
    ("µs CPU per idle host per s", "idle_server_cpu_us_per_host_per_s", 1),
    ("µs CPU per heartbeat", "idle_server_cpu_us_per_heartbeat", 1),
    ("idle server CPU ms/s (all hosts)", "idle_server_cpu_ms_per_s", 1),
    ("pass took s", "elapsed_s", 0),
)
CURVE_COLUMNS = tuple(header for header, _, _ in CURVE_FIELDS)

#: the figures given a verdict: (what, key, unit)
GROWTH_FIGURES = (
    ("server start (store read, hub loaded)", "server_start_s", "s"),
    ("initial sync", "initial_sync_s", "s"),
    ("restart resync", "restart_resync_s", "s"),
    ("server RSS", "server_rss_mib", "MiB"),
    ("server CPU per event (heartbeats subtracted)", "server_cpu_ms_per_event_net", "ms"),
    ("convergence p99 at the churn rate", "p99_ms", "ms"),
    ("idle server CPU, all hosts", "idle_server_cpu_ms_per_s", "ms/s"),
    ("idle server CPU per host", "idle_server_cpu_us_per_host_per_s", "µs/s"),
    ("server CPU per heartbeat", "idle_server_cpu_us_per_heartbeat", "µs"),
)


def measured(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The sizes of a result that completed (no ``error``), by host count."""
    sizes = [s for s in result.get("sizes", []) if "error" not in s]
    return sorted(sizes, key=lambda s: s["hosts"])


def curve_cells(size: dict[str, Any], sync_timeout: float | None = None) -> list[str]:
    """One host count's row, ``CURVE_COLUMNS`` order; a failed pass says so, and an
    initial sync that timed out (after ``sync_timeout`` s) how far it got."""
    cells = [num(size.get(key), digits) for _, key, digits in CURVE_FIELDS]
    if "error" in size:
        cells[-1] = f"{num(size.get('elapsed_s'), 0)} (failed)"
    if "in_sync_at_timeout" in size:
        reached = size["in_sync_at_timeout"]
        cell = f"> {num(sync_timeout, 0)}" if sync_timeout else "timed out"
        cells[CURVE_COLUMNS.index("initial sync s")] = (
            f"{cell} ({num(reached)} of {num(size['hosts'])} in sync)"
            if reached is not None
            else f"{cell} (server not answering)"
        )
    return cells


def failure_line(size: dict[str, Any]) -> str:
    """What a failed pass says on the page: its error, and where a stalled initial sync
    stood when it gave up."""
    text = f"The {num(size['hosts'])}-host pass failed: `{size['error']}`."
    if "in_sync_at_timeout" in size:
        reached = size["in_sync_at_timeout"]
        text += (
            f" When it gave up, {num(reached)} of {num(size['hosts'])} hosts were in sync"
            if reached is not None
            else " When it gave up, the server did not answer the host list"
        )
        text += (
            f"; server RSS {num(size.get('server_rss_mib_at_timeout'), 0)} MiB, swarms "
            f"{num(size.get('swarms_rss_mib_at_timeout'), 0)} MiB"
        )
        if size.get("sessions_refused") is not None:
            text += (
                f"; the server had refused {num(size['sessions_refused'])} sessions (an agent "
                "gone before its hello: its opening handshake timed out)"
            )
        text += "."
    return text


def exponent_verdict(b: float) -> str:
    """``linear``, ``sublinear`` (``about constant``) or ``superlinear`` for a growth
    exponent ``b`` (see the module docstring)."""
    if b > LINEAR_BAND[1]:
        return "superlinear"
    if b >= LINEAR_BAND[0]:
        return "linear"
    if abs(b) < FLAT_BELOW:
        return "sublinear (about constant)"
    return "sublinear (falls)" if b < 0 else "sublinear"


def growth(sizes: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """``key`` at the largest against the smallest host count of ``sizes`` (each having a
    positive value): ``{low, high, hosts_low, hosts_high, ratio, host_ratio, exponent,
    verdict}``; None with fewer than two such sizes."""
    have = [s for s in sizes if isinstance(s.get(key), int | float) and s[key] > 0]
    have = sorted(have, key=lambda s: s["hosts"])
    if len(have) < 2 or have[0]["hosts"] == have[-1]["hosts"]:
        return None
    lo, hi = have[0], have[-1]
    ratio = hi[key] / lo[key]
    host_ratio = hi["hosts"] / lo["hosts"]
    b = math.log(ratio) / math.log(host_ratio)
    return {
        "low": lo[key],
        "high": hi[key],
        "hosts_low": lo["hosts"],
        "hosts_high": hi["hosts"],
        "ratio": ratio,
        "host_ratio": host_ratio,
        "exponent": b,
        "verdict": exponent_verdict(b),
    }


def with_sync_bound(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every size by host count (a failed pass keeps the figures it measured before it
    failed); an initial sync that timed out gets the timeout as ``initial_sync_s`` and
    ``initial_sync_is_bound`` set: it took longer than that."""
    timeout = result.get("config", {}).get("sync_timeout")
    out = []
    for size in sorted(result.get("sizes", []), key=lambda s: s["hosts"]):
        if "in_sync_at_timeout" in size and timeout:
            bound = {"initial_sync_s": float(timeout), "initial_sync_is_bound": True}
            size = {**size, **bound}  # noqa: PLW2901
        out.append(size)
    return out


def sync_bound_line(sizes: list[dict[str, Any]]) -> str | None:
    """The initial sync's growth when the largest size timed out: a lower bound on the
    exponent from the smallest size that completed (None when it does not apply)."""
    done = [s for s in sizes if s.get("initial_sync_s") and not s.get("initial_sync_is_bound")]
    bound = [s for s in sizes if s.get("initial_sync_is_bound")]
    if not done or not bound or bound[-1]["hosts"] <= done[0]["hosts"]:
        return None
    lo = done[0]

    def exponent(s: dict[str, Any]) -> float:
        return math.log(s["initial_sync_s"] / lo["initial_sync_s"]) / math.log(
            s["hosts"] / lo["hosts"]
        )

    # the tightest bound: the timed-out size whose timeout says the most
    hi = max((s for s in bound if s["hosts"] > lo["hosts"]), key=exponent)
    b = exponent(hi)
    verdict = "superlinear" if b > LINEAR_BAND[1] else "not determined by this bound"
    return (
        f"initial sync: {lo['initial_sync_s']:,.4g} s at {lo['hosts']:,} hosts; not done "
        f"within {hi['initial_sync_s']:,.4g} s at {hi['hosts']:,} hosts "
        f"({len(bound)} host count(s) timed out): over "
        f"{hi['initial_sync_s'] / lo['initial_sync_s']:.2f}{TIMES} for "
        f"{hi['hosts'] / lo['hosts']:.2g}{TIMES} the hosts (exponent above {b:.2f}): "
        f"**{verdict}**"
    )


def growth_lines(result: dict[str, Any]) -> list[str]:
    """One sentence per figure of ``GROWTH_FIGURES`` that has a verdict (from every size
    that measured it, failed passes included); the initial sync as a bound when it timed
    out (``sync_bound_line``)."""
    sizes = with_sync_bound(result)
    bound = sync_bound_line(sizes)
    sizes = [
        s if not s.get("initial_sync_is_bound") else {**s, "initial_sync_s": None} for s in sizes
    ]
    out = [bound] if bound else []
    for what, key, unit in GROWTH_FIGURES:
        g = growth(sizes, key)
        if g is None or (bound and key == "initial_sync_s"):
            continue
        out.append(
            f"{what}: {g['low']:,.4g} → {g['high']:,.4g} {unit} from {g['hosts_low']:,} to "
            f"{g['hosts_high']:,} hosts, {g['ratio']:.2f}{TIMES} for "
            f"{g['host_ratio']:.2g}{TIMES} the hosts (exponent {g['exponent']:.2f}): "
            f"**{g['verdict']}**"
        )
    return out


def _machine_load(result: dict[str, Any]) -> str:
    parts = []
    for s in result.get("sizes", []):
        start, end = s.get("load_average_start"), s.get("load_average_end")
        if start:
            text = f"{num(s['hosts'])} hosts {start[0]:.2f}"
            if end:
                text += f" → {end[0]:.2f}"
            parts.append(text)
    return "; ".join(parts)


def section(saved: dict[str, Any] | None, png: str | None) -> list[str]:
    """The page's "How cost grows" section (``saved``: the ``scale-curve`` envelope)."""
    lines = ["### How cost grows", ""]
    lines.append(
        "The scale benchmark's pieces at several host counts N, each on a fresh store of "
        "2N networks and 100N ports (N = 1,000 is the size above; spans stay 5-50 hosts, so "
        "an event concerns as many agents at every N). Per N: the server's start (the store "
        "read into its hub), the initial sync, the server's RSS after it, the server's CPU "
        "(`/proc/<pid>/stat`) over an idle window in which only heartbeats flow (agents and "
        "server each send one per 5 s interval, with the WebSocket pings; per heartbeat is "
        "per host and interval), one churn rate for server CPU per event and p50/p99, then "
        "`kill -9` + restart. CPU per event is also given net of the heartbeat cost the idle "
        "window measured, over the same wall time. Each verdict compares the largest N with "
        "the smallest: growth exponent b = log(value ratio) / log(host ratio), linear for "
        f"{LINEAR_BAND[0]} ≤ b ≤ {LINEAR_BAND[1]}, sublinear below (about constant for "
        f"|b| < {FLAT_BELOW}), superlinear above. For a figure per host or per event, "
        "about constant is what a cost proportional to the hosts in total looks like; the "
        "idle CPU is given both ways."
    )
    lines.append("")
    if saved is None:
        return [*lines, "_Not measured yet: run `l2pop bench curve --save`._", ""]
    r = saved["result"]
    cfg = r.get("config", {})
    lines += [run_command(saved), ""]
    lines.append(
        f"Store engine {cfg.get('engine', '?')}; churn {num(cfg.get('rate'), 0)} events/s for "
        f"{num(cfg.get('duration'), 0)} s; idle window {num(cfg.get('idle'), 0)} s. Load "
        f"average (1 min) at the start → end of each pass: {_machine_load(r) or '-'}."
    )
    lines.append("")
    timeout = cfg.get("sync_timeout")
    rows = [curve_cells(s, timeout) for s in r.get("sizes", [])]
    lines += [table(list(CURVE_COLUMNS), rows), ""]
    lines += [line for s in r.get("sizes", []) if "error" in s for line in (failure_line(s), "")]
    growths = growth_lines(r)
    if growths:
        lines += ["What grows how (largest against smallest N):", ""]
        lines += [f"- {g}" for g in growths]
        lines.append("")
    if png:
        lines += [f"![how cost grows with the number of hosts]({png})", ""]
    return lines


#: the plot's panels: (title, [(label, key)], y label)
PANELS = (
    ("time to start and converge", [("server start", "server_start_s"),
                                    ("initial sync", "initial_sync_s"),
                                    ("restart resync", "restart_resync_s")], "seconds"),
    ("server memory", [("RSS after sync", "server_rss_mib")], "MiB"),
    ("server CPU while idle (heartbeats)", [("all hosts", "idle_server_cpu_ms_per_s")],
     "ms of CPU per s"),
    ("server CPU per event", [("heartbeats subtracted", "server_cpu_ms_per_event_net"),
                              ("gross", "server_cpu_ms_per_event")], "ms of CPU"),
)  # fmt: skip
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c")


def plot_curve(result: dict[str, Any], path: Path) -> None:
    """Each ``PANELS`` figure against the host count on log-log axes (every size that
    measured it, a failed pass's figures before it failed included), each beside a dotted
    line proportional to the hosts through its smallest-N value."""
    plt = _pyplot()
    sizes = sorted(result.get("sizes", []), key=lambda s: s["hosts"])
    fig, axes = plt.subplots(1, len(PANELS), figsize=(14, 3.9))
    for ax, (title, series, ylabel) in zip(axes, PANELS, strict=True):
        for (label, key), color in zip(series, COLORS, strict=False):
            pts = [(s["hosts"], s[key]) for s in sizes if (s.get(key) or 0) > 0]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", color=color, label=label)
            for x, y in pts:
                ax.annotate(
                    f"{y:,.3g}",
                    (x, y),
                    xytext=(0, 5),
                    textcoords="offset points",
                    ha="center",
                    fontsize=8,
                    color=color,
                )
            ax.plot(xs, [ys[0] * x / xs[0] for x in xs], ":", color=color, linewidth=1, alpha=0.7)
        if series[0][1] == "server_start_s":  # a timed-out initial sync: its lower bound
            stuck = [s for s in with_sync_bound(result) if s.get("initial_sync_is_bound")]
            for s in stuck:
                ax.plot(s["hosts"], s["initial_sync_s"], "^", color=COLORS[1], fillstyle="none")
                ax.annotate(
                    f"> {s['initial_sync_s']:,.0f}\n(not in sync)",
                    (s["hosts"], s["initial_sync_s"]),
                    xytext=(0, 6),
                    textcoords="offset points",
                    ha="center",
                    fontsize=7,
                    color=COLORS[1],
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("hosts")
        ax.set_ylabel(ylabel)
        hosts = [s["hosts"] for s in sizes]
        if hosts:
            ax.set_xlim(min(hosts) / 1.4, max(hosts) * 1.4)
            ax.set_xticks(hosts, [f"{h:,}" for h in hosts])
            ax.minorticks_off()
        ax.margins(y=0.2)
        ax.legend(frameon=False, fontsize=8)
    fig.suptitle(
        "How cost grows with the number of hosts (dotted: proportional to the hosts)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def draw(results: dict[str, dict[str, Any]], bench_dir: Path) -> dict[str, Path]:
    """``scale-curve.png`` in ``bench_dir`` when ``results`` has a ``scale-curve`` with at
    least one size; returns ``{"scale-curve": path}`` or ``{}``."""
    saved = results.get("scale-curve")
    if saved is None or not saved["result"].get("sizes"):
        return {}
    path = bench_dir / "scale-curve.png"
    plot_curve(saved["result"], path)
    return {"scale-curve": path}


def show_curve(r: dict[str, Any]) -> None:
    """The table and the verdicts on stdout (``bench curve`` without ``--json``)."""
    from rich.table import Table

    from l2pop.console import make_console

    cfg = r.get("config", {})
    t = Table(title=f"how cost grows ({cfg.get('engine')}), churn {cfg.get('rate')}/s")
    for col in CURVE_COLUMNS:
        t.add_column(col, justify="right")
    for s in r.get("sizes", []):
        t.add_row(*curve_cells(s, cfg.get("sync_timeout")))
    console = make_console()
    console.print(t)
    for s in r.get("sizes", []):
        if "error" in s:
            console.print(failure_line(s).replace("`", ""), markup=False)
    for line in growth_lines(r):
        console.print(line.replace("**", ""), markup=False)
