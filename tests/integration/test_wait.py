"""Waiting for a write to reach the hosts (``--wait``, ``GET /v1/revisions/{revision}``),
with a real server and real ``l2pop agent-swarm`` processes:

* ``port create|set|delete --wait`` return only once every member agent holds the change:
  each agent's tables are read right after the CLI returns, and the wait times of 20 writes
  are printed (p50/max);
* a host whose agent is stopped makes ``--wait --timeout 1`` fail within about a second,
  naming the host;
* the route's 404, 422 and 504 answers;
* on PostgreSQL with two replicas, a wait through one replica completes for a host whose
  agent's session is on the other.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from channel_harness import HEARTBEAT, Cluster

from l2pop.client import ApiError
from l2pop.server.waits import MAX_WAITS
from l2pop.testbed.agents import AgentSwarm, HostCredentials
from l2pop.testbed.postgres import ThrowawayPostgres
from l2pop.testbed.process import ServerProcess


def cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m l2pop ARGS`` with the admin token; never raises on exit code."""
    server = cluster.server
    base = {k: v for k, v in os.environ.items() if not k.startswith("L2POP_")}
    cmd = [sys.executable, "-m", "l2pop", "--server", server.url, "--token", server.admin_token]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=90, env=base, check=False
    )


def neigh_ips(cluster: Cluster, host: str, network_id: str) -> set[str]:
    for net in cluster.swarm_of[host].tables(host)["networks"]:
        if net["network_id"] == network_id:
            return {n["ip"] for n in net["neigh"]}
    return set()


def pct(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return f"p50 {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms over {len(ms)}"


@pytest.fixture
def blue(cluster: Cluster) -> str:
    """Hosts h1..h4 with agents; network blue with an ACTIVE port on each (all members)."""
    cluster.add_hosts(4)
    cluster.start_agents(["h1", "h2", "h3"])
    cluster.start_agents(["h4"])  # a swarm of its own: one test stops it
    net = cluster.network("blue")
    ports = [cluster.port(net, f"h{i}", f"198.19.0.{i}") for i in range(1, 5)]
    for p in ports:
        cluster.wait_status(p, "ACTIVE")
    cluster.converge()
    return net


def test_cli_wait_returns_once_every_member_agent_holds_the_change(
    cluster: Cluster, blue: str
) -> None:
    port = cluster.api.ports(network_id=blue, host="h1")[0].id
    others = ["h2", "h3", "h4"]
    took: list[float] = []
    for i in range(20):
        ip = f"198.19.1.{i + 1}"
        start = time.monotonic()
        out = cli(cluster, "port", "set", port, "--ip", ip, "--wait", "-o", "json")
        took.append(time.monotonic() - start)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["fixed_ips"] == [ip]  # stdout stays the answer
        assert "applied by 4 hosts in" in out.stderr, out.stderr
        for host in others:  # right after the CLI returned: no polling
            assert ip in neigh_ips(cluster, host, blue), (host, ip)

    start = time.monotonic()
    made = cli(cluster, "port", "create", "--network", "blue", "--host", "h2", "--wait")
    took.append(time.monotonic() - start)
    assert made.returncode == 0, made.stderr
    assert "applied by" in made.stderr

    gone = cli(cluster, "port", "delete", port, "--wait")
    assert gone.returncode == 0, gone.stderr
    for host in others:
        assert not neigh_ips(cluster, host, blue) & {"198.19.1.20"}, host
    print(f"\nport set|create --wait (CLI process, write + wait): {pct(took)}")


def test_client_wait_times(cluster: Cluster, blue: str) -> None:
    port = cluster.api.ports(network_id=blue, host="h2")[0].id
    waits: list[float] = []
    server_ms: list[int] = []
    for i in range(20):
        cluster.api.update_port(port, fixed_ips=[f"198.19.2.{i + 1}"])
        revision = cluster.api.revision
        assert revision is not None
        start = time.monotonic()
        reached = cluster.api.wait_revision(revision, 10)
        waits.append(time.monotonic() - start)
        server_ms.append(reached.waited_ms)
        assert reached.complete and not reached.behind
        assert {h.name for h in reached.hosts} == {"h1", "h2", "h3", "h4"}
        assert reached.batch_revision is not None and reached.batch_revision >= revision
        for host in ("h1", "h3", "h4"):
            assert f"198.19.2.{i + 1}" in neigh_ips(cluster, host, blue)
    print(
        f"\nClient.wait_revision after a write: {pct(waits)}; server waited_ms p50 "
        f"{statistics.median(server_ms):.0f}, max {max(server_ms)}"
    )


def test_a_stopped_agent_makes_the_wait_time_out_naming_it(cluster: Cluster, blue: str) -> None:
    cluster.swarm_of["h4"].stop()
    deadline = time.monotonic() + 10
    while cluster.api.host("h4").connected:
        assert time.monotonic() < deadline, "h4 still connected"
        time.sleep(0.05)
    port = cluster.api.ports(network_id=blue, host="h1")[0].id
    start = time.monotonic()
    out = cli(cluster, "port", "set", port, "--ip", "198.19.3.1", "--wait", "--timeout", "1")
    took = time.monotonic() - start
    assert out.returncode == 1, out.stdout + out.stderr
    line = out.stderr.strip()
    assert line.startswith("error:") and "\n" not in line, line
    assert "h4 (not connected)" in line and "h2" not in line, line
    # the server gives up after 1 s; the rest is the CLI process starting and the write
    assert took < 1 + 3.0, took
    print(f"\n--wait --timeout 1 with h4's agent stopped: exit 1 after {took:.2f} s: {line}")

    # the same through the client: 504, code timeout, the host named
    revision = cluster.api.revision
    assert revision is not None
    with pytest.raises(ApiError) as err:
        cluster.api.wait_revision(revision, 0.3)
    assert (err.value.status, err.value.code) == (504, "timeout")
    assert "h4 (not connected)" in err.value.detail
    # at once (wait=0): 200 with h4 behind
    now = cluster.api.wait_revision(revision)
    assert not now.complete and now.behind == ["h4"]

    # at most MAX_WAITS at once per server: one more is 503 with Retry-After
    url = f"/v1/revisions/{revision}"
    with ThreadPoolExecutor(MAX_WAITS) as pool:
        held = [pool.submit(cluster.http.get, url, params={"wait": 40}) for _ in range(MAX_WAITS)]
        # all of them under way, as the server's gauge says (however loaded the machine is)
        deadline = time.monotonic() + 30
        while cluster.metric("l2pop_revision_waits_in_flight") < MAX_WAITS:
            assert time.monotonic() < deadline, cluster.metric("l2pop_revision_waits_in_flight")
            time.sleep(0.05)
        extra = cluster.http.get(url, params={"wait": 0.01})
        assert extra.status_code == 503, extra.text
        assert "too many waits" in extra.json()["error"]["message"]
        assert extra.headers["Retry-After"]
        # h4's agent comes back: every held wait answers 200 once it applied the revision
        cluster.start_agents(["h4"])
        assert {f.result().status_code for f in held} == {200}
    assert cluster.metric("l2pop_revision_waits_in_flight") == 0


def test_the_route_answers_404_422_and_the_state_at_once(cluster: Cluster, blue: str) -> None:
    http = cluster.http
    head = cluster.api.network(blue)
    revision = cluster.api.revision
    assert revision is not None
    ahead = http.get(f"/v1/revisions/{revision + 1000}")
    assert ahead.status_code == 404, ahead.text
    assert ahead.json()["error"]["field"] == "revision"
    for bad in ("x", "-1", str(2**63), "1.5"):
        answer = http.get(f"/v1/revisions/{bad}")
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.json()["error"]["field"] == "revision"
    for bad in ("-1", "61", "nan", "inf", "soon"):
        answer = http.get(f"/v1/revisions/{revision}", params={"wait": bad})
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.json()["error"]["field"] == "wait"
    unknown = http.get(f"/v1/revisions/{revision}", params={"timeout": "1"})
    assert unknown.status_code == 422
    assert http.get(f"/v1/revisions/{revision}", headers={"Authorization": ""}).status_code == 401

    body = http.get(f"/v1/revisions/{revision}").json()
    assert body["revision"] == revision and body["complete"] is True, body
    assert body["server_revision"] >= revision
    assert head.revision <= revision
    # a revision older than the hub's memory (0: before its load): every member, against it
    old = http.get("/v1/revisions/0").json()
    assert old["batch_revision"] is None and old["complete"] is True, old
    assert {h["name"] for h in old["hosts"]} == {"h1", "h2", "h3", "h4"}


# -- two replicas on PostgreSQL -----------------------------------------------------------


@pytest.fixture
def duo(postgres: ThrowawayPostgres, tmp_path: Path) -> Iterator[dict[str, ServerProcess]]:
    with postgres.database("l2pop_wait") as url:
        servers = {
            name: ServerProcess(
                url,
                log_path=tmp_path / f"{name}.log",
                extra_args=("--heartbeat-interval", str(HEARTBEAT), "--replica", name),
            )
            for name in ("a", "b")
        }
        try:
            for server in servers.values():
                server.start()
            yield servers
        finally:
            for server in servers.values():
                server.stop()


@pytest.mark.postgres
def test_a_wait_through_one_replica_completes_for_a_host_on_the_other(
    duo: dict[str, ServerProcess], tmp_path: Path
) -> None:
    a, b = duo["a"].api(), duo["b"].api()
    swarms: list[AgentSwarm] = []
    try:
        net = a.create_network(name="blue").id
        ports = {}
        for i, replica in ((1, "a"), (2, "b")):
            token = a.create_host(f"h{i}", f"192.0.2.{i}").token
            creds = HostCredentials(f"h{i}", f"192.0.2.{i}", token)
            swarm = AgentSwarm(
                duo[replica].url, [creds], tmp_path, name=f"swarm{i}", heartbeat_interval=HEARTBEAT
            )
            swarms.append(swarm.start())
            ports[f"h{i}"] = a.create_port(net, host=f"h{i}", fixed_ips=[f"198.19.0.{i}"]).id
        deadline = time.monotonic() + 20
        while not all(h.in_sync and h.replica == f"{'ab'[i]}" for i, h in enumerate(a.hosts())):
            assert time.monotonic() < deadline, a.hosts()
            time.sleep(0.1)

        took: list[float] = []
        for i in range(20):  # written through b, waited for through a: h2's session is on b
            ip = f"198.19.1.{i + 1}"
            b.update_port(ports["h1"], fixed_ips=[ip])
            revision = b.revision
            assert revision is not None
            start = time.monotonic()
            reached = a.wait_revision(revision, 10)
            took.append(time.monotonic() - start)
            assert reached.complete, reached
            assert {h.name for h in reached.hosts} == {"h1", "h2"}
            h2 = swarms[1].tables("h2")["networks"][0]["neigh"]
            assert ip in {n["ip"] for n in h2}, (ip, h2)
        print(f"\nwait through replica a for h2 (session on b), PostgreSQL: {pct(took)}")
    finally:
        for swarm in swarms:
            swarm.stop()
        a.close()
        b.close()
