"""The agent channel end to end: a real server process, real agent processes (memory
datapath) on loopback WebSockets, and faults made with ``kill -9`` by pid.

After every step each agent's tables must equal ``GET /v1/hosts/{name}/fdb`` entry by entry,
and the server must report every host ``in_sync``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from channel_harness import Cluster

from l2pop.server import usecases
from l2pop.store import open_store
from l2pop.wire import PortUpdate


def received(cluster: Cluster, host: str, kind: str) -> int:
    stats = cluster.swarm_of[host].stats(host)
    return int(stats["messages"].get(kind, 0))


def test_port_events_reach_only_member_hosts(cluster: Cluster) -> None:
    cluster.add_hosts(3)
    cluster.start_agents(["h1", "h2", "h3"])
    blue, red = cluster.network("blue"), cluster.network("red")
    p1 = cluster.port(blue, "h1", "198.19.0.1")
    cluster.port(blue, "h2", "198.19.0.2")
    cluster.port(red, "h3", "203.0.113.3")
    cluster.wait_status(p1, "ACTIVE")  # the memory agent plugged and reported it
    cluster.converge()
    assert blue not in cluster.swarm_of["h3"].stats("h3")["networks_seen"]

    before = {h: received(cluster, h, "delta") for h in ("h1", "h2", "h3")}
    for i in range(5):
        cluster.patch_port(p1, fixed_ips=[f"198.19.1.{i + 1}"])
    cluster.converge()
    after = {h: received(cluster, h, "delta") for h in ("h1", "h2", "h3")}
    assert after["h2"] - before["h2"] >= 1  # h2 holds p1's neighbour entries
    assert after["h3"] == before["h3"], "a non-member host heard about blue"
    assert blue not in cluster.swarm_of["h3"].stats("h3")["networks_seen"]
    neigh = cluster.swarm_of["h2"].tables("h2")["networks"][0]["neigh"]
    assert {"ip": "198.19.1.5", "mac": neigh[0]["mac"]} in neigh


def test_migration_ip_change_deletes_propagate(cluster: Cluster) -> None:
    cluster.add_hosts(4)
    cluster.start_agents(["h1", "h2", "h3", "h4"])
    blue, red = cluster.network("blue"), cluster.network("red", arp_suppression="proxy")
    vm = cluster.port(blue, "h1", "198.19.0.10", "2001:db8::10")
    others = [cluster.port(blue, h, f"198.19.0.{i}") for i, h in enumerate(["h2", "h3"], 20)]
    reds = [cluster.port(red, h, f"203.0.113.{i}") for i, h in enumerate(["h3", "h4"], 1)]
    for p in [vm, *others, *reds]:
        cluster.wait_status(p, "ACTIVE")
    cluster.converge()

    cluster.patch_port(vm, host="h4")  # migration: BUILD on h4, then ACTIVE
    cluster.wait_status(vm, "ACTIVE")
    cluster.converge()
    fdb_h2 = cluster.http.get("/v1/hosts/h2/fdb").json()["networks"][0]["fdb"]
    assert {"mac": cluster.http.get(f"/v1/ports/{vm}").json()["mac"], "vtep": "192.0.2.4"} in fdb_h2

    cluster.patch_port(vm, fixed_ips=["198.19.0.11"])
    cluster.converge()
    cluster.http.patch(f"/v1/networks/{red}", json={"arp_suppression": "neigh_suppress"})
    cluster.converge()

    cluster.ok(cluster.http.delete(f"/v1/ports/{others[0]}"))
    cluster.converge()
    for p in reds:
        cluster.ok(cluster.http.delete(f"/v1/ports/{p}"))
    cluster.ok(cluster.http.delete(f"/v1/networks/{red}"))
    cluster.converge()
    assert cluster.swarm_of["h4"].tables("h4")["networks"][0]["network_id"] == blue

    cluster.ok(cluster.http.delete("/v1/hosts/h3"))  # its port leaves every table
    cluster.converge(["h1", "h2", "h4"])
    h4 = cluster.swarm_of["h4"].tables("h4")["networks"][0]
    assert "192.0.2.3" not in h4["flood"]


def test_agent_kill9_while_ports_change_then_restart(cluster: Cluster) -> None:
    cluster.add_hosts(3)
    cluster.start_agents(["h1", "h2"], name="a")
    victim = cluster.start_agents(["h3"], name="victim")
    blue = cluster.network("blue")
    ports = [cluster.port(blue, h, f"198.19.0.{i}") for i, h in enumerate(["h1", "h2", "h3"], 1)]
    cluster.converge()

    victim.kill()
    cluster.patch_port(ports[0], fixed_ips=["198.19.0.99"])
    cluster.ok(cluster.http.delete(f"/v1/ports/{ports[1]}"))
    extra = cluster.port(blue, "h2", "198.19.0.50")
    cluster.wait_status(extra, "ACTIVE")
    victim.start()  # fresh process: empty memory, resync from the snapshot
    cluster.converge()


def test_server_kill9_and_restart_every_agent_resyncs(cluster: Cluster, tmp_path: Path) -> None:
    cluster.add_hosts(3)
    cluster.start_agents(["h1", "h2", "h3"])
    blue = cluster.network("blue")
    ports = [cluster.port(blue, h, f"198.19.0.{i}") for i, h in enumerate(["h1", "h2", "h3"], 1)]
    for p in ports:
        cluster.wait_status(p, "ACTIVE")
    cluster.converge()

    before = {h: dict(cluster.swarm_of[h].stats(h)["messages"]) for h in ("h1", "h2", "h3")}
    cluster.server.kill()
    # while the server is down, the store changes behind its back (another replica,
    # a restore...): agents keep their tables, then must drop what is stale
    store = open_store(cluster.server.db_url)
    usecases.delete_port(store, ports[2])
    usecases.update_port(store, ports[0], PortUpdate(fixed_ips=["198.19.0.77"]))
    store.close()
    time.sleep(1.0)
    h1 = cluster.swarm_of["h1"].tables("h1")  # fail static: still the old tables
    assert len(h1["networks"][0]["fdb"]) == 2

    cluster.server.restart()
    cluster.converge()
    h2 = cluster.swarm_of["h2"].tables("h2")["networks"][0]
    assert [e["ip"] for e in h2["neigh"]] == ["198.19.0.77"]
    assert h2["flood"] == ["192.0.2.1"]
    assert cluster.swarm_of["h3"].tables("h3")["networks"] == []  # its last port went
    # the restarted hub read the change log's last revisions at load: every agent resumed
    # from its revision (no snapshot), h3 told to leave blue
    for host, was in before.items():
        now = cluster.swarm_of[host].stats(host)["messages"]
        assert now.get("resume", 0) == was.get("resume", 0) + 1, (host, was, now)
        assert now.get("snapshot", 0) == was.get("snapshot", 0), (host, was, now)


@pytest.mark.parametrize(
    ("hook", "counter"),
    [("drop-next-delta", "dropped_by_hook"), ("duplicate-next-delta", "duplicates_ignored")],
)
def test_lost_or_repeated_delta_heals(cluster: Cluster, hook: str, counter: str) -> None:
    """A lost delta shows as a gap or a heartbeat digest mismatch and ends in a resync; a
    repeated one is recognised by its revision and ignored. Either way: exact tables."""
    cluster.add_hosts(2)
    swarm = cluster.start_agents(["h1", "h2"])
    blue = cluster.network("blue")
    p1 = cluster.port(blue, "h1", "198.19.0.1")
    cluster.port(blue, "h2", "198.19.0.2")
    cluster.converge()

    swarm.post("h2", f"hooks/{hook}")
    cluster.patch_port(p1, fixed_ips=["198.19.0.9"])  # the only message h2 would get
    cluster.converge(timeout=10)
    stats = swarm.stats("h2")
    assert stats[counter] == 1
    if hook == "drop-next-delta":
        assert stats["resyncs_requested"] >= 1


def test_stuck_agent_is_cut_off_and_resyncs(cluster: Cluster) -> None:
    cluster.add_hosts(2)
    cluster.start_agents(["h1"], name="ok")
    stuck = cluster.start_agents(["h2"], name="stuck")
    blue = cluster.network("blue")
    p1 = cluster.port(blue, "h1", "198.19.0.1")
    cluster.port(blue, "h2", "198.19.0.2")
    cluster.converge()

    os.kill(stuck.pid, signal.SIGSTOP)  # alive but silent: no acks, no heartbeats
    try:
        for i in range(20):
            cluster.patch_port(p1, fixed_ips=[f"198.19.2.{i + 1}"])
        deadline = time.monotonic() + 10
        while cluster.http.get("/v1/hosts/h2").json()["connected"]:
            assert time.monotonic() < deadline, "the server never cut the silent agent off"
            time.sleep(0.1)
    finally:
        os.kill(stuck.pid, signal.SIGCONT)
    cluster.converge(timeout=20)


def test_agent_for_wrong_vtep_is_refused(cluster: Cluster) -> None:
    cluster.add_hosts(2)
    creds = cluster.creds["h1"]
    cluster.creds["h1"] = type(creds)(creds.host, "192.0.2.2", creds.token)  # h2's VTEP
    swarm = cluster.start_agents(["h1"])
    time.sleep(1.0)
    assert not cluster.http.get("/v1/hosts/h1").json()["connected"]
    assert swarm.stats("h1")["refused"] >= 1


def test_unplugged_device_goes_down_and_leaves_remote_tables(cluster: Cluster) -> None:
    cluster.add_hosts(2)
    swarm = cluster.start_agents(["h1", "h2"])
    blue = cluster.network("blue")
    p1 = cluster.port(blue, "h1", "198.19.0.1")
    p2 = cluster.port(blue, "h2", "198.19.0.2")
    cluster.wait_status(p1, "ACTIVE")
    cluster.wait_status(p2, "ACTIVE")
    cluster.converge()

    swarm.post("h1", f"ports/{p1}/unplug")  # the VM's device is gone
    cluster.wait_status(p1, "DOWN")
    cluster.converge()
    assert cluster.swarm_of["h2"].tables("h2")["networks"][0]["fdb"] == []

    swarm.post("h1", f"ports/{p1}/plug")
    cluster.wait_status(p1, "ACTIVE")
    cluster.converge()
    assert len(cluster.swarm_of["h2"].tables("h2")["networks"][0]["fdb"]) == 1
