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
* **Agent telemetry** (``last_seen``, ``applied_revision``, ``applied_digest``, and the
  ``datapath`` and ``encaps`` an agent announced in its hello) is written by
  ``record_host_report(s)`` outside the revision: it describes agents, not the desired state.
* **Commit notification** is a hook of the write block: ``subscribe(listener)`` is called
  with the new revision after each committed block that moved it (``server/feed.py`` turns
  it into the server's ``CommitFeed``). That hook hears this process's commits only; on
  PostgreSQL every such block also sends ``NOTIFY l2pop_revision, '<revision>'`` in its
  transaction, delivered only on commit, to every session LISTENing on the database: how
  other processes (server replicas, ``server/pgfeed.py``) hear it (ADR 21).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from l2pop.model import Encap, Host, Network, Port, PortStatus

ChangeKind = Literal["network", "port", "host"]
ChangeOp = Literal["create", "update", "delete"]


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """What ``ReadTx.counts`` returns: rows per table, ports per status."""

    networks: int
    hosts: int
    ports: dict[PortStatus, int]


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
    """What an agent last said about itself (telemetry, outside the revision). ``None``
    leaves the stored value as it is; ``datapath`` and ``encaps`` come from a hello (the
    datapath is written whenever ``encaps`` is given, so a hello that names none clears it)."""

    name: str
    last_seen: datetime
    applied_revision: int | None = None
    applied_digest: str | None = None
    datapath: str | None = None
    encaps: frozenset[Encap] | None = None


@dataclass(frozen=True, slots=True)
class ChangedRows:
    """The change log after a revision with the current rows of what it touched, read in
    one snapshot (``ReadTx.changes_with_rows``): what the hub needs to apply a batch."""

    revision: int  # the snapshot's revision
    changes: list[Change]  # in (revision, seq) order
    networks: dict[str, Network | None]  # every network_id of a change -> row (None: gone)
    ports: list[Port]  # the current rows of the changed ports that still exist


class StoreUnavailable(Exception):
    """The database cannot be reached or answered with a connection-level failure (server
    down, connection lost, pool timeout, file locked past the busy timeout). Nothing was
    committed by the block that raised it; the caller may retry later."""


class ChangeLogTruncated(Exception):
    """The changes asked for were pruned; the reader must take a fresh snapshot (the hub
    reloads the whole store). ``starts_at``: the oldest revision the log still holds
    changes after (``changes_since(starts_at)`` succeeds)."""

    def __init__(self, message: str, starts_at: int = 0) -> None:
        super().__init__(message)
        self.starts_at = starts_at


#: called with the new revision after each committed write block that moved it
CommitListener = Callable[[int], None]

#: the PostgreSQL channel a session claim NOTIFYs (payload: "<generation> <host>"), so the
#: replica holding an older session of that host closes it at once
SESSION_CHANNEL = "l2pop_session"

#: the PostgreSQL channel every write block that moved the revision NOTIFYs (payload: the
#: revision in decimal). Channels are per database: stores on other databases never hear it.
NOTIFY_CHANNEL = "l2pop_revision"


class ReadTx(Protocol):
    """Queries over one consistent snapshot (docs/design.md, "Store contract").

    Every method sees the database as of the snapshot, never a half-written block; in a
    ``WriteTx`` it also sees the block's own writes. No query raises a ``DomainError``:
    absence is ``None`` or an empty list. A database that cannot be reached raises
    ``StoreUnavailable`` when the block starts or at any query.
    """

    def revision(self) -> int:
        """
        The store's revision as of this snapshot.

        :return: the last committed revision (0 for an empty store); in a write block
            that already took its revision (first write or ``serialize``), that revision
        """
        ...

    def get_network(self, network_id: str) -> Network | None:
        """
        One network by id.

        :param network_id: the network's id (any string; an unknown id is not an error)
        :return: the network, or ``None`` when there is none with that id
        """
        ...

    def list_networks(self) -> list[Network]:
        """
        Every network.

        :return: all networks, ordered by VNI
        """
        ...

    def get_port(self, port_id: str) -> Port | None:
        """
        One port by id, with its fixed IPs.

        :param port_id: the port's id (any string; an unknown id is not an error)
        :return: the port (``fixed_ips`` distinct and sorted, IPv4 first), or ``None``
        """
        ...

    def list_ports(
        self,
        *,
        network_id: str | None = None,
        host: str | None = None,
        status: PortStatus | None = None,
        network_ids: Iterable[str] | None = None,
        port_ids: Iterable[str] | None = None,
    ) -> list[Port]:
        """
        The ports matching every filter given (none given: every port).

        ``network_ids`` and ``port_ids`` may be long (thousands of ids): they are sent to
        the database in chunks, all within this snapshot.

        :param network_id: only ports of this network
        :param host: only ports bound to this host
        :param status: only ports with this status
        :param network_ids: only ports of one of these networks
        :param port_ids: only the ports with one of these ids (unknown ids are skipped)
        :return: the matching ports, ordered by (``network_id``, ``id``) as Python orders
            strings (database collations may differ)
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
        """
        One page of the API's port list.

        Pages are keyset pages: a port deleted between two calls never shifts or repeats
        an item of the next page.

        :param limit: the most ports to return (>= 1)
        :param after: only ports whose id sorts after this one (the last id of the
            previous page), in the database's order
        :param network_id: only ports of this network
        :param host: only ports bound to this host
        :param status: only ports with this status
        :return: at most ``limit`` ports, in the database's id order
        """
        ...

    def page_networks(self, *, limit: int, after_vni: int | None = None) -> list[Network]:
        """
        One page of the API's network list.

        :param limit: the most networks to return (>= 1)
        :param after_vni: only networks with a VNI above this one
        :return: at most ``limit`` networks, ordered by VNI
        """
        ...

    def page_hosts(self, *, limit: int, after: str | None = None) -> list[Host]:
        """
        One page of the API's host list.

        :param limit: the most hosts to return (>= 1)
        :param after: only hosts whose name sorts after this one, in the database's order
        :return: at most ``limit`` hosts, in the database's name order
        """
        ...

    def count_ports(self, network_id: str) -> int:
        """
        How many ports a network has.

        :param network_id: the network's id
        :return: the number of its ports (0 for an unknown network)
        """
        ...

    def counts(self) -> StoreCounts:
        """
        How many networks, hosts and ports (by status) the store holds, counted by the
        database (no row is read): cheap enough for every ``/metrics`` scrape.

        :return: the counts; every ``PortStatus`` is a key of ``ports``, 0 when none
        """
        ...

    def get_host(self, name: str) -> Host | None:
        """
        One host by name, with its telemetry.

        :param name: the host's name
        :return: the host, or ``None`` when none is registered under that name
        """
        ...

    def get_host_by_token_hash(self, token_hash: str) -> Host | None:
        """
        The host whose agent token hashes to ``token_hash``.

        :param token_hash: sha256 hex digest of the token (``usecases.hash_token``)
        :return: the host, or ``None`` when no host has that token
        """
        ...

    def list_hosts(self) -> list[Host]:
        """
        Every registered host.

        :return: all hosts, ordered by name as Python orders strings
        """
        ...

    def list_replicas(self) -> dict[str, datetime]:
        """
        Every server replica that ever beat on this store (``Store.beat_replica``).

        :return: replica name -> the time of its last beat
        """
        ...

    def get_binding(self, network_id: str, host: str | None) -> tuple[Network | None, Host | None]:
        """
        A network and a host in one query: what binding a port of the network to the
        host is checked against.

        :param network_id: the network's id
        :param host: the host's name (``None``: no host is looked up)
        :return: (the network or ``None``, the host or ``None``)
        """
        ...

    def changes_with_rows(self, revision: int) -> ChangedRows:
        """
        ``changes_since(revision)`` with the snapshot's revision and the current rows of
        the networks and ports the changes name: the log joined with its networks, then
        the ports by id (``list_ports(port_ids=...)``), after the revision's query.

        :raises ChangeLogTruncated: as ``changes_since``
        """
        ...

    def changes_since(self, revision: int, limit: int | None = None) -> list[Change]:
        """
        The change log after ``revision``.

        A ``limit`` never splits a revision: the last revision returned is complete, so a
        reader can always resume from the revision of the last row it got.

        :param revision: the revision the reader has seen everything up to
        :param limit: about how many rows to return (more when the last revision has more)
        :return: the change rows with a revision above ``revision``, in (revision, seq)
            order; empty when nothing was committed since
        :raises ChangeLogTruncated: if rows after ``revision`` have been pruned
            (``Store.prune_changes``): the reader must take a fresh snapshot instead
        """
        ...


class WriteTx(ReadTx, Protocol):
    """A read transaction that may also write (docs/design.md, "Store contract").

    The block holds the store's write serialisation from its first statement to commit: no
    other write block runs meanwhile, so what it reads and checks still holds when it writes.
    The first write (or ``serialize``) takes the next revision; every object written is
    stamped with it and gets one change-log row, in write order. Writes return the object
    as stored.

    Each write runs its read-only checks first: a call they refuse (``NotFound``,
    ``Conflict``) has written nothing and leaves the block usable. A violated constraint
    raises the mapped ``Conflict``/``NotFound`` too, but then the block is spoiled: it rolls
    back on exit, even if the caller swallowed the error.
    """

    def serialize(self) -> int:
        """
        Take this block's revision now, as its first write would.

        Writers queue on the revision, so once this returns no other write is in flight and
        reads see everything committed: use it before read-then-allocate (the next free
        VNI). Only for blocks that go on to write: the revision moves even if they do not.

        :return: this block's revision
        """
        ...

    def insert_network(self, network: Network) -> Network:
        """
        Create a network.

        :param network: the network to store (its ``revision`` is ignored)
        :return: the network as stored, stamped with this block's revision
        :raises Conflict: if its VNI (field ``vni``) or its id (field ``id``) is taken
        """
        ...

    def update_network(self, network: Network) -> Network:
        """
        Replace a network's name, VNI and mode (``created_at`` is kept).

        :param network: the network with its new values, found by ``id``
        :return: the network as stored, stamped with this block's revision
        :raises NotFound: if no network has that id (nothing written)
        :raises Conflict: if the new VNI is taken (field ``vni``)
        """
        ...

    def delete_network(self, network_id: str) -> None:
        """
        Delete a network that has no ports.

        :param network_id: the network's id
        :raises NotFound: if no network has that id (nothing written)
        :raises Conflict: if the network still has ports (nothing written)
        """
        ...

    def insert_port(self, port: Port) -> Port:
        """
        Create a port with its fixed IPs.

        :param port: the port to store; ``fixed_ips`` are stored distinct and sorted,
            ``created_at`` defaults to now, ``revision`` is ignored
        :return: the port as stored, stamped with this block's revision
        :raises NotFound: if its network does not exist (nothing written)
        :raises Conflict: if its host is not registered (field ``host``), one of its IPs
            is used in the network (field ``fixed_ips``, naming the first), its MAC is
            used in the network (field ``mac``) or its id is taken (field ``id``)
        """
        ...

    def insert_ports(self, ports: Sequence[Port]) -> int:
        """
        Insert many ports at once (imports, benchmarks), all stamped with one revision.

        Same rules as ``insert_port``, but checked by the constraints alone: the first
        violation spoils the whole block.

        :param ports: the ports to store (none: nothing happens, the revision stays)
        :return: how many ports were inserted
        :raises Conflict: if any port breaks a rule; ``field`` names the rule's field
            (``mac``, ``fixed_ips``, ``id``, ``network_id``, ``host``) or is ``ports``
        """
        ...

    def update_port(self, port: Port) -> Port:
        """
        Replace every field of a port but ``network_id`` and ``created_at``.

        Only the fixed IPs that changed are rewritten, so an IP kept across the update never
        leaves the network's uniqueness index.

        :param port: the port with its new values, found by ``id``
        :return: the port as stored, stamped with this block's revision
        :raises NotFound: if no port has that id (nothing written)
        :raises Conflict: if ``network_id`` differs from the stored one (field
            ``network_id``), a new host is not registered (field ``host``), an added IP
            is used in the network (field ``fixed_ips``) or the new MAC is (field ``mac``)
        """
        ...

    def delete_port(self, port_id: str) -> Port:
        """
        Delete a port and its fixed IPs.

        :param port_id: the port's id
        :return: the port as it was before the delete
        :raises NotFound: if no port has that id (nothing written)
        """
        ...

    def insert_host(self, host: Host, token_hash: str) -> Host:
        """
        Register a host. Hosts carry no revision but the write moves the store's revision
        and is logged, so the hub hears of it.

        :param host: the host (``created_at`` defaults to now; telemetry is stored as given)
        :param token_hash: sha256 hex digest of its agent token
        :return: the host as stored
        :raises Conflict: if the name (field ``name``), VTEP (field ``vtep_ip``) or token
            (field ``token``) is taken
        """
        ...

    def delete_host(self, name: str) -> None:
        """
        Delete a host that has no bound ports (unbind them first, in the same block, so
        that their change rows are written too).

        :param name: the host's name
        :raises NotFound: if no host has that name (nothing written)
        :raises Conflict: if ports are still bound to it (field ``host``; nothing written)
        """
        ...


class Store(Protocol):
    """The persistent store: transactions, telemetry and the change log's upkeep.

    Thread-safe: any number of threads may hold read and write blocks at once (writes still
    run one at a time). Every method may raise ``StoreUnavailable``.
    """

    url: str

    def read(self) -> AbstractContextManager[ReadTx]:
        """
        A read block: one consistent snapshot for the whole block, never waiting for
        writers (PostgreSQL: REPEATABLE READ, READ ONLY; SQLite: a WAL reader).

        :return: a context manager giving the ``ReadTx``
        """
        ...

    def write(self) -> AbstractContextManager[WriteTx]:
        """
        A write block: one transaction that commits when the block exits normally and
        rolls back on any exception, leaving nothing behind (revision included).

        Blocks run one at a time from their first statement, so revision order is commit
        order: a reader that sees revision R has seen every change <= R. After a block that
        moved the revision commits, each listener given to ``subscribe`` is called with the
        new revision, in the writer's thread. On PostgreSQL such a block also sends
        ``NOTIFY`` on ``NOTIFY_CHANNEL`` with the revision in decimal,
        as part of its transaction: delivered to listening sessions on commit, in revision
        order, never for a block that rolled back. A notification may still be missed (a
        listener that was reconnecting), so listeners also read ``revision()`` now and then.

        :return: a context manager giving the ``WriteTx``
        :raises RuntimeError: on exit, if a write failed with a database error that the
            block swallowed (the block was rolled back)
        """
        ...

    def subscribe(self, listener: CommitListener) -> None:
        """
        Call ``listener(revision)`` after each committed write block that moved the
        revision, in the writer's thread, once the block's locks are released. Blocks that
        wrote nothing, rolled back, or only saved telemetry or pruned are not reported.

        Listeners run in subscription order and must return quickly; one that raises is
        logged and does not affect the (already committed) write or the other listeners.

        :param listener: called with the block's revision
        """
        ...

    def record_host_report(
        self,
        name: str,
        *,
        last_seen: datetime,
        applied_revision: int | None = None,
        applied_digest: str | None = None,
    ) -> None:
        """
        Save agent telemetry for one host, outside the revision and without the write
        serialisation (its own short transaction).

        :param name: the host's name
        :param last_seen: when the agent was last heard
        :param applied_revision: the revision it acknowledged (``None``: keep the stored one)
        :param applied_digest: the digest it acknowledged (``None``: keep the stored one)
        :raises NotFound: if no host has that name
        """
        ...

    def record_host_reports(self, reports: Sequence[HostReport]) -> None:
        """
        ``record_host_report`` for many hosts in one transaction (rows locked in name
        order); hosts that are not registered (deleted meanwhile) are skipped.

        :param reports: one report per host (none: nothing happens)
        """
        ...

    def claim_session(self, report: HostReport, replica: str) -> int:
        """
        Make ``replica`` the holder of host ``report.name``'s agent session, atomically: the
        host's session generation goes up by one and is returned, so of two claims racing on
        any replicas the later one has the higher generation. Saves the report's telemetry
        in the same transaction (as ``record_host_reports``). On PostgreSQL the transaction
        also sends ``NOTIFY SESSION_CHANNEL, '<generation> <host>'``, delivered on commit.
        Telemetry: takes no write lock and moves no revision.

        :param report: the agent's hello (``last_seen``, ``datapath``, ``encaps``)
        :param replica: the claiming replica's name
        :return: the host's new session generation
        :raises NotFound: no host ``report.name`` is registered
        """
        ...

    def release_session(self, name: str, replica: str, generation: int) -> bool:
        """
        A session ended: host ``name`` has no session holder any more, if its generation is
        still ``generation`` and ``replica`` holds it (a newer claim is left alone).

        :return: whether the holder was cleared
        """
        ...

    def beat_replica(self, replica: str, now: datetime) -> None:
        """
        Say that ``replica`` is alive at ``now``: its row in ``list_replicas`` is created
        or refreshed (telemetry, outside the revision).
        """
        ...

    def prune_changes(self, before_revision: int) -> int:
        """
        Drop change-log rows with a revision below ``before_revision``.

        The pruned watermark never moves back and never passes the committed revision + 1;
        ``changes_since(R)`` raises ``ChangeLogTruncated`` once it has passed R + 1 (rows
        after R may be gone).

        :param before_revision: the first revision to keep
        :return: how many rows were deleted
        """
        ...

    def close(self) -> None:
        """Release the store's connections; the store must not be used afterwards."""
        ...


def iter_chunks(items: list[str], size: int) -> Iterator[list[str]]:
    """Split long ``IN (...)`` lists; both engines cap the number of bound parameters."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
