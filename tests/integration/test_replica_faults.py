"""Faults of a replicated deployment, as a user notices them (ADR 21): three real ``l2pop
server`` processes on one throwaway PostgreSQL, and a real ``l2pop agent-swarm`` whose agents
are each given all three URLs.

1. A replica is ``kill -9``ed during steady churn through all three: its agents move to the
   survivors, every host converges to exactly its ``/fdb``, every acknowledged write is in
   the store, and a write that failed is wholly there or wholly absent.
2. The PostgreSQL postmaster is ``kill -9``ed: the replicas answer 503 saying the store is
   unavailable (never 500, never a hang), ``/healthz`` answers, agents keep their tables;
   once PostgreSQL is back the replicas reconnect by themselves, their hubs follow each
   other again, and every host converges.
3. Racing creates and read-validate-writes spread over the replicas: exactly one wins.

Every process is started here and stopped by its pid at teardown, even on failure.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter

import httpx
import pytest
from replica_harness import (
    ACK,
    DOWN_ANSWER_BOUND,
    FAILED,
    FAILOVER_BOUND,
    FOLLOW_BOUND,
    HEARTBEAT,
    HOSTS,
    RECONNECT_BOUND,
    REPLICAS,
    Churn,
    Trio,
    assert_unavailable,
    check_store,
    database_down,
    empty_change_log,
    feeds_listening,
    pct,
    shape,
    timed,
    wait_for,
)

from l2pop.server import pgfeed, usecases
from l2pop.server.pgfeed import PostgresFeed
from l2pop.store import notify_dsn, open_store
from l2pop.testbed.postgres import ThrowawayPostgres
from l2pop.wire import NetworkCreate

pytestmark = pytest.mark.postgres

# -- 1. a replica killed during churn ---------------------------------------------------


def test_a_replica_killed_during_churn(trio: Trio) -> None:
    t = trio
    assert t.swarm is not None
    t.converge("a")
    where = t.wait_placed()
    # the replica holding the most agents dies (the swarm spreads them at random)
    counts = {r: sum(1 for v in where.values() if v == r) for r in REPLICAS}
    victim = max(REPLICAS, key=lambda r: counts[r])
    survivors = [r for r in REPLICAS if r != victim]
    moved = sorted(h for h, r in where.items() if r == victim)
    assert moved, where
    failovers_before = {h: t.swarm.stats(h)["failovers"] for h in moved}

    stop = threading.Event()
    workers = [Churn(t, w, stop) for w in range(6)]
    for w in workers:
        w.start()
    try:
        time.sleep(1.5)
        pid = t.servers[victim].pid
        killed = time.monotonic()
        t.servers[victim].kill()  # kill -9 by pid: no goodbye on any socket
        back: dict[str, float] = {}
        while len(back) < len(moved):
            for host, replica in t.placement().items():
                if host in moved and host not in back and replica in survivors:
                    back[host] = time.monotonic() - killed
            assert time.monotonic() - killed < FAILOVER_BOUND, (
                f"agents of replica {victim} (pid {pid}) not on a survivor after "
                f"{FAILOVER_BOUND}s: {sorted(set(moved) - set(back))}"
            )
            time.sleep(0.01)
        time.sleep(1.5)  # churn goes on through the survivors
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
    assert not any(w.is_alive() for w in workers)
    stopped = time.monotonic()

    refused = [r for w in workers for r in w.refused]
    assert not refused, f"answers other than 2xx, 503 or none: {refused[:5]}"
    converged = t.converge(survivors[0])
    since_kill = time.monotonic() - killed

    placed = t.wait_placed(avoid=victim)
    assert all(placed[h] in survivors for h in moved)
    for host in moved:
        assert t.swarm.stats(host)["failovers"] > failovers_before[host]

    ports = t.api(survivors[1]).ports()
    exact, alternatives = check_store(ports, workers)
    acked = sum(w.outcomes[ACK] for w in workers)
    failed = sum(w.outcomes[FAILED] for w in workers)
    per_replica = {r: sum(w.by_replica[r] for w in workers) for r in REPLICAS}
    kinds = Counter(f for w in workers for f in w.failures)
    assert acked > 50, f"too little churn: {acked} acknowledged writes"
    assert failed > 0, "the kill failed no write: the churn did not reach the victim"
    assert all(n > 10 for n in per_replica.values()), per_replica
    print(
        f"\nreplica {victim} killed with {len(moved)} of {HOSTS} agents; "
        f"kill -> agent on a survivor: {pct(list(back.values()))}; "
        f"churn stop -> all {HOSTS} hosts == /fdb: {converged * 1000:.0f} ms "
        f"({since_kill:.1f} s after the kill, {stopped - killed:.1f} s of it churn); "
        f"writes {acked} acknowledged, {failed} failed ({dict(kinds)}), "
        f"sent per replica {per_replica}; "
        f"ports checked {exact} exactly, {alternatives} against a failed write's states"
    )


def test_the_database_killed_and_restarted(trio: Trio, postgres: ThrowawayPostgres) -> None:
    t = trio
    assert t.swarm is not None
    t.converge("a")
    before = {h: t.swarm.tables(h) for h in t.creds}
    held_before = {p.id: shape(p) for p in t.api("a").ports()}
    raw = {name: s.client() for name, s in t.servers.items()}
    for c in raw.values():
        c.timeout = httpx.Timeout(DOWN_ANSWER_BOUND + 5)
    pids = {n: s.pid for n, s in t.servers.items()}
    try:
        with database_down(postgres) as restart:
            killed = time.monotonic()
            down_took: list[float] = []
            # a backend may answer for a moment; within the bound every replica answers 503
            for name, c in raw.items():
                while True:
                    answer, took = timed(lambda c=c: c.get("/v1/networks"))
                    assert answer.status_code in (200, 503), (name, answer.text)
                    if answer.status_code == 503:
                        break
                    assert time.monotonic() - killed < DOWN_ANSWER_BOUND, f"{name}: still 200"
                    time.sleep(0.05)
            port = t.base_ports["h1"]
            for _ in range(2):  # every kind of call, on every replica, while it is down
                for name, c in raw.items():
                    n = f"down-{name}-{time.monotonic_ns()}"
                    for what, call in (
                        ("list networks", lambda c=c: c.get("/v1/networks")),
                        (
                            "create network",
                            lambda c=c, n=n: c.post("/v1/networks", json={"name": n}),
                        ),
                        (
                            "rename port",
                            lambda c=c: c.patch(f"/v1/ports/{port}", json={"name": "x"}),
                        ),
                        (
                            "unbind port",
                            lambda c=c: c.patch(f"/v1/ports/{port}", json={"host": None}),
                        ),
                        ("delete port", lambda c=c: c.delete(f"/v1/ports/{port}")),
                        ("host fdb", lambda c=c: c.get("/v1/hosts/h1/fdb")),
                        ("list hosts", lambda c=c: c.get("/v1/hosts")),
                    ):
                        answer, took = timed(call)
                        assert_unavailable(answer, took, f"{name}: {what}")
                        down_took.append(took)
                    health, took = timed(lambda c=c: c.get("/healthz"))
                    assert health.status_code == 200 and took < 2.0, (name, health.text, took)
            time.sleep(2 * HEARTBEAT + 0.5)  # heartbeats and status reports fail meanwhile
            for host in t.creds:  # fail static: what the agents applied stays
                assert t.swarm.tables(host)["networks"] == before[host]["networks"], host
            outage = time.monotonic() - killed
            restart_took = restart()
        restarted = time.monotonic()
        first_ok: dict[str, float] = {}
        refused: dict[str, int] = dict.fromkeys(REPLICAS, 0)
        for name, c in raw.items():  # each replica reconnects by itself: no restart
            while True:
                answer = c.post("/v1/networks", json={"name": f"back-{name}"})
                if answer.status_code == 201:
                    first_ok[name] = time.monotonic() - restarted
                    break
                assert answer.status_code == 503, (name, answer.status_code, answer.text)
                refused[name] += 1
                assert time.monotonic() - restarted < RECONNECT_BOUND, (
                    f"replica {name} still refuses writes {RECONNECT_BOUND}s after the restart"
                )
                time.sleep(0.05)
        # the same processes serve on: nobody restarted a replica
        assert {n: s.pid for n, s in t.servers.items()} == pids
        assert all(s.alive for s in t.servers.values())
        # nothing was written while down, nothing acknowledged before was lost
        assert {p.id: shape(p) for p in t.api("c").ports()} == held_before
        names = {n.name for n in t.api("b").networks()}
        assert not {n for n in names if n.startswith("down-")}, names

        # every replica's feed LISTENs again soon after the database is back
        wait_for(
            lambda: feeds_listening(postgres, t.url) == len(REPLICAS),
            pgfeed.POLL_INTERVAL + 5,
            "every replica's feed LISTENing again",
        )
        relisten = time.monotonic() - restarted  # from the restart, not the wait's start
        # the hubs follow each other again: a change through one replica reaches the agent
        # of another, by notification (well within the poll interval)
        where = t.wait_placed(timeout=RECONNECT_BOUND)
        follow: dict[str, float] = {}
        for round_ in range(2):
            for writer in REPLICAS:
                watcher = next(h for h, r in where.items() if r != writer)
                changed = next(h for h in t.creds if h != watcher)
                ip = f"198.19.9.{round_ * 10 + REPLICAS.index(writer) + 1}"
                t.api(writer).update_port(t.base_ports[changed], fixed_ips=[ip])
                took = wait_for(
                    lambda w=watcher, ip=ip: ip in t.neigh_ips(w),
                    FOLLOW_BOUND,
                    f"{watcher} (on {where[watcher]}) learning {ip} written through {writer}",
                )
                follow[f"{writer}->{where[watcher]}#{round_}"] = took
        assert statistics.median(follow.values()) < pgfeed.POLL_INTERVAL / 2, follow
        converged = t.converge("b")
    finally:
        for c in raw.values():
            c.close()
    print(
        f"\npostmaster killed: {len(down_took)} API calls answered 503 in {pct(down_took)}; "
        f"agents' tables kept over {outage:.1f} s of outage; PostgreSQL restarted in "
        f"{restart_took:.1f} s; first write after it through "
        + ", ".join(f"{n} {v * 1000:.0f} ms ({refused[n]} 503s)" for n, v in first_ok.items())
        + f"; all feeds LISTENing {relisten * 1000:.0f} ms after the restart"
        + f"; a change through one replica -> agent on another: {pct(list(follow.values()))}"
        + f"; then all hosts == /fdb in {converged * 1000:.0f} ms"
    )


def test_the_feed_listens_again_once_the_database_is_back(
    postgres: ThrowawayPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The LISTEN connection's backoff grows while the database is down; once a poll
    reaches the store again the feed re-LISTENs at once, not after that backoff (during
    which other replicas' commits would reach this hub only through the poll)."""
    monkeypatch.setattr(pgfeed, "RECONNECT_BASE", 300.0)
    monkeypatch.setattr(pgfeed, "RECONNECT_CAP", 300.0)
    with postgres.database("l2pop_feed_back") as url:
        store = open_store(url)
        feed = PostgresFeed(store, lambda _: None, notify_dsn(url) or "", poll_interval=0.3)
        try:
            feed.start()
            wait_for(lambda: feed.listening, 10, "feed listening")
            with database_down(postgres) as restart:
                wait_for(lambda: not feed.listening, 10, "feed saw the database go")
                time.sleep(1.0)  # reconnects and polls fail meanwhile
                restart()
                back = wait_for(lambda: feed.listening, 5, "feed listening again")
            heard = feed.notifications
            other = open_store(url)  # a replica's commit
            try:
                usecases.create_network(other, NetworkCreate(name="after"))
            finally:
                other.close()
            wait_for(lambda: feed.notifications > heard, 5, "a notification after the outage")
            print(f"\nthe database back -> the feed LISTENs again: {back * 1000:.0f} ms")
        finally:
            feed.close()
            store.close()


# -- 4. moving to a replica that started after the agents' revision ------------------------


def test_agents_moving_to_a_freshly_started_replica_get_snapshots(trio: Trio) -> None:
    """A replica restarted with an empty change-log window (the log pruned, so its load reads
    no history) cannot resume anyone whose revision is older than its load: every agent that
    moves to it gets a snapshot (and still converges); the moves to long-running replicas
    before that were resumes (ADR 22)."""
    t = trio
    assert t.swarm is not None
    t.wait_placed()
    t.converge("a")
    t.servers["c"].kill()  # its agents resume on a and b
    t.wait_placed(avoid="c")
    t.converge("a")
    resumed = sum(t.swarm.stats(h)["messages"].get("resume", 0) for h in t.creds)
    t.api("a").create_network(name="elsewhere")  # the store moves on; no agent hears of it
    empty_change_log(t.url)  # so c reads no history at its load
    t.servers["c"].restart()  # loads after every agent's revision: its window starts there
    before = {h: dict(t.swarm.stats(h)["messages"]) for h in t.creds}
    for name in ("a", "b"):
        t.servers[name].kill()
    where = t.wait_placed(timeout=FAILOVER_BOUND * 3)
    assert set(where.values()) == {"c"}, where
    took = t.converge("c")
    for host in t.creds:
        after = t.swarm.stats(host)["messages"]
        assert after.get("snapshot", 0) == before[host].get("snapshot", 0) + 1, (host, after)
        assert after.get("resume", 0) == before[host].get("resume", 0), (host, after)
    assert resumed >= 1, "the first moves (to long-running replicas) were not resumes"
    print(f"\nall {len(t.creds)} agents on the restarted replica, from snapshots: {took:.2f} s")
