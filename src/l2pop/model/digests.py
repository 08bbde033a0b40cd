"""Digests of host tables: additive multiset hashes, cheap to keep up to date.

Every entry a host holds is hashed on its own (128-bit BLAKE2b of a text naming the network
and the entry), and a table's digest is the **sum** of its entries' hashes (plus one header
entry per network: id, VNI, ARP-suppression mode, encapsulation) modulo 2^128. Entries are
unique keys (a MAC once per network, an IP once per network), so the sum identifies the set,
needs no sorting, and can be updated in O(1) when one entry comes or goes. This lets the
server keep every host's digest current at a cost proportional to what changed, and lets it
derive a host's view of a network as "the network's sum minus the host's own entries" (ADR 6).

Not a cryptographic commitment (an adversary could craft collisions); it detects drift
between cooperating parties, which is all it is for.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable

from l2pop.model.membership import Membership, RemoteEntry
from l2pop.model.types import ArpSuppression, Encap, Network

MASK = (1 << 128) - 1
#: how a digest is written on the wire and in the store: 32 lower-case hex digits
DIGEST_PATTERN = r"^[0-9a-f]{32}$"


def entry_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "big")


def header_hash(network_id: str, vni: int, mode: ArpSuppression, encap: Encap = Encap.VXLAN) -> int:
    """The header entry of a network: id, VNI, ARP-suppression mode and encapsulation.

    VXLAN, the default, adds nothing to the text, so a VXLAN network's header (and every
    digest made of VXLAN networks only) is the one agents older than ``encap`` compute; any
    other encap is appended (``|gre``), so a host holding a GRE network as VXLAN is out of
    sync (docs/adr/0006-digest.md).
    """
    text = f"{network_id}|net|{vni}|{mode.value}"
    if encap is not Encap.VXLAN:
        text += f"|{encap.value}"
    return entry_hash(text)


def flood_hash(network_id: str, vtep: str) -> int:
    return entry_hash(f"{network_id}|flood|{vtep}")


def fdb_hash(network_id: str, mac: str, vtep: str) -> int:
    return entry_hash(f"{network_id}|fdb|{mac}|{vtep}")


def neigh_hash(network_id: str, ip: str, mac: str) -> int:
    return entry_hash(f"{network_id}|neigh|{ip}|{mac}")


def port_hash(network_id: str, mac: str, vtep: str, fixed_ips: Iterable[str]) -> int:
    """The FDB entry and neighbour entries one remote port puts in a table."""
    total = fdb_hash(network_id, mac, vtep)
    for ip in fixed_ips:
        total += neigh_hash(network_id, ip, mac)
    return total & MASK


def remote_entry_hash(network_id: str, entry: RemoteEntry) -> int:
    """``port_hash`` of one remote entry of network ``network_id``."""
    return port_hash(network_id, entry.mac, entry.vtep, entry.fixed_ips)


#: (port id, remote entry) -> its hash; lets a caller cache port hashes (the hub does)
EntryHasher = Callable[[str, RemoteEntry], int]


def member_sums(
    network: Network, members: Membership, entry_hash: EntryHasher | None = None
) -> dict[str, int]:
    """host -> the additive sum of ``network``'s table as that member holds it.

    The per-host digest formula (ADR 6): the network's total (header, every remote entry,
    every flood VTEP) minus the host's own entries and its own flood VTEP, so all members
    together cost O(ports of the network). Equal to ``network_sum(tables_for(host, ...))``
    for each member (the property tests hold it to that).

    :param network: the network (its id, VNI, mode and encap make the header entry)
    :param members: ``membership`` of the network's ports
    :param entry_hash: ``(port id, entry) -> remote_entry_hash(network.id, entry)``, for a
        caller that caches per-port hashes; ``remote_entry_hash`` when not given
    :return: one sum per member host (non-members hold nothing of the network)
    """
    nid = network.id
    own: dict[str, int] = defaultdict(int)
    total = 0
    for port_id, entry in members.remote.items():
        value = entry_hash(port_id, entry) if entry_hash else remote_entry_hash(nid, entry)
        own[entry.host] += value
        total += value
    flood = {h: flood_hash(nid, v) for h, v in members.active_vteps().items()}
    header = header_hash(nid, network.vni, network.arp_suppression, network.encap)
    base = header + total + sum(flood.values())
    return {h: (base - own.get(h, 0) - flood.get(h, 0)) & MASK for h in members.members}


def as_hex(value: int) -> str:
    """A sum written as a digest: 32 lower-case hex digits."""
    return f"{value & MASK:032x}"
