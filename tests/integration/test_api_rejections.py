"""Bad input gets 422 naming the field, conflicts get 409, and a refused call changes nothing.

Also: concurrent requests racing for one VNI, MAC or IP end with exactly one winner.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import ADMIN, Api

UNKNOWN = "00000000-0000-4000-8000-000000000000"


def populate(api: Api) -> dict[str, str]:
    net = api.network(name="blue", vni=100)
    api.network(name="red", vni=200)
    api.host("h1", "192.0.2.1")
    port = api.port(
        network_id=net["id"],
        fixed_ips=["198.19.0.1", "2001:db8::1"],
        mac="fa:16:3e:00:00:01",
        host="h1",
    )
    return {"net": str(net["id"]), "port": str(port["id"])}


# (method, path, body, status, field) — {net} and {port} are filled in
REJECTED = [
    ("post", "/v1/networks", {"vni": 0}, 422, "vni"),
    ("post", "/v1/networks", {"vni": 16_777_216}, 422, "vni"),
    ("post", "/v1/networks", {"vni": "many"}, 422, "vni"),
    ("post", "/v1/networks", {"arp_suppression": "flood"}, 422, "arp_suppression"),
    ("post", "/v1/networks", {"name": "x", "colour": "blue"}, 422, "colour"),
    ("post", "/v1/networks", {"vni": 100}, 409, "vni"),
    ("patch", "/v1/networks/{net}", {"vni": 300}, 422, "vni"),
    ("patch", "/v1/networks/{net}", {"arp_suppression": 3}, 422, "arp_suppression"),
    ("patch", f"/v1/networks/{UNKNOWN}", {"name": "y"}, 404, None),
    ("delete", "/v1/networks/{net}", None, 409, None),
    ("post", "/v1/ports", {"fixed_ips": []}, 422, "network_id"),
    ("post", "/v1/ports", {"network_id": "nope"}, 422, "network_id"),
    ("post", "/v1/ports", {"network_id": UNKNOWN}, 404, None),
    ("post", "/v1/ports", {"network_id": "{net}", "mac": "ff:ff:ff:ff:ff:ff"}, 422, "mac"),
    ("post", "/v1/ports", {"network_id": "{net}", "mac": "01:00:5e:00:00:01"}, 422, "mac"),
    ("post", "/v1/ports", {"network_id": "{net}", "mac": "zz"}, 422, "mac"),
    ("post", "/v1/ports", {"network_id": "{net}", "fixed_ips": ["300.1.1.1"]}, 422, "fixed_ips"),
    ("post", "/v1/ports", {"network_id": "{net}", "fixed_ips": "198.19.0.9"}, 422, "fixed_ips"),
    ("post", "/v1/ports", {"network_id": "{net}", "host": "nowhere"}, 422, "host"),
    ("post", "/v1/ports", {"network_id": "{net}", "mac": "FA:16:3E:00:00:01"}, 409, "mac"),
    ("post", "/v1/ports", {"network_id": "{net}", "fixed_ips": ["198.19.0.1"]}, 409, "fixed_ips"),
    ("post", "/v1/ports", {"network_id": "{net}", "fixed_ips": ["2001:DB8::1"]}, 409, "fixed_ips"),
    ("patch", "/v1/ports/{port}", {"mac": "not-a-mac"}, 422, "mac"),
    ("patch", "/v1/ports/{port}", {"fixed_ips": ["198.19.0.2", "198.19.0.2"]}, 422, "fixed_ips"),
    ("patch", "/v1/ports/{port}", {"network_id": UNKNOWN}, 422, "network_id"),
    ("patch", "/v1/ports/{port}", {"host": "bad name!"}, 422, "host"),
    ("patch", f"/v1/ports/{UNKNOWN}", {"name": "z"}, 404, None),
    ("delete", f"/v1/ports/{UNKNOWN}", None, 404, None),
    ("post", "/v1/hosts", {"name": "h2"}, 422, "vtep_ip"),
    ("post", "/v1/hosts", {"name": "h2", "vtep_ip": "2001:db8::1"}, 422, "vtep_ip"),
    ("post", "/v1/hosts", {"name": "-h2", "vtep_ip": "192.0.2.2"}, 422, "name"),
    ("post", "/v1/hosts", {"name": "h1", "vtep_ip": "192.0.2.2"}, 409, "name"),
    ("post", "/v1/hosts", {"name": "h2", "vtep_ip": "192.0.2.1"}, 409, "vtep_ip"),
    ("delete", "/v1/hosts/nowhere", None, 404, None),
]


def test_every_rejection_names_the_field_and_changes_nothing(api: Api) -> None:
    ids = populate(api)
    before = api.snapshot()
    failures = []
    for method, path, body, status, field in REJECTED:
        url = path.format(**ids)
        payload = body
        if isinstance(body, dict):
            payload = {k: (v.format(**ids) if isinstance(v, str) else v) for k, v in body.items()}
        r = api.http.request(method.upper(), url, json=payload)
        err = (
            r.json().get("error", {})
            if r.headers.get("content-type", "").startswith("application/json")
            else {}
        )
        ok = (
            r.status_code == status
            and err.get("message")
            and (field is None or err.get("field") == field)
        )
        if not ok:
            failures.append((method, url, payload, r.status_code, r.text))
    assert not failures, failures
    assert api.snapshot() == before


def test_malformed_json_is_422(api: Api) -> None:
    r = api.http.post(
        "/v1/networks", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid"


def test_mac_change_while_active_changes_nothing(api: Api) -> None:
    net = api.network(name="blue")
    token = str(api.host("h1", "192.0.2.1")["token"])
    port = api.port(network_id=net["id"], host="h1")
    assert api.report(token, str(port["id"])).status_code == 200
    before = api.snapshot()
    r = api.http.patch(f"/v1/ports/{port['id']}", json={"mac": "fa:16:3e:ab:cd:ef", "name": "x"})
    assert r.status_code == 409
    assert api.snapshot() == before


def race(api: Api, requests: list[tuple[str, dict[str, object]]]) -> list[int]:
    def send(req: tuple[str, dict[str, object]]) -> int:
        with httpx.Client(
            base_url=api.server.url, timeout=60, headers={"Authorization": f"Bearer {ADMIN}"}
        ) as c:
            return c.post(req[0], json=req[1]).status_code

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


@pytest.mark.parametrize("what", ["vni", "mac", "ip", "vtep"])
def test_twenty_racers_one_winner(api: Api, what: str) -> None:
    net = api.network(name="blue")
    if what == "vni":
        reqs = [("/v1/networks", {"name": f"n{i}", "vni": 4242}) for i in range(20)]
    elif what == "mac":
        reqs = [("/v1/ports", {"network_id": net["id"], "mac": "fa:16:3e:42:42:42"})] * 20
    elif what == "ip":
        reqs = [("/v1/ports", {"network_id": net["id"], "fixed_ips": ["198.19.4.2"]})] * 20
    else:
        reqs = [("/v1/hosts", {"name": f"h{i}", "vtep_ip": "192.0.2.42"}) for i in range(20)]
    codes = race(api, reqs)
    assert sorted(codes) == [201] + [409] * 19, codes


def test_concurrent_automatic_allocations_all_succeed(api: Api) -> None:
    codes = race(api, [("/v1/networks", {"name": f"n{i}"}) for i in range(20)])
    assert codes == [201] * 20
    vnis = [n["vni"] for n in api.http.get("/v1/networks").json()]
    assert len(set(vnis)) == 20
