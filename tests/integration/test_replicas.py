"""Server replicas on one PostgreSQL (ADR 21): two real ``l2pop server`` processes, each
serving one host's agent (``l2pop agent-swarm``, memory datapath). A change made through
one replica's REST API reaches the agent served by the other through NOTIFY, well within
the fallback poll interval; writes through both get one global revision order; and a second
server on one SQLite file is refused at start."""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from channel_harness import HEARTBEAT

from l2pop.client import Client
from l2pop.server.pgfeed import POLL_INTERVAL
from l2pop.testbed.agents import AgentSwarm, HostCredentials
from l2pop.testbed.postgres import ThrowawayPostgres
from l2pop.testbed.process import ServerProcess, free_port

#: the most a change may take from one replica's answer to the other replica's agent
CROSS_REPLICA_BOUND = 2.0


class Replicas:
    """Servers A and B on one database, host h1's agent on B and h2's on A."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        args = ("--heartbeat-interval", str(HEARTBEAT))
        self.a = ServerProcess(url, log_path=tmp_path / "a.log", extra_args=args).start()
        self.b = ServerProcess(url, log_path=tmp_path / "b.log", extra_args=args).start()
        self.api_a, self.api_b = self.a.api(), self.b.api()
        self.swarms: dict[str, AgentSwarm] = {}
        for host, vtep, server in (("h1", "192.0.2.1", self.b), ("h2", "192.0.2.2", self.a)):
            token = self.api_a.create_host(host, vtep).token
            swarm = AgentSwarm(
                server.url,
                [HostCredentials(host, vtep, token)],
                tmp_path,
                name=f"swarm-{host}",
                heartbeat_interval=HEARTBEAT,
            )
            self.swarms[host] = swarm.start()

    def neigh_ips(self, host: str) -> set[str]:
        tables = self.swarms[host].tables(host)
        return {n["ip"] for net in tables["networks"] for n in net["neigh"]}

    def wait_neigh(self, host: str, ip: str, timeout: float = 15.0) -> float:
        start = time.monotonic()
        while ip not in self.neigh_ips(host):
            assert time.monotonic() - start < timeout, f"{host} has no {ip} after {timeout}s"
            time.sleep(0.005)
        return time.monotonic() - start

    def close(self) -> None:
        for swarm in self.swarms.values():
            swarm.stop()
        for api in (self.api_a, self.api_b):
            api.close()
        self.a.stop()
        self.b.stop()


@pytest.fixture
def replicas(postgres: ThrowawayPostgres, tmp_path: Path) -> Iterator[Replicas]:
    with postgres.database("l2pop_replicas") as url:
        r = Replicas(tmp_path, url)
        try:
            yield r
        finally:
            r.close()


@pytest.mark.postgres
def test_a_change_through_one_replica_reaches_the_agent_of_the_other(
    replicas: Replicas,
) -> None:
    r = replicas
    net = r.api_a.create_network(name="blue").id
    # both through A: h1's agent hears of its own port from B, plugs it and reports through B
    p1 = r.api_a.create_port(net, host="h1", fixed_ips=["198.19.0.1"]).id
    p2 = r.api_a.create_port(net, host="h2", fixed_ips=["198.19.0.2"]).id
    for port in (p1, p2):
        deadline = time.monotonic() + 15
        while r.api_b.port(port).status != "ACTIVE":
            assert time.monotonic() < deadline, f"{port} not ACTIVE"
            time.sleep(0.02)
    r.wait_neigh("h1", "198.19.0.2")  # from A's commit, via B's hub
    r.wait_neigh("h2", "198.19.0.1")  # from B's commit (the status), via A's hub

    took = []
    for i in range(1, 11):
        ip = f"198.19.1.{i}"
        r.api_a.update_port(p2, fixed_ips=[ip])  # answered by A once committed
        took.append(r.wait_neigh("h1", ip, timeout=CROSS_REPLICA_BOUND))
    took.sort()
    print(
        f"A's answer -> h1's agent on B: p50 {statistics.median(took) * 1000:.0f} ms,"
        f" max {took[-1] * 1000:.0f} ms over {len(took)} changes"
    )
    assert max(took) < CROSS_REPLICA_BOUND
    # the fallback poll alone would take up to POLL_INTERVAL: this is the notification
    assert statistics.median(took) < POLL_INTERVAL / 2


@pytest.mark.postgres
def test_writes_through_both_replicas_take_one_revision_order(replicas: Replicas) -> None:
    r = replicas
    revisions: list[int] = []
    lock = threading.Lock()

    def write(api: Client, prefix: str) -> None:
        for i in range(15):
            made = api.create_network(name=f"{prefix}{i}")
            with lock:
                revisions.append(made.revision)

    threads = [
        threading.Thread(target=write, args=(api, prefix))
        for api, prefix in ((r.a.api(), "a"), (r.b.api(), "b"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(revisions)) == len(revisions) == 30  # no revision given twice
    top = max(revisions)
    deadline = time.monotonic() + CROSS_REPLICA_BOUND
    while True:  # each replica's feed (and so its hub's wake-up) reaches the last commit
        seen = [int(s.client().get("/healthz").json()["revision"]) for s in (r.a, r.b)]
        if min(seen) >= top:
            break
        assert time.monotonic() < deadline, f"replicas at {seen}, last write {top}"
        time.sleep(0.01)
    in_a = [(n.id, n.revision) for n in r.api_a.networks()]
    in_b = [(n.id, n.revision) for n in r.api_b.networks()]
    assert in_a == in_b and len(in_a) == 30


def test_a_second_server_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'l2pop.db'}"
    with ServerProcess(db, log_path=tmp_path / "first.log") as first:
        cmd = [sys.executable, "-m", "l2pop", "server", "--db", db]
        done = subprocess.run(
            [*cmd, "--listen", f"127.0.0.1:{free_port()}"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("error: another l2pop server is using the SQLite database")
        assert "PostgreSQL" in lines[0]
        assert first.client().get("/healthz").status_code == 200  # the first one serves on
    # the lock goes with its process: a server starts again on the file
    with ServerProcess(db, log_path=tmp_path / "again.log") as again:
        assert again.client().get("/healthz").status_code == 200
