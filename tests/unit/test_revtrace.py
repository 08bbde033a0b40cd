"""``RevisionTrace``: the commit timeline ``GET /v1/trace`` serves, and its O(1) index of when
each revision was first heard (what the apply latency histogram is measured from)."""

from __future__ import annotations

import threading

from l2pop.server.revtrace import RevisionTrace


def test_heard_at_is_the_first_hearing_and_the_timeline_keeps_every_one() -> None:
    trace = RevisionTrace(keep=8)
    trace.heard(5, 1.0)
    trace.heard(5, 2.0)  # a wait or a resuming agent wakes the hub with it again
    trace.heard(6, 3.0)
    assert trace.heard_at(5) == 1.0
    assert trace.heard_at(6) == 3.0
    assert trace.heard_at(7) is None
    assert list(trace.commits) == [(5, 1.0), (5, 2.0), (6, 3.0)]


def test_the_index_is_bounded_with_the_timeline() -> None:
    trace = RevisionTrace(keep=4)
    for revision in range(1, 11):
        trace.heard(revision, float(revision))
    assert [r for r, _ in trace.commits] == [7, 8, 9, 10]
    assert [trace.heard_at(r) for r in range(1, 11)] == [None] * 6 + [7.0, 8.0, 9.0, 10.0]
    assert len(trace._first) == 4


def test_a_revision_goes_with_its_first_hearing() -> None:
    trace = RevisionTrace(keep=3)
    trace.heard(1, 1.0)
    trace.heard(1, 2.0)
    trace.heard(2, 3.0)
    trace.heard(3, 4.0)  # evicts (1, 1.0): the first hearing of 1 is gone
    assert trace.heard_at(1) is None
    assert trace.heard_at(2) == 3.0


def test_concurrent_hearings_keep_the_index_consistent() -> None:
    trace = RevisionTrace(keep=64)

    def hear(base: int) -> None:
        for i in range(2_000):
            trace.heard(base + i, float(base + i))

    threads = [threading.Thread(target=hear, args=(n * 10_000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(trace.commits) == 64
    assert trace._first == dict(trace.commits)
