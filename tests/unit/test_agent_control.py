"""The agent's local control endpoint: routing, read-back tables, port plugging, the testbed's
fault-injection routes, and raw HTTP/1.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import httpx
import pytest

from l2pop.agent.channel import Agent
from l2pop.agent.control import ControlServer, parse_address
from l2pop.datapath.abc import Datapath, port_plugging
from l2pop.datapath.memory import MemoryDatapath
from l2pop.model import ArpSuppression, Encap, NetworkTables, canonical, digest
from l2pop.testbed.faults import DeltaFaults, FaultControlServer
from l2pop.wire.channel import Delta, LocalPort, NetworkTablesMsg, Snapshot

N1 = NetworkTables(
    "n1",
    100,
    ArpSuppression.NEIGH_SUPPRESS,
    frozenset({"192.0.2.2"}),
    {"fa:16:3e:00:00:02": "192.0.2.2"},
    {"198.19.0.2": "fa:16:3e:00:00:02"},
)


class NoPlugging:
    """A datapath without ``PortPlugging`` (as linux): the memory one, plug/unplug hidden."""

    name = "noplug"
    blocking = False
    encaps = frozenset({Encap.VXLAN})

    def __init__(self) -> None:
        self._memory = MemoryDatapath()
        self.dump = self._memory.dump
        self.apply = self._memory.apply
        self.plugged = self._memory.plugged
        self.wire = self._memory.wire
        self.unwire = self._memory.unwire
        self.state_lost = self._memory.state_lost
        self.sweep_ports = self._memory.sweep_ports
        self.set_port_listener = self._memory.set_port_listener
        self.close = self._memory.close


def make_agent(
    host: str, datapath: Datapath | None = None, inbound_filter: DeltaFaults | None = None
) -> Agent:
    """An agent that never connects, with n1 programmed as if a snapshot had been synced."""
    agent = Agent(
        "http://127.0.0.1:1",
        host,
        "192.0.2.1",
        "tok",
        datapath or MemoryDatapath(),
        inbound_filter=inbound_filter,
    )
    port = LocalPort(id="p1", network_id="n1", vni=100, mac="fa:16:3e:00:00:01", status="BUILD")
    agent.reconciler.on_snapshot(
        Snapshot(
            revision=3,
            digest=digest({"n1": N1}),
            networks=[NetworkTablesMsg.of(N1)],
            ports=[port],
        )
    )
    agent.reconciler.sync()
    return agent


def run(
    fn: Callable[[ControlServer, httpx.AsyncClient], Awaitable[None]],
    *,
    faults: bool = False,
    datapath: Callable[[], Datapath] = MemoryDatapath,
) -> None:
    """``fn`` against a control endpoint for agents h1 and h2; with ``faults``, the testbed's
    endpoint with a ``DeltaFaults`` filter per agent."""

    async def main() -> None:
        filters = {h: DeltaFaults(h) for h in ("h1", "h2")} if faults else {}
        agents = {h: make_agent(h, datapath(), filters.get(h)) for h in ("h1", "h2")}
        server = (
            FaultControlServer(agents, "127.0.0.1:0", filters)
            if faults
            else ControlServer(agents, "127.0.0.1:0")
        )
        port = await server.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                await fn(server, client)
        finally:
            await server.close()

    asyncio.run(main())


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:9697") == ("127.0.0.1", 9697)
    assert parse_address("[::1]:0") == ("::1", 0)
    for bad in ("9697", "host:", ":80", "h:99999", "h:x"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_agents_tables_and_stats() -> None:
    async def check(server: ControlServer, client: httpx.AsyncClient) -> None:
        resp = await client.get("/agents")
        assert resp.status_code == 200
        agents = resp.json()
        assert [a["host"] for a in agents] == ["h1", "h2"]
        assert agents[0]["connected"] is False
        assert agents[0]["revision"] == 3 and agents[0]["digest"] == digest({"n1": N1})

        tables = (await client.get("/agents/h1/tables")).json()
        assert tables == {
            "host": "h1",
            "revision": 3,
            "digest": digest({"n1": N1}),
            "networks": json.loads(json.dumps(canonical({"n1": N1}))),
        }
        # Read back from the datapath, not from the desired state.
        dp = server.agents["h1"].datapath
        assert isinstance(dp, MemoryDatapath)
        dp.tables.clear()
        tables = (await client.get("/agents/h1/tables")).json()
        assert tables["networks"] == [] and tables["digest"] == digest({})

        stats = (await client.get("/agents/h2/stats")).json()
        assert stats["host"] == "h2" and stats["syncs"] == 0 and stats["networks_seen"] == []
        assert (await client.get("/healthz")).json() == {"ok": True}

    run(check)


def test_errors() -> None:
    async def check(server: ControlServer, client: httpx.AsyncClient) -> None:
        resp = await client.get("/agents/nope/tables")
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
        assert (await client.get("/nothing")).status_code == 404
        assert (await client.get("/agents/h1/whatever")).status_code == 404
        assert (await client.post("/agents/h1/tables")).status_code == 405
        assert (await client.post("/agents")).status_code == 405
        assert (await client.get("/agents/h1/ports/p1/unplug")).status_code == 405
        assert (await client.post("/agents/h1/ports/p1/explode")).status_code == 404
        # no fault injection in a production endpoint
        resp = await client.post("/agents/h1/hooks/drop-next-delta")
        assert resp.status_code == 404
        assert "dropped_by_hook" not in (await client.get("/agents/h1/stats")).json()

    run(check)


def test_plug_and_unplug() -> None:
    async def check(server: ControlServer, client: httpx.AsyncClient) -> None:
        dp = server.agents["h1"].datapath
        resp = await client.post("/agents/h1/ports/p1/unplug", content=b'{"x": 1}')
        assert resp.status_code == 200 and dp.plugged(["p1"]) == set()
        resp = await client.post("/agents/h1/ports/p1/plug")
        assert resp.status_code == 200 and dp.plugged(["p1"]) == {"p1"}
        assert resp.json() == {"host": "h1", "port_id": "p1", "action": "plug"}

    run(check)


def test_plug_needs_a_datapath_with_port_plugging() -> None:
    async def check(server: ControlServer, client: httpx.AsyncClient) -> None:
        resp = await client.post("/agents/h1/ports/p1/unplug")
        assert resp.status_code == 409 and resp.json()["error"]["code"] == "unsupported"
        assert "noplug" in resp.json()["error"]["message"]
        assert server.agents["h1"].datapath.plugged(["p1"]) == {"p1"}
        assert port_plugging(server.agents["h1"].datapath) is None
        assert port_plugging(MemoryDatapath()) is not None

    run(check, datapath=NoPlugging)


def test_fault_routes_of_the_testbed() -> None:
    async def check(server: ControlServer, client: httpx.AsyncClient) -> None:
        assert isinstance(server, FaultControlServer)
        assert (await client.post("/agents/h1/hooks/drop-next-delta")).status_code == 200
        assert (await client.post("/agents/h1/hooks/duplicate-next-delta")).status_code == 200
        assert (await client.post("/agents/h1/hooks/other")).status_code == 404
        assert (await client.get("/agents/h1/hooks/drop-next-delta")).status_code == 405
        assert (await client.post("/agents/nope/hooks/drop-next-delta")).status_code == 404
        faults = server.faults["h1"]
        delta = Delta(revision=4, prev_revision=3, digest=digest({"n1": N1}))
        assert faults(delta) == () and faults(delta) == (delta, delta)
        stats = (await client.get("/agents/h1/stats")).json()
        assert stats["dropped_by_hook"] == 1 and stats["host"] == "h1"
        assert (await client.get("/agents/h2/stats")).json()["dropped_by_hook"] == 0
        # the rest of the endpoint is unchanged
        assert (await client.get("/agents/h1/tables")).json()["revision"] == 3
        assert (await client.post("/agents/h1/ports/p1/unplug")).status_code == 200

    run(check, faults=True)


def test_raw_http_keep_alive_close_and_garbage() -> None:
    async def raw(port: int, data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        writer.write_eof()
        await writer.drain()
        out = await asyncio.wait_for(reader.read(), 5)  # until the server closes
        writer.close()
        return out

    async def check(server: ControlServer, client: httpx.AsyncClient) -> None:
        two = (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /agents/h1/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        out = await raw(server.port, two)
        assert out.count(b"HTTP/1.1 200 OK") == 2
        assert b"Connection: keep-alive" in out and out.rstrip().endswith(b"}")

        out = await raw(server.port, b"GET /healthz HTTP/1.0\r\n\r\n")  # 1.0: closes
        assert out.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in out

        out = await raw(server.port, b"NONSENSE\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400 ")

        out = await raw(server.port, b"POST /agents HTTP/1.1\r\nContent-Length: 999999\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 413 ")

        out = await raw(server.port, b"GET /healthz HTTP/1.1\r\n")  # client gives up mid-head
        assert out == b""

    run(check)
