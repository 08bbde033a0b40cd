"""How benchmark figures are written down: numbers, Markdown tables, the command block of a
saved result and the per-rate row of a scale result, shared by ``docs/benchmarks.md`` and
the tables the benchmarks print."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any


def num(value: Any, digits: int = 0, unit: str = "") -> str:
    """``12,345`` / ``1.5`` / ``-`` for missing values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int | float):
        text = f"{value:,.{digits}f}"
        return f"{text} {unit}".rstrip() if unit else text
    return str(value)


def table(header: list[str], rows: Iterable[list[str]], align: str | None = None) -> str:
    """A Markdown table; ``align`` has one of ``l``/``r`` per column (default: ``l``
    for the first, ``r`` for the rest)."""
    align = align or "l" + "r" * (len(header) - 1)
    marks = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def run_command(saved: dict[str, Any]) -> str:
    """A saved result's command as a Markdown code block, then when it ran and how long it
    took."""
    when = saved.get("started_at", "?")
    took = saved.get("elapsed_s")
    return f"```\n{saved.get('command', '?')}\n```\n\nRun {when}" + (
        f", took {num(took, 0)} s." if took is not None else "."
    )


#: one row per churn rate of a scale result: (column, key, digits); the page and the
#: terminal table both render it, so the two never disagree
SCALE_RATE_FIELDS = (
    ("rate (events/s)", "rate", 0),
    ("events", "events", 0),
    ("p50 ms", "p50_ms", 1),
    ("p99 ms", "p99_ms", 1),
    ("max ms", "max_ms", 1),
    ("msgs/event", "messages_per_event", 1),
    ("fanout-to-all msgs/event", "fanout_to_all_messages_per_event", 0),
    ("bytes/event", "bytes_per_event", 0),
    ("server CPU ms/event", "server_cpu_ms_per_event", 2),
    ("agents CPU ms/event", "agents_cpu_ms_per_event", 2),
    ("load generator CPU ms/event", "driver_cpu_ms_per_event", 2),
    ("server RSS MiB", "server_rss_mib", 1),
)
SCALE_RATE_COLUMNS = tuple(column for column, _, _ in SCALE_RATE_FIELDS)


def scale_rate_cells(row: dict[str, Any]) -> list[str]:
    """The cells of one churn rate's row, in ``SCALE_RATE_COLUMNS`` order."""
    return [num(row.get(key), digits) for _, key, digits in SCALE_RATE_FIELDS]


def replica_rates(passes: list[dict[str, Any]]) -> list[float]:
    """Every churn rate any pass of a ``scale-replicas`` result measured, ascending."""
    return sorted({r["rate"] for p in passes for r in p.get("rates", []) if "rate" in r})


def replica_columns(rates: list[float]) -> list[str]:
    """The header of the replicas table (``replica_cells``): one p50/p99 column per rate."""
    return [
        "replicas",
        "agents per replica",
        *(f"p50 / p99 ms at {x:g}/s" for x in rates),
        "highest rate with p99 ≤ 1 s",
        "server CPU ms/event, all replicas (per rate)",
        "RSS MiB per replica",
        "resync after kill -9",
    ]


def _named(values: dict[str, Any] | list[Any] | None, digits: int = 0) -> str:
    if not values:
        return "-"
    if isinstance(values, dict):
        return ", ".join(f"{k}: {num(v, digits)}" for k, v in values.items())
    return ", ".join(num(v, digits) for v in values)


def replica_cells(p: dict[str, Any], rates: list[float]) -> list[str]:
    """One pass (replica count) of a ``scale-replicas`` result, ``replica_columns`` order.
    RSS: each replica's at the end of the last rate; the resync is the restart's with one
    replica, the failover's (one replica killed, agents moved to the others) with more. A
    rate at which API calls failed says how many: its latencies are the others' only."""
    by_rate = {r["rate"]: r for r in p.get("rates", [])}
    lat = []
    for x in rates:
        r = by_rate.get(x, {})
        cell = f"{num(r.get('p50_ms'), 1)} / {num(r.get('p99_ms'), 1)}"
        if r.get("failed_calls"):  # the overloaded run's refused calls: not in the figures
            calls = r["failed_calls"] + (r.get("events") or 0)
            cell += f" ({num(r['failed_calls'])} of {num(calls)} calls failed)"
        lat.append(cell)
    cpu = " / ".join(num(by_rate.get(x, {}).get("server_cpu_ms_per_event"), 2) for x in rates)
    last = p.get("rates", [])[-1] if p.get("rates") else {}
    rss = last.get("server_rss_mib_per_replica") or p.get("server_rss_mib_per_replica")
    if p.get("failover_resync_s") is not None:
        resync = f"{num(p['failover_resync_s'], 1)} s failover"
        if p.get("failover_agents_moved") is not None:
            resync += f" ({num(p['failover_agents_moved'])} agents moved)"
    elif p.get("restart_resync_s") is not None:
        resync = f"{num(p['restart_resync_s'], 1)} s restart"
    else:
        resync = "-"
    best = p.get("max_rate_p99_le_1s")
    return [
        num(p.get("replicas")),
        _named(p.get("agents_per_replica")),
        *lat,
        "none" if best is None and p.get("rates") else num(best, 0, "/s"),
        cpu,
        _named(rss, 1),
        resync,
    ]


def _identity(text: str) -> str:
    return text


def kernel_ovs_rate_rows(
    r: dict[str, Any], code: Callable[[str], str] = _identity
) -> list[list[str]]:
    """The (method, entries/s, vs bundle) rows of a ``kernel-ovs`` result; ``code`` marks a
    command up (the page: Markdown backticks). One entry is one flow, so the rates compare."""
    bundle = r.get("bundle_flows_per_s") or 0

    def ratio(v: Any) -> str:
        if not (v and bundle):
            return "-"
        return f"{v / bundle:.{2 if v / bundle >= 0.1 else 4}f} \u00d7"

    def of(samples: str) -> str:
        n = len(r.get(samples) or ())
        return f", median of {n}" if n > 1 else ""

    rows = [
        (
            f"l2pop datapath: install (network made){of('install_samples_s')}",
            "install_entries_per_s",
            0,
        ),
        ("l2pop datapath: install again (network exists)", "reinstall_entries_per_s", 0),
        ("l2pop datapath: remove (conditional)", "remove_entries_per_s", 0),
        (
            f"{code('ovs-ofctl --bundle add-flows FILE')}{of('bundle_samples_s')}",
            "bundle_flows_per_s",
            0,
        ),
        (
            f"one {code('ovs-ofctl add-flow')} per flow ({num(r.get('per_process_flows'))}-flow "
            "sample, extrapolated)",
            "per_process_flows_per_s",
            1,
        ),
    ]
    return [[label, num(r.get(key), digits), ratio(r.get(key))] for label, key, digits in rows]


def _ms(value: Any) -> str:
    return num(None if value is None else value * 1000, 1, "ms")


def kernel_ovs_time_rows(
    r: dict[str, Any], code: Callable[[str], str] = _identity
) -> list[list[str]]:
    """The (what, time) rows of a ``kernel-ovs`` result: reads back, leave, extrapolation."""
    flows = num(r.get("table_flows"))
    return [
        ["no-change reconcile (dump + diff), median of 5", _ms(r.get("reconcile_unchanged_s"))],
        ["no-change reconcile, best of 5", _ms(r.get("reconcile_unchanged_best_s"))],
        [f"{code('ovs-ofctl dump-flows')} of the bridge ({flows} flows), median of 5",
         _ms(r.get("dump_flows_s"))],
        [f"{code('ovs-ofctl dump-flows')}, best of 5", _ms(r.get("dump_flows_best_s"))],
        ["leave of the network holding every entry", _ms(r.get("leave_s"))],
        ["datapath start (OVSDB, bridge, tunnel ports, base flows)",
         _ms(r.get("datapath_start_s"))],
        [f"the whole install at one {code('ovs-ofctl add-flow')} per flow (extrapolated)",
         num(r.get("per_process_extrapolated_s"), 1, "s")],
    ]  # fmt: skip


#: the moments ``kernel-ovs`` reads memory at, and the processes it reads
OVS_RSS_STAGES = ("start", "installed", "end")
OVS_RSS_PROCESSES = ("ovs-vswitchd", "ovsdb-server", "python")


def kernel_ovs_rss_rows(r: dict[str, Any]) -> list[list[str]]:
    """(process, RSS MiB at each of ``OVS_RSS_STAGES``) rows of a ``kernel-ovs`` result; the
    Python rows are this benchmark's own process (the agent's datapath code ran in it), the
    last its peak during the datapath's part and during the baselines."""
    rss = r.get("rss_kib") or {}
    rows = []
    for proc in OVS_RSS_PROCESSES:
        cells = [rss.get(stage, {}).get(proc) for stage in OVS_RSS_STAGES]
        rows.append([proc, *(num(None if c is None else c / 1024, 1) for c in cells)])
    peak = rss.get("python_peak") or {}
    cells = [peak.get("datapath"), peak.get("baselines")]
    mib = [num(None if c is None else c / 1024, 1) for c in cells]
    rows.append(["python peak (VmHWM) since the previous column", "", *mib])
    return rows
