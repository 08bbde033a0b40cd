"""What the hub publishes: per-host updates, snapshots and resumes, and the interface of
those who hear it (``HubSubscriber``). Kept apart from ``server/hub.py`` so that subscribers
depend on this vocabulary, not on the hub's machinery."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from l2pop.model import Network, NetworkDelta, NetworkTables, Port
from l2pop.wire.channel import LocalPort


@dataclass(frozen=True)
class HostUpdate:
    """What one host must hear about one batch of changes, and the digest its tables must
    have once it applied them."""

    digest: str
    deltas: list[NetworkDelta] = field(default_factory=list)
    ports: dict[str, LocalPort] = field(default_factory=dict)
    ports_removed: set[str] = field(default_factory=set)

    def is_empty(self) -> bool:
        return not (self.deltas or self.ports or self.ports_removed)


@dataclass(frozen=True)
class HostSnapshot:
    """Everything one host must hold now: what a channel snapshot is built from."""

    revision: int
    digest: str
    tables: dict[str, NetworkTables]  # network id -> tables, sorted by network id
    ports: list[LocalPort]  # the host's own ports


@dataclass(frozen=True)
class HostResume:
    """What brings a host from ``base`` (the revision its agent offered) to ``revision``:
    the whole tables of the networks that changed since ``base`` and that it must hold, the
    changed ones it must no longer hold, and all its local ports (a channel ``Resume``)."""

    base: int
    revision: int
    digest: str
    tables: dict[str, NetworkTables]
    left: list[str]
    ports: list[LocalPort]


#: network id -> (row before, row after) and [(port before, port after)] of one batch
NetworkChanges = Mapping[str, tuple[Network | None, Network | None]]
PortChanges = Sequence[tuple[Port | None, Port | None]]


class HubSubscriber(Protocol):
    """What hears the hub. Every method is called on the event loop, in order, and must not
    block: it queues work and returns."""

    def changed(self, revision: int, networks: NetworkChanges, ports: PortChanges) -> None:
        """After each batch, before ``host_updates``: the rows it changed, each as
        (before, after), None for absent. The ports of a deleted network are not listed."""
        ...

    def host_updates(self, revision: int, updates: Mapping[str, HostUpdate]) -> None:
        """After each batch: what each host must hear to reach ``revision``. Only hosts that
        have something to hear are in ``updates``."""
        ...

    def hosts_changed(self, gone: frozenset[str]) -> None:
        """The set of hosts changed (created, deleted, or unknown after a reload); ``gone``
        names the hosts that were deleted."""
        ...

    def reloaded(self, revision: int) -> None:
        """The hub replaced its whole state with the store's at ``revision`` (its change log
        was truncated): no delta chain holds any more, every host needs a snapshot."""
        ...
