"""The three things l2pop knows about: networks, ports and hosts.

Values are frozen dataclasses: the store hands out snapshots and use-cases build
new values with ``dataclasses.replace``; nothing is mutated in place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

VNI_MIN = 1
VNI_MAX = 16_777_215


class PortStatus(enum.StrEnum):
    DOWN = "DOWN"
    BUILD = "BUILD"
    ACTIVE = "ACTIVE"


class ArpSuppression(enum.StrEnum):
    """How a VTEP answers ARP/ND for remote ports.

    ``neigh_suppress``: the bridge answers from its neighbour table; unknown IPs flood.
    ``proxy``: the vxlan device answers; unknown IPs are dropped (Neutron's Linux bridge way).
    ``off``: no local answers; ARP floods to the member VTEPs (the FDB is still programmed).
    """

    NEIGH_SUPPRESS = "neigh_suppress"
    PROXY = "proxy"
    OFF = "off"


class Encap(enum.StrEnum):
    """How a network's frames cross the underlay between VTEPs (docs/adr/0017-network-encap.md).

    ``vxlan``: VXLAN over UDP 4789, the VNI in the VXLAN header (every datapath carries it).
    ``gre``: Ethernet over GRE (gretap), the VNI as the GRE key (Open vSwitch, memory).

    Fixed for a network's life, like its VNI.
    """

    VXLAN = "vxlan"
    GRE = "gre"


@dataclass(frozen=True, slots=True)
class Network:
    id: str
    name: str
    vni: int
    arp_suppression: ArpSuppression
    created_at: datetime
    revision: int
    encap: Encap = Encap.VXLAN


@dataclass(frozen=True, slots=True)
class Port:
    """A port of a network. ``fixed_ips`` are normalised strings, sorted."""

    id: str
    network_id: str
    name: str
    mac: str
    fixed_ips: tuple[str, ...]
    host: str | None
    status: PortStatus
    revision: int
    created_at: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Host:
    """A hypervisor with one VTEP. The agent token is stored only as a hash.

    ``datapath`` and ``encaps`` are what the host's agent last announced in its hello: the
    datapath's name (``None``: unknown, an agent older than the field) and the encapsulations
    it carries. ``encaps`` is ``None`` while no agent of the host has ever connected.
    ``session_replica`` may name a replica that died: the live replicas are the store's
    ``replicas`` with a recent beat.
    """

    name: str
    vtep_ip: str
    created_at: datetime | None = field(default=None, compare=False)
    last_seen: datetime | None = None
    applied_revision: int | None = None
    applied_digest: str | None = None
    datapath: str | None = None
    encaps: frozenset[Encap] | None = None
    #: the server replica holding the host's agent session (None: none claimed it, or it
    #: ended), and how many sessions were ever claimed: the newest claim wins (ADR 22)
    session_replica: str | None = field(default=None, compare=False)
    session_generation: int = field(default=0, compare=False)
