"""Bad input gets 422 naming the field, conflicts get 409, and a refused call changes nothing.

Also: concurrent requests racing for one VNI, MAC or IP end with exactly one winner.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ADMIN, Api
from l2pop.testbed.process import ServerProcess

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
    # plain addresses only: no zone id, no IPv4-mapped IPv6, lengths bounded before parsing
    (
        "post",
        "/v1/ports",
        {"network_id": "{net}", "fixed_ips": ["2001:db8::8%eth0"]},
        422,
        "fixed_ips",
    ),
    (
        "post",
        "/v1/ports",
        {"network_id": "{net}", "fixed_ips": ["2001:db8::8%" + "e" * 200]},
        422,
        "fixed_ips",
    ),
    (
        "post",
        "/v1/ports",
        {"network_id": "{net}", "fixed_ips": ["::ffff:198.19.0.7"]},
        422,
        "fixed_ips",
    ),
    ("patch", "/v1/ports/{port}", {"fixed_ips": ["::ffff:198.19.0.1"]}, 422, "fixed_ips"),
    ("post", "/v1/ports", {"network_id": "{net}", "fixed_ips": ["1" * 50_000]}, 422, "fixed_ips"),
    ("post", "/v1/ports", {"network_id": "{net}", "fixed_ips": [" 198.19.0.7"]}, 422, "fixed_ips"),
    ("post", "/v1/hosts", {"name": "h2", "vtep_ip": "192.0.2.2%eth0"}, 422, "vtep_ip"),
    ("post", "/v1/hosts", {"name": "h2", "vtep_ip": "192.0.2.2" + "0" * 200}, 422, "vtep_ip"),
    ("post", "/v1/hosts", {"name": "h2", "vtep_ip": "::ffff:192.0.2.2"}, 422, "vtep_ip"),
    ("post", "/v1/hosts", {"name": "h2", "vtep_ip": "0.1.2.3"}, 422, "vtep_ip"),
    # names: a trailing newline is not matched by `$`; no control characters
    ("post", "/v1/hosts", {"name": "h2\n", "vtep_ip": "192.0.2.2"}, 422, "name"),
    ("post", "/v1/hosts", {"name": "h2\x00", "vtep_ip": "192.0.2.2"}, 422, "name"),
    ("post", "/v1/ports", {"network_id": "{net}", "host": "h1\n"}, 422, "host"),
    ("post", "/v1/networks", {"name": "blue\x00"}, 422, "name"),
    ("post", "/v1/networks", {"name": "c1\x85"}, 422, "name"),
    ("post", "/v1/networks", {"name": "x" * 50_000}, 422, "name"),
    ("patch", "/v1/ports/{port}", {"name": "\x7f"}, 422, "name"),
    # MAC: colon, dash or bare 12 hex digits; no silent stripping
    ("post", "/v1/ports", {"network_id": "{net}", "mac": " fa:16:3e:00:00:09"}, 422, "mac"),
    ("post", "/v1/ports", {"network_id": "{net}", "mac": "fa:16:3e:00:00:09\n"}, 422, "mac"),
    ("post", "/v1/ports", {"network_id": "{net}", "mac": "fa16.3e00.0009"}, 422, "mac"),
    # UUIDs in 8-4-4-4-12 form only
    ("post", "/v1/ports", {"network_id": "{{{net}}}"}, 422, "network_id"),
    ("post", "/v1/ports", {"network_id": "urn:uuid:{net}"}, 422, "network_id"),
    ("post", "/v1/ports", {"network_id": UNKNOWN.replace("-", "")}, 422, "network_id"),
    # path parameters: ids are UUIDs, host names follow the host-name rule
    ("get", "/v1/networks/%00", None, 422, "network_id"),
    ("get", "/v1/networks/not-a-uuid", None, 422, "network_id"),
    ("get", "/v1/networks/" + UNKNOWN.replace("-", ""), None, 422, "network_id"),
    ("patch", "/v1/networks/%00", {"name": "y"}, 422, "network_id"),
    ("delete", "/v1/networks/x%00", None, 422, "network_id"),
    ("get", "/v1/ports/%00", None, 422, "port_id"),
    ("patch", "/v1/ports/%00", {"name": "y"}, 422, "port_id"),
    ("delete", "/v1/ports/%F0%9F%92%A9", None, 422, "port_id"),
    ("get", "/v1/hosts/%00", None, 422, "name"),
    ("get", "/v1/hosts/h1%0A", None, 422, "name"),
    ("delete", "/v1/hosts/h1%0A", None, 422, "name"),
    ("get", "/v1/hosts/%00/fdb", None, 422, "name"),
    ("get", "/v1/hosts/" + "h" * 64, None, 422, "name"),
    # query parameters: validated like the fields they filter on; unknown ones refused
    ("get", "/v1/ports?host=%00", None, 422, "host"),
    ("get", "/v1/ports?host=h1%0A", None, 422, "host"),
    ("get", "/v1/ports?network_id=%00", None, 422, "network_id"),
    ("get", "/v1/ports?status=%00", None, 422, "status"),
    ("get", "/v1/ports?network_id%5B%24ne%5D=x", None, 422, "network_id[$ne]"),
    ("get", "/v1/ports?host=h1&host=h2", None, 422, "host"),
    ("get", "/v1/networks?name=blue", None, 422, "name"),
    ("get", "/v1/hosts?x=1", None, 422, "x"),
    ("get", "/v1/networks/{net}?verbose=1", None, 422, "verbose"),
    ("get", "/v1/hosts/h1/fdb?revision=0", None, 422, "revision"),
    ("delete", "/v1/ports/{port}?force=1", None, 422, "force"),
    ("post", "/v1/networks?dry_run=1", {"name": "x"}, 422, "dry_run"),
    ("get", "/v1/networks/{net}?limit=1", None, 422, "limit"),
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
        answer = (
            r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        )
        err = answer.get("error", {}) if isinstance(answer, dict) else {}
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
    assert r.json()["error"]["field"] == "body"


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


# (method, path, raw body, field): bodies that no JSON encoder of a client would produce
RAW_REJECTED = [
    ("POST", "/v1/networks", b'{"name": "bad\\ud800"}', "name"),
    ("POST", "/v1/networks", b'{"name": "\\udfff"}', "name"),
    ("PATCH", "/v1/networks/{net}", b'{"name": "bad\\ud800"}', "name"),
    ("POST", "/v1/ports", b'{"network_id": "{net}", "name": "x\\ud800"}', "name"),
    ("PATCH", "/v1/ports/{port}", b'{"name": "\\ud800\\ud800"}', "name"),
    ("POST", "/v1/hosts", b'{"name": "h\\ud800", "vtep_ip": "192.0.2.9"}', "name"),
    ("POST", "/v1/networks", b'{"\\ud800": 1}', "body"),
    ("POST", "/v1/networks", b'{"name": "\xff"}', "body"),  # invalid UTF-8
    ("POST", "/v1/networks", b'{"name": "\xc3\x28"}', "body"),
    ("POST", "/v1/ports", b"\xfe\xff\x00{", "body"),
    ("POST", "/v1/networks", b"[" * 20_000, "body"),  # nested deeper than the parser goes
    ("POST", "/v1/networks", b'{"name": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "body"),
    ("POST", "/v1/networks", b'{"vni": ' + b"1" * 5_000 + b"}", "body"),  # too long to convert
    ("POST", "/v1/networks", b"{not json", "body"),
    ("POST", "/v1/networks", b"", "body"),
    ("POST", "/v1/networks", b"[]", "body"),
]


def test_unreadable_bodies_are_422_naming_the_field(api: Api) -> None:
    ids = populate(api)
    before = api.snapshot()
    failures = []
    for method, path, raw, field in RAW_REJECTED:
        content = raw.replace(b"{net}", ids["net"].encode())
        r = api.http.request(
            method,
            path.format(**ids),
            content=content,
            headers={"content-type": "application/json"},
        )
        err = r.json().get("error", {}) if r.status_code == 422 else {}
        if not (
            r.status_code == 422
            and err.get("code") == "invalid"
            and err.get("message")
            and err.get("field") == field
        ):
            failures.append((method, path, raw[:60], r.status_code, r.text[:300]))
    assert not failures, failures
    assert api.snapshot() == before


def test_the_agent_call_validates_its_path_and_query(api: Api) -> None:
    ids = populate(api)
    token = str(api.host("h2", "192.0.2.2")["token"])
    with api.as_token(token) as agent:
        for path, field in [
            ("/v1/ports/%00/status", "port_id"),
            ("/v1/ports/" + "x" * 5000 + "/status", "port_id"),
            (f"/v1/ports/{ids['port']}/status?as=h1", "as"),
        ]:
            r = agent.put(path, json={"status": "ACTIVE"})
            assert r.status_code == 422, (path, r.text)
            assert r.json()["error"]["field"] == field
        # authentication comes first: an admin token is refused before the path is read
        r = api.http.put("/v1/ports/%00/status", json={"status": "ACTIVE"})
        assert r.status_code == 401, r.text


def test_authentication_comes_before_parameter_checks(api: Api) -> None:
    with api.as_token("not-a-token") as stranger:
        for path in ("/v1/networks/%00", "/v1/ports?bogus=1", "/v1/hosts/%00/fdb"):
            assert stranger.get(path).status_code == 401, path


def test_pagination_parameters_are_not_unknown_on_lists(api: Api) -> None:
    populate(api)
    for path in ("/v1/networks", "/v1/ports", "/v1/hosts"):
        r = api.http.get(path, params={"limit": 10})
        assert r.status_code == 200, (path, r.text)


def test_uppercase_ids_are_the_same_ids(api: Api) -> None:
    ids = populate(api)
    r = api.http.get(f"/v1/networks/{ids['net'].upper()}")
    assert r.status_code == 200 and r.json()["id"] == ids["net"]
    r = api.http.get("/v1/ports", params={"network_id": ids["net"].upper()})
    assert [p["id"] for p in r.json()] == [ids["port"]]


def test_an_undeclared_method_is_405_listing_the_allowed_ones(api: Api) -> None:
    r = api.http.request("TRACE", "/v1/ports")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, POST"
    assert r.json()["error"]["code"] == "method_not_allowed"
    r = api.http.request("POST", f"/v1/ports/{UNKNOWN}")
    assert r.status_code == 405
    assert r.headers["allow"] == "DELETE, GET, PATCH"


@pytest.mark.postgres
def test_an_unreachable_store_is_503(postgres: Any, tmp_path: Path) -> None:
    """The database goes away under a running server: every call is 503 "unavailable" with
    ``Retry-After`` (documented for every operation), never a 500."""
    name = f"l2pop_gone_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(name)
    try:
        with ServerProcess(url, admin_token=ADMIN, log_path=tmp_path / "server.log") as srv:
            api = Api(srv)
            net = api.network(name="blue")
            postgres.drop_database(name)
            for method, path, body in [
                ("GET", "/v1/networks", None),
                ("GET", f"/v1/networks/{net['id']}", None),
                ("POST", "/v1/networks", {"name": "red"}),
                ("GET", "/v1/ports", None),
                ("POST", "/v1/hosts", {"name": "h9", "vtep_ip": "192.0.2.9"}),
            ]:
                r = api.http.request(method, path, json=body)
                assert r.status_code == 503, (method, path, r.text)
                assert r.json()["error"]["code"] == "unavailable"
                assert int(r.headers["retry-after"]) > 0
            api.http.close()
    finally:
        postgres.drop_database(name)
