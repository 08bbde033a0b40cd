"""Resuming a session (``Hub.resume_of``): from any revision the hub remembers, applying the
resume to what a host held then gives exactly what it must hold now, with the hub's digest;
a revision before the hub's memory (it loaded later) or ahead of it gets no resume (the
session then starts with a snapshot).

Random sequences of real use-cases, as in ``test_hub.py``; every host's tables are recorded
at every batch, and later resumed from a random earlier point.
"""

from __future__ import annotations

import random
from pathlib import Path

from test_hub import HOSTS, full_state, loaded_hub, random_step

from l2pop.model import NetworkTables, apply_deltas, digest
from l2pop.server.hub import HostResume, Hub


def resumed(held: dict[str, NetworkTables], resume: HostResume) -> dict[str, NetworkTables]:
    """What an agent holding ``held`` holds after ``resume`` (as ``Reconciler.on_resume``)."""
    out = {nid: t for nid, t in held.items() if nid not in resume.left}
    out.update(resume.tables)
    return dict(sorted(out.items()))


def test_resume_from_any_remembered_revision_reaches_the_current_state(tmp_path: Path) -> None:
    store, hub, tokens = loaded_hub(tmp_path)
    loaded_at = hub.revision
    agents: dict[str, dict[str, NetworkTables]] = {h: {} for h in HOSTS}
    history: list[tuple[int, str, dict[str, NetworkTables]]] = []
    rng = random.Random(20261201)
    checked = sent_whole = 0
    for step in range(300):
        for _ in range(rng.choice([1, 1, 2, 4])):
            random_step(store, rng, tokens)
        batch = hub.read_batch()
        if batch is None:
            continue
        for host, update in hub.apply_batch(batch).items():
            agents[host] = apply_deltas(agents.get(host, {}), update.deltas)
        desired = full_state(store)
        for host in list(agents):
            if host not in desired:
                del agents[host]
        for host in desired:
            history.append((hub.revision, host, dict(agents.get(host, {}))))
        if step % 10:
            continue
        for base, host, held in rng.sample(history, min(len(history), 20)):
            if host not in desired:
                continue
            resume = hub.resume_of(host, base)
            assert resume is not None, f"revision {base} is remembered, yet no resume"
            assert resume.revision == hub.revision
            now = resumed(held, resume)
            assert now == desired[host], f"{host} resumed from {base} diverged"
            assert resume.digest == digest(now)
            checked += 1
            sent_whole += len(resume.tables)
    assert checked > 200
    # a resume sends only what changed: far fewer tables than snapshots would
    assert sent_whole < checked * len(HOSTS)
    assert hub.resume_of(HOSTS[0], hub.revision + 1) is None, "ahead of the hub"
    assert loaded_at <= hub.revision

    # A hub started now (a restarted server, a new replica) reads the last revisions of the
    # change log at load: agents a few revisions behind resume from it just as well.
    fresh = Hub(store)
    fresh.load()
    desired = full_state(store)
    resumed_fresh = 0
    for base, host, held in history[-200:]:
        if host not in desired:
            continue
        resume = fresh.resume_of(host, base)
        assert resume is not None, f"revision {base} is in the change log, yet no resume"
        now = resumed(held, resume)
        assert now == desired[host], f"{host} resumed from {base} by a fresh hub diverged"
        assert resume.digest == digest(now)
        resumed_fresh += 1
    assert resumed_fresh > 50
    # ...but it cannot say what a revision before its load had to reach (waits)
    assert fresh.told_at(fresh.revision) is None
    # once the log is pruned, a fresh hub resumes nothing from before what is left of it
    store.prune_changes(fresh.revision - 5)
    pruned = Hub(store)
    pruned.load()
    assert pruned.resume_of(HOSTS[0], pruned.revision - 5) is not None
    assert pruned.resume_of(HOSTS[0], pruned.revision - 7) is None
    store.close()
