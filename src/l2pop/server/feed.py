"""Commit notification: how this server learns that the store's revision moved.

``CommitFeed`` is the one seam for it. The REST layer reads the latest revision from the
feed (the ``L2pop-Revision`` header, ``/healthz``) and the hub is woken by it to read the
change log; neither knows where the news comes from.
"""

from __future__ import annotations

import threading
from typing import Protocol

from l2pop.store import CommitListener, Store


class CommitFeed(Protocol):
    """The latest committed revision this server knows of; each new one wakes a listener.

    This is the seam where a later change replaces in-process notification: today
    ``InProcessFeed`` hears only the commits of this process's own ``Store``. Server replicas
    on one PostgreSQL need each other's commits too; a PostgreSQL feed will implement this
    protocol with LISTEN/NOTIFY (each write transaction sends ``NOTIFY`` with its revision,
    delivered only on commit; one connection per process listens and calls the listener),
    and nothing above the protocol changes.
    """

    @property
    def revision(self) -> int:
        """The highest committed revision this feed has heard of (never goes back)."""
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

    def _committed(self, revision: int) -> None:
        with self._lock:
            self._revision = max(self._revision, revision)
        self._on_commit(revision)
