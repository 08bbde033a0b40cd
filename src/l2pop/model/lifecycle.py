"""The port status lifecycle (docs/design.md, "Domain model").

The server owns status; agents only report.

    created unbound ........ DOWN
    bound (host set) ....... BUILD     the new host's agent is expected to wire it
    reported wired ......... ACTIVE    only by the agent of the host it is bound to
    reported gone/unbound .. DOWN
    migrated (host changed)  BUILD     it leaves every remote table at once

Each function is pure: it takes the current port and returns the status it must have next,
or raises a ``DomainError`` that explains why the change is refused.
"""

from __future__ import annotations

from l2pop.model.errors import Conflict, Forbidden, InvalidField
from l2pop.model.types import Host, Network, Port, PortStatus

#: statuses an agent may report; BUILD is the server's own verdict, never reported.
REPORTABLE = frozenset({PortStatus.ACTIVE, PortStatus.DOWN})


def initial_status(host: str | None) -> PortStatus:
    return PortStatus.BUILD if host else PortStatus.DOWN


def status_after_binding(port: Port, new_host: str | None) -> PortStatus:
    """Status once ``port`` is bound to ``new_host`` (``None`` unbinds)."""
    if new_host is None:
        return PortStatus.DOWN
    if new_host != port.host:
        return PortStatus.BUILD
    return port.status


def check_host_carries(host: Host, network: Network) -> None:
    """Refuse to bind a port of ``network`` to ``host`` when the host's agent announced it
    cannot carry the network's encapsulation (``Conflict`` naming the host and the encap).

    A host whose agent never connected (``host.encaps is None``) is allowed: nothing says it
    cannot, and its agent refuses, and reports, a network it cannot carry when it arrives
    (docs/adr/0017-network-encap.md).
    """
    if host.encaps is not None and network.encap not in host.encaps:
        carried = ", ".join(sorted(e.value for e in host.encaps)) or "nothing"
        where = f"{host.datapath} datapath" if host.datapath else "datapath"
        raise Conflict(
            f"host {host.name} cannot carry encap {network.encap.value} of network "
            f"{network.id}: its agent's {where} carries {carried}",
            field="host",
        )


def check_mac_change(port: Port, new_mac: str) -> None:
    """A MAC cannot move under a live port: every remote FDB points at the old one."""
    if new_mac != port.mac and port.status is PortStatus.ACTIVE:
        raise Conflict(
            f"port {port.id} is ACTIVE; its MAC cannot change (unbind it first)", field="mac"
        )


def status_after_report(port: Port, reporting_host: str, reported: PortStatus) -> PortStatus:
    """Status after ``reporting_host``'s agent says the port's device is up or gone.

    Refused unless the port is bound to ``reporting_host``: a late report from the
    host a port has just left must not touch it (docs/design.md, "Agent channel").
    """
    if reported not in REPORTABLE:
        raise InvalidField("status", "an agent reports ACTIVE or DOWN")
    if port.host != reporting_host:
        where = f"bound to {port.host}" if port.host else "not bound"
        raise Forbidden(f"port {port.id} is {where}; host {reporting_host} cannot report it")
    return reported


def is_member_status(status: PortStatus) -> bool:
    """A bound port makes its host a member of its network while BUILD or ACTIVE."""
    return status is not PortStatus.DOWN
