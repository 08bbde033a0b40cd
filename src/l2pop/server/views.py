"""The operators' views under ``/v1`` (docs/adr/0028): the status screen, the event feed,
the membership graph, and the web page's live stream (``/v1/watch``, a WebSocket).

Thin like ``routes``: authorise, read ``server/activity.py`` and the hub, answer. The stream
authenticates with its first frame, ``{"token": "..."}``, because a browser cannot put a
header on a WebSocket upgrade and a token must never travel in a URL (proxies and browser
history keep URLs). It then sends one ``hello`` and a ``tick`` message per second with what
changed; it carries no request from the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, WebSocket, WebSocketDisconnect

import l2pop
from l2pop.model import Host
from l2pop.server.activity import Activity
from l2pop.server.routes import (
    _ALWAYS,
    API_PREFIX,
    Admin,
    StoreDep,
    error_responses,
    json_response,
)
from l2pop.server.watch import HostView
from l2pop.store import Store
from l2pop.store.abc import StoreCounts
from l2pop.wire.views import EventOut, HostCounts, HostSummary, StatusOut, TopologyOut

views_router = APIRouter(prefix=API_PREFIX)
READ = error_responses(*_ALWAYS)

#: hosts the status screen lists as lagging, and events it shows
STATUS_LAGGING = 10
STATUS_EVENTS = 10
#: events one ``GET /v1/events`` answers at most (and by default)
EVENTS_MAX = 1_000
EVENTS_DEFAULT = 100
#: live streams open at once; more are refused with close code 1013 (try again later)
MAX_WATCHERS = 32
#: close codes of the stream: a missing or wrong token, a malformed first frame
WATCH_UNAUTHORIZED = 4401
WATCH_BAD_REQUEST = 4400
#: bytes a first frame may have: a token is at most a few hundred
WATCH_FIRST_FRAME_MAX = 4096
#: seconds between keep-alive messages when nothing changed
WATCH_KEEPALIVE_S = 15.0


def activity_of(request: Request) -> Activity:
    activity: Activity = request.app.state.activity
    return activity


def _summary(view: HostView) -> HostSummary:
    return HostSummary(
        name=view.name,
        connected=view.connected,
        in_sync=view.in_sync,
        applied_revision=view.applied_revision,
        lag=view.lag,
        replica=view.replica,
        last_seen=view.last_seen,
        errors=view.errors,
    )


def _lag_order(view: HostView) -> tuple[bool, bool, int, str]:
    """Worst first: not connected, then out of sync, then the most revisions behind."""
    return view.connected, view.in_sync, -(view.lag or 0), view.name


def _read_status(store: Store) -> tuple[int, StoreCounts, list[Host]]:
    with store.read() as tx:
        return tx.revision(), tx.counts(), tx.list_hosts()


# The three reads below are async: they read the hub and the feed, which change on the
# event loop, so they run there (the store read goes to a thread). Each is bounded: one
# pass over the hosts, the feed, or the networks (cached per revision).


@views_router.get("/status", response_model=StatusOut, responses=READ)
async def get_status(request: Request, store: StoreDep, _: Admin) -> Response:
    """The whole deployment at a glance: replicas, revision, hosts connected and in sync,
    the hosts furthest behind, networks, ports by status and the last events. Judged now,
    as ``GET /v1/hosts`` judges each host."""
    activity = activity_of(request)
    revision, counts, hosts = await asyncio.to_thread(_read_status, store)
    views = [activity.view(h) for h in hosts]
    behind = sorted((v for v in views if not v.settled), key=_lag_order)
    presence = request.app.state.presence
    out = StatusOut(
        replica=request.app.state.replica,
        replicas=sorted(presence.replicas_alive | {request.app.state.replica}),
        version=l2pop.__version__,
        revision=revision,
        hub_revision=activity.hub.revision,
        hosts=HostCounts(
            total=len(views),
            connected=sum(v.connected for v in views),
            in_sync=sum(v.connected and v.in_sync for v in views),
        ),
        lagging=[_summary(v) for v in behind[:STATUS_LAGGING]],
        networks=counts.networks,
        ports={status.value: n for status, n in counts.ports.items()},
        events=[EventOut.model_validate(e.as_json()) for e in activity.last_events(STATUS_EVENTS)],
    )
    return json_response(out.model_dump_json().encode())


EventsAfter = Annotated[
    int | None,
    Query(ge=0, description="only events after this sequence number (default: the latest)"),
]
EventsLimit = Annotated[int, Query(ge=1, le=EVENTS_MAX, description="events at most")]


@views_router.get("/events", response_model=list[EventOut], responses=READ)
async def get_events(
    request: Request, _: Admin, after: EventsAfter = None, limit: EventsLimit = EVENTS_DEFAULT
) -> Response:
    """The feed of recent events (the server keeps the last few thousand, in memory, per
    server process), oldest first: the latest ``limit`` ones, or the first ``limit`` after
    sequence number ``after`` (poll with the last one seen)."""
    activity = activity_of(request)
    latest = after is None
    events = activity.last_events(limit) if latest else activity.events_after(after or 0, limit)
    body = json.dumps([e.as_json() for e in events], separators=(",", ":"))
    return json_response(body.encode())


@views_router.get("/topology", response_model=TopologyOut, responses=READ)
async def get_topology(request: Request, _: Admin) -> Response:
    """Every network with its member hosts and its ports by status, as this server's hub
    holds them now (the membership graph of the web page)."""
    activity = activity_of(request)
    revision, networks = activity.topology()
    body = {"revision": revision, "networks": networks}
    return json_response(json.dumps(body, separators=(",", ":")).encode())


# -- the live stream ------------------------------------------------------------------------


@views_router.websocket("/watch")
async def watch(ws: WebSocket) -> None:
    """The web page's live stream (module docstring)."""
    activity: Activity = ws.app.state.activity
    timeout: float = ws.app.state.client_timeout
    await ws.accept()
    try:
        first = await asyncio.wait_for(ws.receive(), timeout)
    except TimeoutError:
        await ws.close(WATCH_UNAUTHORIZED, "no token in time")
        return
    if first.get("type") == "websocket.disconnect":
        return
    reason = _refused(ws, first.get("text"))
    if reason is not None:
        code = WATCH_BAD_REQUEST if reason.startswith("malformed") else WATCH_UNAUTHORIZED
        await ws.close(code, reason)
        return
    if len(activity.watchers) >= MAX_WATCHERS:
        await ws.close(1013, f"too many live streams (at most {MAX_WATCHERS}); retry later")
        return
    watcher = activity.watch()
    reader = asyncio.create_task(_drain(ws))
    try:
        hello = {"type": "hello", "revision": activity.hub.revision, "replica": activity.replica}
        await ws.send_text(json.dumps(hello))
        while not reader.done():
            try:
                message = await asyncio.wait_for(watcher.queue.get(), WATCH_KEEPALIVE_S)
            except TimeoutError:
                message = '{"type":"keepalive"}'
            if message is None:
                await ws.close(1013, "this stream fell behind or the server is stopping")
                return
            await ws.send_text(message)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        activity.unwatch(watcher)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


def _refused(ws: WebSocket, text: object) -> str | None:
    """Why the stream's first frame is refused (None: the admin token, or no token needed)."""
    if not isinstance(text, str) or len(text) > WATCH_FIRST_FRAME_MAX:
        return 'malformed first frame: expected {"token": "..."}'
    try:
        token = json.loads(text).get("token")
    except (ValueError, AttributeError):
        return 'malformed first frame: expected {"token": "..."}'
    admin_token: str | None = ws.app.state.admin_token
    if admin_token is None:
        return None  # loopback only: the Host check in server/limits.py already ran
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), admin_token.encode()):
        return "missing or invalid token: the live stream needs the admin token"
    return None


async def _drain(ws: WebSocket) -> None:
    """Read (and ignore) what the page sends, until it goes: the stream needs to notice a
    closed connection even when it has nothing to send."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
