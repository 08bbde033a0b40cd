"""Persistence: the ``Store`` protocol (``abc``) and its SQLAlchemy implementation (``sql``)."""

from l2pop.store.abc import (
    Change,
    ChangeLogTruncated,
    CommitListener,
    HostReport,
    ReadTx,
    Store,
    StoreUnavailable,
    WriteTx,
)

__all__ = [
    "Change",
    "ChangeLogTruncated",
    "CommitListener",
    "HostReport",
    "ReadTx",
    "Store",
    "StoreUnavailable",
    "WriteTx",
    "open_store",
]


def open_store(url: str) -> Store:
    """Open (and create the schema of) the store at ``url``.

    ``sqlite:///path/file.db`` (default engine) or ``postgresql://user@host/db``.
    """
    from l2pop.store.sql import SqlStore

    return SqlStore(url)
