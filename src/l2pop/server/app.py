"""Wiring: one FastAPI application over one store."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
from collections.abc import AsyncIterator, Mapping

import anyio.to_thread
from fastapi import FastAPI

import l2pop
from l2pop.runtime import keep_heap_frozen
from l2pop.server.activity import Activity
from l2pop.server.auth import TokenCache
from l2pop.server.channel import Channel
from l2pop.server.channel import router as channel_router
from l2pop.server.errors import install_error_handlers
from l2pop.server.feed import CommitFeed, InProcessFeed
from l2pop.server.hub import Hub
from l2pop.server.hubapi import HostUpdate, NetworkChanges, PortChanges
from l2pop.server.limits import DEFAULT_CLIENT_TIMEOUT, DEFAULT_MAX_BODY, RequestGuard
from l2pop.server.metrics import install_metrics
from l2pop.server.replicas import Presence
from l2pop.server.routes import API_PREFIX, router
from l2pop.server.sessions import SessionRegistry
from l2pop.server.ui import install_ui
from l2pop.server.views import views_router
from l2pop.server.waits import Waits
from l2pop.server.watch import activation_observer, compact_json
from l2pop.store import Store, notify_dsn

#: worker threads for the API's sync routes (see lifespan)
API_THREADS = 6


class ForgetTokens:
    """The token cache as a ``HubSubscriber``: a changed set of hosts empties it, so a
    deleted host's token stops working as soon as the hub has seen the deletion."""

    def __init__(self, tokens: TokenCache) -> None:
        self.tokens = tokens

    def changed(self, revision: int, networks: NetworkChanges, ports: PortChanges) -> None:
        pass

    def host_updates(self, revision: int, updates: Mapping[str, HostUpdate]) -> None:
        pass

    def hosts_changed(self, gone: frozenset[str]) -> None:
        self.tokens.clear()

    def reloaded(self, revision: int) -> None:
        pass


#: longest replica name (the store's column)
REPLICA_NAME_MAX = 128


def default_replica_name(port: int | None = None) -> str:
    """``HOSTNAME:PORT`` (``HOSTNAME:PID`` without a port): unique among the replicas of
    one deployment as long as machines have distinct names."""
    tail = str(port) if port is not None else f"pid{os.getpid()}"
    return f"{socket.gethostname()}:{tail}"[:REPLICA_NAME_MAX]


def make_feed(store: Store, hub: Hub, presence: Presence) -> CommitFeed:
    """The feed for the store's engine: on PostgreSQL other server processes may share the
    database, so the hub must hear their commits too (``PostgresFeed``); SQLite serves one
    server process (``server/main.py`` holds its lock), whose own commits are all there are."""
    dsn = notify_dsn(store.url)
    if dsn is None:
        return InProcessFeed(store, hub.notify)
    from l2pop.server.pgfeed import PostgresFeed  # psycopg: only where PostgreSQL is used

    return PostgresFeed(store, hub.notify, dsn, on_session=presence.claimed)


def create_app(
    store: Store,
    admin_token: str | None,
    *,
    heartbeat_interval: float = 5.0,
    queue_limit: int = 256,
    max_body: int = DEFAULT_MAX_BODY,
    client_timeout: float = DEFAULT_CLIENT_TIMEOUT,
    replica: str | None = None,
) -> FastAPI:
    """The server application. ``admin_token`` None means: loopback callers are operators.

    ``replica`` names this server process among the replicas sharing the store (what
    ``host list`` shows as holding a host's session and ``/metrics`` labels its figures
    with); default ``default_replica_name()``.
    """
    replica = replica or default_replica_name()
    sessions = SessionRegistry()
    tokens = TokenCache(store)
    hub = Hub(store, subscribers=(sessions, ForgetTokens(tokens)))
    presence = Presence(store, replica, sessions, heartbeat_interval)
    feed = make_feed(store, hub, presence)
    channel = Channel(
        store,
        hub,
        sessions,
        tokens,
        presence,
        queue_limit=queue_limit,
        heartbeat_interval=heartbeat_interval,
        hello_timeout=client_timeout,
    )
    activity = Activity(
        store,
        hub,
        channel,
        replica=replica,
        encode=compact_json,
        others_alive=lambda: bool(presence.replicas_alive - {replica}),
    )
    hub.subscribe(activity)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Sync routes run in anyio's worker threads (40 by default). Each store read
        # hands the GIL back and forth once per row, so 40 threads reading at once form a
        # convoy in which every thread, the event loop's included, waits for all the
        # others; a few threads finish the same work sooner and leave the loop free for
        # the channel and /healthz (docs/adr/0015-bounded-api-work.md).
        anyio.to_thread.current_default_thread_limiter().total_tokens = API_THREADS
        await asyncio.to_thread(hub.load)
        feed.start()  # the hub's notify only wakes the loop: safe from the feed's thread
        # the hub now holds every port: freeze them (l2pop.runtime.keep_heap_frozen)
        gc.collect()
        tasks = [
            asyncio.create_task(hub.follow()),
            asyncio.create_task(channel.heartbeat_loop()),
            asyncio.create_task(channel.report_loop()),
            asyncio.create_task(presence.run()),
            asyncio.create_task(keep_heap_frozen()),
            asyncio.create_task(activity.run()),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            activity.close()
            await asyncio.to_thread(feed.close)

    app = FastAPI(
        title="l2pop",
        version=l2pop.__version__,
        description="L2 Population controller for Linux VXLAN overlays",
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.replica = replica
    app.state.feed = feed
    app.state.admin_token = admin_token
    app.state.sessions = sessions
    app.state.hub = hub
    app.state.channel = channel
    app.state.tokens = tokens
    app.state.waits = waits = Waits(store, hub, channel, feed)
    app.state.presence = presence
    app.state.client_timeout = client_timeout
    app.state.activity = activity
    install_error_handlers(app)
    # inside the metrics middleware, so that refusals are counted too
    app.add_middleware(
        RequestGuard,
        admin_token=admin_token,
        tokens=tokens,
        max_body=max_body,
        body_timeout=client_timeout,
    )
    instruments = install_metrics(
        app,
        store,
        hub,
        channel,
        lambda: feed.revision,
        replica=replica,
        waits=lambda: waits.active,
    )
    activity.on_applied = activation_observer(instruments.port_activation)
    app.include_router(router)
    app.include_router(views_router)
    app.include_router(channel_router, prefix=API_PREFIX)
    install_ui(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, object]:
        # async: answered on the event loop, never queued behind API calls in the worker
        # threads, so a liveness probe with a 1 s timeout does not kill a busy server
        return {"status": "ok", "revision": feed.revision, "replica": replica}

    return app
