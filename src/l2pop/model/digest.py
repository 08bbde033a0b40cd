"""Digests of host tables: additive multiset hashes, cheap to keep up to date.

Every entry a host holds is hashed on its own (128-bit BLAKE2b of a text naming the network
and the entry), and a table's digest is the **sum** of its entries' hashes (plus one header
entry per network: id, VNI, ARP-suppression mode) modulo 2^128. Entries are unique keys
(a MAC once per network, an IP once per network), so the sum identifies the set, needs no
sorting, and can be updated in O(1) when one entry comes or goes. This lets the server keep
every host's digest current at a cost proportional to what changed, and lets it derive a
host's view of a network as "the network's sum minus the host's own entries" (ADR 6).

Not a cryptographic commitment (an adversary could craft collisions); it detects drift
between cooperating parties, which is all it is for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from l2pop.model.types import ArpSuppression

MASK = (1 << 128) - 1
#: how a digest is written on the wire and in the store: 32 lower-case hex digits
DIGEST_PATTERN = r"^[0-9a-f]{32}$"


def entry_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "big")


def header_hash(network_id: str, vni: int, mode: ArpSuppression) -> int:
    return entry_hash(f"{network_id}|net|{vni}|{mode.value}")


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


def as_hex(value: int) -> str:
    return f"{value & MASK:032x}"
