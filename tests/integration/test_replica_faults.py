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

import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from l2pop.client import ApiError, Client, Unreachable
from l2pop.server import pgfeed, usecases
from l2pop.server.pgfeed import PostgresFeed
from l2pop.store import notify_dsn, open_store
from l2pop.testbed.agents import AgentSwarm, HostCredentials
from l2pop.testbed.postgres import ThrowawayPostgres
from l2pop.testbed.process import ServerProcess
from l2pop.wire import NetworkCreate, PortOut

HEARTBEAT = 0.5
REPLICAS = ("a", "b", "c")
HOSTS = 9
#: the most every host may take to hold exactly its /fdb once the fault is over
CONVERGE_BOUND = 30.0
#: the most an agent of a killed replica may take to hold a session with a survivor
FAILOVER_BOUND = 10.0
#: the most one API call may take while the database is down (503, not a hang)
DOWN_ANSWER_BOUND = 10.0
#: the most a replica may take to serve writes again once PostgreSQL is back
RECONNECT_BOUND = 20.0
#: the most a change through one replica may take to reach an agent on another
FOLLOW_BOUND = 10.0

pytestmark = pytest.mark.postgres


# -- the deployment ---------------------------------------------------------------------


class Trio:
    """Replicas a, b, c on one database; with ``agents``, hosts h1..hHOSTS in one swarm
    given all three URLs, each with a port in network ``blue`` (so every host learns of
    every other's ports there)."""

    def __init__(self, tmp_path: Path, url: str, *, agents: bool) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.servers: dict[str, ServerProcess] = {}
        self.apis: list[Client] = []
        self._shared: dict[str, Client] = {}
        self.swarm: AgentSwarm | None = None
        self.creds: dict[str, HostCredentials] = {}
        self.base_ports: dict[str, str] = {}
        try:
            self._start(agents)
        except BaseException:
            self.close()  # stop whatever did start, by its pid
            raise

    def _start(self, agents: bool) -> None:
        tmp_path, url = self.tmp_path, self.url
        args = ("--heartbeat-interval", str(HEARTBEAT))
        for name in REPLICAS:  # all recorded before any starts: close() stops what did
            self.servers[name] = ServerProcess(
                url, log_path=tmp_path / f"{name}.log", extra_args=args
            )
        with ThreadPoolExecutor(len(REPLICAS)) as pool:  # started side by side
            list(pool.map(lambda s: s.start(30.0), self.servers.values()))
        api = self.api("a")
        self.blue = api.create_network(name="blue").id
        self.green = api.create_network(name="green").id
        if not agents:
            return
        for i in range(1, HOSTS + 1):
            host = f"h{i}"
            token = api.create_host(host, f"192.0.2.{i}").token
            self.creds[host] = HostCredentials(host, f"192.0.2.{i}", token)
            port = api.create_port(self.blue, host=host, fixed_ips=[f"198.19.0.{i}"])
            self.base_ports[host] = port.id
        urls = ",".join(s.url for s in self.servers.values())
        self.swarm = AgentSwarm(urls, self.creds.values(), tmp_path, heartbeat_interval=HEARTBEAT)
        self.swarm.start()

    def api(self, name: str, *, own: bool = False, timeout: float = 30.0) -> Client:
        """The admin client of replica ``name``: one shared by the test's thread, or with
        ``own`` a new one (for another thread); all closed by ``close()``."""
        if not own and name in self._shared:
            return self._shared[name]
        server = self.servers[name]
        client = Client(server.url, server.admin_token, timeout=timeout, verify=server.verify)
        self.apis.append(client)
        if not own:
            self._shared[name] = client
        return client

    def name_of(self, url: str | None) -> str | None:
        return next((n for n, s in self.servers.items() if s.url == url), None)

    def placement(self) -> dict[str, str | None]:
        """host -> the replica its agent holds a session with (None: not connected)."""
        assert self.swarm is not None
        return {
            a["host"]: self.name_of(a["server"]) if a["connected"] else None
            for a in self.swarm.agents()
        }

    def wait_placed(self, timeout: float = 20.0, avoid: str | None = None) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            where = self.placement()
            if all(r is not None and r != avoid for r in where.values()):
                return {h: r for h, r in where.items() if r is not None}
            assert time.monotonic() < deadline, f"agents not all connected: {where}"
            time.sleep(0.02)

    def neigh_ips(self, host: str) -> set[str]:
        assert self.swarm is not None
        tables = self.swarm.tables(host)
        return {n["ip"] for net in tables["networks"] for n in net["neigh"]}

    def mismatches(self, via: str) -> dict[str, str]:
        """host -> why its agent does not hold exactly its /fdb (read through ``via``), or
        why the replica it is connected to does not say it is in sync."""
        assert self.swarm is not None
        api = self.api(via)
        wrong: dict[str, str] = {}
        where = self.placement()
        for host in self.creds:
            desired = api.host_fdb(host).model_dump(mode="json")
            actual = self.swarm.tables(host)
            if actual["networks"] != desired["networks"]:
                wrong[host] = "tables differ from /fdb"
            elif actual["digest"] != desired["digest"]:
                wrong[host] = "digest differs from /fdb"
            elif where[host] is None:
                wrong[host] = "not connected"
        by_replica: dict[str, list[str]] = {}
        for host, replica in where.items():
            if host not in wrong and replica is not None:
                by_replica.setdefault(replica, []).append(host)
        for replica, hosts in by_replica.items():
            listed = {h.name: h for h in self.api(replica).hosts()}
            for host in hosts:
                if not listed[host].in_sync:
                    wrong[host] = f"replica {replica} says not in sync"
        return wrong

    def converge(self, via: str, timeout: float = CONVERGE_BOUND) -> float:
        start = time.monotonic()
        wrong: dict[str, str] = {}
        while time.monotonic() - start < timeout:
            try:
                wrong = self.mismatches(via)
            except (ApiError, Unreachable, httpx.HTTPError) as exc:
                wrong = {"*": f"read failed: {exc}"}
            if not wrong:
                return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(f"not converged after {timeout}s: {wrong}")

    def close(self) -> None:
        """Stop the swarm and every replica (each by its pid), whatever fails on the way."""
        stops: list[Callable[[], None]] = [a.close for a in self.apis]
        if self.swarm is not None:
            stops.insert(0, self.swarm.stop)
        stops += [s.stop for s in self.servers.values()]
        errors: list[BaseException] = []
        for stop in stops:
            try:
                stop()
            except Exception as exc:  # the others must still be stopped
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def trio(postgres: ThrowawayPostgres, tmp_path: Path) -> Iterator[Trio]:
    with postgres.database("l2pop_faults") as url:
        t = Trio(tmp_path, url, agents=True)
        try:
            yield t
        finally:
            t.close()


@pytest.fixture
def bare_trio(postgres: ThrowawayPostgres, tmp_path: Path) -> Iterator[Trio]:
    with postgres.database("l2pop_races") as url:
        t = Trio(tmp_path, url, agents=False)
        try:
            yield t
        finally:
            t.close()


# -- churn with acknowledged-writes bookkeeping -----------------------------------------

ACK, FAILED = "acknowledged", "failed"

#: a port as the churn knows it: None when deleted
Shape = tuple[str, str, str, tuple[str, ...], str | None] | None


def shape(port: PortOut | None) -> Shape:
    if port is None:
        return None
    return (port.network_id, port.name, port.mac, tuple(port.fixed_ips), port.host)


@dataclass
class Tracked:
    """One port a churn worker made. ``known``: the state its last acknowledged write left
    (None: deleted); ``maybe``: when a write failed, every state the store may hold (the
    port is then left alone)."""

    name: str
    id: str | None
    known: Shape
    maybe: list[Shape] = field(default_factory=list)


class Churn(threading.Thread):
    """Creates, binds, unbinds and deletes its own ports, each call to the next replica in
    turn; every write is recorded as acknowledged (2xx) or failed (an error status or no
    answer). Only a 503 or no answer may fail a write: the churn never asks for anything
    invalid, and a 500 is a bug."""

    def __init__(self, trio: Trio, worker: int, stop: threading.Event) -> None:
        super().__init__(name=f"churn{worker}", daemon=True)
        self.trio = trio
        self.worker = worker
        self.stop_event = stop
        self.apis = [trio.api(name, own=True, timeout=10.0) for name in REPLICAS]
        self.rng = random.Random(worker)
        self.ports: list[Tracked] = []
        self.calls = 0
        self.outcomes = {ACK: 0, FAILED: 0}
        self.refused: list[str] = []
        self.failures: list[str] = []
        self.by_replica = dict.fromkeys(REPLICAS, 0)

    def send(self, call: Callable[[Client], Any]) -> tuple[str, Any]:
        index = self.calls % len(self.apis)
        self.calls += 1
        self.by_replica[REPLICAS[index]] += 1
        try:
            answer = call(self.apis[index])
        except ApiError as exc:
            if exc.status != 503:  # a 4xx (never asked for) or a 500: both are bugs
                self.refused.append(f"{exc.status}: {exc}")
            self.failures.append(f"{REPLICAS[index]}: HTTP {exc.status}")
            self.outcomes[FAILED] += 1
            return FAILED, exc
        except Unreachable as exc:
            self.failures.append(f"{REPLICAS[index]}: {exc.kind}")
            self.outcomes[FAILED] += 1
            return FAILED, exc
        self.outcomes[ACK] += 1
        return ACK, answer

    def run(self) -> None:
        n = 0
        while not self.stop_event.is_set():
            n += 1
            live = [p for p in self.ports if not p.maybe and p.known is not None]
            choice = self.rng.random()
            if not live or (choice < 0.4 and len(live) < 8):
                self.create(n)
            elif choice < 0.85:
                port = self.rng.choice(live)
                assert port.known is not None
                host = None if port.known[4] else self.rng.choice(list(self.trio.creds))
                self.patch(port, host)
            else:
                self.delete(self.rng.choice(live))
            time.sleep(0.01)

    def create(self, n: int) -> None:
        name = f"w{self.worker}-{n}"
        net = self.trio.blue if n % 2 else self.trio.green
        mac = f"fa:16:3e:{self.worker:02x}:{n // 256:02x}:{n % 256:02x}"
        ip = f"198.18.{self.worker * 16 + n // 250}.{n % 250 + 1}"
        host = self.rng.choice([None, *self.trio.creds])
        wanted: Shape = (net, name, mac, (ip,), host)
        outcome, answer = self.send(
            lambda api: api.create_port(net, name=name, mac=mac, fixed_ips=[ip], host=host)
        )
        if outcome == ACK:
            assert shape(answer) == wanted, (answer, wanted)
            self.ports.append(Tracked(name, answer.id, wanted))
        else:
            self.ports.append(Tracked(name, None, None, maybe=[None, wanted]))

    def patch(self, port: Tracked, host: str | None) -> None:
        assert port.known is not None and port.id is not None
        after: Shape = (*port.known[:4], host)
        pid = port.id
        outcome, answer = self.send(lambda api: api.update_port(pid, host=host))
        if outcome == ACK:
            assert shape(answer) == after, (answer, after)
            port.known = after
        else:
            port.maybe = [port.known, after]

    def delete(self, port: Tracked) -> None:
        assert port.id is not None
        pid = port.id
        outcome, _ = self.send(lambda api: api.delete_port(pid))
        if outcome == ACK:
            port.known = None
        else:
            port.maybe = [port.known, None]


def check_store(ports: list[PortOut], workers: list[Churn]) -> tuple[int, int]:
    """Every acknowledged write is in ``ports`` (the store read through a survivor), and
    every port a failed write touched is wholly in one of its possible states. Returns how
    many ports were checked exactly and how many against alternatives."""
    by_name: dict[str, list[PortOut]] = {}
    for p in ports:
        by_name.setdefault(p.name, []).append(p)
    exact = alternatives = 0
    problems: list[str] = []
    for w in workers:
        for t in w.ports:
            found = by_name.get(t.name, [])
            if len(found) > 1:
                problems.append(f"{t.name}: {len(found)} ports of that name")
                continue
            held = shape(found[0]) if found else None
            if found and t.id is not None and found[0].id != t.id:
                problems.append(f"{t.name}: id {found[0].id}, acknowledged as {t.id}")
            if t.maybe:
                alternatives += 1
                if held not in t.maybe:
                    problems.append(f"{t.name}: holds {held}, a failed write allows {t.maybe}")
            else:
                exact += 1
                if held != t.known:
                    problems.append(f"{t.name}: holds {held}, acknowledged {t.known}")
    churned = {t.name for w in workers for t in w.ports}
    strays = [p.name for p in ports if p.name.startswith("w") and p.name not in churned]
    assert not strays, f"ports nobody asked for: {strays}"
    assert not problems, "\n".join(problems)
    return exact, alternatives


def pct(values: list[float]) -> str:
    values = sorted(values)
    return f"p50 {statistics.median(values) * 1000:.0f} ms, max {values[-1] * 1000:.0f} ms"


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


# -- 2. the PostgreSQL postmaster killed ------------------------------------------------


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    answer = call()
    return answer, time.monotonic() - start


def assert_unavailable(answer: httpx.Response, took: float, what: str) -> None:
    assert answer.status_code == 503, f"{what}: {answer.status_code} {answer.text}"
    body = answer.json()["error"]
    assert body["code"] == "unavailable", (what, body)
    assert "unavailable" in body["message"] and "store" in body["message"], (what, body)
    assert answer.headers.get("Retry-After"), (what, dict(answer.headers))
    assert took < DOWN_ANSWER_BOUND, f"{what} took {took:.1f}s"


@contextmanager
def database_down(postgres: ThrowawayPostgres) -> Iterator[Callable[[], float]]:
    """``kill -9`` of the postmaster for the body; yields ``restart`` (returns its seconds).
    Restarted at the end if the body did not, so the session's PostgreSQL outlives a failure."""
    state = {"up": False}

    def restart() -> float:
        took = postgres.restart()
        state["up"] = True
        return took

    # the session's PostgreSQL acknowledges commits before their WAL is written (fast,
    # synchronous_commit=off): write out what went before, so the crash loses none of it
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    assert postgres.kill_postmaster() is not None
    try:
        yield restart
    finally:
        if not state["up"]:
            postgres.restart()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"{what}: not after {timeout}s"
        time.sleep(0.01)
    return time.monotonic() - start


def feeds_listening(postgres: ThrowawayPostgres, url: str) -> int:
    """How many replicas' feeds hold a LISTEN connection to the database of ``url``."""
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND datname = %s",
            (pgfeed.APPLICATION_NAME, url.rsplit("/", 1)[1]),
        ).fetchone()
    return int(row[0]) if row else 0


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


# -- 3. racing writes across replicas ---------------------------------------------------


def race(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def one_winner(answers: list[httpx.Response], ok: int, field_name: str) -> httpx.Response:
    statuses = sorted(a.status_code for a in answers)
    winners = [a for a in answers if a.status_code == ok]
    assert len(winners) == 1 and statuses.count(409) == len(answers) - 1, statuses
    for a in answers:
        if a.status_code == 409:
            error = a.json()["error"]
            assert error["code"] == "conflict" and error["field"] == field_name, error
    return winners[0]


RACERS = 20


def test_racing_writes_across_replicas_have_one_winner(bare_trio: Trio) -> None:
    t = bare_trio
    clients = [t.servers[REPLICAS[i % len(REPLICAS)]].client() for i in range(RACERS)]
    try:
        api = t.api("a")
        # the same VNI from 20 clients over 3 replicas
        answers = race(
            [
                lambda c=c, i=i: c.post("/v1/networks", json={"name": f"v{i}", "vni": 4242})
                for i, c in enumerate(clients)
            ]
        )
        won = one_winner(answers, 201, "vni").json()
        held = [n for n in t.api("b").networks() if n.vni == 4242]
        assert [n.id for n in held] == [won["id"]]

        # the same MAC in one network
        mac = "fa:16:3e:42:42:42"
        answers = race(
            [
                lambda c=c, i=i: c.post(
                    "/v1/ports",
                    json={
                        "network_id": t.blue,
                        "mac": mac,
                        "name": f"m{i}",
                        "fixed_ips": [f"198.19.4.{i + 1}"],
                    },
                )
                for i, c in enumerate(clients)
            ]
        )
        won = one_winner(answers, 201, "mac").json()
        held_ports = [p for p in t.api("c").ports() if p.mac == mac]
        assert [p.id for p in held_ports] == [won["id"]]
        # the losers left nothing behind: none of their IPs is taken
        taken = {ip for p in t.api("a").ports() for ip in p.fixed_ips}
        asked = {f"198.19.4.{i + 1}" for i in range(RACERS)}
        assert taken & asked == set(won["fixed_ips"]), taken & asked

        # read-validate-write: 20 ports of one network, each re-addressed to one IP at once
        ports = [
            api.create_port(t.green, name=f"r{i}", fixed_ips=[f"198.19.5.{i + 1}"]).id
            for i in range(RACERS)
        ]
        answers = race(
            [
                lambda c=c, p=p: c.patch(f"/v1/ports/{p}", json={"fixed_ips": ["198.19.6.1"]})
                for c, p in zip(clients, ports, strict=True)
            ]
        )
        won = one_winner(answers, 200, "fixed_ips").json()
        final = {p.id: p.fixed_ips for p in t.api("b").ports() if p.network_id == t.green}
        assert [p for p, ips in final.items() if "198.19.6.1" in ips] == [won["id"]]
        for i, p in enumerate(ports):  # the losers kept their own address
            if p != won["id"]:
                assert final[p] == [f"198.19.5.{i + 1}"], (p, final[p])

        # the same host name registered through every replica at once
        answers = race(
            [
                lambda c=c, i=i: c.post(
                    "/v1/hosts", json={"name": "dup", "vtep_ip": f"192.0.2.{100 + i}"}
                )
                for i, c in enumerate(clients)
            ]
        )
        one_winner(answers, 201, "name")
        assert [h.name for h in t.api("c").hosts()].count("dup") == 1
    finally:
        for c in clients:
            c.close()
