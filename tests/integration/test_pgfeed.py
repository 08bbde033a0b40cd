"""``PostgresFeed`` in this process against a throwaway PostgreSQL: another process's commits
(here: a second ``SqlStore`` on the same database, whose commit hook this feed never hears)
reach a following hub through NOTIFY within a round trip; with no notification arriving the
poll still brings the hub up within one poll interval; a LISTEN connection the database cut
is re-made and nothing is lost (ADR 21)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import psycopg
import pytest

from l2pop.server import usecases
from l2pop.server.hub import Hub
from l2pop.server.pgfeed import APPLICATION_NAME, PostgresFeed
from l2pop.store import NOTIFY_CHANNEL, Store, notify_dsn, open_store
from l2pop.testbed.postgres import ThrowawayPostgres
from l2pop.wire import NetworkCreate

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(postgres: ThrowawayPostgres) -> Iterator[str]:
    with postgres.database("l2pop_feed") as url:
        yield url


@pytest.fixture
def stores(pg_url: str) -> Iterator[tuple[Store, Store]]:
    """(this server's store, a replica's store) on one database."""
    here, there = open_store(pg_url), open_store(pg_url)
    try:
        yield here, there
    finally:
        here.close()
        there.close()


def write_elsewhere(store: Store) -> int:
    """One committed write through the replica's store; its revision."""
    return usecases.create_network(store, NetworkCreate()).revision


async def hub_reaches(hub: Hub, revision: int, timeout: float) -> float:
    """Seconds until the hub holds ``revision``; fails after ``timeout``."""
    start = time.monotonic()
    while hub.revision < revision:
        assert time.monotonic() - start < timeout, f"hub at {hub.revision}, not {revision}"
        await asyncio.sleep(0.002)
    return time.monotonic() - start


def follow(here: Store, there: Store, feed_args: dict[str, object], writes: int) -> list[float]:
    """A hub on ``here`` woken by a ``PostgresFeed``; ``writes`` commits through ``there``,
    one at a time: the seconds each took to reach the hub."""

    async def scenario() -> list[float]:
        hub = Hub(here)
        hub.load()
        dsn = notify_dsn(here.url)
        assert dsn is not None
        feed = PostgresFeed(here, hub.notify, dsn, **feed_args)  # type: ignore[arg-type]
        task = asyncio.create_task(hub.follow())
        feed.start()
        try:
            await asyncio.sleep(0.1)  # the LISTEN is up
            took = []
            for _ in range(writes):
                revision = await asyncio.to_thread(write_elsewhere, there)
                took.append(await hub_reaches(hub, revision, timeout=5.0))
                assert feed.revision >= revision
            return took
        finally:
            feed.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return asyncio.run(scenario())


def test_a_replicas_commit_reaches_the_hub_by_notify(stores: tuple[Store, Store]) -> None:
    here, there = stores
    # a long poll interval: only the notification can be this quick
    took = sorted(follow(here, there, {"poll_interval": 30.0}, writes=20))
    print(f"notify -> hub: p50 {took[10] * 1000:.1f} ms, max {took[-1] * 1000:.1f} ms")
    assert took[-1] < 1.0


def test_without_notifications_the_poll_catches_up(stores: tuple[Store, Store]) -> None:
    here, there = stores
    # LISTEN on a channel nobody notifies: every notification is lost
    poll = 0.3
    took = follow(here, there, {"channel": "l2pop_nobody", "poll_interval": poll}, writes=4)
    print(f"poll -> hub: {', '.join(f'{t * 1000:.0f}' for t in took)} ms (interval {poll}s)")
    assert max(took) < poll + 0.2


def test_a_cut_listen_connection_is_made_again(stores: tuple[Store, Store], pg_url: str) -> None:
    here, there = stores
    heard: list[int] = []
    dsn = notify_dsn(pg_url)
    assert dsn is not None
    feed = PostgresFeed(here, heard.append, dsn, poll_interval=30.0)
    feed.start()
    try:
        deadline = time.monotonic() + 5
        while not feed.listening:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with psycopg.connect(dsn, autocommit=True) as admin:
            cut = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND datname = current_database()",
                (APPLICATION_NAME,),
            ).fetchall()
        assert cut == [(True,)]  # one LISTEN connection per feed
        while feed.connects < 2:
            assert time.monotonic() < deadline, "LISTEN connection not made again"
            time.sleep(0.01)
        revision = write_elsewhere(there)
        while feed.revision < revision:
            assert time.monotonic() < deadline, "notification after reconnect not heard"
            time.sleep(0.005)
        assert heard == sorted(heard) and heard[-1] == revision  # never back
    finally:
        feed.close()


def test_notifications_carry_committed_revisions_only(pg_url: str) -> None:
    dsn = notify_dsn(pg_url)
    assert dsn is not None
    store = open_store(pg_url)
    try:
        with psycopg.connect(dsn, autocommit=True) as listener:
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            first = write_elsewhere(store)
            with pytest.raises(ZeroDivisionError), store.write() as tx:
                tx.serialize()  # takes a revision, then rolls back: no notification
                raise ZeroDivisionError
            second = write_elsewhere(store)
            got = [n.payload for n in listener.notifies(timeout=1.0, stop_after=2)]
        assert got == [str(first), str(second)]
    finally:
        store.close()
