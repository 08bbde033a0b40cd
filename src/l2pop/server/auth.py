"""Bearer-token authentication.

Two kinds of caller: the operator (admin token, from ``--admin-token`` or
``L2POP_ADMIN_TOKEN``) and an agent (its host's token, issued once by ``POST /v1/hosts`` and
stored hashed). A server started without an admin token listens on loopback only and treats
every local caller as the operator; agent calls always need their host token.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from l2pop.model import Forbidden, Host
from l2pop.server import usecases
from l2pop.server.errors import Unauthorized
from l2pop.store import Store


@dataclass(frozen=True)
class Caller:
    """Who is calling: the operator, or the agent of ``host``."""

    admin: bool
    host: Host | None = None


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def identify(request: Request) -> Caller:
    """Resolve the caller; raises Unauthorized for a token that is neither kind."""
    admin_token: str | None = request.app.state.admin_token
    store: Store = request.app.state.store
    token = bearer(request)
    if token is None:
        if admin_token is None:
            return Caller(admin=True)
        raise Unauthorized("missing bearer token")
    if admin_token is not None and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Caller(admin=True)
    host = usecases.authenticate_host(store, token)
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
    host = usecases.authenticate_host(request.app.state.store, token)
    if host is None:
        raise Unauthorized("invalid host token")
    return host


def require_admin_or_host(request: Request, name: str) -> Caller:
    caller = identify(request)
    if caller.admin or (caller.host is not None and caller.host.name == name):
        return caller
    raise Forbidden(f"a host token acts only for its own host, not for {name}")
