"""What an operator calls an event: the one rule that turns a row change into the words
``port bound``, ``port migrated``, ``port ACTIVE`` or ``host lost``.

The server's activity feed (the web page's event stream, ``l2pop status``) names changes
with these words; every other layer only carries them. A change can be several events at
once (a port created already bound to a host is ``port created`` and ``port bound``),
listed in the order an operator reads them: what happened to the row, where it is, then
its status.
"""

from __future__ import annotations

import enum

from l2pop.model.types import Network, Port, PortStatus


class EventKind(enum.StrEnum):
    """Every kind of event, as the feed spells it."""

    PORT_CREATED = "port created"
    PORT_DELETED = "port deleted"
    PORT_BOUND = "port bound"
    PORT_UNBOUND = "port unbound"
    PORT_MIGRATED = "port migrated"
    PORT_UPDATED = "port updated"  # its MAC or addresses changed
    PORT_BUILD = "port BUILD"
    PORT_ACTIVE = "port ACTIVE"
    PORT_DOWN = "port DOWN"
    NETWORK_CREATED = "network created"
    NETWORK_UPDATED = "network updated"
    NETWORK_DELETED = "network deleted"
    HOST_CREATED = "host created"
    HOST_DELETED = "host deleted"
    HOST_CONNECTED = "host connected"
    HOST_LOST = "host lost"
    HOST_OUT_OF_SYNC = "host out of sync"
    HOST_IN_SYNC = "host in sync"


_STATUS_EVENT = {
    PortStatus.BUILD: EventKind.PORT_BUILD,
    PortStatus.ACTIVE: EventKind.PORT_ACTIVE,
    PortStatus.DOWN: EventKind.PORT_DOWN,
}

#: port events whose change the member hosts must apply (they move a MAC, an address or a
#: flood-list member); the others only change the port's own host (or nothing remote)
REMOTE_PORT_EVENTS = frozenset(
    {
        EventKind.PORT_ACTIVE,
        EventKind.PORT_DOWN,
        EventKind.PORT_MIGRATED,
        EventKind.PORT_UNBOUND,
        EventKind.PORT_DELETED,
        EventKind.PORT_UPDATED,
    }
)


def port_events(old: Port | None, new: Port | None) -> list[EventKind]:
    """The events of one port's change from ``old`` to ``new`` (None: absent). An unchanged
    port has none. A status is an event when it changes, or when a new port starts with a
    status other than DOWN (it was reported before it was seen, in one batch)."""
    if new is None:
        return [] if old is None else [EventKind.PORT_DELETED]
    events: list[EventKind] = []
    if old is None:
        events.append(EventKind.PORT_CREATED)
        if new.host is not None:
            events.append(EventKind.PORT_BOUND)
        if new.status is not PortStatus.DOWN:
            events.append(_STATUS_EVENT[new.status])
        return events
    if old.host != new.host:
        if old.host is None:
            events.append(EventKind.PORT_BOUND)
        elif new.host is None:
            events.append(EventKind.PORT_UNBOUND)
        else:
            events.append(EventKind.PORT_MIGRATED)
    if old.mac != new.mac or old.fixed_ips != new.fixed_ips:
        events.append(EventKind.PORT_UPDATED)
    if old.status is not new.status:
        events.append(_STATUS_EVENT[new.status])
    return events


def network_events(old: Network | None, new: Network | None) -> list[EventKind]:
    """The events of one network's change (None: absent)."""
    if old is None and new is None:
        return []
    if old is None:
        return [EventKind.NETWORK_CREATED]
    if new is None:
        return [EventKind.NETWORK_DELETED]
    same = (old.name, old.vni, old.arp_suppression, old.encap) == (
        new.name,
        new.vni,
        new.arp_suppression,
        new.encap,
    )
    return [] if same else [EventKind.NETWORK_UPDATED]


def host_session_events(
    was: tuple[bool, bool] | None, now: tuple[bool, bool] | None
) -> list[EventKind]:
    """The events of a host's (connected, in_sync) going from ``was`` to ``now`` (None: the
    host does not exist). Losing the session is ``host lost`` alone: a host that is not
    connected is out of sync by definition, which is not news."""
    if now is None:
        return [] if was is None else [EventKind.HOST_DELETED]
    if was is None:
        up, sync = now
        born = [EventKind.HOST_CREATED]
        return born + [EventKind.HOST_CONNECTED] * up + [EventKind.HOST_IN_SYNC] * (up and sync)
    (was_up, was_sync), (up, sync) = was, now
    if was_up and not up:
        return [EventKind.HOST_LOST]
    events: list[EventKind] = []
    if up and not was_up:
        events.append(EventKind.HOST_CONNECTED)
    if up and was_up and was_sync and not sync:
        events.append(EventKind.HOST_OUT_OF_SYNC)
    if up and sync and not (was_sync and was_up):
        events.append(EventKind.HOST_IN_SYNC)
    return events
