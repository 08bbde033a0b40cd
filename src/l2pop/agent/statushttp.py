"""The agent's one REST call, its port status report, over HTTP/1.1 on asyncio streams.

``StatusHttp.report_status`` keeps ``l2pop.client.AsyncClient.report_status``'s contract as
the reporter uses it: nothing on a 2xx answer, ``ApiError`` (status, the body's ``code`` and
``message``) for an error answer, ``Unreachable`` when no answer comes (refused, timed out,
TLS refused, connection lost, an answer that is not HTTP/1.x), ``ClientError`` for a URL
that is not http(s). It exists so that an agent process does not import httpx (with the
command-line tools httpx pulls in when installed) and the REST answer models for this one
call: measured, 8 MiB of the agent's resident memory.

What it speaks: one request at a time per connection, ``Content-Length`` bodies out; in,
answers framed by ``Content-Length``, chunked or by the connection's end; connections kept
alive (at most ``MAX_IDLE``) unless the server says ``Connection: close``. A kept
connection the server has closed meanwhile (its idle timeout) is found out before any
answer came and the request is sent again once on a new one: the status PUT is idempotent.
``timeout`` bounds each whole call (connect, send, answer). A 2xx answer's body is not
read as a ``PortOut``: the reporter takes any 2xx as done.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from l2pop.clienterrors import ApiError, ClientError, Unreachable, one_line
from l2pop.clientpaths import port_status_path
from l2pop.tlsconfig import client_context, tls_failure

#: keep-alive connections kept per client (the reporter has at most 8 calls in flight)
MAX_IDLE = 8
#: the largest answer body read (a status answer is one port, well under 4 KiB)
MAX_BODY = 1 << 20
MAX_HEADERS = 100
USER_AGENT = "l2pop-agent"


class _Headers(dict[str, str]):
    """An answer's headers, names lower-cased; ``get`` takes any case."""

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass
class Answer:
    """One HTTP answer, read as ``ApiError.of`` reads an ``httpx.Response``."""

    status_code: int
    reason_phrase: str
    headers: _Headers = field(default_factory=_Headers)
    content: bytes = b""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class _Closed(Exception):
    """A kept connection turned out closed before any byte of the answer came."""


@dataclass
class _Target:
    scheme: str
    host: str
    port: int
    host_header: str
    prefix: str

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


class _Conn:
    def __init__(
        self, key: tuple[str, str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.key = key
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        return not (self.reader.at_eof() or self.writer.is_closing())

    def close(self) -> None:
        self.writer.close()


class StatusHttp:
    """``report_status`` against ``base_url`` (settable: the reporter moves it on failover)
    with the host's bearer token; see the module docstring."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context`` verifies an https server (default: the system trust store)."""
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._idle: list[_Conn] = []
        self._closed = False

    async def report_status(self, port_id: str, status: str) -> None:
        """``PUT /v1/ports/{port_id}/status`` with ``{"status": status}``."""
        body = json.dumps({"status": status}, ensure_ascii=False, separators=(",", ":"))
        answer = await self.request("PUT", port_status_path(port_id), body.encode())
        if answer.status_code >= 400:
            raise ApiError.of(answer)

    async def request(self, method: str, path: str, body: bytes = b"") -> Answer:
        """One call; the answer whatever its status (errors as in the module docstring)."""
        base = self.base_url
        target = _target(base)
        phase = "Connect"
        try:
            async with asyncio.timeout(self._timeout):
                conn = self._take(target.key)
                if conn is not None:
                    try:
                        phase = "Read"
                        return await self._exchange(conn, target, method, path, body)
                    except (_Closed, ConnectionError):
                        pass  # the server closed it while it was idle: once more, anew
                phase = "Connect"
                conn = await self._connect(target)
                phase = "Read"
                try:
                    return await self._exchange(conn, target, method, path, body)
                except _Closed:
                    raise Unreachable(
                        f"cannot reach l2pop server at {base}: server closed the connection "
                        "without an answer",
                        "RemoteProtocolError",
                    ) from None
        except TimeoutError:
            raise Unreachable(
                f"cannot reach l2pop server at {base}: timed out", f"{phase}Timeout"
            ) from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise _unreachable(base, exc, f"{phase}Error") from None
        except ValueError as exc:  # not an HTTP/1.x answer
            raise Unreachable(
                f"cannot reach l2pop server at {base}: {exc}", "RemoteProtocolError"
            ) from None

    def _take(self, key: tuple[str, str, int]) -> _Conn | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.key == key and conn.usable():
                return conn
            conn.close()
        return None

    def _keep(self, conn: _Conn) -> None:
        if self._closed or len(self._idle) >= MAX_IDLE or not conn.usable():
            conn.close()
        else:
            self._idle.append(conn)

    async def _connect(self, target: _Target) -> _Conn:
        tls: ssl.SSLContext | None = None
        if target.scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = client_context()
            tls = self._ssl_context
        reader, writer = await asyncio.open_connection(
            target.host,
            target.port,
            ssl=tls,
            server_hostname=target.host if tls is not None else None,
        )
        return _Conn(target.key, reader, writer)

    async def _exchange(
        self, conn: _Conn, target: _Target, method: str, path: str, body: bytes
    ) -> Answer:
        lines = [
            f"{method} {target.prefix}{path} HTTP/1.1",
            f"Host: {target.host_header}",
            f"User-Agent: {USER_AGENT}",
            "Accept: */*",
        ]
        if self._token:
            lines.append(f"Authorization: Bearer {self._token}")
        if body or method in ("PUT", "POST", "PATCH"):
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            conn.writer.write(head + body)
            await conn.writer.drain()
            answer, keep = await _read_answer(conn.reader, method)
        except BaseException:  # failed, timed out or cancelled: the connection is spent
            conn.close()
            raise
        if keep:
            self._keep(conn)
        else:
            conn.close()
        return answer

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _target(base_url: str) -> _Target:
    try:
        split = urlsplit(base_url)
        port = split.port
    except ValueError as exc:
        raise ClientError(f"invalid server URL {base_url!r}: {exc}") from None
    if split.scheme not in ("http", "https"):
        raise ClientError(f"invalid server URL {base_url!r}: use http:// or https://")
    if not split.hostname:
        raise ClientError(f"invalid server URL {base_url!r}: no host")
    default = 443 if split.scheme == "https" else 80
    return _Target(
        split.scheme,
        split.hostname,
        port or default,
        split.netloc.rpartition("@")[2],
        split.path.rstrip("/"),
    )


async def _read_answer(reader: asyncio.StreamReader, method: str) -> tuple[Answer, bool]:
    """The answer and whether its connection may carry another request."""
    while True:
        line = await reader.readline()
        if not line:
            raise _Closed
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code_text, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not code_text.isdigit():
            raise ValueError(f"not an HTTP/1.x answer: {one_line(line.decode('latin-1'), 80)}")
        headers = await _read_headers(reader)
        code = int(code_text)
        if not 100 <= code < 200:  # informational answers come before the real one
            break
    answer = Answer(code, reason, headers)
    keep = version == "HTTP/1.1" and (headers.get("connection") or "").lower() != "close"
    if method == "HEAD" or code in (204, 304):
        return answer, keep
    if "chunked" in (headers.get("transfer-encoding") or "").lower():
        answer.content = await _read_chunked(reader)
    elif (length := headers.get("content-length")) is not None:
        if not length.isdigit() or int(length) > MAX_BODY:
            raise ValueError(f"bad Content-Length {length!r}")
        answer.content = await reader.readexactly(int(length))
    else:  # framed by the connection's end
        answer.content = await reader.read(MAX_BODY)
        keep = False
    return answer, keep


async def _read_headers(reader: asyncio.StreamReader) -> _Headers:
    headers = _Headers()
    for _ in range(MAX_HEADERS):
        line = await reader.readline()
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        if line in (b"\r\n", b"\n"):
            return headers
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise ValueError(f"bad header line {one_line(line.decode('latin-1'), 80)!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    raise ValueError(f"more than {MAX_HEADERS} header lines")


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = (await reader.readline()).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise ValueError(f"bad chunk size {size_line[:20]!r}") from None
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        total += size
        if total > MAX_BODY:
            raise ValueError("answer body too large")
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)  # the chunk's CRLF


def _unreachable(base_url: str, exc: BaseException, kind: str) -> Unreachable:
    """As ``l2pop._answers.unreachable`` words an httpx failure: ``[Errno 111] Connection
    refused`` -> ``connection refused``; a TLS failure named as ``tls_failure`` does."""
    reason = tls_failure(exc)
    if reason is None:
        if isinstance(exc, asyncio.IncompleteReadError):
            text = "server closed the connection before the answer ended"
        else:
            text = str(exc) or type(exc).__name__
        text = one_line(re.sub(r"^\[Errno -?\d+\]\s*", "", text.strip()))
        reason = text[:1].lower() + text[1:]
    return Unreachable(f"cannot reach l2pop server at {base_url}: {reason}", kind)
