"""What a client may cost a server that does not know it yet: bodies, heads, idle sockets,
channel frames and sessions are bounded before authentication (server/limits.py).

Each test talks to a real ``l2pop server`` process over real sockets, with raw sockets where
a well-behaved client library would not misbehave the way an attacker does.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from l2pop.testbed.process import ServerProcess

ADMIN = "admin-secret"
TIMEOUT = 2.0  # --client-timeout of the servers under test


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    args = ("--client-timeout", str(TIMEOUT), "--max-body", "4096")
    url = f"sqlite:///{tmp_path / 'l2pop.db'}"
    with ServerProcess(url, admin_token=ADMIN, log_path=tmp_path / "s.log", extra_args=args) as s:
        yield s


def raw(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def response_of(sock: socket.socket) -> tuple[int, dict[str, object]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, json.loads(rest) if rest else {}


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes ``sock`` (EOF) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_huge_body_without_token_is_refused_unread(server: ServerProcess) -> None:
    """A 100 MB body announced with no token: 401 at once, before a byte of it is read,
    and the server's memory does not move."""
    before = rss_kib(server.pid)
    sock = raw(server)
    head = (
        "POST /v1/networks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {100 * 1024 * 1024}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"{" * 1000)
    status, body = response_of(sock)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    sock.close()
    assert rss_kib(server.pid) - before < 10 * 1024


def test_body_over_the_limit_is_413_even_with_a_token(server: ServerProcess) -> None:
    with server.client(ADMIN) as http:
        big = {"name": "x" * 5000}
        r = http.post("/v1/networks", json=big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        # chunked, no Content-Length: refused as it crosses the limit
        r = http.post(
            "/v1/networks",
            content=iter([b'{"name": "', b"x" * 3000, b"y" * 3000, b'"}']),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413
        assert http.get("/v1/networks").json() == []


def test_stalled_body_is_cut_off(server: ServerProcess) -> None:
    sock = raw(server)
    head = (
        "POST /v1/networks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {ADMIN}\r\nContent-Length: 100\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"name":')
    start = time.monotonic()
    status, body = response_of(sock)
    assert status == 408 and body["error"]["code"] == "timeout"
    assert time.monotonic() - start < TIMEOUT + 2


def test_idle_and_slowloris_connections_are_closed(server: ServerProcess) -> None:
    """200 sockets that never send a byte, and one that sends its headers a byte a second:
    all closed by the server within the client timeout (plus slack)."""
    idle = [raw(server) for _ in range(200)]
    slow = raw(server)
    slow.sendall(b"GET /v1/networks HTTP/1.1\r\n")
    start = time.monotonic()
    closed_slow = False
    while time.monotonic() - start < TIMEOUT + 3:
        try:
            slow.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            closed_slow = True
            break
        time.sleep(0.5)
    assert closed_slow or closed_within(slow, 1)
    assert all(closed_within(s, TIMEOUT + 3) for s in idle)
    for s in [*idle, slow]:
        s.close()
    with server.client(ADMIN) as http:  # the server still serves
        assert http.get("/v1/networks").status_code == 200


def test_oversized_request_head_is_refused(server: ServerProcess) -> None:
    sock = raw(server)
    sock.sendall(b"GET /v1/networks HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    for _ in range(64):
        sock.sendall(b"X-Pad: " + b"a" * 1000 + b"\r\n")
    assert closed_within(sock, 5)


def host_token(server: ServerProcess, name: str, vtep: str) -> str:
    with server.client(ADMIN) as http:
        r = http.post("/v1/hosts", json={"name": name, "vtep_ip": vtep})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])


def agent_socket(server: ServerProcess, token: str) -> ClientConnection:
    url = server.url.replace("http://", "ws://") + "/v1/agent"
    auth = {"Authorization": f"Bearer {token}"}
    return ws_connect(url, additional_headers=auth, open_timeout=5)


def close_code(ws: ClientConnection, within: float) -> int | None:
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else -1
    except TimeoutError:
        return None
    return None


def hello(ws: ClientConnection, name: str, vtep: str) -> dict[str, object]:
    ws.send(json.dumps({"type": "hello", "host": name, "vtep_ip": vtep}))
    return dict(json.loads(ws.recv(timeout=5)))


def test_channel_without_hello_is_closed(server: ServerProcess) -> None:
    token = host_token(server, "h1", "192.0.2.1")
    ws = agent_socket(server, token)
    assert close_code(ws, TIMEOUT + 3) is not None


def test_sessions_per_host_are_bounded(server: ServerProcess) -> None:
    token = host_token(server, "h1", "192.0.2.1")
    pending = [agent_socket(server, token) for _ in range(4)]
    extra = agent_socket(server, token)
    message = json.loads(extra.recv(timeout=5))
    assert message["type"] == "error" and message["code"] == "too_many_sessions"
    for ws in pending:
        ws.close()


def test_binary_and_oversized_frames_close_the_session(server: ServerProcess) -> None:
    token = host_token(server, "h1", "192.0.2.1")
    ws = agent_socket(server, token)
    assert hello(ws, "h1", "192.0.2.1")["type"] == "snapshot"
    ws.send(b"\x00\x01binary")
    assert close_code(ws, 5) == 1003
    ws = agent_socket(server, token)
    assert hello(ws, "h1", "192.0.2.1")["type"] == "snapshot"
    ws.send(json.dumps({"type": "ack", "revision": 1, "digest": "0" * 1_000_000}))
    assert close_code(ws, 5) == 1009  # message too big
    ws = agent_socket(server, token)
    assert hello(ws, "h1", "192.0.2.1")["type"] == "snapshot"
    deep = "[" * 20_000 + "]" * 20_000  # within the frame bound, beyond the decoder's depth
    ws.send(f'{{"type": "ack", "revision": 1, "digest": "{"0" * 32}", "x": {deep}}}')
    assert close_code(ws, 5) == 1008  # malformed, as any other bad frame
    ws = agent_socket(server, token)
    assert hello(ws, "h1", "192.0.2.1")["type"] == "snapshot"
    ws.send(json.dumps({"type": "é" * 300}))  # named in the refusal, longer than a close frame
    assert close_code(ws, 5) == 1008
    ws = agent_socket(server, token)
    assert hello(ws, "h1", "192.0.2.1")["type"] == "snapshot"
    ws.send('{"type": "\\ud800"}')  # a lone surrogate, quoted in the refusal
    assert close_code(ws, 5) == 1008
    log = Path(str(server.log_path)).read_text()
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("ack", "why"),
    [
        ({"revision": 2**63, "digest": "0" * 32}, "revision beyond BIGINT"),
        ({"revision": -1, "digest": "0" * 32}, "negative revision"),
        ({"revision": 999_999_999, "digest": None}, "revision ahead of the server"),
        ({"revision": 1, "digest": "not a digest"}, "digest of the wrong form"),
    ],
)
def test_bad_acks_are_refused_and_cost_other_hosts_nothing(
    server: ServerProcess, ack: dict[str, object], why: str
) -> None:
    """An ack the server cannot trust closes that session; the host is not shown in sync
    or at a made-up revision, and another host's reports are still saved."""
    bad = host_token(server, "h1", "192.0.2.1")
    good = host_token(server, "h2", "192.0.2.2")
    ws_good = agent_socket(server, good)
    snap_good = hello(ws_good, "h2", "192.0.2.2")
    ws_bad = agent_socket(server, bad)
    snap = hello(ws_bad, "h1", "192.0.2.1")
    digest = ack["digest"] if ack["digest"] is not None else snap["digest"]  # echo the server's
    ws_bad.send(json.dumps({"type": "ack", "revision": ack["revision"], "digest": digest}))
    assert close_code(ws_bad, 5) == 1008, why
    ws_good.send(
        json.dumps(
            {"type": "ack", "revision": snap_good["revision"], "digest": snap_good["digest"]}
        )
    )
    with server.client(ADMIN) as http:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            h2 = http.get("/v1/hosts/h2").json()
            if h2["in_sync"]:
                break
            time.sleep(0.1)
        assert h2["in_sync"] and h2["connected"]
        h1 = http.get("/v1/hosts/h1").json()
        assert not h1["in_sync"]
        assert h1["applied_revision"] in (None, 0)
    ws_good.close()


def test_without_admin_token_host_header_must_be_loopback(tmp_path: Path) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends Host: evil.example."""
    url = f"sqlite:///{tmp_path / 'l2pop.db'}"
    with ServerProcess(url, admin_token=None, log_path=tmp_path / "s.log") as server:
        r = httpx.get(server.url + "/v1/networks", headers={"Host": "evil.example:9696"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
        for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "[::1]"):
            r = httpx.get(server.url + "/v1/networks", headers={"Host": host})
            assert r.status_code == 200, host


def test_unknown_protocol_version_is_refused_plainly(server: ServerProcess) -> None:
    token = host_token(server, "h1", "192.0.2.1")
    ws = agent_socket(server, token)
    ws.send(json.dumps({"type": "hello", "host": "h1", "vtep_ip": "192.0.2.1", "version": 99}))
    message = json.loads(ws.recv(timeout=5))
    assert message["type"] == "error" and message["code"] == "unsupported_version"
    assert "99" in message["message"]
    assert close_code(ws, 5) == 4401
