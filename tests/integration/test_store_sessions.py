"""The store's side of agent sessions across replicas (ADR 22), on both engines: claims are
atomic and ordered (racing claims get distinct generations, the newest holds), a release
clears only its own claim, replica beats are kept, and an old store gains the new columns
when it is opened."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text
from test_store import T0, add_host

from l2pop.model import Encap, NotFound
from l2pop.store import HostReport, Store, open_store


def holder(store: Store, name: str) -> tuple[str | None, int]:
    with store.read() as tx:
        h = tx.get_host(name)
    assert h is not None
    return h.session_replica, h.session_generation


def test_claims_count_up_and_the_newest_holds(store: Store) -> None:
    add_host(store, "h1", "192.0.2.1")
    assert holder(store, "h1") == (None, 0)
    report = HostReport("h1", T0, datapath="linux", encaps=frozenset({Encap.VXLAN}))
    assert store.claim_session(report, "r1") == 1
    assert store.claim_session(HostReport("h1", T0), "r2") == 2
    assert holder(store, "h1") == ("r2", 2)
    with store.read() as tx:
        h = tx.get_host("h1")
    assert h is not None and h.datapath == "linux" and h.last_seen == T0
    assert not store.release_session("h1", "r1", 1), "an older claim released a newer one"
    assert holder(store, "h1") == ("r2", 2)
    assert store.release_session("h1", "r2", 2)
    assert holder(store, "h1") == (None, 2)
    with pytest.raises(NotFound):
        store.claim_session(HostReport("nobody", T0), "r1")


def test_racing_claims_get_distinct_generations(store: Store) -> None:
    add_host(store, "h1", "192.0.2.1")
    got: list[tuple[str, int]] = []
    start = threading.Barrier(8)

    def claim(i: int) -> None:
        start.wait()
        got.append((f"r{i}", store.claim_session(HostReport("h1", T0), f"r{i}")))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(g for _, g in got) == list(range(1, 9))
    newest = max(got, key=lambda rg: rg[1])
    assert holder(store, "h1") == newest


def test_replica_beats(store: Store) -> None:
    with store.read() as tx:
        assert tx.list_replicas() == {}
    store.beat_replica("r1", T0)
    store.beat_replica("r2", T0)
    later = T0 + timedelta(seconds=5)
    store.beat_replica("r1", later)
    with store.read() as tx:
        assert tx.list_replicas() == {"r1": later, "r2": T0}


def test_an_old_store_gains_the_session_columns(store_url: str) -> None:
    engine = create_engine(store_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:  # a hosts table as an older version made it
        conn.execute(
            text(
                "CREATE TABLE hosts (name VARCHAR(63) PRIMARY KEY, vtep_ip VARCHAR(45) NOT NULL,"
                " token_hash VARCHAR(128) NOT NULL, created_at TIMESTAMP NOT NULL,"
                " last_seen TIMESTAMP, applied_revision BIGINT, applied_digest VARCHAR(64))"
            )
        )
        conn.execute(
            text("INSERT INTO hosts VALUES ('h1', '192.0.2.1', 'x', :t, NULL, NULL, NULL)"),
            {"t": datetime(2024, 1, 1, tzinfo=UTC).replace(tzinfo=None)},
        )
    engine.dispose()
    store = open_store(store_url)
    try:
        assert holder(store, "h1") == (None, 0)
        assert store.claim_session(HostReport("h1", T0), "r1") == 1
    finally:
        store.close()
