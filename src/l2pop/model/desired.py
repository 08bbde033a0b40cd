"""The desired state: what each host's kernel must hold. One pure function of the store.

docs/design.md, "Desired state". Who is a member and which ports others see is the
membership rule (``model.membership``); on top of it, for a member H of network N:

* ``flood(H, N)``: the VTEPs of every *other* host with an ACTIVE port in N;
* ``fdb(H, N)``: MAC -> VTEP of every ACTIVE port of N bound to another host;
* ``neigh(H, N)``: IP -> MAC for every fixed IP of those ports.

Everything else (the channel's deltas, the agents' tables, the simulator's checks) must agree
with ``desired_state``; the property tests hold the incremental paths to it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from l2pop.model.digests import (
    MASK,
    as_hex,
    fdb_hash,
    flood_hash,
    header_hash,
    neigh_hash,
)
from l2pop.model.membership import RemoteEntry, membership
from l2pop.model.types import ArpSuppression, Encap, Host, Network, Port


@dataclass(frozen=True, slots=True)
class NetworkTables:
    """One network's tables as one host must hold them. Treat the mappings as read-only.

    ``encap`` is how the datapath must carry the network (the VNI is the VXLAN VNI or the
    GRE key); a datapath that cannot carry it must not be handed the network.
    """

    network_id: str
    vni: int
    arp_suppression: ArpSuppression
    flood: frozenset[str] = frozenset()
    fdb: Mapping[str, str] = field(default_factory=dict)  # mac -> vtep
    neigh: Mapping[str, str] = field(default_factory=dict)  # ip -> mac
    encap: Encap = Encap.VXLAN

    def entry_count(self) -> int:
        return len(self.flood) + len(self.fdb) + len(self.neigh)


#: network_id -> tables, for one host
HostState = Mapping[str, NetworkTables]


def network_view(
    network: Network, ports: Iterable[Port], vteps: Mapping[str, str]
) -> dict[str, NetworkTables]:
    """The tables of ``network`` for each of its member hosts (``ports``: its ports)."""
    found = membership(ports, vteps)
    remote = found.remote.values()
    return {host: tables_for(host, network, remote) for host in found.members}


def tables_for(host: str, network: Network, remote: Iterable[RemoteEntry]) -> NetworkTables:
    """``network``'s tables as ``host`` holds them: everything but its own ports."""
    flood: set[str] = set()
    fdb: dict[str, str] = {}
    neigh: dict[str, str] = {}
    for entry in remote:
        if entry.host == host:
            continue
        flood.add(entry.vtep)
        fdb[entry.mac] = entry.vtep
        for ip in entry.fixed_ips:
            neigh[ip] = entry.mac
    return NetworkTables(
        network.id,
        network.vni,
        network.arp_suppression,
        frozenset(flood),
        fdb,
        neigh,
        network.encap,
    )


def desired_state(
    networks: Iterable[Network], ports: Iterable[Port], hosts: Iterable[Host]
) -> dict[str, dict[str, NetworkTables]]:
    """host name -> (network id -> tables), for every registered host (possibly empty)."""
    vteps = {h.name: h.vtep_ip for h in hosts}
    by_network: dict[str, list[Port]] = defaultdict(list)
    for port in ports:
        by_network[port.network_id].append(port)
    state: dict[str, dict[str, NetworkTables]] = {name: {} for name in vteps}
    for network in networks:
        for host, tables in network_view(network, by_network.get(network.id, ()), vteps).items():
            state[host][network.id] = tables
    return state


def host_state(
    host: str, networks: Iterable[Network], ports: Iterable[Port], vteps: Mapping[str, str]
) -> dict[str, NetworkTables]:
    """``desired_state(...)[host]`` over ``networks`` only: network id -> the tables ``host``
    must hold, for each of ``networks`` it is a member of.

    :param host: the host (absent from ``vteps``: it holds nothing)
    :param networks: the networks to look at (typically those with a port bound to ``host``)
    :param ports: every port of those networks (ports of other networks are ignored)
    :param vteps: host name -> VTEP IP of every registered host
    """
    by_network: dict[str, list[Port]] = defaultdict(list)
    for port in ports:
        by_network[port.network_id].append(port)
    out: dict[str, NetworkTables] = {}
    for network in networks:
        found = membership(by_network.get(network.id, ()), vteps)
        if host in found.members:
            out[network.id] = tables_for(host, network, found.remote.values())
    return out


def canonical_network(t: NetworkTables) -> dict[str, object]:
    """One network's tables in sorted, JSON-ready form (what ``/fdb`` serves)."""
    return {
        "network_id": t.network_id,
        "vni": t.vni,
        "arp_suppression": t.arp_suppression.value,
        "encap": t.encap.value,
        "flood": sorted(t.flood),
        "fdb": [{"mac": m, "vtep": v} for m, v in sorted(t.fdb.items())],
        "neigh": [{"ip": i, "mac": m} for i, m in sorted(t.neigh.items())],
    }


def canonical(state: HostState) -> list[dict[str, object]]:
    """A host's tables, sorted by network id."""
    return [canonical_network(state[network_id]) for network_id in sorted(state)]


def network_sum(t: NetworkTables) -> int:
    """The additive hash of one network's tables (see ``model.digests``)."""
    nid = t.network_id
    total = header_hash(nid, t.vni, t.arp_suppression, t.encap)
    total += sum(flood_hash(nid, vtep) for vtep in t.flood)
    total += sum(fdb_hash(nid, mac, vtep) for mac, vtep in t.fdb.items())
    total += sum(neigh_hash(nid, ip, mac) for ip, mac in t.neigh.items())
    return total & MASK


def digest(state: HostState) -> str:
    """The digest of a host's tables (ADR 6); server and agent compute it the same way."""
    return as_hex(sum(network_sum(t) for t in state.values()))
