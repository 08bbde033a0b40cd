"""The REST API (docs/design.md) against a real server process, on SQLite and on PostgreSQL."""

from __future__ import annotations

from conftest import ADMIN, Api


def error_of(response: object) -> dict[str, str]:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}, body
    return dict(body["error"])


def test_health_metrics_and_openapi(api: Api) -> None:
    http = api.http
    health = http.get("/healthz").json()
    assert health["status"] == "ok"
    replica = health["replica"]  # HOSTNAME:PORT by default
    assert replica.endswith(f":{api.server.port}")
    paths = http.get("/openapi.json").json()["paths"]
    for path in ("/v1/networks", "/v1/ports/{port_id}/status", "/v1/hosts/{name}/fdb"):
        assert path in paths
    api.network(name="blue")
    metrics = http.get("/metrics").text
    # every sample carries the replica's name (labels come sorted)
    assert f'l2pop_networks{{replica="{replica}"}} 1.0' in metrics
    assert (
        f'l2pop_http_requests_total{{method="POST",replica="{replica}",route="/v1/networks",'
        'status="201"}' in metrics
    )


def test_network_lifecycle(api: Api) -> None:
    http = api.http
    blue = api.network(name="blue", vni=5000)
    assert blue["vni"] == 5000 and blue["arp_suppression"] == "neigh_suppress"
    auto = api.network(name="green", arp_suppression="proxy")
    assert auto["vni"] == 5001  # allocated: next free
    assert [n["name"] for n in http.get("/v1/networks").json()] == ["blue", "green"]
    assert http.get(f"/v1/networks/{blue['id']}").json() == blue

    r = http.patch(f"/v1/networks/{blue['id']}", json={"name": "navy", "arp_suppression": "off"})
    assert r.status_code == 200
    assert r.json()["name"] == "navy" and r.json()["revision"] > blue["revision"]

    r = http.patch(f"/v1/networks/{blue['id']}", json={"vni": 7})
    assert r.status_code == 422 and error_of(r)["field"] == "vni"

    assert http.delete(f"/v1/networks/{blue['id']}").status_code == 204
    r = http.get(f"/v1/networks/{blue['id']}")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    assert http.delete(f"/v1/networks/{blue['id']}").status_code == 404


def test_port_lifecycle_and_status_reports(api: Api) -> None:
    http = api.http
    net = api.network(name="blue")
    h1 = api.host("h1", "192.0.2.1")
    h2 = api.host("h2", "192.0.2.2")
    assert "token" not in http.get("/v1/hosts/h1").json()  # shown once, at creation

    p = api.port(network_id=net["id"], fixed_ips=["2001:DB8::10", "198.19.0.10"], name="vm1")
    assert p["status"] == "DOWN" and p["host"] is None
    assert p["mac"].startswith("fa:16:3e:")
    assert p["fixed_ips"] == ["198.19.0.10", "2001:db8::10"]

    r = http.patch(f"/v1/ports/{p['id']}", json={"host": "h1"})
    assert r.json()["status"] == "BUILD"

    r = api.report(str(h2["token"]), str(p["id"]))  # not h2's port
    assert r.status_code == 403
    r = api.report(ADMIN, str(p["id"]))  # status comes from agents only
    assert r.status_code == 401
    r = api.report(str(h1["token"]), str(p["id"]))
    assert r.status_code == 200 and r.json()["status"] == "ACTIVE"

    r = http.patch(f"/v1/ports/{p['id']}", json={"mac": "fa:16:3e:11:22:33"})
    assert r.status_code == 409 and error_of(r)["field"] == "mac"

    r = http.patch(f"/v1/ports/{p['id']}", json={"fixed_ips": ["198.19.0.11"]})
    assert r.status_code == 200
    assert r.json()["status"] == "ACTIVE" and r.json()["fixed_ips"] == ["198.19.0.11"]

    r = http.patch(f"/v1/ports/{p['id']}", json={"host": "h2"})  # migration
    assert r.json()["status"] == "BUILD" and r.json()["host"] == "h2"
    assert api.report(str(h1["token"]), str(p["id"])).status_code == 403  # late, old host

    r = http.patch(f"/v1/ports/{p['id']}", json={"host": None})
    assert r.json()["status"] == "DOWN" and r.json()["host"] is None

    r = http.patch(f"/v1/ports/{p['id']}", json={"host": "nowhere"})
    assert r.status_code == 422 and error_of(r)["field"] == "host"

    assert http.delete(f"/v1/ports/{p['id']}").status_code == 204
    assert http.get(f"/v1/ports/{p['id']}").status_code == 404


def test_port_filters(api: Api) -> None:
    blue, red = api.network(name="blue"), api.network(name="red")
    api.host("h1", "192.0.2.1")
    a = api.port(network_id=blue["id"], host="h1")
    b = api.port(network_id=blue["id"])
    c = api.port(network_id=red["id"], host="h1")

    def ids(**params: str) -> set[str]:
        return {p["id"] for p in api.http.get("/v1/ports", params=params).json()}

    assert ids(network_id=str(blue["id"])) == {a["id"], b["id"]}
    assert ids(host="h1") == {a["id"], c["id"]}
    assert ids(status="DOWN") == {b["id"]}
    assert ids(network_id=str(red["id"]), status="BUILD") == {c["id"]}
    r = api.http.get("/v1/ports", params={"status": "UP"})
    assert r.status_code == 422 and error_of(r)["field"] == "status"


def test_fdb_is_the_desired_state(api: Api) -> None:
    net = api.network(name="blue", vni=100)
    tokens = {n: str(api.host(n, f"192.0.2.{i}")["token"]) for i, n in enumerate("abc", 1)}
    pa = api.port(network_id=net["id"], host="a", fixed_ips=["198.19.0.1"], mac="02:00:00:00:00:0a")
    pb = api.port(
        network_id=net["id"],
        host="b",
        fixed_ips=["198.19.0.2", "2001:db8::2"],
        mac="02:00:00:00:00:0b",
    )
    api.port(network_id=net["id"], host="c", mac="02:00:00:00:00:0c")  # stays BUILD
    for port, host in ((pa, "a"), (pb, "b")):
        assert api.report(tokens[host], str(port["id"])).status_code == 200

    fdb = api.http.get("/v1/hosts/c/fdb").json()
    assert fdb["host"] == "c" and fdb["revision"] == api.revision()
    assert len(fdb["digest"]) == 32
    [blue] = fdb["networks"]
    assert blue["vni"] == 100 and blue["flood"] == ["192.0.2.1", "192.0.2.2"]
    assert blue["fdb"] == [
        {"mac": "02:00:00:00:00:0a", "vtep": "192.0.2.1"},
        {"mac": "02:00:00:00:00:0b", "vtep": "192.0.2.2"},
    ]
    assert blue["neigh"] == [
        {"ip": "198.19.0.1", "mac": "02:00:00:00:00:0a"},
        {"ip": "198.19.0.2", "mac": "02:00:00:00:00:0b"},
        {"ip": "2001:db8::2", "mac": "02:00:00:00:00:0b"},
    ]
    a_view = api.http.get("/v1/hosts/a/fdb").json()["networks"][0]
    assert a_view["flood"] == ["192.0.2.2"]  # never itself
    with api.as_token(tokens["a"]) as agent:
        assert agent.get("/v1/hosts/a/fdb").status_code == 200
        assert agent.get("/v1/hosts/b/fdb").status_code == 403
    r = api.http.get("/v1/hosts/zz/fdb")
    assert r.status_code == 404


def test_host_delete_unbinds_its_ports(api: Api) -> None:
    net = api.network(name="blue")
    t1 = str(api.host("h1", "192.0.2.1")["token"])
    api.host("h2", "192.0.2.2")
    p1 = api.port(network_id=net["id"], host="h1")
    api.port(network_id=net["id"], host="h2")
    api.report(t1, str(p1["id"]))
    assert api.http.get("/v1/hosts/h2/fdb").json()["networks"][0]["flood"] == ["192.0.2.1"]

    assert api.http.delete("/v1/hosts/h1").status_code == 204
    port = api.http.get(f"/v1/ports/{p1['id']}").json()
    assert port["host"] is None and port["status"] == "DOWN"
    assert api.http.get("/v1/hosts/h2/fdb").json()["networks"][0]["flood"] == []
    assert api.report(t1, str(p1["id"])).status_code == 401  # the token died with the host
    # the VTEP is free again
    api.host("h3", "192.0.2.1")


def test_authentication(api: Api) -> None:
    token = str(api.host("h1", "192.0.2.1")["token"])
    with api.as_token(None) as anon:
        r = anon.get("/v1/networks")
        assert r.status_code == 401 and error_of(r)["code"] == "unauthorized"
        assert anon.get("/healthz").status_code == 200
    with api.as_token("wrong") as bad:
        assert bad.get("/v1/networks").status_code == 401
    with api.as_token(token) as agent:
        r = agent.post("/v1/networks", json={"name": "x"})
        assert r.status_code == 403 and error_of(r)["code"] == "forbidden"
    assert api.http.get("/v1/networks").json() == []


def test_revision_moves_once_per_write_and_not_on_reads(api: Api) -> None:
    r0 = api.revision()
    net = api.network(name="blue")
    assert api.revision() == r0 + 1 == net["revision"]
    api.http.get("/v1/networks")
    api.http.patch(f"/v1/networks/{net['id']}", json={"name": "blue"})  # no-op
    assert api.revision() == r0 + 1
    resp = api.http.get("/v1/networks")
    assert resp.headers["L2pop-Revision"] == str(r0 + 1)
