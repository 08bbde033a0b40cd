"""List operations answer pages (``limit``/``marker``) and name the next one in ``Link``."""

from __future__ import annotations

import httpx

from conftest import Api


def follow(http: httpx.Client, path: str) -> tuple[list[dict[str, object]], int]:
    items: list[dict[str, object]] = []
    calls = 0
    url: str | None = path
    while url:
        r = http.get(url)
        assert r.status_code == 200, r.text
        items += r.json()
        calls += 1
        url = r.links.get("next", {}).get("url")
    return items, calls


def test_ports_networks_and_hosts_page_by_marker(api: Api) -> None:
    nets = [api.network(name=f"n{i}", vni=100 - i) for i in range(3)]
    for i in range(5):
        api.host(f"h{i}", f"192.0.2.{i + 1}")
    made = [
        api.port(network_id=nets[i % 3]["id"], fixed_ips=[f"198.19.5.{i + 1}"]) for i in range(7)
    ]

    ports, calls = follow(api.http, "/v1/ports?limit=3")
    assert calls == 3 and sorted(p["id"] for p in ports) == sorted(p["id"] for p in made)
    assert len({p["id"] for p in ports}) == 7

    networks, _ = follow(api.http, "/v1/networks?limit=2")
    assert [n["vni"] for n in networks] == [98, 99, 100]
    hosts, _ = follow(api.http, "/v1/hosts?limit=2")
    assert [h["name"] for h in hosts] == [f"h{i}" for i in range(5)]

    # filters ride along in the next link
    blue = nets[0]["id"]
    first = api.http.get("/v1/ports", params={"network_id": blue, "limit": 1})
    assert "network_id=" + blue in first.links["next"]["url"]
    in_blue, _ = follow(api.http, f"/v1/ports?network_id={blue}&limit=1")
    assert {p["network_id"] for p in in_blue} == {blue} and len(in_blue) == 3


def test_a_page_that_is_not_full_has_no_next_link(api: Api) -> None:
    net = api.network(name="n")
    api.port(network_id=net["id"])
    r = api.http.get("/v1/ports")
    assert r.status_code == 200 and len(r.json()) == 1 and "link" not in r.headers


def test_bad_limit_and_marker_are_422_naming_them(api: Api) -> None:
    for query, field in (
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("marker=not-a-uuid", "marker"),
    ):
        r = api.http.get(f"/v1/ports?{query}")
        assert r.status_code == 422 and r.json()["error"]["field"] == field, (query, r.text)
    r = api.http.get("/v1/networks?marker=00000000-0000-4000-8000-000000000000")
    assert r.status_code == 422 and r.json()["error"]["field"] == "marker"
