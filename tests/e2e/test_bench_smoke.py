"""``l2pop bench kernel`` and ``l2pop.bench.flood`` at smoke size on real kernels (root).

The kernel benchmark runs as a user runs it (the CLI, ``--json``), on the linux datapath
and on the OVS one (skipped when Open vSwitch is not installed); the flood benchmark on
4 hosts checks the point of it all: no ARP broadcast crosses the underlay with l2pop, while
flood-and-learn sends them to every host, members or not; on linux hosts, on Open vSwitch
hosts and on a mixed testbed (skipped without Open vSwitch), where activation is timed to
OVS flows too. Every namespace is deleted by name at the end, every OVS daemon by pid.
"""

from __future__ import annotations

import json
import os
import re
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


def _running_under(workdir: Path) -> list[str]:
    """Command lines of running processes that name ``workdir`` (its OVS daemons have
    their database, sockets and logs there)."""
    out = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(workdir) in cmdline:
            out.append(cmdline)
    return out


def _left_behind(progress: list[str]) -> list[str]:
    """Namespaces still there of the runs whose prefixes the benchmark's progress named
    (others may run benchmarks on this machine meanwhile)."""
    prefixes = [m.group(1) for line in progress if (m := re.search(r"run prefix (\S+?);", line))]
    assert prefixes, "the benchmark named no run prefix"
    return [ns for ns in nsx.list_netns() if any(ns.startswith(p) for p in prefixes)]


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

    lines: list[str] = []
    result = flood.run((4,), progress=lines.append, workdir=tmp_path)
    assert not _left_behind(lines)  # every namespace deleted by name
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


@pytest.mark.parametrize("datapath", ["ovs", "mixed"])
def test_flood_smoke_on_ovs_hosts(tmp_path: Path, datapath: str) -> None:
    _need_root("ip", "bridge", "ping", "tcpdump", "ethtool", "stdbuf")
    if not ovs.available():
        pytest.skip(f"Open vSwitch is not installed (missing {', '.join(ovs.missing())})")
    from l2pop.bench import flood

    lines: list[str] = []
    result = flood.run((4,), progress=lines.append, workdir=tmp_path, datapath=datapath)
    assert not _left_behind(lines)  # every namespace deleted by name
    assert not _running_under(tmp_path)  # every OVS daemon and monitor stopped
    assert result["datapath"] == datapath
    assert result["kinds"]["4"] == (
        {"ovs": ["h1", "h2", "h3", "h4"]}
        if datapath == "ovs"
        else {"linux": ["h1", "h3"], "ovs": ["h2", "h4"]}
    )
    [row] = result["results"]
    l2pop, baseline = row["l2pop"], row["flood_and_learn"]
    pings = result["workload"]["pings"]
    assert l2pop["pings_ok"] == l2pop["pings"] == pings
    assert baseline["pings_ok"] == baseline["pings"] == pings
    assert l2pop["arp_broadcast"] == l2pop["nd_multicast"] == l2pop["bum"] == 0
    assert l2pop["non_member_bum"] == l2pop["non_member_packets"] == 0
    assert baseline["arp_broadcast"] > 0 and baseline["non_member_bum"] > 0
    assert baseline["arp_broadcast"] % 3 == 0  # a copy to each other host, OVS or linux
    # net1 is h1, h2, h3: the VM is on h1, its remote members h2 and h3
    act = l2pop["activation"]
    kinds = {"ovs": 2} if datapath == "ovs" else {"linux": 1, "ovs": 1}
    assert act["remote_kinds"] == kinds and set(act["by_kind"]) == set(kinds)
    assert 0 < act["min_ms"] <= act["p50_ms"] <= act["max_ms"] < 10_000
    assert act["max_ms"] == max(k["max_ms"] for k in act["by_kind"].values())
    label = result["baseline"]["label"]
    assert label.startswith("flood-and-learn") and any(label in line for line in lines)
