"""Bearer-token authentication.

Two kinds of caller: the operator (admin token, from ``--admin-token`` or
``L2POP_ADMIN_TOKEN``) and an agent (its host's token, issued once in the answer that creates
the host, and stored hashed). A server started without an admin token listens on loopback
only and treats every local caller as the operator; agent calls always need their host token.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from dataclasses import dataclass

from fastapi import Request

from l2pop.model import Forbidden, Host
from l2pop.server import usecases
from l2pop.server.errors import Unauthorized
from l2pop.store import Store

#: longer than any token the server issues (43 characters) or an operator would choose
MAX_TOKEN_LENGTH = 512


class TokenCache:
    """Agent token -> host, so that status reports and reconnects skip a store read.

    Cleared whenever the set of hosts changes (the hub tells it): a deleted host's token
    stops working as soon as the server has seen the deletion, and a re-created host's old
    token never maps to the new one.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._hosts: dict[str, Host] = {}

    def host_of(self, token: str) -> Host | None:
        key = usecases.hash_token(token)
        with self._lock:
            host = self._hosts.get(key)
        if host is not None:
            return host
        host = usecases.authenticate_host(self.store, token)
        if host is not None:
            with self._lock:
                self._hosts[key] = host
        return host

    def cached(self, token: str) -> Host | None:
        """``host_of`` without the store: only what an earlier lookup already found."""
        with self._lock:
            return self._hosts.get(usecases.hash_token(token))

    def clear(self, _gone: object = None) -> None:
        with self._lock:
            self._hosts.clear()


@dataclass(frozen=True)
class Caller:
    """Who is calling: the operator, or the agent of ``host``."""

    admin: bool
    host: Host | None = None


def bearer(request: Request) -> str | None:
    return parse_bearer(request.headers.get("authorization"))


def parse_bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def check_token(tokens: TokenCache, admin_token: str, header: str | None) -> bool:
    """Is ``header`` the admin token or a registered host's token? Runs before a request's
    body is read; a store lookup happens only for tokens not seen before."""
    token = parse_bearer(header)
    if token is None or len(token) > MAX_TOKEN_LENGTH:
        return False
    if hmac.compare_digest(token.encode(), admin_token.encode()):
        return True
    return await find_host(tokens, token) is not None


async def find_host(tokens: TokenCache, token: str) -> Host | None:
    """The host of an agent token, from the cache or (in a worker thread) the store; None
    for a token no host has, or one longer than any real token."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    return tokens.cached(token) or await asyncio.to_thread(tokens.host_of, token)


def identify(request: Request) -> Caller:
    """Resolve the caller; raises Unauthorized for a token that is neither kind."""
    admin_token: str | None = request.app.state.admin_token
    token = bearer(request)
    if token is None:
        if admin_token is None:
            return Caller(admin=True)
        raise Unauthorized("missing bearer token")
    if admin_token is not None and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Caller(admin=True)
    tokens: TokenCache = request.app.state.tokens
    host = tokens.host_of(token)
    if host is None:
        if admin_token is None:
            return Caller(admin=True)
        raise Unauthorized("invalid token")
    return Caller(admin=False, host=host)


def require_admin(request: Request) -> Caller:
    caller = identify(request)
    if not caller.admin:
        raise Forbidden("this call needs the admin token; an agent token acts only for its host")
    return caller


def require_agent(request: Request) -> Host:
    """The host whose agent token was presented (admin tokens are refused: the server
    takes port status only from the agent of the port's host)."""
    token = bearer(request)
    if token is None:
        raise Unauthorized("missing bearer token; agents authenticate with their host token")
    tokens: TokenCache = request.app.state.tokens
    host = tokens.host_of(token)
    if host is None:
        raise Unauthorized("invalid host token")
    return host


def require_admin_or_host(request: Request, name: str) -> Caller:
    caller = identify(request)
    if caller.admin or (caller.host is not None and caller.host.name == name):
        return caller
    raise Forbidden(f"a host token acts only for its own host, not for {name}")
