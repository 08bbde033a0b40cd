"""Agents fail over between replicas (ADR 21, "Agents fail over"): two real ``l2pop server``
processes on one throwaway PostgreSQL and a real ``l2pop agent-swarm`` (memory datapath)
given both URLs. The replica the agent is connected to is killed (``kill -9``, by its pid);
a change made through the survivor reaches the agent within ``FAILOVER_BOUND``, and a port
status report the agent makes afterwards reaches the server. Every move is a resume from the
agent's revision, never a snapshot. Repeated, alternating which
replica dies (the dead one is restarted on its port in between), to time the failover."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from channel_harness import HEARTBEAT

from l2pop.client import Client
from l2pop.testbed.agents import AgentSwarm, HostCredentials
from l2pop.testbed.postgres import ThrowawayPostgres
from l2pop.testbed.process import ServerProcess

#: the most a failover may take, from the kill to the agent's tables holding a change made
#: through the surviving replica (detection is at once: the dead process's sockets close)
FAILOVER_BOUND = 5.0
#: the most a port status may take to reach the surviving replica after the failover
STATUS_BOUND = 10.0
RUNS = 4


class Pair:
    """Replicas A and B on one database; host h1's agent given both URLs; h2 has no agent
    and only carries the neighbours h1 must learn of (the test plays its agent's status
    reports)."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        args = ("--heartbeat-interval", str(HEARTBEAT))
        self.servers = {
            name: ServerProcess(url, log_path=tmp_path / f"{name}.log", extra_args=args).start()
            for name in ("a", "b")
        }
        api = self.api("a")
        self.token = api.create_host("h1", "192.0.2.1").token
        #: h2 has no agent: the test reports its ports' status with its token
        self.h2_token = api.create_host("h2", "192.0.2.2").token
        self.net = api.create_network(name="blue").id
        # h1 takes part in the network, so it learns of h2's ports there
        api.create_port(self.net, host="h1", fixed_ips=["198.19.0.1"])
        api.close()
        urls = ",".join(s.url for s in self.servers.values())
        creds = [HostCredentials("h1", "192.0.2.1", self.token)]
        self.swarm = AgentSwarm(urls, creds, tmp_path, heartbeat_interval=HEARTBEAT).start()

    def api(self, name: str) -> Client:
        return self.servers[name].api()

    def agent(self) -> dict[str, object]:
        (status,) = self.swarm.agents()
        return status

    def connected_to(self, timeout: float = 15.0) -> str:
        """The name of the replica h1's agent holds a session with."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.agent()
            if status["connected"]:
                for name, server in self.servers.items():
                    if status["server"] == server.url:
                        return name
            assert time.monotonic() < deadline, f"h1's agent not connected: {status}"
            time.sleep(0.01)

    def neigh_ips(self) -> set[str]:
        tables = self.swarm.tables("h1")
        return {n["ip"] for net in tables["networks"] for n in net["neigh"]}

    def close(self) -> None:
        self.swarm.stop()
        for server in self.servers.values():
            server.stop()


@pytest.fixture
def pair(postgres: ThrowawayPostgres, tmp_path: Path) -> Iterator[Pair]:
    with postgres.database("l2pop_failover") as url:
        p = Pair(tmp_path, url)
        try:
            yield p
        finally:
            p.close()


@pytest.mark.postgres
def test_the_agent_fails_over_when_its_replica_is_killed(pair: Pair) -> None:
    p = pair
    took: list[float] = []
    for run in range(1, RUNS + 1):
        victim = p.connected_to()
        survivor = "b" if victim == "a" else "a"
        api = p.api(survivor)
        pid = p.servers[victim].pid
        killed = time.monotonic()
        p.servers[victim].kill()  # kill -9 by pid: no goodbye on the channel
        ip = f"198.19.{run}.2"
        # through the survivor: h2's port comes up, h1 must learn of its neighbour
        h2_port = api.create_port(p.net, host="h2", fixed_ips=[ip]).id
        with p.servers[survivor].api(p.h2_token) as h2:
            h2.report_status(h2_port, "ACTIVE")
        while ip not in p.neigh_ips():
            assert time.monotonic() - killed < FAILOVER_BOUND, (
                f"run {run}: h1 lacks {ip} {FAILOVER_BOUND}s after replica {victim} "
                f"(pid {pid}) died; agent {p.agent()}"
            )
            time.sleep(0.005)
        took.append(time.monotonic() - killed)
        assert p.connected_to() == survivor
        # a port of h1's made now: the agent plugs it and its status reaches the survivor
        port = api.create_port(p.net, host="h1", fixed_ips=[f"198.19.{run}.1"]).id
        deadline = time.monotonic() + STATUS_BOUND
        while api.port(port).status != "ACTIVE":
            assert time.monotonic() < deadline, f"run {run}: port {port} not ACTIVE"
            time.sleep(0.02)
        api.close()
        p.servers[victim].restart()  # back on its port for the next run
    took.sort()
    print(
        f"kill -9 of the agent's replica -> agent in sync via the other: "
        f"p50 {statistics.median(took) * 1000:.0f} ms, max {took[-1] * 1000:.0f} ms "
        f"over {len(took)} runs"
    )
    stats = p.swarm.stats("h1")
    assert stats["failovers"] >= RUNS
    # every move resumed from the agent's revision: the survivor's hub remembered it
    # (ADR 22), so the only snapshot is the first session's and no sync after it was FULL
    assert stats["messages"].get("resume", 0) >= RUNS, stats["messages"]
    assert stats["messages"].get("snapshot", 0) == 1, stats["messages"]
    assert stats["full_syncs"] == 1, stats
