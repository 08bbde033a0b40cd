"""Persistence: the ``Store`` protocol (``abc``) and its SQLAlchemy implementation (``sql``)."""

from pathlib import Path

from l2pop.store.abc import (
    NOTIFY_CHANNEL,
    SESSION_CHANNEL,
    Change,
    ChangedRows,
    ChangeLogTruncated,
    CommitListener,
    HostReport,
    ReadTx,
    Store,
    StoreUnavailable,
    WriteTx,
)

__all__ = [
    "NOTIFY_CHANNEL",
    "SESSION_CHANNEL",
    "Change",
    "ChangeLogTruncated",
    "ChangedRows",
    "CommitListener",
    "HostReport",
    "ReadTx",
    "Store",
    "StoreUnavailable",
    "WriteTx",
    "notify_dsn",
    "open_store",
    "sqlite_path",
]


def open_store(url: str) -> Store:
    """Open (and create the schema of) the store at ``url``.

    ``sqlite:///path/file.db`` (default engine) or ``postgresql://user@host/db``.
    """
    from l2pop.store.sql import SqlStore

    return SqlStore(url)


def notify_dsn(url: str) -> str | None:
    """A libpq URI to LISTEN on ``NOTIFY_CHANNEL`` of the store at ``url`` (PostgreSQL), or
    None for an engine without notifications (SQLite)."""
    from l2pop.store.engine import notify_dsn

    return notify_dsn(url)


def sqlite_path(url: str) -> Path | None:
    """The absolute path of the SQLite file of ``url``; None for any other database."""
    from l2pop.store.engine import sqlite_path

    return sqlite_path(url)
