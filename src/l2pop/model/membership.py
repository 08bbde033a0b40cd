"""Who takes part in a network: the membership rule, written once (docs/design.md,
"Desired state").

For the ports of one network and the VTEPs of the registered hosts:

* a port bound to no host, or to a host that is not registered, counts for nothing;
* a counted port that is BUILD or ACTIVE makes its host a **member**
  (``lifecycle.is_member_status``): only members hold any of the network's tables;
* a counted port that is ACTIVE is a **remote entry**: what the *other* members hold of it
  (flood VTEP, FDB entry, neighbour entries).

``desired_state``, the fan-out, the hub's digests and a host's ``/fdb`` answer all call
``membership``; nothing else restates the rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from l2pop.model.lifecycle import is_member_status
from l2pop.model.types import Port, PortStatus


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    """A port as the other members of its network see it."""

    host: str
    vtep: str
    mac: str
    fixed_ips: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Membership:
    """One network's member hosts and its remote entries (port id -> entry).

    Treat ``remote`` as read-only.
    """

    members: frozenset[str] = frozenset()
    remote: Mapping[str, RemoteEntry] = field(default_factory=dict)

    def active_vteps(self) -> dict[str, str]:
        """host -> VTEP of the hosts with at least one ACTIVE port here (the flood list of
        every member but that host)."""
        return {e.host: e.vtep for e in self.remote.values()}


def membership(ports: Iterable[Port], vteps: Mapping[str, str]) -> Membership:
    """The members and remote entries of the network whose ports are ``ports``.

    :param ports: every port of one network, in any order
    :param vteps: host name -> VTEP IP of every registered host
    :return: the hosts that are members, and the ACTIVE ports as remote entries keyed by port id
    """
    members: set[str] = set()
    remote: dict[str, RemoteEntry] = {}
    for port in ports:
        if port.host is None or port.host not in vteps:
            continue
        if is_member_status(port.status):
            members.add(port.host)
        if port.status is PortStatus.ACTIVE:
            remote[port.id] = RemoteEntry(port.host, vteps[port.host], port.mac, port.fixed_ips)
    return Membership(frozenset(members), remote)
