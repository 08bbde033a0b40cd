"""``l2pop.client`` against a real server process, on SQLite and on PostgreSQL: one call per
route, typed answers, every page of a list, and the error body parsed into ``ApiError``."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from conftest import ADMIN
from l2pop.client import (
    UNSET,
    ApiError,
    AsyncClient,
    Client,
    ClientError,
    UnexpectedAnswer,
    Unreachable,
)
from l2pop.testbed.process import ServerProcess, free_port
from l2pop.wire import HostCreated, HostFdb, NetworkOut, PortOut


def test_every_route_round_trips(server: ServerProcess) -> None:
    with Client(server.url, ADMIN) as api:
        blue = api.create_network(name="blue", vni=5000)
        assert isinstance(blue, NetworkOut) and blue.vni == 5000
        assert api.network(blue.id) == blue
        navy = api.update_network(blue.id, name="navy")
        assert navy.name == "navy" and navy.arp_suppression == blue.arp_suppression
        assert [n.name for n in api.networks()] == ["navy"]

        h1 = api.create_host("h1", "192.0.2.1")
        assert isinstance(h1, HostCreated) and h1.token
        api.create_host("h2", "192.0.2.2")
        assert [h.name for h in api.hosts()] == ["h1", "h2"]
        assert api.host("h1").vtep_ip == "192.0.2.1"

        port = api.create_port(blue.id, fixed_ips=["10.0.0.1"], host="h1")
        assert isinstance(port, PortOut) and port.status == "BUILD"
        assert api.revision is not None and api.revision >= port.revision
        assert api.port(port.id) == port
        assert [p.id for p in api.ports(host="h1")] == [port.id]
        assert api.ports(host="h2") == []
        assert len(api.ports(status="BUILD", limit=1)) == 1

        with Client(server.url, h1.token) as agent:
            active = agent.report_status(port.id, "ACTIVE")
        assert active.status == "ACTIVE"
        api.create_port(blue.id, host="h2")  # makes h2 a member of the network
        fdb = api.host_fdb("h2")
        assert isinstance(fdb, HostFdb)
        assert [e.vtep for n in fdb.networks for e in n.fdb] == ["192.0.2.1"]

        moved = api.update_port(port.id, host="h2", name=UNSET)
        assert moved.host == "h2" and moved.name == port.name
        assert api.update_port(port.id, host=None).host is None  # null unbinds

        for each in api.ports():
            api.delete_port(each.id)
        api.delete_network(blue.id)
        api.delete_host("h2")
        assert api.networks() == [] and [h.name for h in api.hosts()] == ["h1"]
        assert api.healthz()
        assert re.search(r'^l2pop_networks\{replica="[^"]+"\} 0\.0$', api.metrics(), re.M)


def test_lists_follow_every_page(server: ServerProcess) -> None:
    with Client(server.url, ADMIN) as api:
        net = api.create_network(name="n")
        made = {api.create_port(net.id).id for _ in range(5)}
        assert {p.id for p in api.ports()} == made
        assert [p.id for p in api.ports(page_size=2)] == [p.id for p in api.ports()]
        api.create_host("h1", "192.0.2.1")
        api.create_host("h2", "192.0.2.2")
        assert [h.name for h in api.hosts(page_size=1)] == ["h1", "h2"]
        assert [n.id for n in api.networks(page_size=1)] == [net.id]
        assert len(api.ports(limit=2)) == 2


def test_error_body_becomes_api_error(server: ServerProcess) -> None:
    with Client(server.url, ADMIN) as api:
        with pytest.raises(ApiError) as bad:
            api.create_network(vni=0)
        assert (bad.value.status, bad.value.code, bad.value.field) == (422, "invalid", "vni")
        assert str(bad.value).startswith("vni: ") and str(bad.value).endswith("(422 invalid)")

        net = api.create_network(name="a", vni=7)
        with pytest.raises(ApiError) as dup:
            api.create_network(name="b", vni=7)
        assert (dup.value.status, dup.value.code) == (409, "conflict")

        with pytest.raises(ApiError) as missing:
            api.port("00000000-0000-4000-8000-000000000000")
        assert (missing.value.status, missing.value.code) == (404, "not_found")

        api.create_port(net.id)
        with pytest.raises(ApiError) as busy:
            api.delete_network(net.id)
        assert busy.value.code == "conflict"

    with Client(server.url, "wrong") as intruder, pytest.raises(ApiError) as denied:
        intruder.networks()
    assert (denied.value.status, denied.value.code) == (401, "unauthorized")


def test_no_server_is_unreachable_and_bad_urls_are_client_errors() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, ADMIN) as api, pytest.raises(Unreachable) as gone:
        api.networks()
    assert gone.value.kind == "ConnectError"
    with Client("ftp://127.0.0.1:1", ADMIN) as api, pytest.raises(ClientError) as bad:
        api.networks()
    assert "use http:// or https://" in bad.value.message


def test_async_twin_reports_status(server: ServerProcess) -> None:
    with Client(server.url, ADMIN) as api:
        net = api.create_network(name="n")
        host = api.create_host("h1", "192.0.2.1")
        port = api.create_port(net.id, host="h1")
        other = api.create_port(net.id)

    async def report() -> tuple[PortOut, ApiError]:
        agent = AsyncClient(server.url, host.token)
        try:
            done = await agent.report_status(port.id, "ACTIVE")
            try:
                await agent.report_status(other.id, "ACTIVE")  # not bound to h1
            except ApiError as exc:
                return done, exc
            raise AssertionError("a report for another host's port was accepted")
        finally:
            await agent.close()

    done, refused = asyncio.run(report())
    assert done.status == "ACTIVE"
    assert refused.status == 403 and refused.code == "forbidden"


def test_async_twin_reads_writes_and_follows_pages(server: ServerProcess) -> None:
    with Client(server.url, ADMIN) as api:
        net = api.create_network(name="n", vni=10)
        api.create_host("h1", "192.0.2.1")

    async def calls() -> None:
        async with httpx.AsyncClient() as shared:  # one pool, as the benchmarks share it
            api = AsyncClient(server.url, ADMIN, http=shared)
            made = [await api.create_port(net.id, host="h1") for _ in range(3)]
            assert made[0].host == "h1" and made[0].status == "BUILD"
            assert [p.id for p in await api.ports(page_size=2)] == sorted(p.id for p in made)
            assert len(await api.ports(limit=1)) == 1
            assert await api.ports(network_id=net.id, status="DOWN") == []
            assert await api.port(made[0].id) == made[0]
            renamed = await api.update_port(made[0].id, name="r", host=UNSET)
            assert renamed.name == "r" and renamed.host == "h1"
            assert (await api.update_port(made[0].id, host=None)).host is None
            assert [n.id for n in await api.networks(page_size=1)] == [net.id]
            assert [h.name for h in await api.hosts()] == ["h1"]
            fdb = await api.host_fdb("h1")
            assert fdb.host == "h1" and [n.network_id for n in fdb.networks] == [net.id]
            with pytest.raises(ApiError) as missing:
                await api.host_fdb("nowhere")
            assert (missing.value.status, missing.value.code) == (404, "not_found")
            await api.close()  # the shared pool is the caller's: still open
            assert not shared.is_closed

    asyncio.run(calls())


def test_an_answer_that_is_not_the_documented_one() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"not": "a port"})

    mock = httpx.MockTransport(handler)
    with Client("http://l2pop.test", transport=mock) as api, pytest.raises(UnexpectedAnswer) as odd:
        api.port("00000000-0000-4000-8000-000000000000")
    assert odd.value.status == 200 and "not the documented answer" in odd.value.message

    async def report() -> None:
        mock = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        api = AsyncClient("http://l2pop.test", "t", http=mock)
        with pytest.raises(UnexpectedAnswer) as odd:
            await api.report_status("00000000-0000-4000-8000-000000000000", "ACTIVE")
        assert odd.value.status == 200
        await mock.aclose()

    asyncio.run(report())
