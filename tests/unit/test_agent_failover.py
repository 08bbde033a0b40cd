"""The agent's server list (``--server URL1,URL2``): parsing, rotation, the channel failing
over between two fake servers, the status reporter following it (ADR 21, "Agents fail over")."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import httpx
import pytest
from test_agent_channel import S1, TIMEOUT, FakeServer, fast_agent, snapshot

from l2pop.agent.backoff import Backoff
from l2pop.agent.main import run_agent
from l2pop.agent.options import DatapathOptions
from l2pop.agent.reporter import StatusReporter
from l2pop.agent.servers import ServerListError, ServerRotation, parse_servers
from l2pop.agent.swarm import run_swarm
from l2pop.model import PortStatus
from l2pop.wire.channel import Ack, Hello


def test_parse_servers_accepts_one_or_many_http_urls() -> None:
    assert parse_servers("http://a:1") == ("http://a:1",)
    assert parse_servers(" http://a:1/ , https://b/l2pop/ ") == ("http://a:1", "https://b/l2pop")
    assert parse_servers(["http://a", "http://b:2"]) == ("http://a", "http://b:2")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "entry 1 is empty"),
        ("http://a,,http://b", "entry 2 is empty"),
        ("http://a,", "entry 2 is empty"),
        ("a:1", "not an http:// or https:// URL"),
        ("ws://a:1", "not an http:// or https:// URL"),
        ("http://", "not an http:// or https:// URL"),
        ("http://a:99999", "not a valid URL"),
        ("http://a:x", "not a valid URL"),
        ("http://a?x=1", "must be http(s)://host[:port][/path]"),
        ("http://a,http://a/", "given twice"),
    ],
)
def test_parse_servers_names_the_bad_entry(text: str, why: str) -> None:
    with pytest.raises(ServerListError) as err:
        parse_servers(text)
    message = str(err.value)
    assert message.startswith("--server: ") and why in message and "\n" not in message


def test_rotation_starts_at_random_and_goes_round() -> None:
    urls = ("http://a", "http://b", "http://c")
    rot = ServerRotation(urls, random.Random(1))
    first = rot.current
    seen = [rot.advance() for _ in range(6)]
    i = urls.index(first)
    assert seen == [urls[(i + k) % 3] for k in range(1, 7)]
    # many agents spread over the replicas
    starts = Counter(ServerRotation(urls, random.Random(seed)).current for seed in range(300))
    assert set(starts) == set(urls) and min(starts.values()) > 60
    single = ServerRotation(("http://a",))
    assert single.advance() == single.current == "http://a"
    with pytest.raises(ValueError):
        ServerRotation(())


def test_cli_entry_points_refuse_a_bad_list(capsys: pytest.CaptureFixture[str]) -> None:
    options = DatapathOptions(vtep_ip="192.0.2.1")
    assert run_agent("http://a,ftp://b", "h1", "t", "memory", options, None) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --server: 'ftp://b'")
    assert run_swarm("http://a,,http://b", "/nonexistent.json", None) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --server: entry 2 is empty (give URL[,URL...])"]


def test_agent_fails_over_to_the_other_server_and_back() -> None:
    async def main() -> None:
        async with FakeServer() as a, FakeServer() as b:
            by_url = {a.url: a, b.url: b}
            agent = fast_agent(f"{a.url},{b.url}", rng=random.Random(0))
            first = by_url[agent.http_url]
            second = b if first is a else a
            task = asyncio.create_task(agent.run())
            try:
                s = await first.session()
                await s.expect(Hello)
                await s.send(snapshot(1, S1))
                await s.expect(Ack, revision=1)
                assert agent.status()["server"] == first.url
                await s.ws.close()  # the replica goes away
                s2 = await second.session()
                await s2.expect(Hello)
                assert agent.datapath.dump() == S1  # fail static meanwhile
                assert agent.http_url == second.url == agent.reporter.base_url
                await s2.send(snapshot(2, S1))
                await s2.expect(Ack, revision=2)
                await s2.ws.close()
                s3 = await first.session()  # round again
                await s3.expect(Hello)
                assert agent.stats.failovers == 2
            finally:
                await agent.stop()
                await asyncio.wait_for(task, TIMEOUT)

    asyncio.run(main())


def test_agent_skips_a_server_that_refuses_connections() -> None:
    async def main() -> None:
        async with FakeServer() as live:
            dead = "http://127.0.0.1:9"  # discard port: refused
            agent = fast_agent(f"{dead},{live.url}", rng=random.Random(1))
            assert agent.http_url == dead  # seed 1 starts at the first URL
            task = asyncio.create_task(agent.run())
            try:
                s = await live.session()
                await s.expect(Hello)
                assert agent.http_url == live.url and agent.stats.connect_failures >= 1
            finally:
                await agent.stop()
                await asyncio.wait_for(task, TIMEOUT)

    asyncio.run(main())


def test_reporter_follows_the_server_it_is_moved_to() -> None:
    hits: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hits.append(request.url.host)
        if request.url.host == "dead":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={})

    async def main() -> None:
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        # a long backoff: only the move may cut the wait short
        rep = StatusReporter("http://dead", "t", client=client, backoff=Backoff(30.0, 30.0))
        task = asyncio.create_task(rep.run())
        try:
            rep.report("p1", PortStatus.ACTIVE)
            while not hits:
                await asyncio.sleep(0.01)
            rep.use_server("http://live/")
            async with asyncio.timeout(TIMEOUT):
                while rep.pending():
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.aclose()
        assert hits == ["dead", "live"] and rep.sent == 1 and rep.base_url == "http://live"

    asyncio.run(main())
