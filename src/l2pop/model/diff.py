"""Differences between two desired states of one host, and applying them.

A ``NetworkDelta`` moves one network's tables from ``old`` to ``new``. Removals carry the value
they expect to remove (MAC -> VTEP, IP -> MAC) and ``apply_delta`` honours them only when the
entry still has that value: a late removal for a port's old location can never wipe its new
one (docs/design.md, "Agent channel": removals are conditional on location).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from l2pop.model.desired import HostState, NetworkTables, network_sum
from l2pop.model.digests import fdb_hash, flood_hash, header_hash, neigh_hash
from l2pop.model.types import ArpSuppression, Encap


@dataclass(frozen=True, slots=True)
class NetworkDelta:
    network_id: str
    vni: int
    arp_suppression: ArpSuppression
    leave: bool = False  # the host is no longer a member: drop everything of this network
    flood_add: frozenset[str] = frozenset()
    flood_remove: frozenset[str] = frozenset()
    fdb_add: Mapping[str, str] = field(default_factory=dict)  # mac -> vtep (add or replace)
    fdb_remove: Mapping[str, str] = field(default_factory=dict)  # mac -> vtep it must hold
    neigh_add: Mapping[str, str] = field(default_factory=dict)  # ip -> mac (add or replace)
    neigh_remove: Mapping[str, str] = field(default_factory=dict)  # ip -> mac it must hold
    encap: Encap = Encap.VXLAN  # how the network is carried (fixed for its life)

    def is_empty(self) -> bool:
        return not (
            self.leave
            or self.flood_add
            or self.flood_remove
            or self.fdb_add
            or self.fdb_remove
            or self.neigh_add
            or self.neigh_remove
        )


def _map_diff(
    old: Mapping[str, str], new: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    added = {k: v for k, v in new.items() if old.get(k) != v}
    removed = {k: v for k, v in old.items() if k not in new}
    return added, removed


def diff_network(old: NetworkTables | None, new: NetworkTables | None) -> NetworkDelta | None:
    """The delta from ``old`` to ``new`` (either may be absent), or None when equal."""
    if new is None:
        if old is None:
            return None
        return NetworkDelta(
            old.network_id, old.vni, old.arp_suppression, leave=True, encap=old.encap
        )
    base = old or NetworkTables(new.network_id, new.vni, new.arp_suppression, encap=new.encap)
    fdb_add, fdb_remove = _map_diff(base.fdb, new.fdb)
    neigh_add, neigh_remove = _map_diff(base.neigh, new.neigh)
    delta = NetworkDelta(
        new.network_id,
        new.vni,
        new.arp_suppression,
        flood_add=new.flood - base.flood,
        flood_remove=base.flood - new.flood,
        fdb_add=fdb_add,
        fdb_remove=fdb_remove,
        neigh_add=neigh_add,
        neigh_remove=neigh_remove,
        encap=new.encap,
    )
    mode_changed = old is not None and (
        old.arp_suppression != new.arp_suppression or old.vni != new.vni or old.encap != new.encap
    )
    if delta.is_empty() and old is not None and not mode_changed:
        return None
    return delta


def diff_state(
    old: HostState, new: HostState, networks: Iterable[str] | None = None
) -> list[NetworkDelta]:
    """Deltas turning ``old`` into ``new``, sorted by network id.

    ``networks`` limits the comparison to those network ids (what an event touched).
    """
    keys = set(old) | set(new) if networks is None else set(networks)
    deltas = []
    for network_id in sorted(keys):
        delta = diff_network(old.get(network_id), new.get(network_id))
        if delta is not None:
            deltas.append(delta)
    return deltas


def apply_delta(tables: NetworkTables | None, delta: NetworkDelta) -> NetworkTables | None:
    """``tables`` after ``delta``; None once the host has left the network."""
    if delta.leave:
        return None
    base = tables or NetworkTables(
        delta.network_id, delta.vni, delta.arp_suppression, encap=delta.encap
    )
    fdb = dict(base.fdb)
    for mac, vtep in delta.fdb_remove.items():
        if fdb.get(mac) == vtep:
            del fdb[mac]
    fdb.update(delta.fdb_add)
    neigh = dict(base.neigh)
    for ip, mac in delta.neigh_remove.items():
        if neigh.get(ip) == mac:
            del neigh[ip]
    neigh.update(delta.neigh_add)
    flood = (base.flood - delta.flood_remove) | delta.flood_add
    return NetworkTables(
        delta.network_id, delta.vni, delta.arp_suppression, flood, fdb, neigh, delta.encap
    )


def apply_deltas(state: HostState, deltas: Iterable[NetworkDelta]) -> dict[str, NetworkTables]:
    """A new host state with ``deltas`` applied in order; ``state`` is left untouched."""
    out = dict(state)
    for delta in deltas:
        tables = apply_delta(out.get(delta.network_id), delta)
        if tables is None:
            out.pop(delta.network_id, None)
        else:
            out[delta.network_id] = tables
    return out


_GONE = object()


def delta_sum_change(tables: NetworkTables | None, delta: NetworkDelta) -> int:
    """How much ``apply_delta(tables, delta)`` changes the table's digest sum, in O(delta).

    Follows ``apply_delta`` exactly: a conditional removal counts only when the entry still
    has the value named, an add that replaces subtracts the value it replaces, a changed
    header swaps header hashes, ``leave`` removes the whole table. Lets an agent keep its
    digest current without re-hashing a big network on every delta.
    """
    nid = delta.network_id
    if delta.leave:
        return -network_sum(tables) if tables is not None else 0
    change = header_hash(nid, delta.vni, delta.arp_suppression, delta.encap)
    if tables is None:
        tables = NetworkTables(nid, delta.vni, delta.arp_suppression, encap=delta.encap)
    else:
        change -= header_hash(nid, tables.vni, tables.arp_suppression, tables.encap)
    flood = (tables.flood - delta.flood_remove) | delta.flood_add
    change += sum(flood_hash(nid, v) for v in flood - tables.flood)
    change -= sum(flood_hash(nid, v) for v in tables.flood - flood)
    change += _map_change(tables.fdb, delta.fdb_remove, delta.fdb_add, nid, fdb_hash)
    change += _map_change(tables.neigh, delta.neigh_remove, delta.neigh_add, nid, neigh_hash)
    return change


def _map_change(
    current: Mapping[str, str],
    remove: Mapping[str, str],
    add: Mapping[str, str],
    nid: str,
    entry: Callable[[str, str, str], int],
) -> int:
    overlay: dict[str, object] = {}  # keys this delta touched: new value or _GONE

    def now(key: str) -> object:
        return overlay.get(key, current.get(key, _GONE))

    change = 0
    for key, value in remove.items():
        if now(key) == value:
            change -= entry(nid, key, value)
            overlay[key] = _GONE
    for key, value in add.items():
        old = now(key)
        if old != value:
            if isinstance(old, str):
                change -= entry(nid, key, old)
            change += entry(nid, key, value)
            overlay[key] = value
    return change
