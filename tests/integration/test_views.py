"""The operators' views against a real server and real agent processes: the event feed
with apply times, the status screen, the membership graph, and the live stream with its
token check (``GET /v1/events|status|topology``, ``/v1/watch``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from channel_harness import Cluster
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect


def until(what: Callable[[], Any], timeout: float = 15.0, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {message}")


def events(cluster: Cluster, **query: Any) -> list[dict[str, Any]]:
    return list(cluster.ok(cluster.http.get("/v1/events", params=query)))


def kinds(feed: list[dict[str, Any]], port_id: str) -> list[str]:
    return [e["kind"] for e in feed if e["port_id"] == port_id]


def watch_url(cluster: Cluster) -> str:
    return cluster.server.url.replace("http://", "ws://") + "/v1/watch"


def close_code(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


def test_feed_names_each_change_and_how_long_members_took(cluster: Cluster) -> None:
    cluster.add_hosts(3)
    cluster.start_agents(["h1", "h2", "h3"])
    blue = cluster.network("blue")
    a = cluster.port(blue, "h1", "198.19.0.1")
    b = cluster.port(blue, "h2", "198.19.0.2")
    for p in (a, b):
        cluster.wait_status(p, "ACTIVE")
    cluster.converge()

    def applied_active() -> dict[str, Any] | None:
        for e in events(cluster, limit=1000):
            if e["port_id"] == b and e["kind"] == "port ACTIVE" and e["applied_ms"] is not None:
                return e
        return None

    active = until(applied_active, message="b's ACTIVE applied by its members")
    # DOWN -> BUILD -> ACTIVE; BUILD may share the hub's batch with ACTIVE, and then only
    # the net change of the batch is an event
    assert [k for k in kinds(events(cluster, limit=1000), b) if k != "port BUILD"] == [
        "port created",
        "port bound",
        "port ACTIVE",
    ]
    # blue's members are h1 and h2 (h3 holds no port of it): both had to apply b's MAC
    assert active["hosts"] == 2 and active["pending"] == []
    assert active["network"] == "blue" and active["host"] == "h2"
    assert 0 <= active["applied_ms"] < 10_000
    # and Prometheus has it: a port's ACTIVE applied by every member
    assert cluster.metric("l2pop_port_activation_seconds_count") >= 2  # a's and b's

    cluster.api.update_port(b, host="h3")  # a migration: h3 joins, h2 leaves
    cluster.wait_status(b, "ACTIVE")
    feed = until(
        lambda: (f := events(cluster, limit=1000)) and "port migrated" in kinds(f, b) and f,
        message="the migration in the feed",
    )
    migrated = next(e for e in feed if e["port_id"] == b and e["kind"] == "port migrated")
    assert migrated["detail"] == "h2 -> h3"
    # paging by sequence number: nothing is skipped or repeated
    first = events(cluster, after=0, limit=2)
    rest = events(cluster, after=first[-1]["seq"], limit=1000)
    assert [e["seq"] for e in first + rest] == [e["seq"] for e in events(cluster, limit=1000)]


def test_status_and_session_events_follow_an_agent_killed_and_back(cluster: Cluster) -> None:
    cluster.add_hosts(3)
    cluster.start_agents(["h1", "h2"])
    other = cluster.start_agents(["h3"])
    blue = cluster.network("blue")
    for i, h in enumerate(("h1", "h2", "h3"), 1):
        cluster.wait_status(cluster.port(blue, h, f"198.19.0.{i}"), "ACTIVE")
    cluster.converge()
    status = until(
        lambda: (s := cluster.ok(cluster.http.get("/v1/status")))["hosts"]["in_sync"] == 3 and s,
        message="3 hosts in sync",
    )
    assert status["hosts"] == {"total": 3, "connected": 3, "in_sync": 3}
    assert status["networks"] == 1 and status["ports"]["ACTIVE"] == 3
    assert status["lagging"] == [] and status["revision"] == status["hub_revision"]
    until(
        lambda: "host connected" in [e["kind"] for e in events(cluster) if e["host"] == "h3"],
        message="h3 connected (the feed looks at sessions once a second)",
    )
    seen = events(cluster)[-1]["seq"]

    other.kill()  # kill -9: the server hears the socket go
    lost = until(
        lambda: [e for e in events(cluster, after=seen) if e["kind"] == "host lost"],
        message="h3 lost",
    )
    assert [e["host"] for e in lost] == ["h3"]
    status = cluster.ok(cluster.http.get("/v1/status"))
    assert status["hosts"]["connected"] == 2
    assert [h["name"] for h in status["lagging"]] == ["h3"]
    assert status["lagging"][0]["connected"] is False

    # a change h3 must apply waits for it while it is away
    cluster.port(blue, "h1", "198.19.0.9")
    other.start()
    back = until(
        lambda: [e["kind"] for e in events(cluster, after=seen) if e["host"] == "h3"][1:],
        message="h3 back",
    )
    assert back[0] == "host connected"
    until(
        lambda: (
            "host in sync" in [e["kind"] for e in events(cluster, after=seen) if e["host"] == "h3"]
        ),
        message="h3 in sync again",
    )


def test_topology_lists_members_and_ports_by_status(cluster: Cluster) -> None:
    cluster.add_hosts(2)
    cluster.start_agents(["h1", "h2"])
    blue = cluster.network("blue", vni=1001)
    cluster.network("red", vni=1002, encap="vxlan")
    p = cluster.port(blue, "h1", "198.19.0.1")
    cluster.port(blue, None, "198.19.0.2")  # unbound: DOWN, on no host
    cluster.wait_status(p, "ACTIVE")

    def blue_active() -> dict[str, Any] | None:
        topology = cluster.ok(cluster.http.get("/v1/topology"))
        nets = {n["name"]: n for n in topology["networks"]}
        return nets if nets["blue"]["ports"]["ACTIVE"] == 1 else None

    nets = until(blue_active, message="blue's port ACTIVE in the topology")
    assert nets["blue"]["members"] == ["h1"]
    assert nets["blue"]["ports"] == {"DOWN": 1, "BUILD": 0, "ACTIVE": 1}
    assert nets["red"]["members"] == [] and nets["red"]["vni"] == 1002


def test_live_stream_needs_the_admin_token_and_carries_ticks(cluster: Cluster) -> None:
    cluster.add_hosts(1)
    cluster.start_agents(["h1"])
    with ws_connect(watch_url(cluster), open_timeout=5) as wrong:
        wrong.send(json.dumps({"token": "not-the-token"}))
        assert close_code(wrong) == 4401
    with ws_connect(watch_url(cluster), open_timeout=5) as garbled:
        garbled.send("{not json")
        assert close_code(garbled) == 4400
    with ws_connect(watch_url(cluster), open_timeout=5) as ws:
        ws.send(json.dumps({"token": cluster.server.admin_token}))
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        live_ticks(cluster, ws)


def live_ticks(cluster: Cluster, ws: ClientConnection) -> None:
    blue = cluster.network("blue")
    port = cluster.port(blue, "h1", "198.19.0.1")
    seen: list[str] = []
    deadline = time.monotonic() + 15
    while "port ACTIVE" not in seen and time.monotonic() < deadline:
        message = json.loads(ws.recv(timeout=5))
        if message["type"] == "tick":
            seen += [e["kind"] for e in message["events"] if e["port_id"] == port]
            assert all(set(h) >= {"name", "in_sync", "lag"} for h in message["hosts"])
    assert [k for k in seen if k != "port BUILD"] == ["port created", "port bound", "port ACTIVE"]
    # once all is quiet a tick carries nothing: hosts are sent when they change, not as
    # heartbeats move their last_seen
    quiet = 0
    deadline = time.monotonic() + 15
    while quiet < 3 and time.monotonic() < deadline:
        message = json.loads(ws.recv(timeout=5))
        if message["type"] == "tick":
            empty = not (message["hosts"] or message["events"] or message["networks"])
            quiet = quiet + 1 if empty else 0
    assert quiet == 3, "ticks kept carrying hosts with nothing changing"


def test_views_refuse_a_wrong_token_and_unknown_parameters(cluster: Cluster) -> None:
    for path in ("/v1/status", "/v1/events", "/v1/topology"):
        answer = cluster.http.get(path, headers={"Authorization": "Bearer nope"})
        assert answer.status_code == 401, path
    bad = cluster.http.get("/v1/events", params={"limit": 0})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "limit"
    bad = cluster.http.get("/v1/events", params={"since": 3})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "since"


def test_the_page_is_served_with_its_security_headers(cluster: Cluster) -> None:
    page = cluster.http.get("/ui/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert cluster.http.get("/ui/app.js").status_code == 200
    assert cluster.http.get("/ui/secret.txt").status_code == 404


def l2pop(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "l2pop", "--server", cluster.server.url]
    command += ["--token", cluster.server.admin_token, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def test_status_command_shows_the_deployment_on_one_screen(cluster: Cluster) -> None:
    cluster.add_hosts(2)
    swarm = cluster.start_agents(["h1", "h2"])
    blue = cluster.network("blue")
    for i, h in enumerate(("h1", "h2"), 1):
        cluster.wait_status(cluster.port(blue, h, f"198.19.0.{i}"), "ACTIVE")
    cluster.converge()
    until(
        lambda: cluster.ok(cluster.http.get("/v1/status"))["hosts"]["in_sync"] == 2,
        message="both in sync",
    )
    shown = l2pop(cluster, "status")
    assert shown.returncode == 0, shown.stderr
    assert "hosts 2 / 2 in sync, 2 connected" in shown.stdout
    assert "every host is connected and in sync" in shown.stdout
    assert "port ACTIVE" in shown.stdout and "last events" in shown.stdout

    swarm.kill()
    until(
        lambda: len([e for e in events(cluster) if e["kind"] == "host lost"]) == 2,
        message="both lost (the feed looks at sessions once a second)",
    )
    shown = l2pop(cluster, "status")
    assert "hosts 0 / 2 in sync, 0 connected" in shown.stdout
    assert "most lagging hosts" in shown.stdout and "host lost" in shown.stdout
    answer = json.loads(l2pop(cluster, "status", "-o", "json").stdout)
    assert [h["name"] for h in answer["lagging"]] == ["h1", "h2"]
    refused = l2pop(cluster, "--token", "wrong", "status")
    assert refused.returncode == 1 and refused.stderr.startswith("error:")
