"""The agent's channel client against a scripted fake server (a real WebSocket on loopback),
and the status reporter against a mock HTTP transport (docs/design.md, "Agent channel")."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from l2pop.agent.backoff import Backoff
from l2pop.agent.channel import Agent
from l2pop.agent.reporter import StatusReporter
from l2pop.client import channel_urls
from l2pop.datapath.memory import MemoryDatapath
from l2pop.model import (
    ArpSuppression,
    NetworkDelta,
    NetworkTables,
    PortStatus,
    diff_state,
    digest,
)
from l2pop.testbed.faults import DeltaFaults
from l2pop.wire.channel import (
    Ack,
    AgentMessage,
    Delta,
    ErrorMsg,
    Heartbeat,
    Hello,
    LocalPort,
    Message,
    NetworkDeltaMsg,
    NetworkTablesMsg,
    Resync,
    Snapshot,
    agent_message,
    encode,
)

TIMEOUT = 5.0


def net(nid: str, *macs: str) -> NetworkTables:
    return NetworkTables(
        nid,
        100,
        ArpSuppression.NEIGH_SUPPRESS,
        frozenset({"192.0.2.2"} if macs else ()),
        dict.fromkeys(macs, "192.0.2.2"),
        {f"198.19.0.{i}": m for i, m in enumerate(macs, 1)},
    )


S1 = {"n1": net("n1", "fa:16:3e:00:00:02")}
S2 = {"n1": net("n1", "fa:16:3e:00:00:02", "fa:16:3e:00:00:03")}
S3 = {"n1": net("n1", "fa:16:3e:00:00:02", "fa:16:3e:00:00:03", "fa:16:3e:00:00:04")}


def snapshot(
    rev: int, state: dict[str, NetworkTables], ports: list[LocalPort] | None = None
) -> Snapshot:
    return Snapshot(
        revision=rev,
        digest=digest(state),
        networks=[NetworkTablesMsg.of(t) for t in state.values()],
        ports=ports or [],
    )


def delta(
    prev: int, rev: int, old: dict[str, NetworkTables], new: dict[str, NetworkTables]
) -> Delta:
    return Delta(
        revision=rev,
        prev_revision=prev,
        digest=digest(new),
        networks=[NetworkDeltaMsg.of(d) for d in diff_state(old, new)],
    )


class Session:
    """One agent connection as the fake server sees it."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.inbox: asyncio.Queue[AgentMessage] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def send(self, msg: Message) -> None:
        await self.ws.send(encode(msg))

    async def expect(self, kind: type[Message], **fields: Any) -> Any:
        """The next agent message of ``kind`` matching ``fields`` (others are skipped)."""

        async def wait() -> Any:
            while True:
                msg = await self.inbox.get()
                if isinstance(msg, kind) and all(getattr(msg, k) == v for k, v in fields.items()):
                    return msg

        return await asyncio.wait_for(wait(), TIMEOUT)

    def drain(self) -> list[AgentMessage]:
        out = []
        while not self.inbox.empty():
            out.append(self.inbox.get_nowait())
        return out


class FakeServer:
    def __init__(self, refuse_upgrade: int = 0) -> None:
        self.sessions: asyncio.Queue[Session] = asyncio.Queue()
        self.auth: list[str | None] = []
        self.refuse_upgrade = refuse_upgrade
        self._server: Server | None = None
        self.port = 0

    async def __aenter__(self) -> FakeServer:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._process_request
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        self.auth.append(request.headers.get("Authorization"))
        if self.refuse_upgrade:
            self.refuse_upgrade -= 1
            return conn.respond(401, "invalid host token\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        session = Session(ws)
        await self.sessions.put(session)
        try:
            async for raw in ws:
                await session.inbox.put(agent_message.decode(raw))
        except ConnectionClosed:
            pass
        finally:
            session.closed.set()

    async def session(self) -> Session:
        return await asyncio.wait_for(self.sessions.get(), TIMEOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def fast_agent(url: str, **kw: Any) -> Agent:
    kw.setdefault("heartbeat_interval", 0.2)
    kw.setdefault("reconnect_backoff", Backoff(0.01, 0.05))
    return Agent(url, "h1", "192.0.2.1", "tok-h1", MemoryDatapath(), **kw)


def with_agent(
    fn: Callable[[FakeServer, Agent], Awaitable[None]], server_kw: Any = None, **agent_kw: Any
) -> None:
    async def main() -> None:
        async with FakeServer(**(server_kw or {})) as server:
            agent = fast_agent(server.url, **agent_kw)
            task = asyncio.create_task(agent.run())
            try:
                await fn(server, agent)
            finally:
                await agent.stop()
                await asyncio.wait_for(task, TIMEOUT)

    asyncio.run(main())


def test_channel_urls() -> None:
    assert channel_urls("http://a:1/") == ("http://a:1", "ws://a:1/v1/agent")
    assert channel_urls("https://a") == ("https://a", "wss://a/v1/agent")
    assert channel_urls("ws://a:1") == ("http://a:1", "ws://a:1/v1/agent")
    assert channel_urls("a:1") == ("http://a:1", "ws://a:1/v1/agent")


def test_hello_snapshot_delta_and_acks() -> None:
    async def check(server: FakeServer, agent: Agent) -> None:
        s = await server.session()
        hello = await s.expect(Hello)
        assert (hello.host, hello.vtep_ip) == ("h1", "192.0.2.1")
        assert server.auth == ["Bearer tok-h1"]
        await s.send(snapshot(10, S1))
        await s.expect(Ack, revision=10, digest=digest(S1))
        await s.send(delta(10, 11, S1, S2))
        await s.expect(Ack, revision=11, digest=digest(S2))
        assert agent.datapath.dump() == S2
        assert agent.connected
        # The agent's heartbeat: acks keep coming with nothing new.
        await s.expect(Ack, revision=11)
        await s.expect(Ack, revision=11)
        await s.send(Heartbeat(revision=11, digest=digest(S2)))
        await s.send(Heartbeat(revision=11, digest=digest(S2)))
        st = agent.stats
        assert st.messages["snapshot"] == 1 and st.messages["delta"] == 1
        assert st.networks_seen == {"n1"} and st.bytes_received > 0
        assert st.syncs >= 2 and st.full_syncs >= 1
        assert all(not isinstance(m, Resync) for m in s.drain())

    with_agent(check)


def test_gap_requests_one_resync_and_snapshot_repairs() -> None:
    async def check(server: FakeServer, agent: Agent) -> None:
        s = await server.session()
        await s.send(snapshot(1, S1))
        await s.expect(Ack, revision=1)
        await s.send(delta(2, 3, S2, S3))  # revision 2 never arrived
        await s.expect(Resync)
        await s.send(delta(3, 4, S3, S3))  # still behind: no second resync
        await s.send(snapshot(4, S3))
        await s.expect(Ack, revision=4, digest=digest(S3))
        assert agent.datapath.dump() == S3
        assert agent.stats.resyncs_requested == 1 and agent.stats.gaps_detected == 1
        assert not any(isinstance(m, Resync) for m in s.drain())

    with_agent(check)


def test_inbound_filter_drops_and_repeats_deltas() -> None:
    """The fault-injecting filter of the testbed: a repeated delta is recognised by its
    revision and ignored, a lost one shows as a gap and ends in a resync."""
    faults = DeltaFaults("h1")

    async def check(server: FakeServer, agent: Agent) -> None:
        s = await server.session()
        await s.send(snapshot(1, S1))
        await s.expect(Ack, revision=1)
        faults.duplicate_next_delta()
        await s.send(delta(1, 2, S1, S2))
        await s.expect(Ack, revision=2)
        assert agent.stats.duplicates_ignored == 1 and faults.duplicated == 1
        faults.drop_next_delta()
        await s.send(delta(2, 3, S2, S3))  # lost
        await s.send(delta(3, 4, S3, S1))
        await s.expect(Resync)
        await s.send(snapshot(4, S1))
        await s.expect(Ack, revision=4, digest=digest(S1))
        assert agent.datapath.dump() == S1
        assert faults.dropped == 1 and agent.stats.gaps_detected == 1
        # counted as received before the filter, as a message lost after the socket would be
        assert agent.stats.messages["delta"] == 3

    with_agent(check, inbound_filter=faults)


def test_faults_filter_passes_everything_else() -> None:
    faults = DeltaFaults()
    beat = Heartbeat(revision=1, digest=digest(S1))
    faults.drop_next_delta()
    assert faults(beat) == (beat,) and faults(snapshot(1, S1)) == (snapshot(1, S1),)
    faults.arm("duplicate-next-delta")
    d = delta(1, 2, S1, S2)
    assert faults(d) == () and faults(d) == (d, d) and faults(d) == (d,)
    with pytest.raises(ValueError):
        faults.arm("explode")


class ThreadRecordingDatapath(MemoryDatapath):
    """Records the thread each ``apply`` runs in."""

    def __init__(self, blocking: bool) -> None:
        super().__init__()
        self.blocking = blocking
        self.threads: list[threading.Thread] = []

    def apply(self, deltas: Sequence[NetworkDelta]) -> None:
        self.threads.append(threading.current_thread())
        super().apply(deltas)


def test_a_blocking_datapath_is_synced_in_a_thread() -> None:
    """``Datapath.blocking`` decides, not the datapath's kind (datapath/abc.py)."""
    for blocking in (True, False):
        dp = ThreadRecordingDatapath(blocking)

        async def main(dp: ThreadRecordingDatapath = dp) -> None:
            async with FakeServer() as server:
                agent = Agent(server.url, "h1", "192.0.2.1", "tok-h1", dp, heartbeat_interval=0.2)
                task = asyncio.create_task(agent.run())
                try:
                    s = await server.session()
                    await s.send(snapshot(1, S1))
                    await s.expect(Ack, revision=1)
                finally:
                    await agent.stop()
                    await asyncio.wait_for(task, TIMEOUT)

        asyncio.run(main())
        assert dp.threads and all(
            (t is threading.main_thread()) is not blocking for t in dp.threads
        )


def test_heartbeat_mismatch_requests_resync() -> None:
    async def check(server: FakeServer, agent: Agent) -> None:
        s = await server.session()
        await s.send(snapshot(1, S1))
        await s.expect(Ack, revision=1)
        await s.send(Heartbeat(revision=5, digest=digest(S2)))  # we missed something
        resync = await s.expect(Resync)
        assert "heartbeat" in resync.reason

    with_agent(check)


def test_reconnect_keeps_the_datapath_and_resyncs() -> None:
    async def check(server: FakeServer, agent: Agent) -> None:
        s = await server.session()
        await s.send(snapshot(1, S2))
        await s.expect(Ack, revision=1)
        await s.ws.close()
        s2 = await server.session()
        await s2.expect(Hello)
        assert agent.datapath.dump() == S2  # fail static while disconnected
        # A delta before this session's snapshot cannot be trusted.
        await s2.send(delta(1, 2, S2, S3))
        await s2.expect(Resync)
        await s2.send(snapshot(2, S1))
        await s2.expect(Ack, revision=2, digest=digest(S1))
        assert agent.datapath.dump() == S1
        assert agent.stats.sessions == 2

    with_agent(check)


def test_refusals_back_off_and_retry() -> None:
    async def check(server: FakeServer, agent: Agent) -> None:
        s = await server.session()  # the upgrade was refused (401) once before this one
        assert server.auth == ["Bearer tok-h1", "Bearer tok-h1"]
        await s.expect(Hello)
        await s.send(ErrorMsg(code="vtep_mismatch", message="h1 is registered with VTEP 192.0.2.9"))
        await s.ws.close()
        s2 = await server.session()  # still retried: the operator may fix it
        await s2.expect(Hello)
        assert agent.stats.connect_failures == 1
        assert agent.stats.messages["error"] == 1
        assert agent.stats.refused == 2

    with_agent(check, server_kw={"refuse_upgrade": 1})


def test_stop_while_the_server_is_away() -> None:
    async def main() -> None:
        agent = fast_agent("http://127.0.0.1:9", reconnect_backoff=Backoff(0.5, 1.0))
        task = asyncio.create_task(agent.run())
        await asyncio.sleep(0.2)
        await agent.stop()
        await asyncio.wait_for(task, TIMEOUT)
        assert agent.stats.connect_failures >= 1 and not agent.connected

    asyncio.run(main())


def test_port_status_is_reported_with_the_host_token() -> None:
    calls: list[tuple[str, str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(
            (request.url.path, request.content.decode(), request.headers.get("authorization"))
        )
        return httpx.Response(200, json={})

    async def check(server: FakeServer, agent: Agent) -> None:
        s = await server.session()
        port = LocalPort(
            id="p1", network_id="n1", vni=100, mac="fa:16:3e:00:00:01", status=PortStatus.BUILD
        )
        await s.send(snapshot(1, S1, [port]))
        await s.expect(Ack, revision=1)
        for _ in range(100):
            if calls:
                break
            await asyncio.sleep(0.02)
        assert calls == [("/v1/ports/p1/status", '{"status":"ACTIVE"}', "Bearer tok-h1")]
        # The device goes: the port listener wakes the worker, DOWN is reported.
        dp = agent.datapath
        assert isinstance(dp, MemoryDatapath)
        dp.unplug("p1")
        for _ in range(100):
            if len(calls) == 2:
                break
            await asyncio.sleep(0.02)
        assert calls[1][1] == '{"status":"DOWN"}'

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    with_agent(check, http_client=client)


def test_reporter_retries_failures_and_drops_moved_ports() -> None:
    answers = {"p1": [500, 200], "p2": [403], "p3": [404], "p4": [401, 200]}
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        pid = request.url.path.split("/")[3]
        seen.append((pid, request.content.decode()))
        return httpx.Response(answers[pid].pop(0), json={})

    async def main() -> None:
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        rep = StatusReporter("http://s", "t", client=client, backoff=Backoff(0.01, 0.02))
        task = asyncio.create_task(rep.run())
        rep.report("p1", PortStatus.DOWN)
        rep.report("p1", PortStatus.ACTIVE)  # the latest status wins
        for pid in ("p2", "p3", "p4"):
            rep.report(pid, PortStatus.ACTIVE)
        for _ in range(200):
            if not rep.pending():
                break
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
        assert rep.pending() == {}
        assert rep.sent == 2 and rep.dropped == 2 and rep.failures == 2
        assert [s for s in seen if s[0] == "p1"] == [("p1", '{"status":"ACTIVE"}')] * 2

    asyncio.run(main())
