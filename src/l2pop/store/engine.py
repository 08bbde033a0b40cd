"""Engines for the store's two databases, with the settings each needs to keep the contract.

PostgreSQL through psycopg 3; SQLite as a file (WAL, foreign keys, a write block that starts
with ``BEGIN IMMEDIATE`` when its connection carries ``WRITE_OPTION``). Also what a server
needs to know of a store URL without SQLAlchemy: the SQLite file (``sqlite_path``) and, on
PostgreSQL, where to LISTEN for its commits (``notify_dsn``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

#: execution option that makes the SQLite "begin" hook emit BEGIN IMMEDIATE
WRITE_OPTION = "l2pop_write"


def notify_dsn(url: str) -> str | None:
    """A libpq connection URI for LISTENing on the store at ``url``; None unless PostgreSQL.

    The same server, database and credentials as the store's engine, so a listener hears
    exactly the commits of that database.
    """
    u = make_url(url)
    if u.get_backend_name() != "postgresql":
        return None
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path | None:
    """The absolute path of the SQLite file of ``url``; None for any other database."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database).expanduser().resolve()


def make_engine(url: str) -> Engine:
    """An engine for ``sqlite:///FILE`` or ``postgresql://...``; ``ValueError`` otherwise."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    backend = u.get_backend_name()
    if backend == "postgresql":
        return create_engine(u, pool_size=10, max_overflow=30)
    if backend != "sqlite":
        raise ValueError(f"unsupported database URL {url!r}: use sqlite:///FILE or postgresql://")
    if not u.database or u.database == ":memory:":
        # every pooled connection would get its own empty database
        raise ValueError("the SQLite store needs a file: sqlite:///path/to/l2pop.db")
    path = Path(u.database).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Owner-only before SQLite creates it (0644 under the usual umask): it holds the agent
        # tokens' hashes, and SQLite gives -wal and -shm the database file's mode.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    engine = create_engine(u, pool_size=10, max_overflow=30)
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # SQLAlchemy's pysqlite recipe: stop the driver from issuing its own (deferred) BEGIN so
    # that _sqlite_begin decides; a deferred writer that upgrades its lock can deadlock
    # ("database is locked") instead of waiting in busy_timeout.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")  # first: the other pragmas may wait for locks
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer and vice versa
    cur.execute("PRAGMA foreign_keys=ON")  # off by default, per connection
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across crashes, fsync at checkpoints
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
