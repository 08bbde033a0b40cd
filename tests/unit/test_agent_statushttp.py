"""The agent's own HTTP/1.1 client for its status report (``l2pop.agent.statushttp``) against
a scripted server on loopback: what it sends, how it reads each framing of an answer, when it
keeps or drops a connection, and that it raises what ``l2pop.client.AsyncClient`` raises."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from l2pop.agent.backoff import Backoff
from l2pop.agent.reporter import StatusReporter
from l2pop.agent.statushttp import StatusHttp
from l2pop.clienterrors import ApiError, ClientError, Unreachable
from l2pop.model import PortStatus

TIMEOUT = 5.0


@dataclass
class Request:
    line: str
    headers: dict[str, str]
    body: bytes


#: what the scripted server answers: raw bytes, or None to close the connection unanswered
Script = Callable[[Request], bytes | None]


@dataclass
class FakeServer:
    script: Script
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = h.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(line.decode().rstrip("\r\n"), headers, body)
                self.requests.append(request)
                answer = self.script(request)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


def answer(status: str, body: bytes = b"{}", *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def run(script: Script, check: Callable[[FakeServer], Awaitable[None]]) -> FakeServer:
    return run_fake(FakeServer(script), check)


def run_fake(fake: FakeServer, check: Callable[[FakeServer], Awaitable[None]]) -> FakeServer:
    async def main() -> None:
        fake.server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
        async with fake.server:
            await asyncio.wait_for(check(fake), TIMEOUT)

    asyncio.run(main())
    return fake


def test_the_put_carries_the_token_and_the_json_and_keeps_its_connection() -> None:
    async def check(fake: FakeServer) -> None:
        hosts.append(fake.url.removeprefix("http://"))
        api = StatusHttp(fake.url + "/", "tok-h1")
        await api.report_status("p/1", "ACTIVE")
        await api.report_status("p2", "DOWN")
        await api.close()

    hosts: list[str] = []
    fake = run(lambda r: answer("200 OK", b'{"id": "p1"}'), check)
    first, second = fake.requests
    assert first.line == "PUT /v1/ports/p%2F1/status HTTP/1.1"
    assert first.headers["authorization"] == "Bearer tok-h1"
    assert first.headers["content-type"] == "application/json"
    assert [first.headers["host"]] == hosts
    assert first.body == b'{"status":"ACTIVE"}' and second.body == b'{"status":"DOWN"}'
    assert fake.connections == 1  # kept alive


def test_each_framing_of_the_answer_is_read() -> None:
    answers = [
        answer("200 OK", b"5\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding: chunked"),
        answer("204 No Content", b"", "Content-Length: 0"),
        b"HTTP/1.1 100 Continue\r\n\r\n" + answer("200 OK"),
        answer("200 OK", b"{}", "Connection: close"),
        b"HTTP/1.0 200 OK\r\n\r\n{}",  # framed by the connection's end
        answer("200 OK"),
    ]

    def script(request: Request) -> bytes | None:
        return answers.pop(0)

    async def check(fake: FakeServer) -> None:
        api = StatusHttp(fake.url, "t")
        for _ in range(6):
            await api.report_status("p1", "ACTIVE")
        await api.close()

    fake = run(script, check)
    # a new connection after "Connection: close" and after the answer framed by the end
    assert len(fake.requests) == 6 and fake.connections == 3


def test_a_kept_connection_the_server_closed_is_replaced() -> None:
    def script(request: Request) -> bytes | None:
        return answer("200 OK")

    def close_once(request: Request) -> bytes | None:
        fake.script = script
        return None

    async def check(fake: FakeServer) -> None:
        api = StatusHttp(fake.url, "t")
        await api.report_status("p1", "ACTIVE")
        # the server drops the kept connection unanswered at the next request (its idle
        # timeout racing the request): the client sends it again on a new one
        fake.script = close_once
        await api.report_status("p1", "DOWN")
        await api.close()

    fake = FakeServer(script)
    run_fake(fake, check)
    assert [r.body for r in fake.requests] == [
        b'{"status":"ACTIVE"}',
        b'{"status":"DOWN"}',
        b'{"status":"DOWN"}',
    ]
    assert fake.connections == 2


def test_an_error_answer_is_an_api_error_like_the_clients() -> None:
    body = json.dumps({"error": {"code": "forbidden", "message": "not yours"}}).encode()
    answers = [
        answer("403 Forbidden", body, "Content-Type: application/json"),
        answer("503 Service Unavailable", b"busy\n", "Retry-After: 2"),
    ]

    async def check(fake: FakeServer) -> None:
        api = StatusHttp(fake.url, "t")
        with pytest.raises(ApiError) as refused:
            await api.report_status("p1", "ACTIVE")
        assert (refused.value.status, refused.value.code) == (403, "forbidden")
        assert refused.value.message == "not yours (403 forbidden)"
        with pytest.raises(ApiError) as busy:
            await api.report_status("p1", "ACTIVE")
        assert (busy.value.status, busy.value.code, busy.value.retry_after) == (
            503,
            "unavailable",
            2.0,
        )
        assert busy.value.message == "server answered HTTP 503: busy"
        await api.close()

    run(lambda r: answers.pop(0), check)


def test_no_answer_is_unreachable_and_a_bad_url_a_client_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]

    async def check(fake: FakeServer) -> None:
        with pytest.raises(Unreachable) as refused:
            await StatusHttp(f"http://127.0.0.1:{closed}", "t").report_status("p1", "ACTIVE")
        assert refused.value.kind == "ConnectError"
        assert refused.value.message.startswith(
            f"cannot reach l2pop server at http://127.0.0.1:{closed}: "
        )
        with pytest.raises(Unreachable) as garbage:
            await StatusHttp(fake.url, "t").report_status("p1", "ACTIVE")
        assert garbage.value.kind == "RemoteProtocolError"
        slow = StatusHttp(fake.url, "t", timeout=0.2)
        fake.script = lambda r: b""  # never answers, keeps the connection
        with pytest.raises(Unreachable, match=r"timed out$") as late:
            await slow.report_status("p1", "ACTIVE")
        assert late.value.kind == "ReadTimeout"
        with pytest.raises(ClientError, match="use http:// or https://"):
            await StatusHttp("ftp://x", "t").report_status("p1", "ACTIVE")

    run(lambda r: b"SSH-2.0-OpenSSH\r\n\r\n", check)


def test_the_reporter_retries_and_drops_over_its_own_client() -> None:
    """``test_agent_channel``'s reporter test, over ``StatusHttp`` and a real socket."""
    answers = {"p1": [500, 200], "p2": [403], "p3": [404], "p4": [401, 200]}

    def script(request: Request) -> bytes | None:
        pid = request.line.split()[1].split("/")[3]
        return answer(f"{answers[pid].pop(0)} X")

    async def check(fake: FakeServer) -> None:
        rep = StatusReporter(fake.url, "t", backoff=Backoff(0.01, 0.02))
        task = asyncio.create_task(rep.run())
        rep.report("p1", PortStatus.DOWN)
        rep.report("p1", PortStatus.ACTIVE)  # the latest status wins
        for pid in ("p2", "p3", "p4"):
            rep.report(pid, PortStatus.ACTIVE)
        while rep.pending():
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await rep.close()
        assert rep.sent == 2 and rep.dropped == 2 and rep.failures == 2

    fake = run(script, check)
    assert [r.body for r in fake.requests if "/p1/" in r.line] == [b'{"status":"ACTIVE"}'] * 2
