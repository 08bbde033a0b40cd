"""Wiring: one FastAPI application over one store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

import l2pop
from l2pop.server.errors import install_error_handlers
from l2pop.server.feed import CommitFeed, NotifyingStore
from l2pop.server.metrics import install_metrics
from l2pop.server.routes import router
from l2pop.server.sessions import SessionRegistry
from l2pop.store import Store

REVISION_HEADER = "L2pop-Revision"


def create_app(store: Store, admin_token: str | None) -> FastAPI:
    """The server application. ``admin_token`` None means: loopback callers are operators."""
    with store.read() as tx:
        feed = CommitFeed(tx.revision())
    app = FastAPI(
        title="l2pop",
        version=l2pop.__version__,
        description="L2 Population controller for Linux VXLAN overlays",
    )
    app.state.store = NotifyingStore(store, feed)
    app.state.feed = feed
    app.state.admin_token = admin_token
    app.state.sessions = SessionRegistry()
    install_error_handlers(app)
    install_metrics(app, app.state.store, app.state.sessions)
    app.include_router(router)

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
