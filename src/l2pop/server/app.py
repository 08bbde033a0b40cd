"""Wiring: one FastAPI application over one store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request, Response

import l2pop
from l2pop.server.channel import Channel
from l2pop.server.channel import router as channel_router
from l2pop.server.errors import install_error_handlers
from l2pop.server.feed import CommitFeed, NotifyingStore
from l2pop.server.hub import Hub
from l2pop.server.metrics import install_metrics
from l2pop.server.routes import router
from l2pop.server.sessions import SessionRegistry
from l2pop.store import Store

REVISION_HEADER = "L2pop-Revision"


def create_app(
    store: Store,
    admin_token: str | None,
    *,
    heartbeat_interval: float = 5.0,
    queue_limit: int = 256,
) -> FastAPI:
    """The server application. ``admin_token`` None means: loopback callers are operators."""
    with store.read() as tx:
        feed = CommitFeed(tx.revision())
    hub = Hub(store)
    sessions = SessionRegistry()
    channel = Channel(
        store, hub, sessions, queue_limit=queue_limit, heartbeat_interval=heartbeat_interval
    )
    feed.subscribe(hub.notify)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(hub.load)
        tasks = [asyncio.create_task(hub.follow()), asyncio.create_task(channel.heartbeat_loop())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    app = FastAPI(
        title="l2pop",
        version=l2pop.__version__,
        description="L2 Population controller for Linux VXLAN overlays",
        lifespan=lifespan,
    )
    app.state.store = NotifyingStore(store, feed)
    app.state.feed = feed
    app.state.admin_token = admin_token
    app.state.sessions = sessions
    app.state.hub = hub
    app.state.channel = channel
    install_error_handlers(app)
    install_metrics(app, app.state.store, sessions, channel.stats)
    app.include_router(router)
    app.include_router(channel_router)

    @app.middleware("http")
    async def revision_header(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        if request.url.path.startswith("/v1/"):
            response.headers[REVISION_HEADER] = str(feed.revision)
        return response

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, object]:
        return {"status": "ok", "revision": feed.revision}

    return app
