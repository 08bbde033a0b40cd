"""``docs/benchmarks.md``, from the result files ``l2pop bench ... --save`` keeps.

Result files live in ``docs/bench/`` (``kernel.json``, ``kernel-ovs.json``,
``scale-sqlite.json``, ``scale-postgresql.json``, ``scale-replicas.json``,
``scale-curve.json``, ``flood.json``, ``flood-ovs.json``, ``flood-mixed.json``,
``activation[-<datapath>].json``, ``ui.json``; see ``l2pop.bench.results``; the flood
sections are ``l2pop.bench.flood_report``'s, the activation one
``l2pop.bench.activation_trace``'s, the curve of cost against hosts
``l2pop.bench.scale_curve_report``'s, the web page's ``l2pop.bench.ui_report``'s).
``render(bench_dir, page)`` writes the page (tables, the machine, the exact commands, each
target met or not) and its PNG plots (``l2pop.bench.plots``) beside the result files. A
missing result file leaves its section saying so. The page's "Gaps" section lists every
target that is missed or not measured; the explanation between the ``gaps:begin`` and
``gaps:end`` markers is written by hand and kept when the page is regenerated. The
sections ``rest`` and ``chaos`` write themselves (``l2pop.bench.sections``) and are kept
as they are.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from l2pop.bench import activation_trace, flood_report, scale_curve_report, sections, ui_report
from l2pop.bench.cost_table import cost_section
from l2pop.bench.formatting import (
    SCALE_RATE_COLUMNS,
    kernel_ovs_rate_rows,
    kernel_ovs_rss_rows,
    kernel_ovs_time_rows,
    num,
    replica_cells,
    replica_columns,
    replica_rates,
    run_command,
    scale_rate_cells,
    table,
)
from l2pop.bench.plots import draw
from l2pop.bench.results import ENGINES, load_results, machine_info
from l2pop.bench.targets import (
    TIMES,
    Target,
    kernel_ovs_targets,
    kernel_targets,
    scale_targets,
)

# ``num`` and ``table`` live in ``formatting``; the rest and chaos sections import them
# from here, so this module exports them too
__all__ = ["GAPS_BEGIN", "GAPS_END", "GAPS_PLACEHOLDER", "kept_gaps", "num", "render", "table"]

GAPS_BEGIN = "<!-- gaps:begin: written by hand, kept when the page is regenerated -->"
GAPS_END = "<!-- gaps:end -->"
GAPS_PLACEHOLDER = (
    "_To be written for each target above that is missed: a profile showing where the time "
    "goes, and what would close the gap._"
)


# -- the page -----------------------------------------------------------------------------


def _machine_section(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## Machine", ""]
    machines: dict[str, list[str]] = {}
    specs: dict[str, dict[str, Any]] = {}
    for name, saved in results.items():
        m = saved.get("machine") or {}
        key = json.dumps(m, sort_keys=True)
        machines.setdefault(key, []).append(f"`{name}.json`")
        specs[key] = m
    if not machines:
        m = machine_info()
        machines[json.dumps(m)] = ["(no results yet; this machine)"]
        specs[json.dumps(m)] = m
    rows = []
    for key, names in machines.items():
        m = specs[key]
        rows.append(
            [
                m.get("cpu", "?"),
                str(m.get("cores", "?")),
                num(m.get("memory_gib"), 1, "GiB"),
                m.get("kernel", "?"),
                m.get("python", "?"),
                ", ".join(names),
            ]
        )
    header = ["CPU", "cores", "memory", "kernel", "Python", "results"]
    lines.append(table(header, rows, "lrrlll"))
    lines.append("")
    return lines


def _kernel_section(saved: dict[str, Any] | None, png: str | None) -> list[str]:
    lines = ["## Kernel programming", ""]
    lines.append(
        "One `neigh_suppress` network in a throwaway namespace: N FDB entries (each a `self` "
        "entry `MAC dst VTEP` and a bridge `master static` entry) and N neighbour entries "
        "(half IPv4, half IPv6) over 16 remote VTEPs, installed through the agent's own "
        "datapath code (`LinuxDatapath.apply`), read back and diffed with nothing to change "
        "(the reconcile every resync does), then removed; beside the same install with "
        "`bridge -batch` + `ip -batch` and with one `bridge`/`ip` process per entry "
        "(Neutron's old way, on the first ~500 entries)."
    )
    lines.append("")
    if saved is None:
        lines += ["_Not measured yet: run `l2pop bench kernel --entries 10000 --save`._", ""]
        return lines
    r = saved["result"]
    lines += [run_command(saved), ""]
    batch = r.get("iproute2_batch_entries_per_s") or 0

    def ratio(v: Any) -> str:
        if not (v and batch):
            return "-"
        return f"{v / batch:.{2 if v / batch >= 0.1 else 3}f} {TIMES}"

    rows = [
        [
            "l2pop datapath: install",
            num(r.get("install_entries_per_s")),
            ratio(r.get("install_entries_per_s")),
        ],
        [
            "l2pop datapath: remove (conditional)",
            num(r.get("remove_entries_per_s")),
            ratio(r.get("remove_entries_per_s")),
        ],
        [
            "`bridge -batch` + `ip -batch`",
            num(r.get("iproute2_batch_entries_per_s")),
            f"1.00 {TIMES}",
        ],
        [
            f"one process per entry ({num(r.get('per_process_entries'))} entries)",
            num(r.get("per_process_entries_per_s")),
            ratio(r.get("per_process_entries_per_s")),
        ],
    ]
    lines.append(f"Entries: {num(r.get('entries'))} (FDB + neighbour).")
    lines.append("")
    lines.append(table(["method", "entries/s", "vs iproute2 batch"], rows))
    lines.append("")
    rec = r.get("reconcile_unchanged_s")
    best = r.get("reconcile_unchanged_best_s")
    show = r.get("iproute2_show_s")
    rows = [
        [
            "no-change reconcile (dump + diff), median of 5",
            num(None if rec is None else rec * 1000, 1, "ms"),
        ],
        ["no-change reconcile, best of 5", num(None if best is None else best * 1000, 1, "ms")],
        [
            "`bridge fdb show` + `ip neigh show` of the same tables",
            num(None if show is None else show * 1000, 1, "ms"),
        ],
    ]
    lines.append(table(["read back", "time"], rows))
    lines.append("")
    if png:
        lines += [f"![kernel programming rates]({png})", ""]
    return lines


def _kernel_ovs_section(saved: dict[str, Any] | None) -> list[str]:
    lines = ["## Open vSwitch flow programming", ""]
    lines.append(
        "The same network as above, through the agent's Open vSwitch datapath "
        "(`OvsDatapath.apply` / `dump`) on a private ovsdb-server + ovs-vswitchd in a "
        "throwaway namespace (userspace datapath, `datapath_type=netdev`): each FDB entry is "
        "a table-40 flow, each IPv4 neighbour an ARP-responder flow (table 20), each IPv6 one "
        "an ND-responder flow (table 30). Installed (the network's groups and own flows made "
        "on the way; the bridge exists from the datapath's start), read back and diffed with "
        "nothing to change, removed, installed again and left. Beside it, on fresh bridges of "
        "the same ovs-vswitchd, the same flows (checked identical in the dump): one "
        "`ovs-ofctl --bundle add-flows FILE`, and one `ovs-ofctl add-flow` process per flow "
        "(Neutron's old way) on a sample whose rate is extrapolated; and one "
        "`ovs-ofctl dump-flows` of the datapath's whole bridge, the least a reconcile that "
        "reads the switch back can cost."
    )
    lines.append("")
    if saved is None:
        run = "l2pop bench kernel --datapath ovs --entries 10000 --save"
        return [*lines, f"_Not measured yet: run `{run}`._", ""]
    r = saved["result"]
    lines += [run_command(saved), ""]
    lines.append(
        f"Entries: {num(r.get('entries'))} (FDB + neighbour), one flow each; "
        f"{r.get('ovs_version', '?')}, `datapath_type={r.get('datapath_type', '?')}`; load "
        f"average {num(r.get('load_average_1m'), 2)} when the run began."
    )
    lines.append("")
    code = _code
    lines += [table(["method", "entries/s", "vs bundle"], kernel_ovs_rate_rows(r, code)), ""]
    lines += [table(["read back", "time"], kernel_ovs_time_rows(r, code)), ""]
    header = ["RSS (MiB)", "daemons started", "datapath's flows in", "after the baselines"]
    lines += [table(header, kernel_ovs_rss_rows(r)), ""]
    lines.append(
        "The Python rows are the benchmark's own process, in which the agent's datapath code "
        "ran; its peak is reset before the datapath starts (the desired state already built) "
        "and again before the baselines."
    )
    lines.append("")
    return lines


def _code(text: str) -> str:
    return f"`{text}`"


def _scale_section(
    scales: dict[str, dict[str, Any]], latency_png: str | None, messages_png: str | None
) -> list[str]:
    lines = ["## Control-plane scale", ""]
    lines.append(
        "A real `l2pop server` process, simulated agents (memory datapath, one real WebSocket "
        "each) in several `l2pop agent-swarm` processes, a store populated in bulk. Steady "
        "open-loop churn of port activations at each rate; the latency of one event is the "
        "time from the API call to the last other member agent having applied it. Messages "
        "and bytes are what the server sent per event (heartbeats excluded), beside a "
        "fanout-to-all design (Neutron casts every event to every agent, each activation "
        f"twice: 2 {TIMES} hosts). Then the server is killed (`kill -9`) and restarted, and "
        "the time until every agent is `in_sync` again is measured."
    )
    lines.append("")
    if not scales:
        lines += [
            "_Not measured yet: run `l2pop bench scale --engine sqlite --save` and "
            "`l2pop bench scale --engine postgresql --save`._",
            "",
        ]
        return lines
    for engine in ENGINES:
        saved = scales.get(engine)
        lines += [f"### {engine}", ""]
        if saved is None:
            lines += [f"_Not measured yet: run `l2pop bench scale --engine {engine} --save`._", ""]
            continue
        r = saved["result"]
        cfg = r.get("config", {})
        lines += [run_command(saved), ""]
        lines.append(
            f"{num(cfg.get('hosts'))} agents in {num(cfg.get('swarms'))} processes, "
            f"{num(cfg.get('networks'))} networks spanning {cfg.get('min_span', '?')}-"
            f"{cfg.get('max_span', '?')} hosts each, {num(cfg.get('ports'))} ports; "
            f"{num(cfg.get('duration'), 0)} s of churn per rate."
        )
        lines.append("")
        rows = [
            ["populate the store", num(r.get("populate_s"), 1, "s")],
            ["server start", num(r.get("server_start_s"), 1, "s")],
            ["every agent in sync after start", num(r.get("initial_sync_s"), 1, "s")],
            ["server RSS after the initial sync", num(r.get("server_rss_mib"), 1, "MiB")],
            ["highest rate with p99 ≤ 1 s", num(r.get("max_rate_p99_le_1s"), 0, "events/s")],
            [
                "every agent in sync after `kill -9` + restart",
                num(r.get("restart_resync_s"), 1, "s"),
            ],
        ]
        lines += [table(["step", "result"], rows), ""]
        rows = [scale_rate_cells(x) for x in r.get("rates", [])]
        lines += [table(list(SCALE_RATE_COLUMNS), rows), ""]
    if latency_png:
        lines += [f"![convergence p50/p99 vs churn rate]({latency_png})", ""]
    if messages_png:
        lines += [f"![messages per event, l2pop vs fanout to all]({messages_png})", ""]
    return lines


def _replicas_section(saved: dict[str, Any] | None, png: str | None) -> list[str]:
    lines = ["### Replicas", ""]
    lines.append(
        "The same benchmark on N `l2pop server` replicas sharing one PostgreSQL database "
        "(`--replica r1..rN`, each hub following the others' commits through LISTEN/NOTIFY), "
        "one full pass per replica count on a fresh store of the same size and the same "
        "churn. Every agent is given all N URLs and starts at a random one; agents per "
        "replica are the host list's `replica` (who holds each session) after the initial "
        "sync. The churn's API calls go round-robin over the replicas; server CPU per event "
        "is summed over them, RSS is each replica's. With one replica the server is killed "
        "(`kill -9`) and restarted; with N ≥ 2, replica r1 is killed and not restarted, and "
        "the failover resync is the time until every agent is connected to a surviving "
        "replica and every host is `in_sync` through one. API calls the overloaded machine "
        "failed (refused or timed out) are counted and left out of the latencies."
    )
    lines.append("")
    if saved is None:
        run = "l2pop bench scale --engine postgresql --replicas 1,2 --save"
        return [*lines, f"_Not measured yet: run `{run}`._", ""]
    r = saved["result"]
    cfg = r.get("config", {})
    passes = r.get("passes", [])
    lines += [run_command(saved), ""]
    lines.append(
        f"{num(cfg.get('hosts'))} agents in {num(cfg.get('swarms'))} processes, "
        f"{num(cfg.get('networks'))} networks, {num(cfg.get('ports'))} ports; "
        f"{num(cfg.get('duration'), 0)} s of churn per rate."
    )
    lines.append("")
    rates = replica_rates(passes)
    lines += [table(replica_columns(rates), [replica_cells(p, rates) for p in passes]), ""]
    for p in passes:
        n = p.get("replicas")
        lines += [f"{num(n)} replica(s), per rate (messages and CPU summed over replicas):", ""]
        rows = [scale_rate_cells(x) for x in p.get("rates", [])]
        lines += [table(list(SCALE_RATE_COLUMNS), rows), ""]
    if png:
        lines += [f"![convergence p50/p99 vs churn rate per replica count]({png})", ""]
    return lines


def _gaps_section(targets: list[Target], kept: str) -> list[str]:
    lines = ["## Gaps", ""]
    missed = [t for t in targets if t.met is False]
    unmeasured = [t for t in targets if t.met is None]
    if missed:
        lines.append("Targets these runs missed:")
        lines.append("")
        lines += [f"- **{t.benchmark}**: {t.target}; measured {t.measured}." for t in missed]
        lines.append("")
    if unmeasured:
        lines.append("Targets not measured at their size by the result files here:")
        lines.append("")
        lines += [f"- {t.benchmark}: {t.target} ({t.note or 'no result'})." for t in unmeasured]
        lines.append("")
    if not missed and not unmeasured:
        lines += ["Every target is met.", ""]
    lines += [GAPS_BEGIN, kept.strip() or GAPS_PLACEHOLDER, GAPS_END, ""]
    return lines


def kept_gaps(page: Path) -> str:
    """The hand-written text between the gaps markers of an existing page, or ""."""
    if not page.exists():
        return ""
    match = re.search(
        re.escape(GAPS_BEGIN) + r"\n(.*?)" + re.escape(GAPS_END), page.read_text(), re.DOTALL
    )
    if match is None or match.group(1).strip() == GAPS_PLACEHOLDER:
        return ""
    return match.group(1)


def _commands_section(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## How these results were produced", ""]
    lines.append(
        "Each result file in `docs/bench/` was written by the command below (run as root "
        "from the repository root, `.venv/bin/l2pop`); `l2pop bench report` then regenerated "
        "this page and its plots from them."
    )
    lines.append("")
    rows = [
        [f"`{name}.json`", f"`{s.get('command', '?')}`", s.get("started_at", "?")]
        for name, s in results.items()
    ]
    if rows:
        lines += [table(["result", "command", "run at"], rows, "lll"), ""]
    return lines


def render(bench_dir: Path, page: Path) -> list[Path]:
    """Write ``page`` and its plots (into ``bench_dir``) from the result files in
    ``bench_dir``. Returns the files written."""
    results = load_results(bench_dir)
    bench_dir.mkdir(parents=True, exist_ok=True)
    page.parent.mkdir(parents=True, exist_ok=True)
    drawn = draw(results, bench_dir)
    drawn.update(scale_curve_report.draw(results, bench_dir))
    # plots are linked relative to the page, wherever the two are
    png = {name: os.path.relpath(path, page.parent) for name, path in drawn.items()}

    kernel = results.get("kernel")
    scales = {e: results[f"scale-{e}"] for e in ENGINES if f"scale-{e}" in results}
    targets = kernel_targets(kernel) + kernel_ovs_targets(results.get("kernel-ovs"))
    for engine in ENGINES:
        targets += scale_targets(engine, scales.get(engine))
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `l2pop bench report` from docs/bench/*.json; edit only the text "
        "between the gaps markers, the rest is rewritten. -->",
        "",
        "How well l2pop does what it exists for, side by side with the "
        "alternatives. Kernel programming speed against iproute2 (and Open vSwitch flow "
        "programming against ovs-ofctl), control-plane convergence with many agents, and "
        "broadcast reduction against flood-and-learn VXLAN.",
        "",
    ]
    lines += _machine_section(results)
    lines += ["## Targets", ""]
    rows = [[t.benchmark, t.target, t.measured, t.verdict] for t in targets]
    lines += [table(["benchmark", "target", "measured", "verdict"], rows, "llll"), ""]
    lines += cost_section(results)
    lines += _kernel_section(kernel, png.get("kernel"))
    lines += _kernel_ovs_section(results.get("kernel-ovs"))
    lines += _scale_section(scales, png.get("scale-latency"), png.get("scale-messages"))
    lines += _replicas_section(results.get("scale-replicas"), png.get("scale-replicas"))
    lines += scale_curve_report.section(results.get("scale-curve"), png.get("scale-curve"))
    lines += flood_report.sections(results, png)
    lines += activation_trace.report_section(results)
    lines += ui_report.section(results.get("ui"))
    lines += sections.kept(page)  # written by their own benchmarks (rest, chaos)
    lines += _commands_section(results)
    lines += _gaps_section(targets, kept_gaps(page))
    page.write_text("\n".join(lines).rstrip() + "\n")
    return [*drawn.values(), page]
