"""The operators' views (docs/adr/0028): ``GET /v1/status``, ``GET /v1/events`` and
``GET /v1/topology``; the web page's live stream carries the same shapes.

Responses only: these describe what the server answers and are never parsed from a caller.
"""

from __future__ import annotations

from pydantic import Field

from l2pop.wire.api import Response


class EventOut(Response):
    """One event of the feed (``model.events.EventKind`` names the kinds).

    ``revision`` is the changed row's revision (a host event: the revision its agent had
    applied). ``hosts`` is how many hosts had to apply it; ``applied_ms`` the time from the
    server's hub reading the change to the last of them acknowledging it (null: still
    waiting, or nothing to apply); ``pending`` names hosts still waited for (at most 20),
    ``behind`` those that never applied it before the feed stopped waiting."""

    seq: int
    time: str
    kind: str
    revision: int | None = None
    network_id: str | None = None
    network: str | None = None
    port_id: str | None = None
    mac: str | None = None
    host: str | None = None
    detail: str | None = None
    hosts: int = 0
    pending: list[str] = []
    applied_ms: int | None = None
    behind: list[str] | None = None


class HostSummary(Response):
    """A host as the status screen lists it."""

    name: str
    connected: bool
    in_sync: bool
    applied_revision: int | None = None
    #: revisions behind the server's (null: not connected, or nothing applied yet)
    lag: int | None = None
    replica: str | None = None
    last_seen: str | None = None
    errors: int = 0


class HostCounts(Response):
    total: int
    connected: int
    in_sync: int


class StatusOut(Response):
    """The whole deployment on one screen (``l2pop status``)."""

    #: the replica answering, and every replica beating on the store now
    replica: str
    replicas: list[str]
    version: str
    #: the store's revision and how far this server's hub has read it
    revision: int
    hub_revision: int
    hosts: HostCounts
    #: the hosts furthest behind, worst first: not connected, then out of sync, then lag
    lagging: list[HostSummary]
    networks: int
    ports: dict[str, int]
    events: list[EventOut]


class NetworkSummary(Response):
    """A network with its member hosts and its ports by status."""

    id: str
    name: str
    vni: int
    encap: str
    arp_suppression: str
    members: list[str]
    ports: dict[str, int] = Field(description="port status -> how many")


class TopologyOut(Response):
    """Every network with its member hosts: the membership graph."""

    revision: int
    networks: list[NetworkSummary]
