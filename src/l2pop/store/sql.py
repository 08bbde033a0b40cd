"""The ``Store`` on SQLAlchemy Core: one implementation for SQLite (file) and PostgreSQL.

How the contract of ``store/abc.py`` is kept, by job:

* ``sql.py`` (this module): transactions. Write blocks are serialised from their first
  statement: on PostgreSQL each one starts by locking the ``meta`` row (``SELECT ... FOR
  UPDATE``, held until commit), on SQLite with ``BEGIN IMMEDIATE``. So every
  read-validate-write is atomic on both engines, and revision order is commit order. After
  a block that moved the revision commits, every listener given to ``subscribe`` hears it;
  on PostgreSQL the block also sends ``NOTIFY l2pop_revision, '<revision>'`` as its last
  statement (``SqlWriteTx.finish``, which also writes the revision, read by the lock, and
  the block's change rows), which the database delivers on commit to every process
  LISTENing (server replicas, ``server/pgfeed.py``) and drops on rollback.
  Telemetry and pruning run here too, outside the revision.
* ``_read.py``: the queries of ``ReadTx``, one snapshot per block (SQLite WAL readers see
  the database as of their first read; PostgreSQL reads run REPEATABLE READ, READ ONLY).
* ``_write.py``: the writes of ``WriteTx``. Uniqueness and references are constraints; an
  ``IntegrityError`` is mapped back to ``Conflict``/``NotFound`` by constraint name
  (``integrity.py``). Explicit checks run first where they give a better message; the
  constraints stay the race-free last word.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, inspect, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SqlTimeoutError
from sqlalchemy.schema import CreateColumn

from l2pop.model import NotFound
from l2pop.store._read import SqlReadTx, encaps_text
from l2pop.store._write import SqlWriteTx
from l2pop.store.abc import (
    SESSION_CHANNEL,
    CommitListener,
    HostReport,
    StoreUnavailable,
)
from l2pop.store.engine import WRITE_OPTION, make_engine
from l2pop.store.schema import ADDED_COLUMNS, changes, hosts, meta, metadata, replicas

log = logging.getLogger("l2pop.store")

#: connection-level failures: the database is down, unreachable or locked past the timeout
UNAVAILABLE = (OperationalError, InterfaceError, SqlTimeoutError, DisconnectionError)


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
        self._listeners: tuple[CommitListener, ...] = ()
        with self._begin(write=True) as conn:
            if self._postgres:  # two processes opening a new database must not both create it
                conn.execute(text("SELECT pg_advisory_xact_lock(7216505)"))
            metadata.create_all(conn)
            add_missing_columns(conn)
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
    def read(self) -> Iterator[SqlReadTx]:
        with self._begin(write=False) as conn:
            yield SqlReadTx(conn)

    @contextmanager
    def write(self) -> Iterator[SqlWriteTx]:
        with self._begin(write=True) as conn:
            locked = None
            if self._postgres:
                # Writers queue here, before their first read: a use-case reads, validates
                # and writes as if it ran alone (docs/adr/0014-write-serialisation.md).
                # Under READ COMMITTED every later statement then sees every commit that
                # went before it, so no check runs on a stale row and no write stores one.
                # The row stays locked until commit, so the block's revision is the next.
                lock = select(meta.c.revision).where(meta.c.id == 1).with_for_update()
                locked = int(conn.execute(lock).scalar_one())
            tx = SqlWriteTx(conn, locked)
            yield tx
            if tx.failed:
                # raising here makes conn.begin() roll back
                raise RuntimeError("a write in this block failed; the block was rolled back")
            # The change rows, and on PostgreSQL the revision with the NOTIFY, as the last
            # statement: PostgreSQL delivers it only if the block commits, after the commit
            # is visible, so a listener that reads on hearing it sees the revision. Writers
            # are serialised, so notifications go out in revision order (ADR 21).
            tx.finish()
        # committed, and the writer lock is free: listeners never hold up the next writer
        if tx.taken_revision is not None:
            self._committed(tx.taken_revision)

    def subscribe(self, listener: CommitListener) -> None:
        self._listeners = (*self._listeners, listener)

    def _committed(self, revision: int) -> None:
        for listener in self._listeners:
            try:
                listener(revision)
            except Exception:
                # the write is committed: a listener's failure must not turn it into an error
                log.exception("commit listener %r failed for revision %d", listener, revision)

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
        # what a hello announced: the datapath and its encaps are written together
        announced = [
            {"b_name": r.name, "b_datapath": r.datapath, "b_encaps": encaps_text(r.encaps)}
            for r in sorted(reports, key=lambda r: r.name)
            if r.encaps is not None
        ]
        carries = (
            update(hosts)
            .where(hosts.c.name == bindparam("b_name"))
            .values(datapath=bindparam("b_datapath"), encaps=bindparam("b_encaps"))
        )
        with self._begin(write=True) as conn:
            conn.execute(stmt, rows)
            if announced:
                conn.execute(carries, announced)

    def claim_session(self, report: HostReport, replica: str) -> int:
        values: dict[str, Any] = {
            "last_seen": report.last_seen,
            "session_replica": replica,
            "session_generation": hosts.c.session_generation + 1,
        }
        if report.encaps is not None:
            values["datapath"] = report.datapath
            values["encaps"] = encaps_text(report.encaps)
        stmt = (
            update(hosts)
            .where(hosts.c.name == report.name)
            .values(**values)
            .returning(hosts.c.session_generation)
        )
        with self._begin(write=True) as conn:
            generation = conn.execute(stmt).scalar()
            if generation is None:
                raise NotFound(f"host {report.name} not found")
            if self._postgres:
                payload = f"{generation} {report.name}"
                conn.execute(select(func.pg_notify(SESSION_CHANNEL, payload)))
        return int(generation)

    def release_session(self, name: str, replica: str, generation: int) -> bool:
        stmt = (
            update(hosts)
            .where(
                hosts.c.name == name,
                hosts.c.session_replica == replica,
                hosts.c.session_generation == generation,
            )
            .values(session_replica=None)
        )
        with self._begin(write=True) as conn:
            return bool(conn.execute(stmt).rowcount)

    def beat_replica(self, replica: str, now: datetime) -> None:
        upsert = pg_insert if self._postgres else sqlite_insert
        stmt = upsert(replicas).values(name=replica, started_at=now, last_seen=now)
        stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={"last_seen": now})
        with self._begin(write=True) as conn:
            conn.execute(stmt)

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


def add_missing_columns(conn: Connection) -> None:
    """Add the columns of ``ADDED_COLUMNS`` that a store made by an older version lacks
    (``ALTER TABLE ... ADD COLUMN``, with the column's type, nullability and default), so an
    upgraded server opens an old database as it is; existing rows take the default."""
    inspector = inspect(conn)
    present = {t: {c["name"] for c in inspector.get_columns(t)} for t, _ in ADDED_COLUMNS}
    for table_name, column_name in ADDED_COLUMNS:
        if column_name in present[table_name]:
            continue
        column = metadata.tables[table_name].c[column_name]
        ddl = CreateColumn(column).compile(dialect=conn.dialect)
        log.info("store: adding column %s.%s", table_name, column_name)
        conn.execute(text(f"ALTER TABLE {table_name} ADD COLUMN {ddl}"))
