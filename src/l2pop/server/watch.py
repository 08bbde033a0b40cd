"""What the watchers of the operators' views see (``server/activity.py`` makes them): an
event of the feed, a host's row, a network's row, and a watcher's bounded queue."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from l2pop.model import Network, PortStatus
from l2pop.model.events import EventKind
from l2pop.server.hub import Hub

#: messages queued for one watcher before it is dropped as too slow
WATCHER_QUEUE = 64
#: hosts named as still behind on an event
NAMED_BEHIND = 20


class Observes(Protocol):
    def observe(self, amount: float) -> None: ...


def activation_observer(histogram: Observes) -> Callable[[Event, float], None]:
    """An ``on_applied`` feeding ``l2pop_port_activation_seconds``: a port's ACTIVE, from
    when the hub heard of its commit to when the last member host acked it."""

    def observe(event: Event, seconds: float) -> None:
        if event.kind is EventKind.PORT_ACTIVE and event.hosts:
            histogram.observe(seconds)

    return observe


def compact_json(message: dict[str, object]) -> str:
    """How the live stream encodes a message: JSON without spaces."""
    return json.dumps(message, separators=(",", ":"))


def _utc(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")


@dataclass(slots=True)
class Event:
    """One event of the feed. ``waiting`` are the hosts still to apply it (against
    ``batch_revision``), ``hosts`` how many had to; ``applied_ms`` is set once every one
    did, ``behind`` once it stopped waiting without."""

    seq: int
    wall: float
    started: float  # time.monotonic(): when the hub heard of the commit (or read the batch)
    kind: EventKind
    revision: int | None = None  # the changed row's (a host event: its applied revision)
    batch_revision: int = 0  # what the hosts ack once they applied it
    local_hosts: tuple[str, ...] = ()  # the port's hosts, before and after
    network_id: str | None = None
    network: str | None = None
    port_id: str | None = None
    mac: str | None = None
    host: str | None = None
    detail: str | None = None
    hosts: int = 0
    waiting: set[str] = field(default_factory=set)
    applied_ms: int | None = None
    behind: list[str] | None = None

    def as_json(self) -> dict[str, object]:
        """The event as ``GET /v1/events`` and the live stream carry it."""
        return {
            "seq": self.seq,
            "time": _utc(self.wall),
            "kind": self.kind.value,
            "revision": self.revision,
            "network_id": self.network_id,
            "network": self.network,
            "port_id": self.port_id,
            "mac": self.mac,
            "host": self.host,
            "detail": self.detail,
            "hosts": self.hosts,
            "pending": sorted(self.waiting)[:NAMED_BEHIND],
            "applied_ms": self.applied_ms,
            "behind": self.behind,
        }


@dataclass(frozen=True, slots=True)
class HostView:
    """One host's row on the page: what ``GET /v1/hosts`` says, plus its lag."""

    name: str
    vtep_ip: str
    datapath: str | None
    encaps: tuple[str, ...] | None
    connected: bool
    replica: str | None
    #: not compared: an in-sync host's follows every revision, which is not news (its lag,
    #: 0, says the same); a lagging host's lag changes instead
    applied_revision: int | None = field(compare=False)
    lag: int | None  # revisions behind the hub's; None: not connected or nothing applied
    in_sync: bool
    #: not compared: a heartbeat moves it, and a view that only aged is not news
    last_seen: str | None = field(compare=False)
    networks: int
    errors: int

    @property
    def settled(self) -> bool:
        """Connected, in sync and current: nothing about it changes until it is told
        something, its session changes or its row does."""
        return self.connected and self.in_sync and self.lag == 0

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "vtep_ip": self.vtep_ip,
            "datapath": self.datapath,
            "encaps": list(self.encaps) if self.encaps is not None else None,
            "connected": self.connected,
            "replica": self.replica,
            "applied_revision": self.applied_revision,
            "lag": self.lag,
            "in_sync": self.in_sync,
            "last_seen": self.last_seen,
            "networks": self.networks,
            "errors": self.errors,
        }


def network_view(hub: Hub, network: Network) -> dict[str, object]:
    """One network's row on the page: its fields, member hosts and ports by status."""
    by_status = Counter(p.status for p in hub.ports.get(network.id, {}).values())
    return {
        "id": network.id,
        "name": network.name,
        "vni": network.vni,
        "encap": network.encap.value,
        "arp_suppression": network.arp_suppression.value,
        "members": sorted(hub.members(network.id)),
        "ports": {s.value: by_status.get(s, 0) for s in PortStatus},
    }


class Watcher:
    """One live stream's queue of encoded messages; ``dropped`` once it fell behind."""

    def __init__(self, limit: int = WATCHER_QUEUE) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(limit)
        self.dropped = False

    def put(self, message: str) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.end()  # the page reconnects and reloads what it missed

    def end(self) -> None:
        """End the stream: what is queued is dropped and the stream reads None next. The
        same queue is kept, so a stream waiting on it wakes at once."""
        self.dropped = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)
