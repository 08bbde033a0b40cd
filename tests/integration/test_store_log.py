"""The Store contract, continued: the change log, commit listeners and telemetry outside
the revision (``l2pop/store/abc.py``), on SQLite and PostgreSQL. Rows are built with the
helpers of ``test_store``."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from test_store import T0, add_host, add_network, add_port, network

from l2pop.model import Conflict, Encap
from l2pop.store import ChangeLogTruncated, HostReport, Store
from l2pop.store.abc import Change


def test_changes_since_and_prune(store: Store) -> None:
    net = add_network(store, 1)
    ports = [add_port(store, net.id, f"fa:16:3e:00:00:0{i}") for i in range(1, 5)]  # 2..5
    with store.write() as tx:
        tx.delete_port(ports[0].id)  # 6
        tx.delete_port(ports[1].id)
    with store.read() as tx:
        assert [c.revision for c in tx.changes_since(0)] == [1, 2, 3, 4, 5, 6, 6]
        assert tx.changes_since(4) == [
            Change(5, "port", ports[3].id, "create", net.id),
            Change(6, "port", ports[0].id, "delete", net.id),
            Change(6, "port", ports[1].id, "delete", net.id),
        ]
        assert tx.changes_since(6) == []
        assert [c.revision for c in tx.changes_since(0, limit=2)] == [1, 2]
        # a limit never splits a revision
        assert [c.revision for c in tx.changes_since(4, limit=2)] == [5, 6, 6]
    assert store.prune_changes(4) == 3  # revisions 1, 2, 3
    with store.read() as tx:
        assert [c.revision for c in tx.changes_since(3)] == [4, 5, 6, 6]
        for old in (0, 2):
            with pytest.raises(ChangeLogTruncated):
                tx.changes_since(old)
    assert store.prune_changes(2) == 0  # the watermark never moves back
    assert store.prune_changes(100) == 4  # clamped to the committed revision
    with store.read() as tx:
        assert tx.changes_since(6) == [] and tx.revision() == 6
    p = add_port(store, net.id, "fa:16:3e:00:00:09")
    with store.read() as tx:
        assert tx.changes_since(6) == [Change(7, "port", p.id, "create", net.id)]


def test_commit_listeners_hear_each_committed_revision(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """``subscribe``: one call per committed block that moved the revision, after commit;
    nothing for blocks that wrote nothing, rolled back or only saved telemetry; a failing
    listener is logged and neither the write nor the other listeners suffer."""
    heard: list[tuple[int, int]] = []  # (revision told, revision a fresh reader sees)

    def listener(revision: int) -> None:
        with store.read() as tx:  # already committed: visible to a new snapshot
            heard.append((revision, tx.revision()))

    def broken(_revision: int) -> None:
        raise RuntimeError("listener bug")

    store.subscribe(broken)
    store.subscribe(listener)
    net = add_network(store, 1)  # 1
    with store.write() as tx:  # nothing written: no revision, no call
        tx.get_network(net.id)
    with pytest.raises(Conflict), store.write() as tx:  # rolled back: no call
        tx.insert_network(network(2))
        tx.insert_network(network(2))
    add_host(store, "h1", "192.0.2.1")  # 2
    store.record_host_report("h1", last_seen=T0, applied_revision=2)
    store.prune_changes(1)
    with store.write() as tx:  # serialize takes a revision even without a write: 3
        tx.serialize()
    assert heard == [(1, 1), (2, 2), (3, 3)]
    failures = [r for r in caplog.records if r.name == "l2pop.store" and r.exc_info]
    assert len(failures) == 3


def test_record_host_report_outside_revision(store: Store) -> None:
    add_host(store, "h1", "192.0.2.1")
    seen = datetime(2024, 6, 1, 8, 30, tzinfo=UTC)
    store.record_host_report("h1", last_seen=seen, applied_revision=1, applied_digest="d" * 64)
    later = (seen + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=2)))
    store.record_host_report("h1", last_seen=later)  # None leaves the others as they were
    with store.read() as tx:
        h = tx.get_host("h1")
        assert tx.revision() == 1 and len(tx.changes_since(0)) == 1
    assert h is not None
    assert h.last_seen == seen + timedelta(minutes=1) and h.last_seen.tzinfo is not None
    assert h.last_seen.utcoffset() == timedelta(0)
    assert (h.applied_revision, h.applied_digest) == (1, "d" * 64)


def test_encap_and_what_an_agent_announced_are_stored(store: Store) -> None:
    """A network's encap round-trips (default vxlan); a host's datapath and encaps are null
    until a hello's report sets them, acks leave them, and a later hello replaces them."""
    with store.write() as tx:
        gre = tx.insert_network(replace(network(1), encap=Encap.GRE))
        plain = tx.insert_network(network(2))
    with store.read() as tx:
        assert [(n.id, n.encap) for n in tx.list_networks()] == [
            (gre.id, Encap.GRE),
            (plain.id, Encap.VXLAN),
        ]
    add_host(store, "h1", "192.0.2.1")
    add_host(store, "h2", "192.0.2.2")
    with store.read() as tx:
        h1 = tx.get_host("h1")
        revision = tx.revision()
    assert h1 is not None and (h1.datapath, h1.encaps) == (None, None)

    both = frozenset(Encap)
    store.record_host_reports(
        [
            HostReport("h1", T0, datapath="memory", encaps=both),
            HostReport("h2", T0, encaps=frozenset({Encap.VXLAN})),  # an older agent's hello
        ]
    )
    store.record_host_reports([HostReport("h1", T0, applied_revision=1, applied_digest="0" * 32)])
    with store.read() as tx:
        got = {h.name: (h.datapath, h.encaps) for h in tx.list_hosts()}
        assert tx.revision() == revision  # telemetry moves no revision
    assert got == {"h1": ("memory", both), "h2": (None, frozenset({Encap.VXLAN}))}
    store.record_host_reports([HostReport("h1", T0, datapath="linux", encaps=frozenset())])
    with store.read() as tx:
        h1 = tx.get_host("h1")
    assert h1 is not None and (h1.datapath, h1.encaps) == ("linux", frozenset())
