"""The hub's bounded timeline of recent revisions (``Hub.trace``, served by ``GET /v1/trace``):
when each commit was heard of and when each batch was read and applied, on the machine's
``time.monotonic()`` (CLOCK_MONOTONIC, comparable across its processes)."""

from __future__ import annotations

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
    One ``deque.append`` per commit and per batch."""

    def __init__(self, keep: int = TRACE_KEEP) -> None:
        self.commits: deque[tuple[int, float]] = deque(maxlen=keep)
        self.batches: deque[BatchTrace] = deque(maxlen=keep)
