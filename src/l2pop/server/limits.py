"""What a request may cost before the server knows who sent it.

Two layers, both in front of every route:

* ``GuardedHttpProtocol`` (uvicorn's httptools protocol with deadlines): a connection must
  finish its request line and headers within ``header_timeout`` seconds of opening (or of
  the first byte of its next request) and within ``MAX_HEADER_BYTES``; otherwise it is
  closed. uvicorn itself only times out idle keep-alive connections *after* a response, so
  without this an idle socket or a slowloris client holds a connection forever.
* ``RequestGuard`` (pure ASGI middleware), in this order, each step before any work the
  next one costs: the ``Host`` header (only loopback names when the server runs without an
  admin token: a DNS-rebinding page in an operator's browser must not reach the open API),
  the bearer token (``/v1`` calls need a valid admin or host token *before* their body is
  read; the route still decides which kind it needs), then the body: refused with 413 from
  ``Content-Length`` or as soon as it grows past ``max_body``, and with 408 when it does not
  arrive within ``body_timeout``. The body is buffered here (it is small by then) and
  replayed to the route, so the framework never parses an unbounded or unauthenticated one.

Every refusal is the API's error body, ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from l2pop.server.auth import TokenCache, check_token
from l2pop.server.errors import error_response
from l2pop.server.routes import API_PREFIX

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: request bodies: the largest real one (a port with 16 addresses) is under 2 KiB
DEFAULT_MAX_BODY = 64 * 1024
#: request line + headers; browsers and proxies use 8-16 KiB
MAX_HEADER_BYTES = 32 * 1024
#: seconds for a request head, a request body, or an agent's hello
DEFAULT_CLIENT_TIMEOUT = 10.0
#: paths that answer without a token (no body either)
PUBLIC_PATHS = frozenset({"/healthz", "/metrics", "/openapi.json", "/docs", "/redoc"})


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size bound on request heads."""

    header_timeout = DEFAULT_CLIENT_TIMEOUT

    @classmethod
    def with_timeout(cls, seconds: float) -> type[GuardedHttpProtocol]:
        """This protocol with another head deadline (uvicorn takes a class, not options)."""
        return type(cls.__name__, (cls,), {"header_timeout": seconds})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0

    def _arm(self) -> None:
        self._disarm()
        self._head_bytes = 0
        self._head_deadline = self.loop.call_later(self.header_timeout, self._head_expired)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_expired(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.logger.info("closing a connection that sent no complete request head in time")
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # the next request on a kept-alive connection gets its own deadline

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
            self.logger.info("closing a connection whose request head exceeds the limit")
            self._disarm()
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()


def is_loopback(host: str) -> bool:
    """True for a host name or address on this machine's loopback: ``localhost``,
    ``127.x.y.z`` or ``::1`` (the listen address, and a ``Host`` header's host)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_host(header: str) -> bool:
    """``is_loopback`` for a ``Host`` header: any case, with or without a port, IPv6 in
    brackets, and the fully qualified ``localhost.``."""
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return is_loopback("localhost" if host == "localhost." else host)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def refuse(
    scope: Scope, receive: Receive, send: Send, *, status: int, code: str, message: str
) -> None:
    headers = {"connection": "close"}
    if status == 401:
        headers["www-authenticate"] = "Bearer"
    await error_response(status, code, message, headers=headers)(scope, receive, send)


class BodyRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class RequestGuard:
    """The ASGI middleware described in the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        admin_token: str | None,
        tokens: TokenCache,
        max_body: int = DEFAULT_MAX_BODY,
        body_timeout: float = DEFAULT_CLIENT_TIMEOUT,
    ) -> None:
        self.app = app
        self.admin_token = admin_token
        self.tokens = tokens
        self.max_body = max_body
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self.admin_token is None and not is_loopback_host(_header(scope, b"host") or ""):
            # without an admin token the API is open to local callers; a browser page whose
            # name rebinds to 127.0.0.1 sends its own name in Host, which is refused here
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            message = "the Host header must name a loopback address on a server without a token"
            await refuse(scope, receive, send, status=400, code="bad_request", message=message)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)  # the channel authenticates its upgrade
            return
        if scope["path"].startswith(API_PREFIX + "/") and not await self._authenticated(scope):
            message = "missing or invalid token"
            await refuse(scope, receive, send, status=401, code="unauthorized", message=message)
            return
        try:
            body = await self._read_body(scope, receive)
        except BodyRefused as exc:
            await refuse(
                scope, receive, send, status=exc.status, code=exc.code, message=exc.message
            )
            return
        await self.app(scope, _replay(body, receive), send)

    async def _authenticated(self, scope: Scope) -> bool:
        """A token of either kind, or none needed. Which kind a route needs is the route's
        business (``auth.require_*``); here only "is this anybody at all"."""
        if self.admin_token is None:
            return True
        return await check_token(self.tokens, self.admin_token, _header(scope, b"authorization"))

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise BodyRefused(400, "bad_request", "Content-Length is not a number")
            if int(declared) > self.max_body:
                raise BodyRefused(413, "too_large", self._too_large())
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        break
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        raise BodyRefused(413, "too_large", self._too_large())
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise BodyRefused(
                408, "timeout", f"the request body did not arrive within {self.body_timeout:g} s"
            ) from None
        return b"".join(chunks)

    def _too_large(self) -> str:
        return f"the request body exceeds {self.max_body} bytes"


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the buffered body over once, then waits on the real one
    (so that a disconnect still reaches the route)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
