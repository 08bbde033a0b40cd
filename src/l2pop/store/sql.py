"""The ``Store`` on SQLAlchemy Core: one implementation for SQLite (file) and PostgreSQL.

How the contract of ``store/abc.py`` is kept:

* Write blocks are serialised from their first statement: on PostgreSQL each one starts by
  locking the ``meta`` row (``SELECT ... FOR UPDATE``, held until commit), on SQLite with
  ``BEGIN IMMEDIATE``. So every read-validate-write is atomic on both engines, and revision
  order (``UPDATE meta SET revision = revision + 1`` on the first write) is commit order.
* Uniqueness and references are constraints; an ``IntegrityError`` is mapped back to
  ``Conflict``/``NotFound`` by constraint name (``integrity.py``). Explicit checks run first
  where they give a better message; the constraints stay the race-free last word.
* Reads are one snapshot: SQLite WAL readers see the database as of their first read;
  PostgreSQL reads run REPEATABLE READ, READ ONLY.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from sqlalchemy import (
    Connection,
    CursorResult,
    Executable,
    Table,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as SqlTimeoutError

from l2pop.model import ArpSuppression, Conflict, Host, Network, NotFound, Port, PortStatus
from l2pop.model.validation import ip_sort_key
from l2pop.store.abc import (
    Change,
    ChangeKind,
    ChangeLogTruncated,
    ChangeOp,
    HostReport,
    StoreUnavailable,
    iter_chunks,
)
from l2pop.store.engine import WRITE_OPTION, make_engine
from l2pop.store.integrity import Deleting, constraint_name, domain_error
from l2pop.store.schema import changes, hosts, meta, metadata, networks, port_ips, ports

#: connection-level failures: the database is down, unreachable or locked past the timeout
UNAVAILABLE = (OperationalError, InterfaceError, SqlTimeoutError, DisconnectionError)
#: ids per ``IN (...)``; well under SQLite's 32766 and PostgreSQL's 65535 bound parameters
CHUNK = 1000
#: constraint -> request field, for errors of ``insert_ports``
BULK_FIELDS = {
    "uq_ports_network_id_mac": "mac",
    "uq_port_ips_network_id_ip": "fixed_ips",
    "pk_ports": "id",
    "fk_ports_network_id": "network_id",
    "fk_ports_host": "host",
}


def _now() -> datetime:
    return datetime.now(UTC)


def _sorted_ips(ips: Iterable[str]) -> tuple[str, ...]:
    distinct = set(ips)
    if len(distinct) < 2:  # most ports: nothing to sort, so no address to parse
        return tuple(distinct)
    return tuple(sorted(distinct, key=ip_sort_key))


def _row(table: Table, obj: object, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The column values of ``obj`` for ``table``; enums are stored by value."""
    values = {}
    for column in table.columns:
        if column.name not in skip and hasattr(obj, column.name):
            value = getattr(obj, column.name)
            values[column.name] = value.value if isinstance(value, Enum) else value
    return values


def _network(row: Any) -> Network:
    return Network(
        id=row.id,
        name=row.name,
        vni=row.vni,
        arp_suppression=ArpSuppression(row.arp_suppression),
        created_at=row.created_at,
        revision=row.revision,
    )


def _host(row: Any) -> Host:
    return Host(
        name=row.name,
        vtep_ip=row.vtep_ip,
        created_at=row.created_at,
        last_seen=row.last_seen,
        applied_revision=row.applied_revision,
        applied_digest=row.applied_digest,
    )


def _port_filters(network_id: str | None, host: str | None, status: PortStatus | None) -> list[Any]:
    """The WHERE terms of the list filters that are given."""
    conds: list[Any] = []
    if network_id is not None:
        conds.append(ports.c.network_id == network_id)
    if host is not None:
        conds.append(ports.c.host == host)
    if status is not None:
        conds.append(ports.c.status == PortStatus(status).value)
    return conds


class _ReadTx:
    """``ReadTx`` over one connection inside one transaction."""

    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def revision(self) -> int:
        return int(self._c.execute(select(meta.c.revision)).scalar_one())

    def get_network(self, network_id: str) -> Network | None:
        row = self._c.execute(select(networks).where(networks.c.id == network_id)).first()
        return _network(row) if row else None

    def list_networks(self) -> list[Network]:
        rows = self._c.execute(select(networks).order_by(networks.c.vni))
        return [_network(r) for r in rows]

    def get_port(self, port_id: str) -> Port | None:
        found = self._ports([ports.c.id == port_id])
        return found[0] if found else None

    def list_ports(
        self,
        *,
        network_id: str | None = None,
        host: str | None = None,
        status: PortStatus | None = None,
        network_ids: Iterable[str] | None = None,
        port_ids: Iterable[str] | None = None,
    ) -> list[Port]:
        conds = _port_filters(network_id, host, status)
        if network_ids is not None and port_ids is not None:
            conds.append(ports.c.network_id.in_(sorted(set(network_ids))))
        if port_ids is not None:
            column, keys = ports.c.id, port_ids
        elif network_ids is not None:
            column, keys = ports.c.network_id, network_ids
        else:
            return self._ports(conds)
        out: list[Port] = []
        for chunk in iter_chunks(sorted(set(keys)), CHUNK):
            out += self._ports([*conds, column.in_(chunk)])
        out.sort(key=lambda p: (p.network_id, p.id))
        return out

    def _ports(self, conds: list[Any], *, sql_order: bool = False) -> list[Port]:
        """Ports matching ``conds`` with their fixed IPs, in one query (a LEFT JOIN on
        port_ips: a port has at most a handful of IPs), ordered by (network_id, id), or
        with ``sql_order`` by id as the database orders it."""
        stmt = (
            select(ports, port_ips.c.ip)
            .select_from(ports.outerjoin(port_ips, port_ips.c.port_id == ports.c.id))
            .where(*conds)
        )
        if sql_order:
            stmt = stmt.order_by(ports.c.id)
        rows: dict[str, Any] = {}
        ips: dict[str, list[str]] = {}
        for row in self._c.execute(stmt):
            if row.id not in rows:
                rows[row.id] = row
                ips[row.id] = []
            if row.ip is not None:
                ips[row.id].append(row.ip)
        found = [
            Port(
                id=r.id,
                network_id=r.network_id,
                name=r.name,
                mac=r.mac,
                fixed_ips=_sorted_ips(ips[r.id]),
                host=r.host,
                status=PortStatus(r.status),
                revision=r.revision,
                created_at=r.created_at,
            )
            for r in rows.values()
        ]
        if not sql_order:
            # sorted here, not in SQL: database collations need not order text as Python does
            found.sort(key=lambda p: (p.network_id, p.id))
        return found

    def page_ports(
        self,
        *,
        limit: int,
        after: str | None = None,
        network_id: str | None = None,
        host: str | None = None,
        status: PortStatus | None = None,
    ) -> list[Port]:
        conds = _port_filters(network_id, host, status)
        if after is not None:
            conds.append(ports.c.id > after)
        # the page's ids in a subquery: a LIMIT over the IP join would cut a port's addresses
        page = select(ports.c.id).where(*conds).order_by(ports.c.id).limit(limit)
        return self._ports([ports.c.id.in_(page.scalar_subquery())], sql_order=True)

    def page_networks(self, *, limit: int, after_vni: int | None = None) -> list[Network]:
        stmt = select(networks).order_by(networks.c.vni).limit(limit)
        if after_vni is not None:
            stmt = stmt.where(networks.c.vni > after_vni)
        return [_network(r) for r in self._c.execute(stmt)]

    def page_hosts(self, *, limit: int, after: str | None = None) -> list[Host]:
        stmt = select(hosts).order_by(hosts.c.name).limit(limit)
        if after is not None:
            stmt = stmt.where(hosts.c.name > after)
        return [_host(r) for r in self._c.execute(stmt)]

    def count_ports(self, network_id: str) -> int:
        stmt = select(func.count()).select_from(ports).where(ports.c.network_id == network_id)
        return int(self._c.execute(stmt).scalar_one())

    def get_host(self, name: str) -> Host | None:
        row = self._c.execute(select(hosts).where(hosts.c.name == name)).first()
        return _host(row) if row else None

    def get_host_by_token_hash(self, token_hash: str) -> Host | None:
        row = self._c.execute(select(hosts).where(hosts.c.token_hash == token_hash)).first()
        return _host(row) if row else None

    def list_hosts(self) -> list[Host]:
        return sorted((_host(r) for r in self._c.execute(select(hosts))), key=lambda h: h.name)

    def changes_since(self, revision: int, limit: int | None = None) -> list[Change]:
        """Change rows after ``revision`` in (revision, seq) order.

        ``limit`` never splits a revision: the last revision returned is complete, so a
        reader can always resume from the revision of the last row it got.
        """
        pruned_before = int(self._c.execute(select(meta.c.pruned_before)).scalar_one())
        if revision + 1 < pruned_before:
            raise ChangeLogTruncated(
                f"changes after revision {revision} were pruned; "
                f"the log starts at revision {pruned_before}"
            )
        order = (changes.c.revision, changes.c.seq)
        stmt = select(changes).where(changes.c.revision > revision).order_by(*order)
        rows = list(self._c.execute(stmt if limit is None else stmt.limit(limit)))
        if limit is not None and rows and len(rows) == limit:
            last = rows[-1]
            rest = select(changes).where(
                changes.c.revision == last.revision, changes.c.seq > last.seq
            )
            rows += self._c.execute(rest.order_by(changes.c.seq))
        return [Change(r.revision, r.kind, r.key, r.op, r.network_id) for r in rows]


class _WriteTx(_ReadTx):
    """``WriteTx``. Each write method runs its read-only checks first: a call they refuse
    (``NotFound``, ``Conflict``) leaves the block usable and the revision untouched. After a
    database error (constraint violation included) the block is ``failed``: it rolls back."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self._revision: int | None = None
        self._seq = 0
        self.failed = False

    def _exec(self, stmt: Executable, params: Any = None, subject: object = None) -> Any:
        try:
            return self._c.execute(stmt, params)
        except DBAPIError as exc:
            # PostgreSQL aborts the transaction on any error; make SQLite behave the same
            self.failed = True
            if isinstance(exc, IntegrityError):
                error = domain_error(exc, subject)
                if error is not None:
                    raise error from exc
            raise

    def _stamp(self) -> int:
        """This block's revision, taken on its first write."""
        if self._revision is None:
            bump = update(meta).values(revision=meta.c.revision + 1).returning(meta.c.revision)
            self._revision = int(self._exec(bump).scalar_one())
        return self._revision

    def _log(self, kind: ChangeKind, key: str, op: ChangeOp, network_id: str | None) -> None:
        self._seq += 1
        row = dict(revision=self._revision, seq=self._seq, kind=kind, key=key, op=op)
        self._exec(insert(changes).values(**row, network_id=network_id))

    def _modified(self, result: CursorResult[Any], what: str) -> None:
        if result.rowcount == 0:  # deleted by a concurrent writer after our check
            self.failed = True
            raise NotFound(f"{what} not found")

    # -- networks ---------------------------------------------------------------------

    def _require_network(self, network_id: str) -> None:
        if self.get_network(network_id) is None:
            raise NotFound(f"network {network_id} not found")

    def serialize(self) -> int:
        return self._stamp()

    def insert_network(self, network: Network) -> Network:
        stored = replace(network, revision=self._stamp())
        self._exec(insert(networks).values(_row(networks, stored)), subject=stored)
        self._log("network", stored.id, "create", stored.id)
        return stored

    def update_network(self, network: Network) -> Network:
        self._require_network(network.id)
        stored = replace(network, revision=self._stamp())
        values = _row(networks, stored, skip=("id", "created_at"))
        stmt = update(networks).where(networks.c.id == stored.id).values(values)
        self._modified(self._exec(stmt, subject=stored), f"network {stored.id}")
        self._log("network", stored.id, "update", stored.id)
        return stored

    def delete_network(self, network_id: str) -> None:
        self._require_network(network_id)
        if count := self.count_ports(network_id):
            raise Conflict(f"network {network_id} still has {count} port(s); delete them first")
        self._stamp()
        stmt = delete(networks).where(networks.c.id == network_id)
        result = self._exec(stmt, subject=Deleting("network", network_id))
        self._modified(result, f"network {network_id}")
        self._log("network", network_id, "delete", network_id)

    # -- ports ------------------------------------------------------------------------

    def _check_host(self, host: str | None) -> None:
        known = select(exists().where(hosts.c.name == host))
        if host is not None and not self._c.execute(known).scalar():
            raise Conflict(f"host {host} is not registered", field="host")

    def _check_ips(self, port: Port, ips: Iterable[str]) -> None:
        """Refuse IPs another port of the network holds, naming the first one."""
        wanted = sorted(ips)
        if not wanted:
            return
        stmt = select(port_ips.c.ip).where(
            port_ips.c.network_id == port.network_id,
            port_ips.c.ip.in_(wanted),
            port_ips.c.port_id != port.id,
        )
        if taken := self._c.execute(stmt).scalars().all():
            ip = _sorted_ips(taken)[0]
            raise Conflict(f"ip {ip} is already used in network {port.network_id}", "fixed_ips")

    def _insert_ips(self, port: Port, ips: Iterable[str]) -> None:
        rows = [{"port_id": port.id, "network_id": port.network_id, "ip": ip} for ip in ips]
        if rows:
            # one multi-row VALUES statement: psycopg runs executemany() in pipeline mode,
            # which logs a warning when a row violates a constraint
            self._exec(insert(port_ips).values(rows), subject=port)

    def insert_port(self, port: Port) -> Port:
        self._require_network(port.network_id)
        self._check_host(port.host)
        self._check_ips(port, port.fixed_ips)
        stored = replace(
            port,
            fixed_ips=_sorted_ips(port.fixed_ips),
            revision=self._stamp(),
            created_at=port.created_at or _now(),
        )
        self._exec(insert(ports).values(_row(ports, stored)), subject=stored)
        self._insert_ips(stored, stored.fixed_ips)
        self._log("port", stored.id, "create", stored.network_id)
        return stored

    def insert_ports(self, new_ports: Sequence[Port]) -> int:
        if not new_ports:
            return 0
        revision = self._stamp()
        now = _now()
        port_rows, ip_rows, change_rows = [], [], []
        for port in new_ports:
            stored = replace(port, revision=revision, created_at=port.created_at or now)
            port_rows.append(_row(ports, stored))
            ip_rows += [
                {"port_id": port.id, "network_id": port.network_id, "ip": ip}
                for ip in set(port.fixed_ips)
            ]
            self._seq += 1
            change_rows.append(
                dict(
                    revision=revision,
                    seq=self._seq,
                    kind="port",
                    key=port.id,
                    op="create",
                    network_id=port.network_id,
                )
            )
        try:
            for table, rows in ((ports, port_rows), (port_ips, ip_rows), (changes, change_rows)):
                for start in range(0, len(rows), CHUNK):
                    self._exec(insert(table), rows[start : start + CHUNK])
        except IntegrityError as exc:
            name = constraint_name(exc)
            field = BULK_FIELDS.get(name or "", "ports")
            raise Conflict(f"bulk insert refused: {field} violates {name}", field) from exc
        return len(port_rows)

    def update_port(self, port: Port) -> Port:
        """Update every field but ``network_id`` (a port cannot change networks) and
        ``created_at``; only the fixed IPs that changed are rewritten."""
        old = self.get_port(port.id)
        if old is None:
            raise NotFound(f"port {port.id} not found")
        if port.network_id != old.network_id:
            raise Conflict(f"port {port.id} cannot move to another network", "network_id")
        added = set(port.fixed_ips) - set(old.fixed_ips)
        removed = set(old.fixed_ips) - set(port.fixed_ips)
        if port.host != old.host:
            self._check_host(port.host)
        self._check_ips(port, added)
        stored = replace(
            port,
            fixed_ips=_sorted_ips(port.fixed_ips),
            revision=self._stamp(),
            created_at=old.created_at,
        )
        values = _row(ports, stored, skip=("id", "network_id", "created_at"))
        stmt = update(ports).where(ports.c.id == stored.id).values(values)
        self._modified(self._exec(stmt, subject=stored), f"port {stored.id}")
        if removed:
            gone = port_ips.c.ip.in_(sorted(removed))
            self._exec(delete(port_ips).where(port_ips.c.port_id == stored.id, gone))
        self._insert_ips(stored, _sorted_ips(added))
        self._log("port", stored.id, "update", stored.network_id)
        return stored

    def delete_port(self, port_id: str) -> Port:
        old = self.get_port(port_id)
        if old is None:
            raise NotFound(f"port {port_id} not found")
        self._stamp()
        # port_ips rows go with it (ON DELETE CASCADE)
        result = self._exec(delete(ports).where(ports.c.id == port_id))
        self._modified(result, f"port {port_id}")
        self._log("port", port_id, "delete", old.network_id)
        return old

    # -- hosts ------------------------------------------------------------------------

    def insert_host(self, host: Host, token_hash: str) -> Host:
        self._stamp()
        stored = replace(host, created_at=host.created_at or _now())
        values = _row(hosts, stored) | {"token_hash": token_hash}
        self._exec(insert(hosts).values(values), subject=stored)
        self._log("host", stored.name, "create", None)
        return stored

    def delete_host(self, name: str) -> None:
        """Refused (``Conflict``) while ports are bound to the host: unbind them first, in
        the same block, so that their change rows are written too."""
        if self.get_host(name) is None:
            raise NotFound(f"host {name} not found")
        bound = select(func.count()).select_from(ports).where(ports.c.host == name)
        if count := int(self._c.execute(bound).scalar_one()):
            raise Conflict(f"host {name} still has {count} bound port(s)", field="host")
        self._stamp()
        stmt = delete(hosts).where(hosts.c.name == name)
        self._modified(self._exec(stmt, subject=Deleting("host", name)), f"host {name}")
        self._log("host", name, "delete", None)


class SqlStore:
    """The ``Store`` on ``sqlite:///FILE`` or ``postgresql://...`` (psycopg 3).

    The schema is created when missing. Thread-safe: every block takes its own pooled
    connection. A ``write()`` block whose write failed with a database error rolls back even
    if the caller swallowed the error, and then raises ``RuntimeError``.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = make_engine(url)
        self._postgres = self._engine.dialect.name == "postgresql"
        self._sqlite_writer = threading.Lock()
        with self._begin(write=True) as conn:
            if self._postgres:  # two processes opening a new database must not both create it
                conn.execute(text("SELECT pg_advisory_xact_lock(7216505)"))
            metadata.create_all(conn)
            if conn.execute(select(meta.c.id)).first() is None:
                conn.execute(insert(meta).values(id=1, revision=0, pruned_before=0))

    @contextmanager
    def _begin(self, *, write: bool) -> Iterator[Connection]:
        """One transaction on one pooled connection; commits on success."""
        # SQLite has one writer at a time; its busy handler makes waiters sleep-poll with
        # growing naps (up to 100 ms), which turns lock contention into latency. Writers of
        # this process queue on a lock instead and start the moment the last one commits.
        # (Other processes still meet busy_timeout.)
        serial = self._sqlite_writer if write and not self._postgres else nullcontext()
        try:
            with serial, self._engine.connect() as conn:
                if write:
                    conn.execution_options(**{WRITE_OPTION: True})
                elif self._postgres:
                    # one snapshot for the whole block (READ COMMITTED takes one per statement)
                    conn.execution_options(
                        isolation_level="REPEATABLE READ", postgresql_readonly=True
                    )
                with conn.begin():
                    yield conn
        except UNAVAILABLE as exc:
            # callers see the store's word, not the driver's (the server answers 503)
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}".splitlines()[0][:300]) from exc

    @contextmanager
    def read(self) -> Iterator[_ReadTx]:
        with self._begin(write=False) as conn:
            yield _ReadTx(conn)

    @contextmanager
    def write(self) -> Iterator[_WriteTx]:
        with self._begin(write=True) as conn:
            if self._postgres:
                # Writers queue here, before their first read: a use-case reads, validates
                # and writes as if it ran alone (docs/adr/0014-write-serialisation.md).
                # Under READ COMMITTED every later statement then sees every commit that
                # went before it, so no check runs on a stale row and no write stores one.
                conn.execute(select(meta.c.revision).where(meta.c.id == 1).with_for_update())
            tx = _WriteTx(conn)
            yield tx
            if tx.failed:
                # raising here makes conn.begin() roll back
                raise RuntimeError("a write in this block failed; the block was rolled back")

    def record_host_report(
        self,
        name: str,
        *,
        last_seen: datetime,
        applied_revision: int | None = None,
        applied_digest: str | None = None,
    ) -> None:
        """Save agent telemetry; ``None`` leaves a value as it was. ``NotFound`` when no
        host ``name`` is registered."""
        values: dict[str, Any] = {"last_seen": last_seen}
        if applied_revision is not None:
            values["applied_revision"] = applied_revision
        if applied_digest is not None:
            values["applied_digest"] = applied_digest
        with self._begin(write=True) as conn:
            result = conn.execute(update(hosts).where(hosts.c.name == name).values(**values))
            if result.rowcount == 0:
                raise NotFound(f"host {name} not found")

    def record_host_reports(self, reports: Sequence[HostReport]) -> None:
        if not reports:
            return
        stmt = (
            update(hosts)
            .where(hosts.c.name == bindparam("b_name"))
            .values(
                last_seen=bindparam("b_seen"),
                applied_revision=func.coalesce(bindparam("b_rev"), hosts.c.applied_revision),
                applied_digest=func.coalesce(bindparam("b_digest"), hosts.c.applied_digest),
            )
        )
        rows = [
            {
                "b_name": r.name,
                "b_seen": r.last_seen,
                "b_rev": r.applied_revision,
                "b_digest": r.applied_digest,
            }
            for r in sorted(reports, key=lambda r: r.name)  # one lock order
        ]
        with self._begin(write=True) as conn:
            conn.execute(stmt, rows)

    def prune_changes(self, before_revision: int) -> int:
        with self._begin(write=True) as conn:
            current, pruned = conn.execute(select(meta.c.revision, meta.c.pruned_before)).one()
            # the watermark never passes the committed revision: rows of revisions not yet
            # written cannot have been pruned, and readers must not be told they were
            mark = min(before_revision, current + 1)
            result = conn.execute(delete(changes).where(changes.c.revision < mark))
            if mark > pruned:
                conn.execute(update(meta).values(pruned_before=mark))
            return int(result.rowcount)

    def close(self) -> None:
        self._engine.dispose()

    def __repr__(self) -> str:
        return f"SqlStore({make_url(self.url).render_as_string(hide_password=True)!r})"
