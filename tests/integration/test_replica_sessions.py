"""Sessions across replicas (ADR 22), with two real ``l2pop server`` replicas (``a``, ``b``)
on one throwaway PostgreSQL and real ``l2pop agent-swarm`` processes:

* one live session per host across replicas: a newer session on ``b`` closes the older one
  on ``a``, and both replicas say ``b`` holds it;
* a host's status reads the same through every replica, and a host whose replica died (and
  whose agent knows no other) shows disconnected everywhere within a bounded time;
* an agent moving to a replica restarted since its last change (the new hub does not
  remember the agent's revision) gets a snapshot, not a resume, and converges.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from replica_harness import empty_change_log, wait_for

from l2pop.client import Client
from l2pop.server.replicas import REPLICA_TTL_BEATS
from l2pop.testbed.agents import AgentSwarm, HostCredentials
from l2pop.testbed.postgres import ThrowawayPostgres
from l2pop.testbed.process import ServerProcess

HEARTBEAT = 0.5
#: a dead replica's hosts read disconnected within its TTL, one beat to notice, and slack
DISCONNECT_BOUND = (REPLICA_TTL_BEATS + 1) * HEARTBEAT + 3.0
#: a newer session elsewhere closes the older one within this (the claim's NOTIFY)
REPLACE_BOUND = 3.0

pytestmark = pytest.mark.postgres


class Duo:
    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path = tmp_path
        self.servers = {
            name: ServerProcess(
                url,
                log_path=tmp_path / f"{name}.log",
                extra_args=("--heartbeat-interval", str(HEARTBEAT), "--replica", name),
            )
            for name in ("a", "b")
        }
        self.swarms: list[AgentSwarm] = []
        self.apis: list[Client] = []
        for server in self.servers.values():
            server.start()
        api = self.api("a")
        self.net = api.create_network(name="blue").id
        self.creds: dict[str, HostCredentials] = {}
        for i in (1, 2):
            token = api.create_host(f"h{i}", f"192.0.2.{i}").token
            self.creds[f"h{i}"] = HostCredentials(f"h{i}", f"192.0.2.{i}", token)
            api.create_port(self.net, host=f"h{i}", fixed_ips=[f"198.19.0.{i}"])

    def api(self, name: str) -> Client:
        client = self.servers[name].api()
        self.apis.append(client)
        return client

    def swarm(self, host: str, *replicas: str) -> AgentSwarm:
        urls = ",".join(self.servers[r].url for r in replicas)
        n = len(self.swarms)
        swarm = AgentSwarm(
            urls, [self.creds[host]], self.tmp_path, name=f"swarm{n}", heartbeat_interval=HEARTBEAT
        )
        self.swarms.append(swarm)
        return swarm.start()

    def view(self, via: str) -> dict[str, tuple[Any, ...]]:
        """host -> (connected, replica, applied revision, in sync) through replica ``via``."""
        return {
            h.name: (h.connected, h.replica, h.applied_revision, h.in_sync)
            for h in self.api(via).hosts()
        }

    def close(self) -> None:
        for client in self.apis:
            client.close()
        for swarm in self.swarms:
            swarm.stop()
        for server in self.servers.values():
            server.stop()


@pytest.fixture
def duo(postgres: ThrowawayPostgres, tmp_path: Path) -> Iterator[Duo]:
    with postgres.database("l2pop_sessions") as url:
        d = Duo(tmp_path, url)
        try:
            yield d
        finally:
            d.close()


def test_a_newer_session_on_another_replica_closes_the_older(duo: Duo) -> None:
    first = duo.swarm("h1", "a")
    wait_for(lambda: duo.view("b")["h1"][:2] == (True, "a"), 10, "h1 held by a, seen by b")
    assert duo.view("a")["h1"][:2] == (True, "a")
    started = time.monotonic()
    second = duo.swarm("h1", "b")  # another agent of h1 (e.g. the host was re-imaged)
    wait_for(
        lambda: not first.agents()[0]["connected"], REPLACE_BOUND, "a closed its older session"
    )
    wait_for(lambda: second.agents()[0]["connected"], 10, "the newer session is up")
    took = time.monotonic() - started
    for via in ("a", "b"):
        assert duo.view(via)["h1"][:2] == (True, "b"), via
    print(f"\nsecond agent's process started -> its session on b live, a's closed: {took:.2f} s")


def test_host_status_is_the_same_through_every_replica(duo: Duo) -> None:
    duo.swarm("h1", "a")  # h1's agent knows replica a only
    duo.swarm("h2", "b")
    both_held = {"h1": (True, "a"), "h2": (True, "b")}

    def agreed() -> bool:
        a, b = duo.view("a"), duo.view("b")
        return (
            a == b
            and all(v[3] for v in a.values())
            and {h: v[:2] for h, v in a.items()} == both_held
        )

    wait_for(agreed, 15, "both replicas tell the same, in sync")
    # the operator's table names the replica holding each session, through either replica
    server = duo.servers["b"]
    cmd = [sys.executable, "-m", "l2pop", "--server", server.url]
    cmd += ["--token", str(server.admin_token), "host", "list"]
    env = {**os.environ, "COLUMNS": "200"}
    listed = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=True)
    header, *lines = [line.split() for line in listed.stdout.splitlines() if line.strip()]
    column = header.index("replica")
    holders = {cells[0]: cells[column] for cells in lines if cells[0] in ("h1", "h2")}
    assert holders == {"h1": "a", "h2": "b"}, listed.stdout
    duo.api("b").create_port(duo.net, host="h2", fixed_ips=["198.19.0.12"])
    wait_for(agreed, 10, "the same again after a change")
    revisions = {v[2] for v in duo.view("a").values()}
    assert len(revisions) == 1, f"in sync hosts at one revision, got {revisions}"
    killed = time.monotonic()
    duo.servers["a"].kill()  # kill -9: no release, no goodbye; h1's agent has nowhere to go
    took = wait_for(
        lambda: duo.view("b")["h1"][:2] == (False, None), DISCONNECT_BOUND, "h1 disconnected via b"
    )
    assert duo.view("b")["h2"][:2] == (True, "b")
    print(
        f"\nreplica a killed -> its host disconnected via b after {took * 1000:.0f} ms "
        f"({(time.monotonic() - killed) * 1000:.0f} ms since the kill)"
    )


def test_a_replica_restarted_since_the_agents_revision_sends_a_snapshot(duo: Duo) -> None:
    swarm = duo.swarm("h1", "a", "b")

    def placed() -> str | None:
        agent = swarm.agents()[0]
        if not agent["connected"]:
            return None
        return next(n for n, s in duo.servers.items() if s.url == agent["server"])

    wait_for(lambda: placed() is not None, 10, "h1 connected")
    holder = placed()
    assert holder is not None
    # h1's own port's ACTIVE report is a change h1 hears: let it land before the restart,
    # or the restarted replica would remember h1's revision and rightly resume it
    api = duo.api(holder)
    wait_for(
        lambda: (
            {p.status for p in api.ports(host="h1")} == {"ACTIVE"}
            and next(h for h in api.hosts() if h.name == "h1").in_sync
        ),
        10,
        "h1's port ACTIVE and h1 in sync",
    )
    other = "b" if holder == "a" else "a"
    duo.servers[other].kill()
    # a change that does not concern h1: the store moves on, h1's revision does not
    duo.api(holder).create_network(name="elsewhere")
    empty_change_log(duo.servers[other].db_url)  # no history for the restarted hub to read
    duo.servers[other].restart()  # its hub loads after h1's revision: it cannot resume it
    before = swarm.stats("h1")["messages"]
    duo.servers[holder].kill()
    wait_for(lambda: placed() == other, 15, "h1 moved to the restarted replica")
    fdb = duo.api(other).host_fdb("h1").model_dump(mode="json")
    wait_for(lambda: swarm.tables("h1")["digest"] == fdb["digest"], 10, "h1 holds its /fdb again")
    assert swarm.tables("h1")["networks"] == fdb["networks"]
    after = swarm.stats("h1")["messages"]
    assert after.get("snapshot", 0) == before.get("snapshot", 0) + 1, (before, after)
    assert after.get("resume", 0) == before.get("resume", 0), (before, after)
    refused = [
        line
        for line in duo.api(other).metrics().splitlines()
        if line.startswith("l2pop_channel_session_starts_total")
        and 'start="snapshot_refused_resume"' in line
    ]
    assert refused and float(refused[0].split()[-1]) >= 1, refused
