"""Three real ``l2pop server`` replicas on one throwaway PostgreSQL, and a real ``l2pop
agent-swarm`` whose agents are each given all three URLs: the deployment the replica fault
tests (``test_replica_*.py``) break in their own ways. Every process is started here and
stopped by its pid at teardown, even on failure."""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from l2pop.client import ApiError, Client, Unreachable
from l2pop.server import pgfeed
from l2pop.store import open_store
from l2pop.testbed.agents import AgentSwarm, HostCredentials
from l2pop.testbed.postgres import ThrowawayPostgres
from l2pop.testbed.process import ServerProcess
from l2pop.wire import PortOut

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

    def __enter__(self) -> Trio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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


# -- the database killed ---------------------------------------------------------------


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


def empty_change_log(db_url: str) -> int:
    """Prune the whole change log, as a long-running deployment's hubs would have: a replica
    started now reads no history at load, so it cannot resume an agent from any revision
    before it (the snapshot path). Returns the store's revision."""
    store = open_store(db_url)
    try:
        with store.read() as tx:
            revision = tx.revision()
        store.prune_changes(revision + 1)
        return revision
    finally:
        store.close()


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
