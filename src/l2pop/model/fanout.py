"""Per-host deltas of one network, computed from what changed rather than from whole tables.

``diff_network(tables_for(H, old), tables_for(H, new))`` for every member H costs
O(members x ports) per event. ``host_deltas`` gets deltas with the same effect in
O(members x changed ports): it walks only the ports whose remote entry changed and leaves
out, for each host, its own ports. The property tests hold it to the table diff.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from l2pop.model.desired import tables_for
from l2pop.model.diff import NetworkDelta, diff_network
from l2pop.model.membership import Membership, RemoteEntry, membership
from l2pop.model.types import Network, Port


@dataclass(frozen=True, slots=True)
class NetworkState:
    """One network as the fan-out needs it: the network and its ``membership``."""

    network: Network | None  # None: the network does not exist (any more)
    membership: Membership

    @property
    def members(self) -> frozenset[str]:
        return self.membership.members

    @property
    def remote(self) -> Mapping[str, RemoteEntry]:
        """port id -> entry of the ACTIVE ports others see."""
        return self.membership.remote

    @property
    def active_vteps(self) -> dict[str, str]:
        """host -> VTEP of the hosts with at least one ACTIVE port here."""
        return self.membership.active_vteps()


EMPTY = NetworkState(None, Membership())


def network_state(
    network: Network | None, ports: Iterable[Port], vteps: Mapping[str, str]
) -> NetworkState:
    """``network`` with the ``membership`` of its ``ports`` (``EMPTY`` when it is gone)."""
    if network is None:
        return EMPTY
    return NetworkState(network, membership(ports, vteps))


def host_deltas(old: NetworkState, new: NetworkState) -> dict[str, NetworkDelta]:
    """host -> the delta that moves its table of this network from ``old`` to ``new``.

    Hosts whose table does not change get no entry. Joining hosts get their full table,
    leaving hosts a ``leave`` delta.
    """
    out: dict[str, NetworkDelta] = {}
    changed = [
        (old.remote.get(pid), new.remote.get(pid))
        for pid in old.remote.keys() | new.remote.keys()
        if old.remote.get(pid) != new.remote.get(pid)
    ]
    old_flood, new_flood = old.active_vteps, new.active_vteps
    for host in old.members | new.members:
        if host not in new.members:
            assert old.network is not None
            out[host] = NetworkDelta(
                old.network.id,
                old.network.vni,
                old.network.arp_suppression,
                leave=True,
                encap=old.network.encap,
            )
            continue
        assert new.network is not None
        if host not in old.members:
            joined = diff_network(None, tables_for(host, new.network, new.remote.values()))
            if joined is not None:
                out[host] = joined
            continue
        delta = _member_delta(host, old, new, changed, old_flood=old_flood, new_flood=new_flood)
        if delta is not None:
            out[host] = delta
    return out


def _member_delta(
    host: str,
    old: NetworkState,
    new: NetworkState,
    changed: list[tuple[RemoteEntry | None, RemoteEntry | None]],
    *,
    old_flood: dict[str, str],
    new_flood: dict[str, str],
) -> NetworkDelta | None:
    assert old.network is not None and new.network is not None
    fdb_add: dict[str, str] = {}
    fdb_remove: dict[str, str] = {}
    neigh_add: dict[str, str] = {}
    neigh_remove: dict[str, str] = {}
    for before, after in changed:
        o = before if before is not None and before.host != host else None
        n = after if after is not None and after.host != host else None
        if o == n:
            continue
        if o is not None:
            if n is None or n.mac != o.mac:
                fdb_remove[o.mac] = o.vtep
            for ip in o.fixed_ips:
                if n is None or n.mac != o.mac or ip not in n.fixed_ips:
                    neigh_remove[ip] = o.mac
        if n is not None:
            if o is None or (o.mac, o.vtep) != (n.mac, n.vtep):
                fdb_add[n.mac] = n.vtep
            for ip in n.fixed_ips:
                if o is None or o.mac != n.mac or ip not in o.fixed_ips:
                    neigh_add[ip] = n.mac
    # an entry re-added in the same delta is replaced, not removed first: nothing blinks
    for mac in fdb_add.keys() & fdb_remove.keys():
        del fdb_remove[mac]
    for ip in neigh_add.keys() & neigh_remove.keys():
        del neigh_remove[ip]
    old_f = {v for h, v in old_flood.items() if h != host}
    new_f = {v for h, v in new_flood.items() if h != host}
    delta = NetworkDelta(
        new.network.id,
        new.network.vni,
        new.network.arp_suppression,
        flood_add=frozenset(new_f - old_f),
        flood_remove=frozenset(old_f - new_f),
        fdb_add=fdb_add,
        fdb_remove=fdb_remove,
        neigh_add=neigh_add,
        neigh_remove=neigh_remove,
        encap=new.network.encap,
    )
    header_changed = (old.network.vni, old.network.arp_suppression, old.network.encap) != (
        new.network.vni,
        new.network.arp_suppression,
        new.network.encap,
    )
    if delta.is_empty() and not header_changed:
        return None
    return delta
