"""Commit notification: how this server learns that the store's revision moved.

``CommitFeed`` is the one seam for it. The REST layer reads the latest revision from the
feed (the ``L2pop-Revision`` header, ``/healthz``) and the hub is woken by it to read the
change log; neither knows where the news comes from.

Two implementations, chosen by the store's engine in ``server/app.py``: ``InProcessFeed``
for SQLite (one server process per database, so its own commits are all there are) and
``PostgresFeed`` (``server/pgfeed.py``) for PostgreSQL, which also hears the commits of
other server processes on the same database (docs/adr/0021-replicas-follow-the-change-log.md).
"""

from __future__ import annotations

import threading
from typing import Protocol

from l2pop.store import CommitListener, Store


class CommitFeed(Protocol):
    """The latest committed revision this server knows of; each new one wakes a listener.

    The listener (given at construction) is called with a revision once it is committed;
    a feed may skip revisions (the listener reads the change log since its own revision
    anyway) but never stays behind a commit for long: this process's own commits are heard
    before the write returns, other processes' within the feed's bound (``PostgresFeed``:
    one round trip, at worst its poll interval).

    ``start()`` once the listener may be called from the feed's own thread (the server's
    lifespan), ``close()`` at shutdown; both are idempotent and never raise.
    """

    @property
    def revision(self) -> int:
        """The highest committed revision this feed has heard of (never goes back)."""
        ...

    def start(self) -> None:
        """Begin hearing commits from outside this process, if the feed can."""
        ...

    def close(self) -> None:
        """Stop hearing commits; the feed holds no resources afterwards."""
        ...


class InProcessFeed:
    """``CommitFeed`` from the store's own commit hook (``Store.subscribe``): it sees every
    write committed through ``store`` in this process, and nothing else.

    ``on_commit(revision)`` runs in the writer's thread right after each commit, so it must
    only hand the news on (the hub's ``notify`` wakes the event loop).
    """

    def __init__(self, store: Store, on_commit: CommitListener) -> None:
        self._lock = threading.Lock()
        self._on_commit = on_commit
        self._revision = 0
        store.subscribe(self._committed)  # before reading: no commit falls in between
        with store.read() as tx:
            current = tx.revision()
        with self._lock:
            self._revision = max(self._revision, current)

    @property
    def revision(self) -> int:
        return self._revision

    def start(self) -> None:
        pass  # the store's hook runs from construction on

    def close(self) -> None:
        pass

    def _committed(self, revision: int) -> None:
        with self._lock:
            self._revision = max(self._revision, revision)
        self._on_commit(revision)
