"""What the overlay suites share (``test_overlay.py`` on linux hosts, ``test_overlay_ovs.py``
on Open vSwitch and mixed hosts): skipping without root or tools, picking VMs and ping pairs,
and the one check that a host's datapath holds what the server wants.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from l2pop.testbed.bed import Testbed
from l2pop.testbed.nodes import Vm

TOOLS = ("ip", "bridge", "ping", "tcpdump")


def need_root(*tools: str) -> None:
    """Skip unless root with iproute2, ping, tcpdump and ``tools``."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, bridge and vxlan devices)")
    missing = [t for t in (*TOOLS, *tools) if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)} (scripts/bootstrap installs them)")


def vms_of(bed: Testbed, network: str) -> list[Vm]:
    return [vm for vm in bed.vms.values() if vm.network.name == network]


def all_pairs(vms: list[Vm], family: int | None = None) -> list[tuple[Vm, str]]:
    """(VM, address) for every VM and every address of every other VM (of ``family``)."""
    out = []
    for a in vms:
        for b in vms:
            if a is not b:
                out += [(a, ip) for ip in b.ips if family is None or (family == 6) == (":" in ip)]
    return out


def failed(pairs: list[tuple[Vm, str]], results: list[bool], *, want: bool = True) -> list[str]:
    """The pairs whose ping did not give ``want``, as ``vm -> address``."""
    return [f"{vm.name} -> {ip}" for (vm, ip), ok in zip(pairs, results, strict=True) if ok != want]


def assert_tables_match_server(bed: Testbed, host: str) -> None:
    """``host``'s datapath, read back independently of it, holds exactly the server's
    desired state: the networks, each one's mode, flood list, FDB and neighbours. On a
    linux host in neigh_suppress mode every FDB MAC also has its bridge ``static`` entry
    (what makes the bridge answer for it); an OVS host has no such thing."""
    desired = {n.vni: n for n in bed.host_fdb(host).networks}
    held = bed.kernel_tables(host)
    assert set(held) == set(desired), f"{host}: networks {set(held)} != {set(desired)}"
    for vni, want in desired.items():
        got = held[vni]
        assert got.mode == want.arp_suppression, f"{host} vni {vni}"
        assert got.flood == sorted(want.flood), f"{host} vni {vni}"
        assert got.fdb == {e.mac: e.vtep for e in want.fdb}, f"{host} vni {vni}"
        assert got.neigh == {e.ip: e.mac for e in want.neigh}, f"{host} vni {vni}"
        if got.mode == "neigh_suppress" and bed.kind_of(host).name == "linux":
            assert got.static == sorted(got.fdb), f"{host} vni {vni}"


def in_sync(bed: Testbed, host: str) -> bool:
    return bed.host_status(host).in_sync


def dead_pid() -> int:
    """A pid that is not running (a child that has exited and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
