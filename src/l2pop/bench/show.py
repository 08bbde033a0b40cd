"""What each benchmark prints on stdout when it finishes without ``--json``: a rich table of
its result and a few summary lines (``docs/benchmarks.md`` renders the same results in
``report``)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from l2pop.bench.formatting import (
    OVS_RSS_STAGES,
    SCALE_RATE_COLUMNS,
    kernel_ovs_rate_rows,
    kernel_ovs_rss_rows,
    kernel_ovs_time_rows,
    num,
    replica_cells,
    replica_columns,
    replica_rates,
    scale_rate_cells,
)
from l2pop.console import make_console


def _console() -> Console:
    # the shared console, so these tables follow the width rules of every other l2pop table
    return make_console()


def show_kernel(r: dict[str, Any]) -> None:
    """Install and removal rates beside iproute2, and the no-change reconcile time."""
    batch = r["iproute2_batch_entries_per_s"] or 1
    t = Table(title=f"kernel programming, {r['entries']:,} entries (FDB + neighbour)")
    for col in ("method", "entries/s", "vs iproute2 batch"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for label, key in (
        ("l2pop datapath: install", "install_entries_per_s"),
        ("l2pop datapath: remove", "remove_entries_per_s"),
        ("bridge/ip -batch", "iproute2_batch_entries_per_s"),
        (f"one process per entry ({r['per_process_entries']})", "per_process_entries_per_s"),
    ):
        t.add_row(label, num(r[key]), f"{r[key] / batch:.2f} x")
    console = _console()
    console.print(t)
    console.print(
        f"no-change reconcile (dump + diff): {r['reconcile_unchanged_s'] * 1000:.1f} ms median, "
        f"{r['reconcile_unchanged_best_s'] * 1000:.1f} ms best; "
        f"bridge fdb show + ip neigh show: {r['iproute2_show_s'] * 1000:.1f} ms"
    )


def show_kernel_ovs(r: dict[str, Any]) -> None:
    """The OVS datapath's rates beside ovs-ofctl's, its read-back times beside one
    dump-flows, the daemons' and this process's memory, and each target passed or failed."""
    from l2pop.bench.targets import kernel_ovs_targets

    console = _console()
    t = Table(
        title=f"OVS flow programming ({r.get('ovs_version', '?')}, datapath_type="
        f"{r.get('datapath_type', '?')}), {r['entries']:,} entries (FDB + neighbour), load "
        f"{num(r.get('load_average_1m'), 2)}"
    )
    for col in ("method", "entries/s", "vs bundle"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for row in kernel_ovs_rate_rows(r):
        t.add_row(*row)
    console.print(t)
    t = Table(title="read back and leave")
    t.add_column("what")
    t.add_column("time", justify="right")
    for row in kernel_ovs_time_rows(r):
        t.add_row(*row)
    console.print(t)
    t = Table(title="RSS (MiB)")
    for col in ("process", *OVS_RSS_STAGES):
        t.add_column(col, justify="left" if col == "process" else "right")
    for row in kernel_ovs_rss_rows(r):
        t.add_row(*row)
    console.print(t)
    console.print(
        f"one ovs-ofctl add-flow per flow: measured on {r['per_process_flows']} flows, the "
        "rate extrapolated to the whole install"
    )
    for target in kernel_ovs_targets({"result": r}):
        if target.met is None:
            verdict = "[yellow]not judged[/]" + (f" ({target.note})" if target.note else "")
        else:
            verdict = "[green]PASS[/]" if target.met else "[bold red]FAIL[/]"
        console.print(f"target: {target.target}: {target.measured}: {verdict}")


def show_scale_replicas(r: dict[str, Any]) -> None:
    """One row per replica count, then each pass's per-rate table."""
    cfg = r.get("config", {})
    passes = r.get("passes", [])
    rates = replica_rates(passes)
    t = Table(
        title=f"control-plane scale, replicas ({cfg.get('engine')}): {cfg.get('hosts')} "
        f"agents, {cfg.get('ports'):,} ports"
    )
    for col in replica_columns(rates):
        t.add_column(col, justify="right")
    for p in passes:
        t.add_row(*replica_cells(p, rates))
    console = _console()
    console.print(t)
    for p in passes:
        each = Table(title=f"{p.get('replicas')} replica(s)")
        for col in SCALE_RATE_COLUMNS:
            each.add_column(col, justify="right")
        for x in p.get("rates", []):
            each.add_row(*scale_rate_cells(x))
        console.print(each)


def show_scale(r: dict[str, Any]) -> None:
    """One row per churn rate, then the initial sync and the resync after a restart."""
    cfg = r.get("config", {})
    t = Table(
        title=f"control-plane scale ({cfg.get('engine')}): {cfg.get('hosts')} agents, "
        f"{cfg.get('ports'):,} ports"
    )
    for col in SCALE_RATE_COLUMNS:
        t.add_column(col, justify="right")
    for x in r.get("rates", []):
        t.add_row(*scale_rate_cells(x))
    console = _console()
    console.print(t)
    console.print(
        f"initial sync {num(r.get('initial_sync_s'), 1)} s; highest rate with p99 <= 1 s: "
        f"{num(r.get('max_rate_p99_le_1s'))}/s; in sync after kill -9 + restart: "
        f"{num(r.get('restart_resync_s'), 1)} s"
    )


def show_flood(r: dict[str, Any]) -> None:
    """What crossed the underlay, per host count, for l2pop and for flood-and-learn (the
    baseline's label says where it ran); then, off linux, activation p50/max."""
    where = f" ({r['datapath']} hosts)" if r.get("datapath") else ""
    t = Table(title=f"what crossed the underlay for the same VM workload{where}")
    labels = {"l2pop": "l2pop", "flood_and_learn": r.get("baseline", {}).get("label")}
    cols = (
        "hosts",
        "design",
        "pings",
        "ARP bcast",
        "ND mcast",
        "BUM copies",
        "unknown ucast",
        "BUM to non-members",
        "VXLAN pkts",
    )
    for col in cols:
        t.add_column(col, justify="left" if col == "design" else "right")
    for row in r["results"]:
        for design in ("l2pop", "flood_and_learn"):
            c = row[design]
            t.add_row(
                str(row["hosts"]),
                labels[design] or design.replace("_", "-"),
                f"{c['pings_ok']}/{c['pings']}",
                num(c["arp_broadcast"]),
                num(c["nd_multicast"]),
                num(c["bum"]),
                num(c["unknown_unicast"]),
                num(c["non_member_bum"]),
                num(c["vxlan"]),
            )
    console = _console()
    console.print(t)
    if not r.get("datapath"):
        return
    for row in r["results"]:
        a = row["l2pop"].get("activation") or {}
        kinds = ", ".join(f"{n} {k}" for k, n in a.get("remote_kinds", {}).items())
        console.print(
            f"{row['hosts']} hosts: activation to {a.get('remote_kernels')} remote members "
            f"({kinds}): p50 {num(a.get('p50_ms'), 1)} ms, max {num(a.get('max_ms'), 1)} ms"
        )


def show_chaos(r: dict[str, Any]) -> None:
    """Operations by outcome, the kills and recoveries, each check, and the verdict."""
    cfg = r["config"]
    ops, kills, conv = r["operations"], r["kills"], r["convergence_after_kill_s"]
    t = Table(title=f"chaos ({cfg['engine']}): {r['duration_s']:g} s, seed {cfg['seed']}")
    for col in ("operation", "acknowledged", "refused", "indeterminate"):
        t.add_column(col, justify="left" if col == "operation" else "right")
    outcomes = ("acknowledged", "refused", "indeterminate")
    for kind, row in ops["by_kind"].items():
        t.add_row(kind, *(num(row[o]) for o in outcomes))
    t.add_row("total", *(num(ops["by_outcome"][o]) for o in outcomes))
    console = _console()
    console.print(t)
    resolved = ops["indeterminate_resolved"]
    targets = ", ".join(f"{k} {v}" for k, v in kills["by_target"].items())
    after_db = kills["server_after_db_kill"]
    tail = f"; server after a database kill: {after_db}" if after_db else ""
    console.print(f"kills: {kills['total']} ({targets}){tail}")
    console.print(
        f"in sync after a kill: p50 {num(conv['p50'], 2)} s, max {num(conv['max'], 2)} s, "
        f"not converged {conv['not_converged']}; final convergence "
        f"{num(r['final_convergence'].get('converge_s'), 2)} s"
    )
    console.print(
        f"indeterminate resolved: before {resolved['before']}, after {resolved['after']}, "
        f"neither {resolved['neither']}; lost writes {r['lost_writes']}, leftovers "
        f"{r['leftovers']}; agents equal /fdb: {r['agents_equal_fdb']}; hosts in sync: "
        f"{r['hosts_in_sync']}"
    )
    for p in r["problem_samples"][:10]:
        console.print(f"problem {p['check']}: client {p['client']} {p['target']}: {p['detail']}")
    verdict = "[bold green]all checks passed[/]"
    if not r["ok"]:
        verdict = f"[bold red]FAILED: {', '.join(r['failed_checks'])}[/]"
    console.print(verdict)


def show_rest(r: dict[str, Any]) -> None:
    """Latency per request kind and of the liveness probe, then failures and statuses."""
    h = r["healthz"]
    t = Table(title=f"REST: {r['requests_per_s']:g} requests/s, p99 {r['p99_ms']:g} ms")
    for col in ("request", "count", "p50 ms", "p99 ms"):
        t.add_column(col, justify="left" if col == "request" else "right")
    for kind, row in r["per_kind"].items():
        t.add_row(kind, str(row["requests"]), f"{row['p50_ms']:g}", f"{row['p99_ms']:g}")
    t.add_row("/healthz probe", str(h["probes"]), f"{h['p50_ms']:g}", f"{h['p99_ms']:g}")
    _console().print(t)
    print(f"probe failures (> 1 s or error): {h['failures']}; status counts: {r['status']}")
