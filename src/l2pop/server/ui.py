"""The web page at ``/ui`` (docs/adr/0028): four static files, served from memory.

The page holds no data of its own: it signs in with the admin token (kept in the browser's
session storage, sent as a bearer header, never in a URL), reads ``/v1`` like any client and
follows ``/v1/watch``. So these files need no token, and everything they show is checked by
the API's own authentication. The headers keep the page from being framed, sniffed or made
to run anything but its own script (``Content-Security-Policy``): the page writes server
data only as text, and the policy is the second fence should that ever slip.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Response
from fastapi.responses import RedirectResponse

UI_PATH = "/ui"
#: file name -> media type of the files the page is made of (``server/ui_static/``)
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "graph.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # a new release must not be mixed with a cached old script
    "Cache-Control": "no-cache",
}


def _load() -> dict[str, bytes]:
    folder = resources.files("l2pop.server").joinpath("ui_static")
    return {name: folder.joinpath(name).read_bytes() for name in FILES}


def install_ui(app: FastAPI) -> None:
    """``GET /ui`` (the page) and ``GET /ui/{file}`` (its script and style)."""
    files = _load()

    @app.get(UI_PATH, include_in_schema=False)
    def ui_root() -> Response:
        return RedirectResponse(UI_PATH + "/", status_code=308)

    @app.get(UI_PATH + "/", include_in_schema=False)
    def ui_page() -> Response:
        return _file(files, "index.html")

    @app.get(UI_PATH + "/{name}", include_in_schema=False)
    def ui_file(name: str) -> Response:
        if name not in files:
            return Response(status_code=404, content=b"not found", media_type="text/plain")
        return _file(files, name)


def _file(files: dict[str, bytes], name: str) -> Response:
    return Response(content=files[name], media_type=FILES[name], headers=SECURITY_HEADERS)
