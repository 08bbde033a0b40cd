"""The linux datapath on a real kernel, inside throwaway network namespaces (root).

What the contract suite cannot see: the devices and entries follow the recipe of docs/design.md, the
kernel really answers ARP/ND locally, foreign devices are left alone, reconciles never make
an unchanged entry blink, damaged networks are rebuilt, and tap devices are detected from
link events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from datapath_harness import (
    VTEP,
    LinuxRig,
    Rig,
    bridge,
    foreign_devices,
    ip,
    kernel_monitor,
    mac,
    need_root,
    resolves,
    vm,
    vm_ip,
)

from l2pop.datapath.linux import DatapathError, LinuxDatapath
from l2pop.model import ArpSuppression, NetworkDelta, NetworkTables, diff_state

pytestmark = pytest.mark.root

NS, PROXY, OFF = ArpSuppression.NEIGH_SUPPRESS, ArpSuppression.PROXY, ArpSuppression.OFF
V2, V3 = "192.0.2.2", "192.0.2.3"


@pytest.fixture
def rig() -> Iterator[Rig]:
    with ExitStack() as stack:
        yield LinuxRig(stack)


def linux(rig: Rig) -> LinuxDatapath:
    assert isinstance(rig.datapath, LinuxDatapath)
    return rig.datapath


def ns_of(rig: Rig) -> str:
    assert rig.netns is not None
    return rig.netns


def net(mode: ArpSuppression = NS, n: int = 4, vni: int = 100, nid: str = "net-a") -> NetworkTables:
    fdb = {mac(i): (V2, V3)[i % 2] for i in range(n)}
    neigh = {vm_ip(i): mac(i) for i in range(n)}
    return NetworkTables(nid, vni, mode, frozenset({V2, V3}), fdb, neigh)


def converge(rig: Rig, desired: dict[str, NetworkTables]) -> list[NetworkDelta]:
    deltas = diff_state(rig.datapath.dump(), desired)
    rig.datapath.apply(deltas)
    assert rig.datapath.dump() == desired
    return deltas


@pytest.mark.parametrize("mode", [NS, PROXY, OFF])
def test_devices_and_entries_follow_the_recipe(rig: Rig, mode: ArpSuppression) -> None:
    netns = ns_of(rig)
    converge(rig, {"net-a": net(mode, n=2)})
    vx = ip(netns, "-d", "link", "show", "vxlan-100")
    assert "vxlan id 100 local 192.0.2.1" in vx and "dstport 4789" in vx
    assert "nolearning" in vx and "master brvx-100" in vx and "alias net-a" in vx
    assert ("neigh_suppress on" in vx) == (mode is NS)
    assert ("learning off" in vx.split("bridge_slave")[1]) == (mode is NS)
    assert (" proxy " in vx) == (mode is PROXY)
    assert "alias net-a" in ip(netns, "link", "show", "brvx-100")
    fdb = bridge(netns, "fdb", "show", "dev", "vxlan-100")
    for vtep in (V2, V3):
        assert f"00:00:00:00:00:00 dst {vtep} self permanent" in fdb
    assert f"{mac(0)} dst {V2} self permanent" in fdb
    assert (f"{mac(0)} master brvx-100 static" in fdb) == (mode is NS)
    holder, other = ("vxlan-100", "brvx-100") if mode is PROXY else ("brvx-100", "vxlan-100")
    held = ip(netns, "neigh", "show", "dev", holder)
    assert f"{vm_ip(0)} lladdr {mac(0)} PERMANENT" in held
    assert f"{vm_ip(1)} lladdr {mac(1)} PERMANENT" in held
    assert "PERMANENT" not in ip(netns, "neigh", "show", "dev", other)


@pytest.mark.parametrize("mode", [NS, PROXY, OFF])
def test_arp_and_nd_are_answered_locally(rig: Rig, mode: ArpSuppression) -> None:
    """No remote host exists: an answer can only come from the local VTEP's table."""
    dp, netns = linux(rig), ns_of(rig)
    converge(rig, {"net-a": net(mode, n=4)})
    with vm(netns, "tapvm000001", "198.19.0.200/16", "2001:db8::200/64") as vm_ns:
        dp.wire("vm000001", "net-a")
        time.sleep(0.05)
        wait = 3.0 if mode is not OFF else 0.5
        assert resolves(vm_ns, vm_ip(2), wait) == (mac(2) if mode is not OFF else None)
        assert resolves(vm_ns, vm_ip(3), wait) == (mac(3) if mode is not OFF else None)


def test_foreign_devices_and_entries_are_never_touched(rig: Rig) -> None:
    netns = ns_of(rig)
    foreign_devices(netns)
    ip(netns, "link", "add", "brvx-7", "type", "veth", "peer", "name", "vxlan-7")  # wrong kind
    ip(netns, "link", "add", "brvx-8", "type", "bridge")  # our name, no alias: not reported
    before_fdb = bridge(netns, "fdb", "show", "dev", "fv0")
    before_neigh = ip(netns, "neigh", "show", "dev", "fbr0")
    assert rig.datapath.dump() == {}
    converge(rig, {"net-a": net(n=3)})
    assert set(rig.datapath.dump()) == {"net-a"}
    converge(rig, {})
    assert bridge(netns, "fdb", "show", "dev", "fv0") == before_fdb
    assert ip(netns, "neigh", "show", "dev", "fbr0") == before_neigh
    links = ip(netns, "-o", "link", "show")
    for name in ("fbr0", "fv0", "brvx-7", "vxlan-7", "brvx-8"):
        assert f" {name}" in links
    assert "brvx-100" not in links and "vxlan-100" not in links


def test_reconcile_never_blinks_unchanged_entries(rig: Rig) -> None:
    netns = ns_of(rig)
    foreign_devices(netns)
    n = 2000
    desired = net(NS, n=n)
    started = time.perf_counter()
    converge(rig, {"net-a": desired})
    install_s = time.perf_counter() - started
    assert (
        2 * n / install_s > 5_000
    )  # sanity only: bench.kernel measures, f"{2 * n / install_s:.0f} entries/s"
    keys = [*desired.fdb, *desired.neigh]
    with kernel_monitor(netns) as quiet:
        started = time.perf_counter()
        assert converge(rig, {"net-a": desired}) == []
        assert time.perf_counter() - started < 1.0
    assert quiet.mentioning(*keys) == []
    # one entry of each kind changes, one goes, one comes
    fdb = dict(desired.fdb)
    neigh = dict(desired.neigh)
    fdb[mac(10)] = "192.0.2.9"  # moved host
    del fdb[mac(11)]
    fdb[mac(99999)] = V2
    neigh[vm_ip(12)] = mac(13)
    del neigh[vm_ip(14)]
    changed = NetworkTables("net-a", 100, NS, desired.flood, fdb, neigh)
    with kernel_monitor(netns) as one:
        (delta,) = converge(rig, {"net-a": changed})
    assert len(delta.fdb_add) == 2 and len(delta.neigh_add) == 1
    touched = {mac(10), mac(11), mac(99999), vm_ip(12), vm_ip(14)}
    unchanged = [k for k in keys if k not in touched]
    others = [line for line in one.mentioning(*unchanged) if not set(line.split()) & touched]
    assert others == []
    assert one.mentioning(mac(10)) and one.mentioning(vm_ip(12))
    deleted = [line for line in one.lines if line.startswith("Deleted")]
    assert deleted and all(mac(11) in line or vm_ip(14) in line for line in deleted)


def test_damaged_network_is_rebuilt_by_a_reconcile(rig: Rig) -> None:
    netns = ns_of(rig)
    desired = {"net-a": net(PROXY, n=5), "net-b": net(NS, n=3, vni=101, nid="net-b")}
    converge(rig, desired)
    ip(netns, "link", "set", "vxlan-100", "down")
    ip(netns, "link", "set", "vxlan-101", "nomaster")
    damaged = rig.datapath.dump()
    assert {nid: (t.vni, t.entry_count()) for nid, t in damaged.items()} == {
        "net-a": (0, 0),
        "net-b": (0, 0),
    }
    converge(rig, desired)
    ip(netns, "link", "del", "vxlan-100")
    bridge(netns, "link", "set", "dev", "vxlan-101", "neigh_suppress", "off")  # NS, damaged
    dumped = rig.datapath.dump()
    assert dumped["net-a"].vni == 0 and dumped["net-b"].arp_suppression is OFF
    converge(rig, desired)
    # a damaged network that is no longer wanted is swept
    ip(netns, "link", "set", "brvx-101", "down")
    converge(rig, {"net-a": desired["net-a"]})
    assert "brvx-101" not in ip(netns, "link", "show")


def test_a_rebuilt_network_keeps_its_ports(rig: Rig) -> None:
    """Rebuilding a damaged network deletes its bridge; the taps on it go to the new one."""
    port = "0123456789abcdef"
    converge(rig, {"net-a": net(NS, n=2)})
    rig.plug(port)
    rig.datapath.wire(port, "net-a")
    ip(ns_of(rig), "link", "set", "brvx-100", "down")  # damaged: rebuilt by the reconcile
    converge(rig, {"net-a": net(NS, n=2)})
    assert rig.wired_to(port) == "net-a"


def test_a_restarted_datapath_reads_back_the_same_tables(rig: Rig) -> None:
    desired = {"net-a": net(NS, n=6), "net-b": net(PROXY, n=4, vni=101, nid="net-b")}
    converge(rig, desired)
    with LinuxDatapath(VTEP, netns=ns_of(rig)) as again:
        assert again.dump() == desired
        assert diff_state(again.dump(), desired) == []


def test_prefixes_keep_datapaths_apart(rig: Rig) -> None:
    converge(rig, {"net-a": net(n=2)})
    with LinuxDatapath(
        VTEP, netns=ns_of(rig), bridge_prefix="t2br", vxlan_prefix="t2vx", tap_prefix="t2t"
    ) as other:
        other.apply(diff_state({}, {"net-z": net(OFF, n=3, vni=200, nid="net-z")}))
        assert set(other.dump()) == {"net-z"}
        assert set(rig.datapath.dump()) == {"net-a"}
        assert "t2vx200" in ip(ns_of(rig), "link", "show")
        converge(rig, {})
        assert set(other.dump()) == {"net-z"}
    with pytest.raises(ValueError):
        LinuxDatapath(VTEP, netns=ns_of(rig), bridge_prefix="tapx")


def test_refused_entries_are_named_and_the_rest_applied(rig: Rig) -> None:
    converge(rig, {"net-a": net(OFF, n=2)})
    bad = "01:00:5e:00:00:01"  # the kernel refuses to replace-create a multicast MAC
    delta = NetworkDelta(
        "net-a", 100, OFF, fdb_add={bad: V2, mac(50): V3}, neigh_add={vm_ip(50): mac(50)}
    )
    with pytest.raises(DatapathError) as caught:
        rig.datapath.apply([delta])
    assert [entry for entry, _, _ in caught.value.failures] == [f"fdb {bad}"]
    got = rig.datapath.dump()["net-a"]
    assert got.fdb[mac(50)] == V3 and got.neigh[vm_ip(50)] == mac(50)


def test_tap_devices_are_detected_from_link_events(rig: Rig) -> None:
    dp, netns = linux(rig), ns_of(rig)
    converge(rig, {"net-a": net(n=1)})
    port = "0123456789abcdef"  # a port id; its tap is tap + its first 11 characters
    tap = "tap0123456789a"
    fired = threading.Event()
    dp.set_port_listener(fired.set)
    ip(netns, "link", "add", "unrelated0", "type", "bridge")
    assert not fired.wait(0.3), "an unrelated device is no port"
    assert dp.plugged([port, "ffffffffffff"]) == set()
    # the lowest MAC there is: a bridge that followed its ports' MACs would change address
    # and the kernel would flush its neighbour table
    ip(
        netns,
        "link",
        "add",
        tap,
        "address",
        "00:00:00:00:00:01",
        "type",
        "veth",
        "peer",
        "name",
        "peer0",
    )
    assert fired.wait(2), "no callback for a new tap"
    assert dp.plugged([port, "ffffffffffff"]) == {port}
    fired.clear()
    dp.wire(port, "net-a")
    dp.wire(port, "net-a")  # idempotent
    shown = ip(netns, "link", "show", tap)
    assert "master brvx-100" in shown and ",UP" in shown
    assert dp.dump() == {"net-a": net(n=1)}
    assert fired.wait(2), "no callback for a tap that changed"
    fired.clear()
    ip(netns, "link", "del", tap)
    assert fired.wait(2), "no callback for a tap that went"
    assert dp.plugged([port]) == set()
    dp.wire(port, "net-a")  # gone: nothing to do
    with pytest.raises(DatapathError):
        ip(netns, "link", "add", tap, "type", "veth", "peer", "name", "peer0")
        dp.wire(port, "net-unknown")
    dp.close()
    dp.close()


def test_kernel_benchmark_runs_small() -> None:
    from l2pop.bench import kernel

    need_root()
    figures = kernel.run(100)
    assert figures["entries"] == 200
    for key in (
        "install_entries_per_s",
        "iproute2_batch_entries_per_s",
        "reconcile_unchanged_s",
        "remove_entries_per_s",
        "per_process_entries_per_s",
        "ratio_to_iproute2_batch",
    ):
        assert figures[key] > 0, key
