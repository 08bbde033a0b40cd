"""Commit notifications: who needs to know that the revision moved.

``NotifyingStore`` wraps the store so that every committed ``write()`` block reports its
revision to a ``CommitFeed``. The REST layer reads the latest revision from it (the
``L2pop-Revision`` header) and the agent channel wakes up on it to read the change log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime

from l2pop.store import HostReport, ReadTx, Store, WriteTx


class CommitFeed:
    """The latest committed revision, and callbacks run (in the writer's thread) on each."""

    def __init__(self, revision: int = 0) -> None:
        self._lock = threading.Lock()
        self.revision = revision
        self._listeners: list[Callable[[int], None]] = []

    def subscribe(self, listener: Callable[[int], None]) -> None:
        self._listeners.append(listener)

    def committed(self, revision: int) -> None:
        with self._lock:
            self.revision = max(self.revision, revision)
        for listener in list(self._listeners):
            listener(revision)


class NotifyingStore:
    """A ``Store`` that tells ``feed`` about each committed write."""

    def __init__(self, inner: Store, feed: CommitFeed) -> None:
        self.inner = inner
        self.feed = feed
        self.url = inner.url

    def read(self) -> AbstractContextManager[ReadTx]:
        return self.inner.read()

    @contextmanager
    def _write(self) -> Iterator[WriteTx]:
        with self.inner.write() as tx:
            before = tx.revision()
            yield tx
            after = tx.revision()
        if after != before:
            self.feed.committed(after)

    def write(self) -> AbstractContextManager[WriteTx]:
        return self._write()

    def record_host_report(
        self,
        name: str,
        *,
        last_seen: datetime,
        applied_revision: int | None = None,
        applied_digest: str | None = None,
    ) -> None:
        self.inner.record_host_report(
            name,
            last_seen=last_seen,
            applied_revision=applied_revision,
            applied_digest=applied_digest,
        )

    def record_host_reports(self, reports: Sequence[HostReport]) -> None:
        self.inner.record_host_reports(reports)

    def prune_changes(self, before_revision: int) -> int:
        return self.inner.prune_changes(before_revision)

    def close(self) -> None:
        self.inner.close()
