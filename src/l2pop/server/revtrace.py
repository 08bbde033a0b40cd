"""The hub's bounded timeline of recent revisions (``Hub.trace``, served by ``GET /v1/trace``):
when each commit was heard of and when each batch was read and applied, on the machine's
``time.monotonic()`` (CLOCK_MONOTONIC, comparable across its processes)."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

#: commits and batches the hub's ``RevisionTrace`` keeps (the oldest go first)
TRACE_KEEP = 2_048


@dataclass(frozen=True, slots=True)
class BatchTrace:
    """When one batch went through the hub (``time.monotonic()``, system-wide): its read
    of the change log began (``read_at``) and it was applied, every subscriber having
    queued its messages (``applied_at``); it moved the hub from ``prev_revision`` to
    ``revision`` and had something to tell ``hosts`` hosts."""

    revision: int
    prev_revision: int
    read_at: float
    applied_at: float
    hosts: int


class RevisionTrace:
    """A bounded timeline of recent revisions, for an operator asking where time went
    (``GET /v1/trace``): ``commits`` holds (revision, time the hub heard of the commit:
    for this process's own writes, right after the commit in the writer's thread; for
    another replica's, when the feed heard of it), ``batches`` a ``BatchTrace`` per batch.
    One ``deque.append`` per commit and per batch.

    ``heard_at(revision)`` answers in O(1) when the hub first heard of ``revision`` (an
    ack's apply latency is measured from it, once per ack): an index over ``commits``,
    bounded with it, kept by ``heard``. Write commits with ``heard``, never by appending
    to ``commits`` directly, or the index misses them.
    """

    def __init__(self, keep: int = TRACE_KEEP) -> None:
        self.commits: deque[tuple[int, float]] = deque(maxlen=keep)
        self.batches: deque[BatchTrace] = deque(maxlen=keep)
        # revision -> first time heard, for the revisions whose first hearing is still in
        # ``commits``; the lock makes "evict the oldest, then append" one step, since
        # writer threads and the feed's thread call ``heard`` concurrently
        self._first: dict[int, float] = {}
        self._lock = threading.Lock()

    def heard(self, revision: int, at: float) -> None:
        """The hub heard of ``revision``'s commit at ``at`` (``time.monotonic()``; any
        thread). The same revision may be heard again (a wait or a resuming agent wakes
        the hub with it): ``commits`` records every hearing, ``heard_at`` the first."""
        with self._lock:
            commits = self.commits
            if len(commits) == commits.maxlen:
                old_revision, old_at = commits[0]  # the append below evicts it
                if self._first.get(old_revision) == old_at:
                    del self._first[old_revision]
            commits.append((revision, at))
            self._first.setdefault(revision, at)

    def heard_at(self, revision: int) -> float | None:
        """When the hub first heard of ``revision``'s commit; None when it never did (a
        revision it loaded, or one the feed skipped) or that is no longer kept."""
        return self._first.get(revision)
