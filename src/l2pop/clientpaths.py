"""The REST paths and URLs the agent needs, apart from the client (``l2pop.client``, which
re-exports them and spells every other route).

Here so the agent, which calls one route (its port status report) and opens the channel,
imports neither httpx nor the REST models to build them.
"""

from __future__ import annotations

from urllib.parse import quote

#: the agent channel's path (a WebSocket), relative to the server URL
CHANNEL_PATH = "/v1/agent"


def quote_segment(value: str) -> str:
    """One URL path segment (a host name, an id), quoted so it cannot change the path."""
    return quote(value, safe="")


def port_status_path(port_id: str) -> str:
    """The route of an agent's port status report (``PUT``)."""
    return f"/v1/ports/{quote_segment(port_id)}/status"


def channel_urls(server: str) -> tuple[str, str]:
    """(http base URL, WebSocket URL of the agent channel) from a server URL given as
    http(s)://, ws(s):// or a bare ``host:port`` (taken as http)."""
    url = server.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if url.startswith(http):
            return url, ws + url[len(http) :] + CHANNEL_PATH
        if url.startswith(ws):
            return http + url[len(ws) :], url + CHANNEL_PATH
    return "http://" + url, "ws://" + url + CHANNEL_PATH
