"""A network's encap over the REST API and the channel (docs/adr/0017-network-encap.md), on
SQLite and on PostgreSQL: given at create, fixed afterwards, shown with the network and in a
host's ``/fdb``; hosts show what their agent announced; a GRE port is not bound to a host
whose agent cannot carry it, and an agent that receives one anyway reports it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from test_api import error_of

from conftest import Api
from l2pop.testbed.agents import AgentSwarm, HostCredentials


def test_encap_is_given_at_create_shown_and_fixed(api: Api) -> None:
    http = api.http
    plain = api.network(name="plain")
    assert plain["encap"] == "vxlan"  # the default
    tunnel = api.network(name="tunnel", encap="gre", vni=300)
    assert tunnel["encap"] == "gre" and tunnel["vni"] == 300  # the VNI is the GRE key
    assert http.get(f"/v1/networks/{tunnel['id']}").json() == tunnel
    listed = {n["name"]: n["encap"] for n in http.get("/v1/networks").json()}
    assert listed == {"plain": "vxlan", "tunnel": "gre"}

    # the same value is accepted and changes nothing; another is a conflict with the network
    same = http.patch(f"/v1/networks/{tunnel['id']}", json={"encap": "gre"})
    assert same.status_code == 200 and same.json() == tunnel
    before = api.snapshot()
    r = http.patch(f"/v1/networks/{tunnel['id']}", json={"encap": "vxlan", "name": "x"})
    assert r.status_code == 409
    assert error_of(r)["field"] == "encap" and error_of(r)["code"] == "conflict"
    assert "cannot change" in error_of(r)["message"]
    assert api.snapshot() == before

    for bad in ("GRE", "geneve", 4, ""):
        r = http.post("/v1/networks", json={"name": "bad", "encap": bad})
        assert r.status_code == 422 and error_of(r)["field"] == "encap", bad
        r = http.patch(f"/v1/networks/{plain['id']}", json={"encap": bad})
        assert r.status_code == 422 and error_of(r)["field"] == "encap", bad
    assert api.snapshot() == before


def test_fdb_shows_each_networks_encap(api: Api) -> None:
    plain = api.network(name="plain", vni=100)
    tunnel = api.network(name="tunnel", vni=200, encap="gre")
    api.host("a", "192.0.2.1")
    for net in (plain, tunnel):
        api.port(network_id=net["id"], host="a")
    nets = api.http.get("/v1/hosts/a/fdb").json()["networks"]
    assert {n["vni"]: n["encap"] for n in nets} == {100: "vxlan", 200: "gre"}


@pytest.fixture
def swarms(api: Api, tmp_path: Any) -> Iterator[Callable[..., AgentSwarm]]:
    """Start agent-swarm processes (memory datapath) for hosts of ``api``'s server."""
    started: list[AgentSwarm] = []

    def start(hosts: list[dict[str, Any]], encaps: list[str] | None = None) -> AgentSwarm:
        creds = [HostCredentials(h["name"], h["vtep_ip"], h["token"]) for h in hosts]
        name = f"swarm{len(started)}"
        swarm = AgentSwarm(
            api.server.url, creds, tmp_path, name=name, heartbeat_interval=0.5, encaps=encaps
        )
        started.append(swarm)
        return swarm.start()

    yield start
    for swarm in started:
        swarm.stop()


def wait_host(api: Api, name: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 20.0
    host: dict[str, Any] = {}
    while time.monotonic() < deadline:
        host = api.http.get(f"/v1/hosts/{name}").json()
        if check(host):
            return host
        time.sleep(0.1)
    raise AssertionError(f"host {name} never got there: {host}")


def wait_active(api: Api, port_id: str) -> None:
    deadline = time.monotonic() + 20.0
    while api.http.get(f"/v1/ports/{port_id}").json()["status"] != "ACTIVE":
        assert time.monotonic() < deadline, f"port {port_id} never ACTIVE"
        time.sleep(0.05)


def desired(api: Api) -> dict[str, object]:
    """The revision, networks and ports (hosts' telemetry moves with every ack)."""
    snap = api.snapshot()
    return {k: snap[k] for k in ("revision", "networks", "ports")}


def test_binding_gre_to_a_host_that_cannot_carry_it_is_refused(
    api: Api, swarms: Callable[..., AgentSwarm]
) -> None:
    http = api.http
    plain = api.network(name="plain")
    tunnel = api.network(name="tunnel", encap="gre")
    narrow, wide = api.host("narrow", "192.0.2.1"), api.host("wide", "192.0.2.2")
    assert http.get("/v1/hosts/narrow").json()["encaps"] is None  # nothing announced yet
    assert http.get("/v1/hosts/narrow").json()["datapath"] is None
    # a host whose agent never connected may take a GRE port: its agent checks on arrival
    early = api.port(network_id=tunnel["id"], host="narrow", mac="02:00:00:00:00:01")
    assert early["host"] == "narrow"

    swarms([narrow], encaps=["vxlan"])
    swarms([wide])
    shown = wait_host(api, "narrow", lambda h: h["encaps"] is not None)
    assert shown["datapath"] == "memory" and shown["encaps"] == ["vxlan"]
    shown = wait_host(api, "wide", lambda h: h["encaps"] is not None)
    assert shown["datapath"] == "memory" and shown["encaps"] == ["gre", "vxlan"]
    assert {h["name"]: h["encaps"] for h in http.get("/v1/hosts").json()} == {
        "narrow": ["vxlan"],
        "wide": ["gre", "vxlan"],
    }

    # the agent leaves the GRE network alone and says so; the host is not in sync
    failing = wait_host(api, "narrow", lambda h: bool(h["errors"]))
    [err] = failing["errors"]
    assert err["network_id"] == tunnel["id"] and err["entry"] == "encap gre"
    assert "carries vxlan, not gre" in err["message"]
    assert failing["in_sync"] is False and failing["connected"] is True

    # binding (create, bind, migrate) a GRE port to it is refused and changes nothing
    moved = api.port(network_id=tunnel["id"], host="wide", mac="02:00:00:00:00:02")
    unbound = api.port(network_id=tunnel["id"], mac="02:00:00:00:00:03")
    wait_active(api, moved["id"])  # its agent's report moves the revision: let it land first
    before = desired(api)
    refusals = [
        http.post("/v1/ports", json={"network_id": tunnel["id"], "host": "narrow"}),
        http.patch(f"/v1/ports/{unbound['id']}", json={"host": "narrow"}),
        http.patch(f"/v1/ports/{moved['id']}", json={"host": "narrow", "name": "x"}),
    ]
    for r in refusals:
        assert r.status_code == 409, r.text
        body = error_of(r)
        assert body["code"] == "conflict" and body["field"] == "host"
        assert "narrow" in body["message"] and "gre" in body["message"]
    assert desired(api) == before

    # what it carries is bound as ever, and the host that carries GRE takes GRE ports
    ok = http.post("/v1/ports", json={"network_id": plain["id"], "host": "narrow"})
    assert ok.status_code == 201
    assert http.patch(f"/v1/ports/{unbound['id']}", json={"host": "wide"}).status_code == 200

    # once the GRE port leaves the host, the agent has nothing it cannot carry: in sync
    assert http.patch(f"/v1/ports/{early['id']}", json={"host": None}).status_code == 200
    healed = wait_host(api, "narrow", lambda h: not h["errors"] and h["in_sync"])
    assert healed["encaps"] == ["vxlan"]
