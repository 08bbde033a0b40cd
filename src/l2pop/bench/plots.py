"""PNG plots for ``docs/benchmarks.md`` (matplotlib, Agg backend; imported only to draw).

``draw`` makes every plot the saved results allow; the ``plot_*`` functions draw one each.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from l2pop.bench.results import ENGINES, FLOOD_RESULTS
from l2pop.bench.targets import KERNEL_RATIO_TARGET, SCALE_P99_TARGET_MS, SCALE_TARGET_RATE, TIMES


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "font.size": 10,
        }
    )
    return plt


def plot_kernel(result: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    candidates = [
        ("l2pop datapath\ninstall", result.get("install_entries_per_s"), "#1f77b4"),
        ("l2pop datapath\nremove", result.get("remove_entries_per_s"), "#6baed6"),
        ("iproute2\n-batch", result.get("iproute2_batch_entries_per_s"), "#7f7f7f"),
        ("one process\nper entry", result.get("per_process_entries_per_s"), "#d62728"),
    ]
    methods = [(m, float(v), c) for m, v, c in candidates if v]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    bars = ax.bar(
        [m for m, _, _ in methods], [v for _, v, _ in methods], color=[c for _, _, c in methods]
    )
    ax.set_yscale("log")
    for bar, (_, value, _) in zip(bars, methods, strict=True):
        ax.annotate(
            f"{value:,.0f}",
            (bar.get_x() + bar.get_width() / 2, value),
            ha="center",
            va="bottom",
            xytext=(0, 3),
            textcoords="offset points",
        )
    batch = result.get("iproute2_batch_entries_per_s")
    if batch:
        ax.axhline(
            KERNEL_RATIO_TARGET * batch,
            color="#2ca02c",
            linestyle="--",
            linewidth=1.2,
            label=f"target: {KERNEL_RATIO_TARGET} {TIMES} iproute2 batch",
        )
        ax.legend(loc="upper right", frameon=False)
    values = [v for _, v, _ in methods]
    ax.set_ylim(min(values) / 3, max(values) * 6)
    ax.set_ylabel("entries per second (log scale)")
    ax.set_title(f"Kernel programming: {result.get('entries', 0):,} entries (FDB + neighbour)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _engine_color(engine: str) -> str:
    return {"sqlite": "#1f77b4", "postgresql": "#ff7f0e"}.get(engine, "#7f7f7f")


def plot_scale_latency(scales: dict[str, dict[str, Any]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    values = []
    for engine, result in scales.items():
        rows = [r for r in result.get("rates", []) if r.get("rate") is not None]
        if not rows:
            continue
        rates = [r["rate"] for r in rows]
        for key, style in (("p50_ms", "--"), ("p99_ms", "-")):
            ys = [r.get(key) if r.get(key) is not None else math.nan for r in rows]
            values += [y for y in ys if math.isfinite(y)]
            ax.plot(
                rates,
                ys,
                style,
                marker="o",
                color=_engine_color(engine),
                label=f"{engine} {key[:3]}",
            )
    ax.axhline(
        SCALE_P99_TARGET_MS,
        color="#d62728",
        linestyle=":",
        linewidth=1.5,
        label=f"target p99 ≤ {SCALE_P99_TARGET_MS:.0f} ms at {SCALE_TARGET_RATE:.0f}/s",
    )
    ax.axvline(SCALE_TARGET_RATE, color="#d62728", linestyle=":", linewidth=0.8, alpha=0.5)
    if values and max(values) / max(min(values), 1e-3) > 30:
        ax.set_yscale("log")
    ax.set_xlabel("port activations per second (steady churn)")
    ax.set_ylabel("API call → every member applied (ms)")
    ax.set_title("Convergence of a port activation under churn")
    ax.legend(frameon=False, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _replicas_color(n: int) -> str:
    return ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")[(n - 1) % 5]


def plot_scale_replicas(result: dict[str, Any], path: Path) -> None:
    """p50 (dashed) and p99 (solid) against the churn rate, one colour per replica count."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    values = []
    for p in result.get("passes", []):
        rows = [r for r in p.get("rates", []) if r.get("rate") is not None]
        if not rows:
            continue
        n = int(p.get("replicas") or 1)
        rates = [r["rate"] for r in rows]
        for key, style in (("p50_ms", "--"), ("p99_ms", "-")):
            ys = [r.get(key) if r.get(key) is not None else math.nan for r in rows]
            values += [y for y in ys if math.isfinite(y)]
            label = f"{n} replica{'s' if n > 1 else ''} {key[:3]}"
            ax.plot(rates, ys, style, marker="o", color=_replicas_color(n), label=label)
    # the table's "highest rate with p99 <= 1 s", and the scale target
    ax.axhline(1000, color="#7f7f7f", linestyle="-.", linewidth=1.0, label="p99 ≤ 1 s")
    ax.axhline(
        SCALE_P99_TARGET_MS,
        color="#d62728",
        linestyle=":",
        linewidth=1.5,
        label=f"target p99 ≤ {SCALE_P99_TARGET_MS:.0f} ms at {SCALE_TARGET_RATE:.0f}/s",
    )
    if values and max(values) / max(min(values), 1e-3) > 30:
        ax.set_yscale("log")
    ax.set_xlabel("port activations per second (steady churn, writes round-robin)")
    ax.set_ylabel("API call → every member applied (ms)")
    hosts = result.get("config", {}).get("hosts")
    ax.set_title(f"Convergence under churn per replica count ({hosts} agents, PostgreSQL)")
    ax.legend(frameon=False, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_scale_messages(scales: dict[str, dict[str, Any]], path: Path) -> None:
    plt = _pyplot()
    rates = sorted({r["rate"] for s in scales.values() for r in s.get("rates", [])})
    series: list[tuple[str, list[float], str]] = []
    for engine, result in scales.items():
        by_rate = {r["rate"]: r.get("messages_per_event") for r in result.get("rates", [])}
        series.append(
            (
                f"l2pop ({engine})",
                [by_rate.get(x) or math.nan for x in rates],
                _engine_color(engine),
            )
        )
    fanout: dict[float, float] = {}
    for result in scales.values():
        for r in result.get("rates", []):
            fanout.setdefault(r["rate"], r.get("fanout_to_all_messages_per_event") or math.nan)
    series.append(("fanout to all (Neutron)", [fanout.get(x, math.nan) for x in rates], "#7f7f7f"))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    width = 0.8 / max(len(series), 1)
    for i, (label, ys, color) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(rates))]
        bars = ax.bar(xs, ys, width, label=label, color=color)
        for bar, y in zip(bars, ys, strict=True):
            if math.isfinite(y):
                ax.annotate(
                    f"{y:,.0f}" if y >= 10 else f"{y:.1f}",
                    (bar.get_x() + bar.get_width() / 2, y),
                    ha="center",
                    va="bottom",
                    xytext=(0, 2),
                    textcoords="offset points",
                    fontsize=8,
                )
    ax.set_xticks(range(len(rates)), [f"{x:g}/s" for x in rates])
    ax.set_yscale("log")
    ax.set_xlabel("churn rate")
    ax.set_ylabel("messages sent per event (log scale)")
    ax.set_title("Messages per port event: l2pop vs fanout to every agent")
    ax.legend(frameon=False, fontsize=9)
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_flood(result: dict[str, Any], path: Path) -> None:
    """ARP broadcasts, BUM copies and BUM copies to non-members against the host count, one
    line per design (the baseline's label from the result, where it has one)."""
    plt = _pyplot()
    base = result.get("baseline", {}).get("label", "flood-and-learn")
    rows = sorted(result.get("results", []), key=lambda r: r["hosts"])
    hosts = [r["hosts"] for r in rows]
    panels = [
        ("arp_broadcast", "ARP broadcasts on the underlay"),
        ("bum", "BUM copies on the underlay"),
        ("non_member_bum", "BUM copies reaching non-member hosts"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 3.9), sharex=True)
    for ax, (key, title) in zip(axes, panels, strict=True):
        for design, label, color, marker, dy in (
            ("flood_and_learn", base, "#d62728", "s", 6),
            ("l2pop", "l2pop", "#1f77b4", "o", -12),
        ):
            ys = [r.get(design, {}).get(key, math.nan) for r in rows]
            ax.plot(hosts, ys, marker=marker, color=color, label=label)
            for x, y in zip(hosts, ys, strict=True):
                if y is not None and math.isfinite(y):
                    ax.annotate(
                        f"{y:,.0f}",
                        (x, y),
                        xytext=(0, dy),
                        textcoords="offset points",
                        ha="center",
                        fontsize=8,
                        color=color,
                    )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("hosts")
        ax.set_xticks(hosts)
        top = max(1.0, ax.get_ylim()[1])
        ax.set_ylim(bottom=-0.09 * top, top=top * 1.12)
    axes[0].set_ylabel("packets (copies) during the workload")
    labelled = "baseline" in result  # a long baseline label: one legend under the panels
    if labelled:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2,
                   frameon=False)  # fmt: skip
    else:
        axes[0].legend(frameon=False)
    w = result.get("workload", {})
    where = f" on {result['datapath']} hosts" if result.get("datapath") else ""
    fig.suptitle(
        f"Same VM workload{where} ({w.get('networks', '?')} networks {TIMES} "
        f"{w.get('vms_per_network', '?')} VMs, every pair resolves and pings from cold "
        "caches), l2pop vs flood-and-learn",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1) if labelled else None)
    fig.savefig(path)
    plt.close(fig)


def draw(results: dict[str, dict[str, Any]], bench_dir: Path) -> dict[str, Path]:
    """Draw into ``bench_dir`` each plot whose result files are in ``results`` (by name, as
    ``load_results`` returns them). Returns the files by plot, in drawing order: ``kernel``,
    ``scale-latency`` and ``scale-messages`` (every engine on one plot), ``scale-replicas``
    (p99 vs rate per replica count), then ``flood``,
    ``flood-ovs`` and ``flood-mixed`` (one per datapath)."""
    drawn: dict[str, Path] = {}
    kernel = results.get("kernel")
    if kernel is not None:
        drawn["kernel"] = bench_dir / "kernel.png"
        plot_kernel(kernel["result"], drawn["kernel"])
    scales = {e: results[f"scale-{e}"]["result"] for e in ENGINES if f"scale-{e}" in results}
    if scales:
        drawn["scale-latency"] = bench_dir / "scale-latency.png"
        plot_scale_latency(scales, drawn["scale-latency"])
        drawn["scale-messages"] = bench_dir / "scale-messages.png"
        plot_scale_messages(scales, drawn["scale-messages"])
    replicas = results.get("scale-replicas")
    if replicas is not None and replicas["result"].get("passes"):
        drawn["scale-replicas"] = bench_dir / "scale-replicas.png"
        plot_scale_replicas(replicas["result"], drawn["scale-replicas"])
    for name in FLOOD_RESULTS:
        flood = results.get(name)
        if flood is not None:
            drawn[name] = bench_dir / f"{name}.png"
            plot_flood(flood["result"], drawn[name])
    return drawn
