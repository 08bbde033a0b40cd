"""``l2pop bench kernel`` and ``l2pop.bench.flood`` at smoke size on real kernels (root).

The kernel benchmark runs as a user runs it (the CLI, ``--json``), on the linux datapath
and on the OVS one (skipped when Open vSwitch is not installed); the flood benchmark on
4 hosts checks the point of it all: no ARP broadcast crosses the underlay with l2pop, while
flood-and-learn sends them to every host, members or not. Every namespace is deleted by
name at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from l2pop.testbed import netns as nsx
from l2pop.testbed import ovs

pytestmark = pytest.mark.root


def _need_root(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, bridge and vxlan devices)")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)} (scripts/bootstrap installs them)")


def _new_throwaways(before: set[str]) -> set[str]:
    """The benchmarks' throwaway namespaces (``l2pbench-PID-HEX``) not there ``before``;
    only those, since other runs on the machine make and delete namespaces of their own."""
    return {n for n in set(nsx.list_netns()) - before if n.startswith("l2pbench-")}


def test_kernel_smoke_json() -> None:
    _need_root("ip", "bridge")
    before = set(nsx.list_netns())
    proc = subprocess.run(
        [sys.executable, "-m", "l2pop", "bench", "kernel", "--entries", "500", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    for key in (
        "install_entries_per_s",
        "iproute2_batch_entries_per_s",
        "reconcile_unchanged_s",
        "remove_entries_per_s",
        "per_process_entries_per_s",
        "ratio_to_iproute2_batch",
    ):
        assert key in result, key  # fmt: skip
    assert result["entries"] == 1000
    assert result["install_entries_per_s"] > 0 and result["iproute2_batch_entries_per_s"] > 0
    assert result["per_process_entries_per_s"] < result["iproute2_batch_entries_per_s"]
    assert 0 < result["reconcile_unchanged_s"] < 5
    assert not _new_throwaways(before)  # the throwaway namespace is gone


def _bench_ovs_daemons() -> set[int]:
    """Pids of OVS daemons whose command line names a ``kernel --datapath ovs`` run's
    directory (read only: to check that a run stops its own)."""
    out = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"l2pop-bench-ovs-" in cmdline and any(d.encode() in cmdline for d in ovs.DAEMONS):
            out.add(int(proc.name))
    return out


def test_kernel_ovs_smoke_json() -> None:
    _need_root("ip")
    if not ovs.available():
        pytest.skip(f"Open vSwitch is not installed (missing {', '.join(ovs.missing())})")
    before, daemons = set(nsx.list_netns()), _bench_ovs_daemons()
    proc = subprocess.run(
        [sys.executable, "-m", "l2pop", "bench", "kernel", "--datapath", "ovs", "--entries",
         "50", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["entries"] == 100 and result["datapath_type"] == "netdev"
    assert result["per_process_flows"] == 100  # the whole table: fewer than the sample size
    for key in ("install_entries_per_s", "reinstall_entries_per_s", "remove_entries_per_s",
                "bundle_flows_per_s", "per_process_flows_per_s"):  # fmt: skip
        assert result[key] > 0, key
    assert result["per_process_flows_per_s"] < result["bundle_flows_per_s"]
    assert 0 < result["reconcile_unchanged_s"] < 5 and 0 < result["dump_flows_s"] < 5
    assert result["table_flows"] >= 100  # the entries' flows and the network's own
    for stage in ("start", "installed", "end"):
        assert set(result["rss_kib"][stage]) == {"ovs-vswitchd", "ovsdb-server", "python"}
    assert set(result["rss_kib"]["python_peak"]) == {"datapath", "baselines"}
    assert not _new_throwaways(before)  # the throwaway namespace is gone
    assert _bench_ovs_daemons() <= daemons  # both daemons stopped


def test_flood_smoke_l2pop_sends_no_arp_broadcast(tmp_path: Path) -> None:
    _need_root("ip", "bridge", "ping", "tcpdump")
    from l2pop.bench import flood

    before = set(nsx.list_netns())
    lines: list[str] = []
    result = flood.run((4,), progress=lines.append, workdir=tmp_path)
    assert set(nsx.list_netns()) <= before  # every namespace deleted by name
    [row] = result["results"]
    l2pop, baseline = row["l2pop"], row["flood_and_learn"]
    pings = result["workload"]["pings"]
    assert l2pop["pings_ok"] == l2pop["pings"] == pings
    assert baseline["pings_ok"] == baseline["pings"] == pings
    assert l2pop["arp_broadcast"] == 0
    assert baseline["arp_broadcast"] > 0
    assert l2pop["nd_multicast"] == 0 and l2pop["non_member_bum"] == 0
    assert baseline["bum"] > l2pop["bum"] and baseline["non_member_bum"] > 0
    # head-end replication: every ARP request is copied to each of the 3 other hosts
    assert baseline["arp_broadcast"] % 3 == 0
    assert any("flood-and-learn" in line for line in lines)
