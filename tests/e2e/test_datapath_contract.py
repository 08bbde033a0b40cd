"""The ``abc.Datapath`` contract, run against every implementation (``IMPLEMENTATIONS`` in
``datapath_harness``: the memory fake and the linux datapath in a throwaway namespace).

Tables: each step applies deltas and checks that ``dump()`` equals the model's
``apply_deltas`` of the same deltas: every implementation must agree with the reference, and
a full reconcile of an up-to-date datapath must find nothing to do. Local ports: a VM's device
comes and goes (the rig's ``plug``/``unplug``), ``plugged``, ``wire`` and the port listener
follow the semantics of ``datapath/abc.py``, and none of it changes what ``dump`` shows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack

import pytest
from datapath_harness import IMPLEMENTATIONS, Rig, mac, vm_ip

from l2pop.datapath.abc import Datapath, DatapathError
from l2pop.model import (
    ArpSuppression,
    Encap,
    HostState,
    NetworkDelta,
    NetworkTables,
    apply_deltas,
    diff_network,
    diff_state,
)

NS, PROXY, OFF = ArpSuppression.NEIGH_SUPPRESS, ArpSuppression.PROXY, ArpSuppression.OFF
V2, V3, V4 = "192.0.2.2", "192.0.2.3", "192.0.2.4"


@pytest.fixture(params=IMPLEMENTATIONS)
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    with ExitStack() as stack:
        yield request.param(stack)


class Tracker:
    """Applies deltas to a datapath and to the model, and compares the two."""

    def __init__(self, rig: Rig) -> None:
        self.dp = rig.datapath
        self.expected: HostState = {}

    def apply(self, *deltas: NetworkDelta) -> None:
        self.dp.apply(deltas)
        self.expected = apply_deltas(self.expected, deltas)
        assert self.dp.dump() == self.expected
        assert diff_state(self.dp.dump(), self.expected) == []

    def converge(self, desired: HostState) -> list[NetworkDelta]:
        """A full reconcile: diff the dump against ``desired`` and apply the difference."""
        deltas = diff_state(self.dp.dump(), desired)
        self.apply(*deltas)
        assert self.dp.dump() == desired
        return deltas


def tables(
    nid: str = "net-a",
    vni: int = 100,
    mode: ArpSuppression = NS,
    n: int = 4,
    vteps: Sequence[str] = (V2, V3),
) -> NetworkTables:
    fdb = {mac(i): vteps[i % len(vteps)] for i in range(n)}
    neigh = {vm_ip(i): mac(i) for i in range(n)}
    return NetworkTables(nid, vni, mode, frozenset(vteps), fdb, neigh)


@pytest.mark.parametrize("mode", [NS, PROXY, OFF])
def test_create_then_dump_equals_applied(rig: Rig, mode: ArpSuppression) -> None:
    t = Tracker(rig)
    t.converge({"net-a": tables(mode=mode, n=6), "net-b": tables("net-b", 101, OFF, 2)})
    assert t.converge(t.expected) == []


def test_entries_add_replace_and_conditional_remove(rig: Rig) -> None:
    t = Tracker(rig)
    base = tables(n=4)
    t.converge({"net-a": base})
    delta = NetworkDelta  # shorthand
    # replace: a MAC moves to another VTEP, an IP to another MAC; adding what exists is fine
    t.apply(
        delta(
            "net-a",
            100,
            NS,
            fdb_add={mac(0): V4, mac(1): base.fdb[mac(1)]},
            neigh_add={vm_ip(0): mac(9), vm_ip(2): mac(2)},
            flood_add=frozenset({V4, V2}),
        )
    )
    assert t.expected["net-a"].fdb[mac(0)] == V4
    # conditional removals: stale values (the entry moved on) change nothing
    t.apply(delta("net-a", 100, NS, fdb_remove={mac(0): V2}, neigh_remove={vm_ip(0): mac(0)}))
    assert mac(0) in t.expected["net-a"].fdb and vm_ip(0) in t.expected["net-a"].neigh
    # matching values remove; absent entries are no error
    t.apply(
        delta(
            "net-a",
            100,
            NS,
            fdb_remove={mac(0): V4, mac(7): V2},
            neigh_remove={vm_ip(0): mac(9), vm_ip(1): mac(1), vm_ip(8): mac(8)},
            flood_remove=frozenset({V3, "192.0.2.99"}),
        )
    )
    net = t.expected["net-a"]
    assert mac(0) not in net.fdb and vm_ip(1) not in net.neigh and V3 not in net.flood
    # remove + add of the same key in one delta: the add wins (a move, not a blink)
    t.apply(delta("net-a", 100, NS, fdb_remove={mac(1): V3}, fdb_add={mac(1): V2}))
    assert t.expected["net-a"].fdb[mac(1)] == V2


def test_many_removals_use_the_dump_path(rig: Rig) -> None:
    t = Tracker(rig)
    t.converge({"net-a": tables(n=80)})
    gone = {mac(i): tables(n=80).fdb[mac(i)] for i in range(0, 80, 2)}
    gone[mac(1)] = "192.0.2.77"  # stale: stays
    neigh_gone = {vm_ip(i): mac(i) for i in range(40)}
    t.apply(NetworkDelta("net-a", 100, NS, fdb_remove=gone, neigh_remove=neigh_gone))
    assert len(t.expected["net-a"].fdb) == 40 and len(t.expected["net-a"].neigh) == 40


@pytest.mark.parametrize(
    ("old", "new"),
    [(NS, PROXY), (PROXY, NS), (NS, OFF), (OFF, NS), (PROXY, OFF), (OFF, PROXY)],
)
def test_mode_switch_keeps_the_entries(rig: Rig, old: ArpSuppression, new: ArpSuppression) -> None:
    t = Tracker(rig)
    t.converge({"net-a": tables(mode=old, n=6)})
    deltas = t.converge({"net-a": tables(mode=new, n=6)})
    assert [d.arp_suppression for d in deltas] == [new]
    # a switch together with entry changes
    t.converge({"net-a": tables(mode=old, n=8, vteps=(V3, V4))})


def test_vni_change_keeps_the_entries(rig: Rig) -> None:
    t = Tracker(rig)
    t.converge({"net-a": tables(vni=100)})
    t.converge({"net-a": tables(vni=200)})


def test_leave_removes_the_network(rig: Rig) -> None:
    t = Tracker(rig)
    t.converge({"net-a": tables(), "net-b": tables("net-b", 101)})
    t.apply(NetworkDelta("net-a", 100, NS, leave=True))
    assert set(t.expected) == {"net-b"}
    t.apply(NetworkDelta("net-a", 100, NS, leave=True))  # leaving twice is harmless
    t.converge({})
    assert rig.datapath.dump() == {}


def test_network_reuses_a_vni_another_left(rig: Rig) -> None:
    t = Tracker(rig)
    t.converge({"net-b": tables("net-b", 100)})
    # net-b gave up VNI 100 and net-a got it; deltas come sorted by id: net-a first
    t.converge({"net-a": tables("net-a", 100, n=3)})


# -- local ports -----------------------------------------------------------------------------

#: port ids as the server makes them; their taps (linux) differ in the first 11 characters
P = "0b1f9a2e-71c4-4e55-9c1e-5b7c8f3a0d11"
Q = "7d2e4c1a-93b8-4f02-8e6d-1a2b3c4d5e66"


class Listener:
    """The port listener as an event; ``settled`` waits for a call and then for quiet (calls
    may come from another thread, several per change)."""

    def __init__(self, dp: Datapath) -> None:
        self._fired = threading.Event()
        dp.set_port_listener(self._fired.set)

    def settled(self) -> None:
        assert self._fired.wait(3), "no port listener call"
        self._fired.clear()
        while self._fired.wait(0.1):
            self._fired.clear()


def test_the_interface_is_complete(rig: Rig) -> None:
    dp = rig.datapath
    assert isinstance(dp, Datapath)
    assert isinstance(dp.name, str) and dp.name and isinstance(dp.blocking, bool)
    assert dp.dump() == {} and dp.plugged([P, Q]) == set()
    dp.close()
    dp.close()  # idempotent


def test_plug_wire_and_unplug_a_port(rig: Rig) -> None:
    dp = rig.datapath
    t = Tracker(rig)
    t.converge({"net-a": tables(), "net-b": tables("net-b", 101, OFF, 2)})
    listener = Listener(dp)

    # absent: wiring does nothing and is no error, whatever the network
    dp.wire(P, "net-a")
    dp.wire(P, "net-unknown")
    assert dp.plugged([P, Q]) == set() and rig.wired_to(P) is None

    rig.plug(P)
    listener.settled()
    rig.plug(P)  # idempotent
    assert dp.plugged([P, Q]) == {P}
    assert rig.wired_to(P) is None  # present, on no bridge until wired

    dp.wire(P, "net-a")
    dp.wire(P, "net-a")  # idempotent
    assert rig.wired_to(P) == "net-a"
    dp.wire(P, "net-b")  # moves
    assert rig.wired_to(P) == "net-b"
    dp.wire(P, "net-a")
    with pytest.raises(DatapathError) as caught:
        dp.wire(P, "net-unknown")
    assert [entry for entry, _, _ in caught.value.failures] == [f"port {P}"]
    assert rig.wired_to(P) == "net-a"
    assert dp.dump() == t.expected  # ports are not entries; no neighbour was flushed

    listener.settled()  # the wiring itself may have been reported: drain it
    rig.unplug(P)
    listener.settled()
    rig.unplug(P)  # idempotent
    assert dp.plugged([P, Q]) == set() and rig.wired_to(P) is None
    dp.wire(P, "net-a")  # gone: nothing to do
    rig.plug(P)  # back, and unwired: the agent wires it again
    listener.settled()
    assert dp.plugged([P]) == {P} and rig.wired_to(P) is None
    assert dp.dump() == t.expected


def test_wiring_survives_every_apply_but_leave(rig: Rig) -> None:
    dp = rig.datapath
    t = Tracker(rig)
    t.converge({"net-a": tables(mode=NS), "net-b": tables("net-b", 101, OFF, 2)})
    rig.plug(P)
    rig.plug(Q)
    dp.wire(P, "net-a")
    dp.wire(Q, "net-b")

    def wiring() -> tuple[str | None, str | None]:
        return rig.wired_to(P), rig.wired_to(Q)

    t.converge({"net-a": tables(mode=NS, n=6, vteps=(V3, V4)), "net-b": t.expected["net-b"]})
    assert wiring() == ("net-a", "net-b")
    for mode in (PROXY, OFF, NS):  # in place, or a rebuild (linux: to and from proxy)
        t.converge({"net-a": tables(mode=mode, n=6), "net-b": t.expected["net-b"]})
        assert wiring() == ("net-a", "net-b"), mode

    t.apply(NetworkDelta("net-a", 100, NS, leave=True))
    assert wiring() == (None, "net-b")
    assert dp.plugged([P, Q]) == {P, Q}  # the device stays; only its bridge went
    with pytest.raises(DatapathError):
        dp.wire(P, "net-a")
    t.converge({"net-a": tables(), "net-b": t.expected["net-b"]})
    assert wiring() == (None, "net-b")  # a network made again has no ports yet
    dp.wire(P, "net-a")
    assert wiring() == ("net-a", "net-b")


def test_unwire_and_sweep_ports_take_ports_off_their_network(rig: Rig) -> None:
    dp = rig.datapath
    t = Tracker(rig)
    t.converge({"net-a": tables(), "net-b": tables("net-b", 101, OFF, 2)})
    rig.plug(P)
    rig.plug(Q)
    dp.wire(P, "net-a", "02:00:00:00:00:aa")
    dp.wire(Q, "net-b", "02:00:00:00:00:bb")
    dp.unwire(P)
    dp.unwire(P)  # idempotent
    assert (rig.wired_to(P), rig.wired_to(Q)) == (None, "net-b")
    assert dp.plugged([P, Q]) == {P, Q}  # the device stays; only its network went
    dp.wire(P, "net-a", "02:00:00:00:00:aa")
    dp.sweep_ports([P])  # Q is no longer bound here
    assert (rig.wired_to(P), rig.wired_to(Q)) == ("net-a", None)
    dp.sweep_ports([])
    assert (rig.wired_to(P), rig.wired_to(Q)) == (None, None)
    dp.unwire("never-plugged")
    assert dp.dump() == t.expected


def test_encaps_carried_are_dumped_as_applied_and_others_refused(rig: Rig) -> None:
    """``Datapath.encaps``: every datapath carries VXLAN; a network of an encap it carries is
    dumped with that encap, one it does not is refused naming ``encap E`` and not created."""
    dp = rig.datapath
    assert Encap.VXLAN in dp.encaps
    for vni, encap in enumerate(Encap, start=300):
        t = NetworkTables(f"net-{encap.value}", vni, NS, frozenset({V2}), {mac(1): V2}, {}, encap)
        delta = diff_network(None, t)
        assert delta is not None
        if encap in dp.encaps:
            dp.apply([delta])
            assert dp.dump()[t.network_id] == t
        else:
            with pytest.raises(DatapathError) as err:
                dp.apply([delta])
            assert err.value.failures[0][0] == f"encap {encap.value}"
            assert t.network_id not in dp.dump()
