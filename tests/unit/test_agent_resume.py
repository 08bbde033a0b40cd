"""The agent's side of a resumed session (``Reconciler.resume_point``, ``on_resume``): it
offers a revision only while its tables are the server's; a resume replaces the networks it
brings, drops those it says the host left, keeps every other network untouched, and programs
only the difference, on the fast path (no dump)."""

from __future__ import annotations

import pytest
from test_agent_reconciler import M2, M3, V2, V3, CountingDatapath, delta, local, snapshot, tables

from l2pop.agent.reconciler import Gap, Reconciler
from l2pop.model import NetworkTables, PortStatus, diff_state, digest
from l2pop.wire.channel import Heartbeat, LocalPort, NetworkTablesMsg, Resume


def resume(
    prev: int,
    revision: int,
    after: dict[str, NetworkTables],
    changed: list[str],
    *,
    left: tuple[str, ...] = (),
    ports: tuple[LocalPort, ...] = (),
) -> Resume:
    return Resume(
        revision=revision,
        prev_revision=prev,
        digest=digest(after),
        networks=[NetworkTablesMsg.of(after[n]) for n in changed],
        networks_left=list(left),
        ports=list(ports),
    )


N1 = tables("n1", 100, (M2, V2, "198.19.0.2"))
N2 = tables("n2", 200, (M3, V3, "198.19.1.3"))
N3 = tables("n3", 300, (M3, V3, "198.19.2.3"))


def synced(
    state: dict[str, NetworkTables], revision: int = 5
) -> tuple[Reconciler, CountingDatapath]:
    dp = CountingDatapath()
    rec = Reconciler(dp)
    rec.on_snapshot(snapshot(revision, state, [local("p1"), local("p2", status=PortStatus.ACTIVE)]))
    rec.sync()
    dp.touched.clear()
    return rec, dp


def test_resume_programs_only_what_changed_and_never_dumps() -> None:
    rec, dp = synced({"n1": N1, "n2": N2})
    assert rec.resume_point() == 5
    n1b = tables("n1", 100, (M2, V2, "198.19.0.2"), (M3, V3, "198.19.0.3"))
    after = {"n1": n1b, "n3": N3}
    rec.new_session()
    rec.on_resume(resume(5, 9, after, ["n1", "n3"], left=("n2", "gone"), ports=(local("p1"),)))
    dumps = []
    dp.dump = lambda: dumps.append(1) or {}  # type: ignore[method-assign]
    result = rec.sync()
    assert not result.full and not dumps
    assert rec.desired == after and rec.applied() == (9, digest(after))
    assert ("add", "n1", M3) in dp.touched and ("add", "n1", M2) not in dp.touched
    assert ("leave", "n2", "") in dp.touched
    assert set(rec.ports) == {"p1"}
    assert rec.resume_point() == 9


def test_untouched_networks_stay_as_held() -> None:
    rec, dp = synced({"n1": N1, "n2": N2})
    rec.new_session()
    rec.on_resume(resume(5, 7, {"n1": N1, "n2": N2}, []))
    rec.sync()
    assert dp.touched == [] and rec.desired == {"n1": N1, "n2": N2}


def test_resume_from_another_revision_is_a_gap() -> None:
    rec, _ = synced({"n1": N1})
    rec.new_session()
    with pytest.raises(Gap):
        rec.on_resume(resume(4, 9, {"n1": N1}, []))
    assert rec.resume_point() is None


def test_resume_whose_digest_differs_is_a_gap_and_no_longer_offered() -> None:
    rec, _ = synced({"n1": N1, "n2": N2})
    rec.new_session()
    wrong = resume(5, 9, {"n1": N1}, [])  # the server believes n2 is gone; it did not say so
    with pytest.raises(Gap):
        rec.on_resume(wrong)
    assert rec.resume_point() is None  # the next session starts with a snapshot


def test_no_resume_offered_before_a_snapshot_or_after_a_divergence() -> None:
    rec = Reconciler(CountingDatapath())
    assert rec.resume_point() is None
    rec, _ = synced({"n1": N1})
    after = {"n1": N1, "n2": N2}
    assert rec.on_delta(delta(5, 6, after, diff_state({"n1": N1}, after)))
    assert rec.resume_point() == 6
    assert rec.mismatch(Heartbeat(revision=6, digest=digest({}))) is not None
    assert rec.resume_point() is None
