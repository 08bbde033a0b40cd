"""``l2pop.bench.report``: the benchmarks page and its plots from small fabricated results,
rendered into a temporary directory (never into docs/); result files (``l2pop.bench.results``)
are written as ``--save`` writes them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from l2pop.bench import report
from l2pop.bench.results import envelope, machine_info, save_result
from l2pop.bench.targets import TIMES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def kernel_result(ratio: float = 0.8, reconcile_s: float = 0.05) -> dict[str, Any]:
    return {
        "entries": 20_000,
        "install_entries_per_s": round(75_000 * ratio),
        "iproute2_batch_entries_per_s": 75_000,
        "ratio_to_iproute2_batch": ratio,
        "reconcile_unchanged_s": reconcile_s,
        "reconcile_unchanged_best_s": reconcile_s * 0.9,
        "iproute2_show_s": 0.03,
        "remove_entries_per_s": 50_000,
        "per_process_entries_per_s": 800,
        "per_process_entries": 500,
    }


def kernel_ovs_result(ratio: float = 1.2, reconcile_s: float = 0.3) -> dict[str, Any]:
    stage = {"ovs-vswitchd": 8_192, "ovsdb-server": 10_240, "python": 60_000}
    return {
        "entries": 20_000,
        "datapath_type": "netdev",
        "ovs_version": "ovs-vswitchd (Open vSwitch) 3.1.0",
        "load_average_1m": 0.5,
        "install_entries_per_s": round(50_000 * ratio),
        "install_samples_s": [0.34, 0.33, 0.35],
        "bundle_samples_s": [0.4, 0.41, 0.39],
        "reinstall_entries_per_s": 61_000,
        "remove_entries_per_s": 45_000,
        "leave_s": 0.12,
        "datapath_start_s": 0.3,
        "bundle_flows_per_s": 50_000,
        "ratio_to_bundle": ratio,
        "per_process_flows_per_s": 40.5,
        "per_process_flows": 200,
        "per_process_extrapolated_s": 493.8,
        "reconcile_unchanged_s": reconcile_s,
        "reconcile_unchanged_best_s": reconcile_s * 0.9,
        "dump_flows_s": 0.25,
        "dump_flows_best_s": 0.2,
        "reconcile_to_dump_flows": round(reconcile_s / 0.25, 2),
        "table_flows": 20_031,
        "rss_kib": {"start": stage, "installed": {**stage, "ovs-vswitchd": 51_200},
                    "end": {**stage, "ovs-vswitchd": 92_160},
                    "python_peak": {"datapath": 81_920, "baselines": 71_680}},
    }  # fmt: skip


def scale_result(engine: str, p99_at_100: float, restart_s: float | None) -> dict[str, Any]:
    rows = []
    for rate, p50, p99 in ((25.0, 20.0, 60.0), (50.0, 30.0, 90.0), (100.0, 45.0, p99_at_100)):
        rows.append(
            {
                "rate": rate,
                "events": int(rate * 20),
                "p50_ms": p50,
                "p99_ms": p99,
                "max_ms": p99 * 1.3,
                "messages_per_event": 31.5,
                "bytes_per_event": 9000,
                "fanout_to_all_messages_per_event": 2000,
                "server_cpu_ms_per_event": 1.5,
                "server_rss_mib": 700.0,
            }
        )
    out: dict[str, Any] = {
        "config": {"hosts": 1000, "networks": 2000, "ports": 100_000, "swarms": 4,
                   "engine": engine, "min_span": 5, "max_span": 50, "duration": 20.0,
                   "rates": [25.0, 50.0, 100.0], "restart": restart_s is not None},
        "populate_s": 12.0,
        "server_start_s": 3.0,
        "initial_sync_s": 20.0,
        "server_rss_mib": 650.0,
        "rates": rows,
        "max_rate_p99_le_1s": 100.0,
    }  # fmt: skip
    if restart_s is not None:
        out["restart_resync_s"] = restart_s
    return out


def flood_result() -> dict[str, Any]:
    results = []
    for hosts in (4, 8, 16):
        zero = dict.fromkeys(
            ("arp_broadcast", "nd_multicast", "bum", "unknown_unicast", "non_member_bum"), 0
        )
        flood = {
            "arp_broadcast": 12 * (hosts - 1),
            "nd_multicast": 12 * (hosts - 1),
            "bum": 24 * (hosts - 1),
            "unknown_unicast": 0,
            "non_member_bum": 24 * (hosts - 3),
        }
        results.append(
            {
                "hosts": hosts,
                "l2pop": {**zero, "pings_ok": 24, "pings": 24, "vxlan": 48},
                "flood_and_learn": {**flood, "pings_ok": 24, "pings": 24, "vxlan": 300},
            }
        )
    return {
        "workload": {"networks": 2, "vms_per_network": 3, "modes": ["neigh_suppress", "proxy"],
                     "pings": 24, "placement": {"4": {"net1": ["h1", "h2", "h3"]}}},
        "host_counts": [4, 8, 16],
        "results": results,
    }  # fmt: skip


def save(bench: Path, name: str, result: dict[str, Any], command: str) -> None:
    save_result(bench, envelope(name, result, command, datetime(2025, 1, 2, tzinfo=UTC), 42.0))


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    bench = tmp_path / "docs" / "bench"
    save(bench, "kernel", kernel_result(ratio=0.45), "l2pop bench kernel --entries 10000 --save")
    save(bench, "kernel-ovs", kernel_ovs_result(),
         "l2pop bench kernel --datapath ovs --entries 10000 --save")  # fmt: skip
    save(bench, "scale-sqlite", scale_result("sqlite", 180.0, 12.0),
         "l2pop bench scale --engine sqlite --save")  # fmt: skip
    save(bench, "scale-postgresql", scale_result("postgresql", 400.0, 45.0),
         "l2pop bench scale --engine postgresql --save")  # fmt: skip
    save(bench, "flood", flood_result(), "l2pop bench flood --hosts 4,8,16 --save")
    return tmp_path / "docs"


def test_page_has_tables_plots_machine_commands_and_verdicts(docs: Path) -> None:
    page = docs / "benchmarks.md"
    written = report.render(docs / "bench", page)
    assert page in written
    pngs = {p.name for p in written if p.suffix == ".png"}
    assert pngs == {"kernel.png", "scale-latency.png", "scale-messages.png", "flood.png"}
    for name in pngs:
        data = (docs / "bench" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    text = page.read_text()
    # plots linked relative to the page
    for name in pngs:
        assert f"](bench/{name})" in text
    # the machine and the exact commands
    machine = machine_info()
    assert machine["kernel"] in text and machine["python"] in text
    for command in ("l2pop bench kernel --entries 10000 --save",
                    "l2pop bench scale --engine postgresql --save",
                    "l2pop bench flood --hosts 4,8,16 --save"):  # fmt: skip
        assert command in text
    # figures in the tables
    assert "75,000" in text and "33,750" in text  # iproute2 batch, install
    assert "| 16 | flood-and-learn | 24/24 | 180 |" in text
    # verdicts: kernel ratio missed, reconcile met, ovs ratio met, ovs reconcile (300 ms
    # against a 250 ms dump) missed, sqlite met, postgresql missed twice
    targets = text.split("## Targets")[1].split("## Cost per event")[0]
    verdicts = [line.rsplit("|", 2)[1].strip() for line in targets.strip().splitlines()[2:]]
    assert verdicts == [
        "**MISSED**", "met", "met", "**MISSED**", "met", "met", "**MISSED**", "**MISSED**"
    ]  # fmt: skip
    # the OVS section: rates beside the bundle, read-back times, memory
    ovs = text.split("## Open vSwitch flow programming")[1].split("## Control-plane")[0]
    assert "l2pop bench kernel --datapath ovs --entries 10000 --save" in ovs
    assert "load average 0.50 when the run began" in ovs
    assert f"| l2pop datapath: install (network made), median of 3 | 60,000 | 1.20 {TIMES} |" in ovs
    assert f"| `ovs-ofctl --bundle add-flows FILE`, median of 3 | 50,000 | 1.00 {TIMES} |" in ovs
    assert f"(200-flow sample, extrapolated) | 40.5 | 0.0008 {TIMES} |" in ovs
    assert "| no-change reconcile (dump + diff), median of 5 | 300.0 ms |" in ovs
    assert "(20,031 flows), median of 5 | 250.0 ms |" in ovs
    assert "| ovs-vswitchd | 8.0 | 50.0 | 90.0 |" in ovs
    assert "| python peak (VmHWM) since the previous column |  | 80.0 | 70.0 |" in ovs
    gaps = text.split("## Gaps")[1]
    assert "0.45" in gaps and "p99 400.0 ms" in gaps and "45.0 s" in gaps
    assert report.GAPS_PLACEHOLDER in gaps


def test_hand_written_gaps_survive_regeneration(docs: Path) -> None:
    page = docs / "benchmarks.md"
    report.render(docs / "bench", page)
    explanation = "The install rate is bound by Python building each message (profile: ...)."
    page.write_text(page.read_text().replace(report.GAPS_PLACEHOLDER, explanation))
    report.render(docs / "bench", page)
    text = page.read_text()
    assert explanation in text and report.GAPS_PLACEHOLDER not in text
    assert text.count(report.GAPS_BEGIN) == 1


def test_missing_and_small_results_are_stated_not_judged(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    small = scale_result("sqlite", 10.0, 1.0)
    small["config"]["hosts"] = 20
    save(bench, "scale-sqlite", small, "l2pop bench scale --hosts 20 --save")
    page = tmp_path / "benchmarks.md"
    written = report.render(bench, page)
    assert {p.name for p in written} == {"scale-latency.png", "scale-messages.png", page.name}
    text = page.read_text()
    assert "MISSED" not in text
    assert "run at 20 hosts, not 1,000" in text
    assert "no kernel.json" in text and "no scale-postgresql.json" in text
    assert "no kernel-ovs.json" in text
    assert "_Not measured yet: run `l2pop bench flood --hosts 4,8,16 --save`._" in text


def test_saved_results_are_strict_json(tmp_path: Path) -> None:
    result = kernel_result()
    result["reconcile_unchanged_s"] = float("nan")
    save(tmp_path, "kernel", result, "l2pop bench kernel --save")
    data = json.loads((tmp_path / "kernel.json").read_text(), parse_constant=_refuse)
    assert data["result"]["reconcile_unchanged_s"] is None
    assert data["command"] == "l2pop bench kernel --save"
    assert set(data["machine"]) == {"cpu", "cores", "memory_gib", "kernel", "python"}


def _refuse(name: str) -> None:
    raise AssertionError(f"non-standard JSON constant {name}")


def ovs_flood_result(datapath: str) -> dict[str, Any]:
    """``flood_result`` measured on ``datapath`` hosts."""
    out = flood_result()
    split = {"ovs": {"ovs": 2}, "mixed": {"linux": 1, "ovs": 1}}[datapath]
    for row in out["results"]:
        by_kind = {k: {"p50_ms": 50.0 + i, "max_ms": 90.0 + i} for i, k in enumerate(split)}
        row["l2pop"]["activation"] = {"samples": 10, "remote_kernels": 2, "p50_ms": 61.5,
                                      "max_ms": 99.0, "min_ms": 40.0, "remote_kinds": split,
                                      "by_kind": by_kind}  # fmt: skip
    out["datapath"] = datapath
    out["kinds"] = {"4": {"linux": ["h1", "h3"], "ovs": ["h2", "h4"]}}
    out["baseline"] = {"label": f"flood-and-learn ({datapath})"}
    return out


def test_ovs_and_mixed_results_get_their_section_plot_and_activation(docs: Path) -> None:
    bench = docs / "bench"
    for datapath in ("ovs", "mixed"):
        command = f"l2pop bench flood --hosts 4,8,16 --datapath {datapath} --save"
        save(bench, f"flood-{datapath}", ovs_flood_result(datapath), command)
    page = docs / "benchmarks.md"
    written = {p.name for p in report.render(bench, page)}
    assert {"flood.png", "flood-ovs.png", "flood-mixed.png"} <= written
    text = page.read_text()
    linux = text.split("## Broadcast reduction: l2pop vs flood-and-learn")[1]
    linux, ovs = linux.split("## Broadcast reduction on Open vSwitch hosts")
    assert "| 16 | flood-and-learn | 24/24 | 180 |" in linux and "OVS" not in linux
    every, mixed = ovs.split("### Mixed: linux and Open vSwitch hosts")
    assert "--datapath ovs --save" in every and "](bench/flood-ovs.png)" in every
    assert "| 16 | flood-and-learn (ovs) | 24/24 | 180 |" in every
    assert "| 4 | 2 (2 ovs) | 10 | 61.5 | 99.0 |" in every  # no per-kind columns
    assert "--datapath mixed --save" in mixed and "(OVS hosts: h2, h4)" in mixed
    assert "| 8 | flood-and-learn (mixed) | 24/24 | 84 |" in mixed
    assert "linux p50 ms | linux max ms | ovs p50 ms | ovs max ms" in mixed
    assert "| 4 | 2 (1 linux, 1 ovs) | 10 | 61.5 | 99.0 | 50.0 | 90.0 | 51.0 | 91.0 |" in mixed
    for name in ("flood-ovs.json", "flood-mixed.json"):
        assert f"`{name}`" in text.split("## How these results")[1]


def test_ovs_results_not_measured_say_how(docs: Path) -> None:
    page = docs / "benchmarks.md"
    report.render(docs / "bench", page)
    text = page.read_text().split("## Broadcast reduction on Open vSwitch hosts")[1]
    for datapath in ("ovs", "mixed"):
        assert f"`l2pop bench flood --hosts 4,8,16 --datapath {datapath} --save`" in text


def test_replicas_table_and_plot(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    one = {**scale_result("postgresql", 300.0, 5.0), "replicas": 1,
           "agents_per_replica": {"r1": 1000}}  # fmt: skip
    two = {**scale_result("postgresql", 1500.0, None), "replicas": 2,
           "agents_per_replica": {"r1": 489, "r2": 511}, "failover_killed": "r1",
           "failover_agents_moved": 489, "failover_resync_s": 3.31}  # fmt: skip
    two["max_rate_p99_le_1s"] = 50.0
    two["rates"][2]["failed_calls"] = 20
    for row in two["rates"]:
        row["server_rss_mib_per_replica"] = [400.0, 410.5]
    cfg = {**one["config"], "replicas": [1, 2]}
    result = {"config": cfg, "passes": [one, two]}
    save(bench, "scale-replicas", result,
         "l2pop bench scale --engine postgresql --replicas 1,2 --save")  # fmt: skip
    page = tmp_path / "benchmarks.md"
    written = report.render(bench, page)
    assert "scale-replicas.png" in {p.name for p in written}
    assert (bench / "scale-replicas.png").read_bytes().startswith(PNG_MAGIC)
    text = page.read_text()
    assert "### Replicas" in text and "p50 / p99 ms at 100/s" in text
    [row1] = [line for line in text.splitlines() if line.startswith("| 1 | r1: 1,000 |")]
    assert "45.0 / 300.0" in row1 and "100 /s" in row1 and "5.0 s restart" in row1
    [row2] = [line for line in text.splitlines() if line.startswith("| 2 | r1: 489, r2: 511 |")]
    assert "45.0 / 1,500.0 (20 of 2,020 calls failed)" in row2 and "50 /s" in row2
    assert "3.3 s failover (489 agents moved)" in row2 and "400.0, 410.5" in row2
    assert "![convergence p50/p99 vs churn rate per replica count]" in text
