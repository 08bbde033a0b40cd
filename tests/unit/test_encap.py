"""A network's encapsulation (docs/adr/0017-network-encap.md): the input rule, the binding
rule, the digest's header entry, the hello's announcement, and an agent whose datapath cannot
carry a network it is sent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import msgspec
import pytest
from test_agent_reconciler import M2, M3, V2, V3, local, snapshot, tables

from l2pop.agent.reconciler import RETRY_BASE_S, Reconciler
from l2pop.datapath.abc import DatapathError
from l2pop.datapath.memory import MemoryDatapath
from l2pop.model import (
    ArpSuppression,
    Conflict,
    Encap,
    Host,
    InvalidField,
    Network,
    NetworkDelta,
    NetworkTables,
    Port,
    PortStatus,
    desired_state,
    diff_network,
    digest,
    member_sums,
    membership,
    network_sum,
)
from l2pop.model import lifecycle as lc
from l2pop.model import validation as v
from l2pop.model.digests import entry_hash, header_hash
from l2pop.model.fanout import host_deltas, network_state
from l2pop.wire.channel import Hello, NetworkDeltaMsg, NetworkTablesMsg, encode, hello_message

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NS = ArpSuppression.NEIGH_SUPPRESS
VXLAN_ONLY = frozenset({Encap.VXLAN})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gre(t: NetworkTables) -> NetworkTables:
    return replace(t, encap=Encap.GRE)


# -- the input rule ------------------------------------------------------------------------


def test_encap_is_vxlan_or_gre_and_nothing_else() -> None:
    assert v.parse_encap("vxlan") is Encap.VXLAN
    assert v.parse_encap("gre") is Encap.GRE
    for bad in ("GRE", "geneve", "", " vxlan", 1, None, ["gre"], "x" * 10_000):
        with pytest.raises(InvalidField) as err:
            v.parse_encap(bad)
        assert err.value.field == "encap"
        assert "vxlan, gre" in err.value.message


# -- the binding rule ----------------------------------------------------------------------


def network(encap: Encap) -> Network:
    return Network("n1", "blue", 100, NS, T0, 1, encap)


def test_a_host_that_announced_it_cannot_carry_gre_is_refused_naming_host_and_encap() -> None:
    host = Host("h1", "192.0.2.1", datapath="linux", encaps=VXLAN_ONLY)
    with pytest.raises(Conflict) as err:
        lc.check_host_carries(host, network(Encap.GRE))
    assert err.value.field == "host"
    assert "h1" in err.value.message and "gre" in err.value.message
    assert "linux" in err.value.message
    lc.check_host_carries(host, network(Encap.VXLAN))


def test_a_host_whose_agent_never_connected_may_be_bound_to_any_encap() -> None:
    host = Host("h1", "192.0.2.1")  # nothing announced: encaps is None
    for encap in Encap:
        lc.check_host_carries(host, network(encap))
    lc.check_host_carries(replace(host, encaps=frozenset(Encap)), network(Encap.GRE))


# -- the digest ----------------------------------------------------------------------------


def test_the_header_entry_includes_the_encap_and_vxlan_keeps_the_former_text() -> None:
    vxlan = header_hash("n1", 100, NS, Encap.VXLAN)
    assert vxlan == header_hash("n1", 100, NS)  # the default
    assert vxlan == entry_hash("n1|net|100|neigh_suppress")  # what older agents compute
    assert header_hash("n1", 100, NS, Encap.GRE) != vxlan
    t = tables("n1", 100, (M2, V2, "198.19.0.2"))
    assert network_sum(gre(t)) != network_sum(t)
    assert digest({"n1": gre(t)}) != digest({"n1": t})


def test_desired_state_and_member_sums_carry_the_encap() -> None:
    net = network(Encap.GRE)
    hosts = [Host("h1", "192.0.2.1"), Host("h2", "192.0.2.2")]
    ports = [
        Port("p1", "n1", "", M2, ("198.19.0.2",), "h1", PortStatus.ACTIVE, 1),
        Port("p2", "n1", "", M3, ("198.19.0.3",), "h2", PortStatus.ACTIVE, 1),
    ]
    state = desired_state([net], ports, hosts)
    assert {t.encap for s in state.values() for t in s.values()} == {Encap.GRE}
    sums = member_sums(net, membership(ports, {h.name: h.vtep_ip for h in hosts}))
    assert sums == {h: network_sum(state[h]["n1"]) for h in ("h1", "h2")}


def test_deltas_carry_the_encap_through_diff_and_fanout() -> None:
    t = gre(tables("n1", 100, (M2, V2, "198.19.0.2")))
    joined = diff_network(None, t)
    assert joined is not None and joined.encap is Encap.GRE
    left = diff_network(t, None)
    assert left is not None and left.leave and left.encap is Encap.GRE
    net = network(Encap.GRE)
    vteps = {"h1": "192.0.2.1", "h2": "192.0.2.2"}
    p1 = Port("p1", "n1", "", M2, (), "h1", PortStatus.ACTIVE, 1)
    p2 = Port("p2", "n1", "", M3, (), "h2", PortStatus.ACTIVE, 1)
    before = network_state(net, [p1], vteps)
    after = network_state(net, [p1, p2], vteps)
    assert {d.encap for d in host_deltas(before, after).values()} == {Encap.GRE}
    gone = host_deltas(after, network_state(None, [], vteps))
    assert {(d.leave, d.encap) for d in gone.values()} == {(True, Encap.GRE)}


# -- the wire ------------------------------------------------------------------------------


def test_channel_tables_and_deltas_carry_the_encap_and_default_to_vxlan() -> None:
    t = gre(tables("n1", 100, (M2, V2, "198.19.0.2")))
    msg = msgspec.json.decode(encode(NetworkTablesMsg.of(t)), type=NetworkTablesMsg)
    assert msg.tables() == t
    old_server = {"network_id": "n1", "vni": 100, "arp_suppression": "proxy"}
    assert msgspec.convert(old_server, NetworkTablesMsg).tables().encap is Encap.VXLAN
    d = NetworkDelta("n1", 100, NS, flood_add=frozenset({V2}), encap=Encap.GRE)
    assert msgspec.json.decode(encode(NetworkDeltaMsg.of(d)), type=NetworkDeltaMsg).delta() == d


def test_hello_announces_what_the_agent_carries_and_an_older_agent_means_vxlan_only() -> None:
    old = hello_message.decode('{"type": "hello", "host": "h1", "vtep_ip": "192.0.2.1"}')
    assert old.datapath is None and old.encaps == [Encap.VXLAN]
    new = hello_message.decode(
        '{"type":"hello","host":"h1","vtep_ip":"192.0.2.1","version":1,'
        '"datapath":"ovs","encaps":["gre","vxlan","geneve"]}'
    )
    assert new.datapath == "ovs" and new.encaps == [Encap.GRE, Encap.VXLAN]  # unknown: dropped
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"host": "h1", "vtep_ip": "192.0.2.1", "datapath": "x" * 33}, Hello)


# -- the datapaths -------------------------------------------------------------------------


def test_datapaths_declare_what_they_carry() -> None:
    from l2pop.datapath.linux import LinuxDatapath

    assert LinuxDatapath.encaps == VXLAN_ONLY
    assert MemoryDatapath().encaps == frozenset(Encap)
    assert MemoryDatapath(encaps=VXLAN_ONLY).encaps == VXLAN_ONLY


def test_the_memory_datapath_keeps_the_encap_and_refuses_one_it_does_not_carry() -> None:
    t = gre(tables("n1", 100, (M2, V2, "198.19.0.2")))
    delta = diff_network(None, t)
    assert delta is not None
    dp = MemoryDatapath()
    dp.apply([delta])
    assert dp.dump() == {"n1": t} and dp.dump()["n1"].encap is Encap.GRE
    narrow = MemoryDatapath(encaps=VXLAN_ONLY)
    with pytest.raises(DatapathError) as err:
        narrow.apply([delta])
    assert err.value.failures[0][0] == "encap gre"
    assert narrow.dump() == {}
    narrow.apply([replace(delta, leave=True)])  # leaving is always carried out


# -- the agent -----------------------------------------------------------------------------


class CountingDatapath(MemoryDatapath):
    """A VXLAN-only memory datapath that counts the deltas it is handed."""

    def __init__(self) -> None:
        super().__init__(encaps=VXLAN_ONLY)
        self.handed: list[NetworkDelta] = []

    def apply(self, deltas: Sequence[NetworkDelta]) -> None:
        self.handed.extend(deltas)
        super().apply(deltas)


def test_an_agent_leaves_a_network_it_cannot_carry_alone_and_reports_it() -> None:
    dp, clock = CountingDatapath(), Clock()
    rec = Reconciler(dp, clock=clock)
    n1 = tables("n1", 100, (M2, V2, "198.19.0.2"))
    n2 = gre(tables("n2", 200, (M3, V3, "198.19.1.3")))
    rec.on_snapshot(snapshot(1, {"n1": n1, "n2": n2}, [local("p1", "n1"), local("p2", "n2")]))
    result = rec.sync()

    # n1 is programmed and wired; n2 never reaches the datapath and is failing
    assert dp.dump() == {"n1": n1} and dp.wired == {"p1": "n1"}
    assert {d.network_id for d in dp.handed} == {"n1"}
    assert result.failing == ("n2",) and result.retry_in == RETRY_BASE_S
    [err] = rec.errors()
    assert (err.network_id, err.vni, err.entry) == ("n2", 200, "encap gre")
    assert "memory datapath carries vxlan, not gre" in err.message
    assert err.wire().entry == "encap gre"
    # the ack is not the desired digest: the host shows out of sync
    applied = rec.applied()
    assert applied is not None and applied[1] != digest({"n1": n1, "n2": n2})

    # not retried before its backoff is due, and still never handed to the datapath after
    assert rec.sync().failing == ("n2",) and rec.errors()[0].attempts == 1
    clock.now += RETRY_BASE_S
    result = rec.sync()
    assert rec.errors()[0].attempts == 2 and result.retry_in == 2 * RETRY_BASE_S
    assert {d.network_id for d in dp.handed} == {"n1"}
