"""The ovs datapath on a private Open vSwitch (userspace datapath) in a throwaway namespace.

What the contract suite cannot see: ARP and ND are answered by flows (DAD never), an
unchanged flow is never rewritten (its packet counter survives a resync and an agent
restart), a restart of ovs-vswitchd (which loses every flow) is noticed and repaired, ports
plugged the os-vif way are recognised, a device that goes takes its flows with it, and
everything l2pop does not own (flows of another cookie, other bridges and ports) is left
alone.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from datapath_harness import OvsRig, ip, mac, resolves, vm, vm_ip

from l2pop.datapath import _pipeline as pl
from l2pop.datapath.ovs import OvsDatapath
from l2pop.model import ArpSuppression, NetworkTables, diff_state

pytestmark = pytest.mark.root

NS, PROXY, OFF = ArpSuppression.NEIGH_SUPPRESS, ArpSuppression.PROXY, ArpSuppression.OFF
V2, V3 = "192.0.2.2", "192.0.2.3"
VM_PORT = "vm000001"


@pytest.fixture
def rig() -> Iterator[OvsRig]:
    with ExitStack() as stack:
        yield OvsRig(stack)


def ovs_of(rig: OvsRig) -> OvsDatapath:
    assert isinstance(rig.datapath, OvsDatapath)
    return rig.datapath


def net(mode: ArpSuppression = NS, n: int = 4, vni: int = 100, nid: str = "net-a") -> NetworkTables:
    fdb = {mac(i): (V2 if i % 2 else V3) for i in range(n)}
    neigh = {vm_ip(i): mac(i) for i in range(n)}
    return NetworkTables(nid, vni, mode, frozenset({V2, V3}), fdb, neigh)


def converge(dp: OvsDatapath, desired: dict[str, NetworkTables]) -> None:
    dp.apply(diff_state(dp.dump(), desired))
    assert dp.dump() == desired


def counters(rig: OvsRig) -> dict[str, int]:
    """n_packets of every l2pop entry flow, keyed by its table and match."""
    out = rig.ovs.ofctl(rig.bridge, "dump-flows", f"cookie={pl.cookie(pl.KIND_NETWORK, 100):#x}/-1")
    found = {}
    for line in out.splitlines():
        m = re.search(r"n_packets=(\d+).*?(table=\d+, )?.*priority=100,(\S+)", line)
        if m:
            found[f"{m.group(2) or ''}{m.group(3)}"] = int(m.group(1))
    return found


@pytest.mark.parametrize("mode", [NS, PROXY, OFF])
def test_arp_and_nd_are_answered_by_flows(rig: OvsRig, mode: ArpSuppression) -> None:
    """No remote host exists: an answer can only come from the bridge's responder flows."""
    dp = ovs_of(rig)
    assert rig.netns is not None
    converge(dp, {"net-a": net(mode)})
    with vm(rig.netns, dp.tap_name(VM_PORT), "198.19.0.200/16", "2001:db8::200/64") as vm_ns:
        dp.wire(VM_PORT, "net-a", "02:00:00:00:00:aa")
        wait = 3.0 if mode is not OFF else 0.5
        assert resolves(vm_ns, vm_ip(2), wait) == (mac(2) if mode is not OFF else None)
        assert resolves(vm_ns, vm_ip(3), wait) == (mac(3) if mode is not OFF else None)
        assert resolves(vm_ns, "198.19.9.9", 0.3) is None  # no entry: nobody answers


def test_unchanged_flows_keep_their_counters_through_resync_and_agent_restart(
    rig: OvsRig,
) -> None:
    dp = ovs_of(rig)
    assert rig.netns is not None
    desired = {"net-a": net(NS)}
    converge(dp, desired)
    with vm(rig.netns, dp.tap_name(VM_PORT), "198.19.0.200/16", "2001:db8::200/64") as vm_ns:
        dp.wire(VM_PORT, "net-a", "02:00:00:00:00:aa")
        assert resolves(vm_ns, vm_ip(2), 3.0) == mac(2)  # ARP responder, then fdb -> VTEP
        before = {k: v for k, v in counters(rig).items() if v > 0}
        assert len(before) >= 2, before  # the responder flow and the unicast flow counted

        assert diff_state(dp.dump(), desired) == []  # a resync finds nothing to do
        dp.apply(diff_state(dp.dump(), desired))
        dp.close()  # the agent stops...
        again = OvsDatapath(
            "192.0.2.1",
            db=f"unix:{rig.ovs.db_sock}",
            rundir=str(rig.ovs.dir),
            datapath_type="netdev",
            netns=rig.netns,
        )
        try:  # ...and starts again: reconciles, wires its port again
            assert again.dump() == desired
            again.apply(diff_state(again.dump(), desired))
            again.wire(VM_PORT, "net-a", "02:00:00:00:00:aa")
            after = counters(rig)
            assert all(after[k] >= v for k, v in before.items()), (before, after)
            assert resolves(vm_ns, vm_ip(2), 3.0) == mac(2)
        finally:
            again.close()


def test_vswitchd_restart_is_noticed_and_repaired(rig: OvsRig) -> None:
    dp = ovs_of(rig)
    assert rig.netns is not None
    fired = threading.Event()
    dp.set_port_listener(fired.set)
    desired = {"net-a": net(NS), "net-g": net(PROXY, vni=101, nid="net-g")}
    desired["net-g"] = NetworkTables(
        "net-g", 101, PROXY, frozenset({V2}), {mac(9): V2}, {}, pl.Encap.GRE
    )
    converge(dp, desired)
    assert dp.state_lost() is False
    rig.ovs.restart_vswitchd()
    deadline = time.monotonic() + 5
    while not dp.state_lost():
        assert time.monotonic() < deadline, "the restart went unnoticed"
        time.sleep(0.05)
    assert fired.is_set()
    held = dp.dump()  # flows and groups are gone: every network is damaged
    assert {t.vni for t in held.values()} == {0}
    converge(dp, desired)


def test_os_vif_plugged_port_is_recognised_and_a_gone_device_loses_its_flows(
    rig: OvsRig,
) -> None:
    dp = ovs_of(rig)
    assert rig.netns is not None
    converge(dp, {"net-a": net(NS)})
    # Nova/os-vif: the device is on the bridge already, named as it likes, with iface-id
    ip(rig.netns, "link", "add", "qvo-nova1", "type", "veth", "peer", "name", "qvb-nova1")
    ip(rig.netns, "link", "set", "qvo-nova1", "up")
    rig.ovs.vsctl(
        "add-port", rig.bridge, "qvo-nova1", "--", "set", "interface", "qvo-nova1",
        "external_ids:iface-id=port-nova", "external_ids:attached-mac=02:00:00:00:00:bb",
    )  # fmt: skip
    assert dp.plugged(["port-nova", "port-other"]) == {"port-nova"}
    dp.wire("port-nova", "net-a", "02:00:00:00:00:bb")
    ofport = int(rig.ovs.vsctl("get", "interface", "qvo-nova1", "ofport"))
    flows = rig.ovs.ofctl(rig.bridge, "dump-flows", f"table=0,in_port={ofport}")
    assert "load:0x64->OXM_OF_METADATA[]" in flows  # its traffic enters net-a (VNI 100)

    ip(rig.netns, "link", "del", "qvo-nova1")  # the VM is gone
    deadline = time.monotonic() + 5
    while rig.ovs.ofctl(rig.bridge, "dump-flows", f"table=0,in_port={ofport}").count("cookie"):
        assert time.monotonic() < deadline, "the gone port's flows stayed"
        time.sleep(0.05)
    assert dp.plugged(["port-nova"]) == set()
    # os-vif's port row is not ours: it stays (only l2pop's own rows are ever removed)
    assert "qvo-nova1" in rig.ovs.vsctl("list-ports", rig.bridge).split()


def test_flows_bridges_and_ports_of_others_are_never_touched(rig: OvsRig) -> None:
    dp = ovs_of(rig)
    rig.ovs.vsctl("add-br", "br-other", "--", "set", "bridge", "br-other", "datapath_type=netdev")
    rig.ovs.ofctl("br-other", "add-flow", "priority=5,actions=drop")
    hand = "table=40,priority=300,cookie=0x1234,dl_dst=02:ff:00:00:00:01,actions=drop"
    rig.ovs.ofctl(rig.bridge, "add-flow", hand)
    rig.ovs.vsctl(
        "add-port", rig.bridge, "hand0", "--", "set", "interface", "hand0", "type=internal"
    )
    converge(dp, {"net-a": net(NS), "net-b": net(OFF, vni=101, nid="net-b")})
    converge(dp, {"net-a": net(PROXY, n=8)})  # mode switch, entries added, a leave
    converge(dp, {})
    assert "cookie=0x1234" in rig.ovs.ofctl(rig.bridge, "dump-flows", "table=40")
    assert "priority=5" in rig.ovs.ofctl("br-other", "dump-flows")
    assert "hand0" in rig.ovs.vsctl("list-ports", rig.bridge).split()
    assert dp.dump() == {}
