"""The Store interface. One SQLAlchemy implementation serves SQLite and PostgreSQL (``sql.py``).

Semantics every implementation keeps (the suite in ``tests/integration/test_store.py`` runs
against each engine):

* **Transactions.** ``read()`` gives a consistent snapshot; ``write()`` is one transaction that
  commits when the block exits normally and rolls back on any exception, leaving nothing
  behind: a failed request changes nothing, revision included.
* **Isolation.** ``write()`` blocks run one at a time, from their first statement to commit,
  on every engine: a block that reads, validates and writes sees no concurrent writer, so
  its checks hold when its writes land (no lost update). ``read()`` blocks never wait.
* **Revision.** The store keeps one global revision. The first write of a ``write()`` block
  takes the next revision; every object written in that block is stamped with it and the
  change log gets one ``Change`` row per object written. Revisions are assigned in commit order
  (PostgreSQL: the revision row stays locked until commit; SQLite: writers are serialised), so a
  reader that sees revision R committed has seen every change <= R. A block that writes
  nothing does not move the revision.
* **Uniqueness is the database's job** and is race-free: VNI; host name; VTEP IP; a port's MAC
  within its network; each fixed IP within its network. A violation raises
  ``model.Conflict`` naming the field, and the transaction is rolled back.
* **References.** A port's ``network_id`` must exist, and its ``host``, when set, must be a
  registered host (``Conflict``/``NotFound`` otherwise). Deleting a network with ports raises
  ``Conflict``.
* **Agent telemetry** (``last_seen``, ``applied_revision``, ``applied_digest``) is written by
  ``record_host_report`` outside the revision: it describes agents, not the desired state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from l2pop.model import Host, Network, Port, PortStatus

ChangeKind = Literal["network", "port", "host"]
ChangeOp = Literal["create", "update", "delete"]


@dataclass(frozen=True, slots=True)
class Change:
    """One row of the change log: ``kind``/``key`` changed by ``op`` at ``revision``.

    ``network_id`` is the network whose tables the change may touch (None for hosts).
    """

    revision: int
    kind: ChangeKind
    key: str
    op: ChangeOp
    network_id: str | None


@dataclass(frozen=True, slots=True)
class HostReport:
    """What an agent last said about itself (telemetry, outside the revision)."""

    name: str
    last_seen: datetime
    applied_revision: int | None = None
    applied_digest: str | None = None


class StoreUnavailable(Exception):
    """The database cannot be reached or answered with a connection-level failure (server
    down, connection lost, pool timeout, file locked past the busy timeout). Nothing was
    committed by the block that raised it; the caller may retry later."""


class ChangeLogTruncated(Exception):
    """The changes asked for were pruned; the reader must take a fresh snapshot."""


class ReadTx(Protocol):
    """Queries over one consistent snapshot."""

    def revision(self) -> int:
        """The last committed revision (0 for an empty store)."""
        ...

    def get_network(self, network_id: str) -> Network | None: ...

    def list_networks(self) -> list[Network]:
        """All networks ordered by VNI."""
        ...

    def get_port(self, port_id: str) -> Port | None: ...

    def list_ports(
        self,
        *,
        network_id: str | None = None,
        host: str | None = None,
        status: PortStatus | None = None,
        network_ids: Iterable[str] | None = None,
        port_ids: Iterable[str] | None = None,
    ) -> list[Port]:
        """Ports matching every filter given, ordered by (network_id, id).

        ``network_ids`` and ``port_ids`` may be long (thousands): they are chunked.
        """
        ...

    def page_ports(
        self,
        *,
        limit: int,
        after: str | None = None,
        network_id: str | None = None,
        host: str | None = None,
        status: PortStatus | None = None,
    ) -> list[Port]:
        """One page of the API's port list: at most ``limit`` ports matching every filter
        given whose id sorts after ``after``, in the database's id order. Pages are
        keyset-based, so a port deleted between two pages never shifts the next one."""
        ...

    def page_networks(self, *, limit: int, after_vni: int | None = None) -> list[Network]:
        """At most ``limit`` networks with a VNI above ``after_vni``, ordered by VNI."""
        ...

    def page_hosts(self, *, limit: int, after: str | None = None) -> list[Host]:
        """At most ``limit`` hosts whose name sorts after ``after``, in the database's name
        order."""
        ...

    def count_ports(self, network_id: str) -> int: ...

    def get_host(self, name: str) -> Host | None: ...

    def get_host_by_token_hash(self, token_hash: str) -> Host | None: ...

    def list_hosts(self) -> list[Host]:
        """All hosts ordered by name."""
        ...

    def changes_since(self, revision: int, limit: int | None = None) -> list[Change]:
        """Change rows with revision > ``revision``, in revision order.

        Raises ``ChangeLogTruncated`` when rows after ``revision`` have been pruned.
        """
        ...


class WriteTx(ReadTx, Protocol):
    """A read transaction that may also write. Writes return the stored (stamped) object."""

    def serialize(self) -> int:
        """Take this block's revision now, as its first write would, and return it.

        Writers queue on the revision, so once this returns no other write is in flight and
        reads see everything committed: use it before read-then-allocate (the next free
        VNI). Only for blocks that go on to write.
        """
        ...

    def insert_network(self, network: Network) -> Network: ...

    def update_network(self, network: Network) -> Network: ...

    def delete_network(self, network_id: str) -> None: ...

    def insert_port(self, port: Port) -> Port: ...

    def insert_ports(self, ports: Sequence[Port]) -> int:
        """Insert many ports at once (imports, benchmarks); returns how many.

        Same rules as ``insert_port`` but checked by the constraints alone, so the first
        violation fails the whole block with ``Conflict``.
        """
        ...

    def update_port(self, port: Port) -> Port: ...

    def delete_port(self, port_id: str) -> Port:
        """Delete and return the port as it was."""
        ...

    def insert_host(self, host: Host, token_hash: str) -> Host: ...

    def delete_host(self, name: str) -> None: ...


class Store(Protocol):
    url: str

    def read(self) -> AbstractContextManager[ReadTx]: ...

    def write(self) -> AbstractContextManager[WriteTx]: ...

    def record_host_report(
        self,
        name: str,
        *,
        last_seen: datetime,
        applied_revision: int | None = None,
        applied_digest: str | None = None,
    ) -> None:
        """Save agent telemetry for ``name`` without moving the revision."""
        ...

    def record_host_reports(self, reports: Sequence[HostReport]) -> None:
        """``record_host_report`` for many hosts in one transaction; unknown hosts (deleted
        meanwhile) are skipped."""
        ...

    def prune_changes(self, before_revision: int) -> int:
        """Drop change rows with revision < ``before_revision``; returns how many."""
        ...

    def close(self) -> None: ...


def iter_chunks(items: list[str], size: int) -> Iterator[list[str]]:
    """Split long ``IN (...)`` lists; both engines cap the number of bound parameters."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
