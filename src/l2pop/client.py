"""The one typed client of the l2pop REST API (docs/design.md, "REST contract").

One method per route, taking plain arguments and returning the ``l2pop.wire`` answer
models; list methods follow ``Link: rel="next"`` until the last page. Every route path is
spelled here (the agent's two in ``l2pop.clientpaths``, re-exported here) and in
``l2pop.server.routes``, nowhere else.

Contract:

- an HTTP error answer raises ``ApiError`` carrying the status and the body's ``code``,
  ``message`` and ``field`` (the server builds that body from ``wire.ErrorBody``, the model
  parsed here); a body that is not ``ErrorBody`` (a proxy's page, a plain-text 431) still
  gives an ``ApiError``, with the code the status implies;
- a server that cannot be reached raises ``Unreachable``, a bad URL ``ClientError``, and a
  success answer that is not the documented one (not JSON, not the route's model)
  ``UnexpectedAnswer`` carrying its status; no other exception escapes a call;
- request bodies are sent as given: validation is the server's, so the caller sees the
  same field-naming 422 whatever client it uses.

``Client`` is synchronous (CLI, testbed, demos, benchmarks, tests); ``AsyncClient`` is its
twin for callers on an event loop: the agent's status reports, and the benchmarks' concurrent
load (the ports, hosts, networks and desired-state calls they make).
"""

from __future__ import annotations

import enum
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from l2pop._answers import (
    ApiError,
    ClientError,
    Model,
    UnexpectedAnswer,
    Unreachable,
    next_page,
    parse,
    parse_list,
    unreachable,
)
from l2pop.clientpaths import CHANNEL_PATH, channel_urls, port_status_path, quote_segment
from l2pop.wire import HostCreated, HostFdb, HostOut, NetworkOut, PortOut
from l2pop.wire.api import RevisionOut
from l2pop.wire.views import EventOut, StatusOut, TopologyOut

__all__ = [
    "CHANNEL_PATH",
    "DEFAULT_SERVER",
    "REVISION_HEADER",
    "UNSET",
    "ApiError",
    "AsyncClient",
    "Client",
    "ClientError",
    "UnexpectedAnswer",
    "Unreachable",
    "Unset",
    "channel_urls",
]

DEFAULT_SERVER = "http://127.0.0.1:9696"
#: the answer header naming the store revision the answer was read at
REVISION_HEADER = "L2pop-Revision"


class Unset(enum.Enum):
    """The type of ``UNSET``: a PATCH field left out (``None`` is sent as JSON null)."""

    UNSET = enum.auto()


UNSET = Unset.UNSET


# -- paths and bodies (shared by both clients) ------------------------------------------


_quote = quote_segment


def _networks() -> str:
    return "/v1/networks"


def _network(network_id: str) -> str:
    return f"/v1/networks/{_quote(network_id)}"


def _ports() -> str:
    return "/v1/ports"


def _port(port_id: str) -> str:
    return f"/v1/ports/{_quote(port_id)}"


_port_status = port_status_path


def _hosts() -> str:
    return "/v1/hosts"


def _host(name: str) -> str:
    return f"/v1/hosts/{_quote(name)}"


def _host_fdb(name: str) -> str:
    return f"/v1/hosts/{_quote(name)}/fdb"


def _revision_path(revision: int) -> str:
    return f"/v1/revisions/{int(revision)}"


def _trace() -> str:
    return "/v1/trace"


#: the operators' views (docs/adr/0028)
STATUS_PATH, EVENTS_PATH, TOPOLOGY_PATH, WATCH_PATH = (
    "/v1/status",
    "/v1/events",
    "/v1/topology",
    "/v1/watch",
)


#: seconds an HTTP call waiting for a revision may take beyond the wait itself
WAIT_SLACK_S = 10.0


def _wait_timeout(wait: float) -> httpx.Timeout:
    return httpx.Timeout(wait + WAIT_SLACK_S, connect=5.0)


def _given(**fields: Any) -> dict[str, Any]:
    """The PATCH body: every field that is not ``UNSET`` (``None`` stays, as JSON null)."""
    return {key: value for key, value in fields.items() if value is not UNSET}


def _present(**fields: Any) -> dict[str, Any]:
    """A create body: every field that is not ``None`` (the server's default applies)."""
    return {key: value for key, value in fields.items() if value is not None}


def _port_create(
    network_id: str,
    fixed_ips: list[str] | None,
    mac: str | None,
    name: str | None,
    host: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"network_id": network_id, "fixed_ips": fixed_ips or []}
    body.update(_present(mac=mac, name=name, host=host))
    return body


# -- the synchronous client -------------------------------------------------------------


class Client:
    """Calls the REST API of one server with an optional bearer token.

    ``revision`` holds the ``L2pop-Revision`` header of the last answer (``None`` when the
    server sent none). Pass ``http`` to share one ``httpx.Client`` (its base URL must be
    the server's); ``transport`` and ``verify`` configure the one made here otherwise.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._own_http = http is None
        try:
            self._http = http or httpx.Client(
                base_url=self.base_url,
                timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
                transport=transport,
                verify=verify,
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise ClientError(f"invalid server URL {base_url!r}: {exc}") from None
        self.revision: int | None = None

    # -- networks

    def create_network(
        self,
        *,
        name: str = "",
        vni: int | None = None,
        arp_suppression: str | None = None,
        encap: str | None = None,
    ) -> NetworkOut:
        """``encap``: ``vxlan`` (the server's default when None) or ``gre``; fixed for life."""
        body = _present(name=name, vni=vni, arp_suppression=arp_suppression, encap=encap)
        return self._call(NetworkOut, "POST", _networks(), json=body)

    def networks(self, *, page_size: int | None = None) -> list[NetworkOut]:
        """Every network; ``page_size`` items per request (the server's default when None)."""
        return self._list(NetworkOut, _networks(), page_size=page_size)

    def network(self, network_id: str) -> NetworkOut:
        return self._call(NetworkOut, "GET", _network(network_id))

    def update_network(
        self,
        network_id: str,
        *,
        name: str | Unset | None = UNSET,
        arp_suppression: str | Unset | None = UNSET,
    ) -> NetworkOut:
        body = _given(name=name, arp_suppression=arp_suppression)
        return self._call(NetworkOut, "PATCH", _network(network_id), json=body)

    def delete_network(self, network_id: str) -> None:
        self._request("DELETE", _network(network_id))

    # -- ports

    def create_port(
        self,
        network_id: str,
        *,
        fixed_ips: list[str] | None = None,
        mac: str | None = None,
        name: str | None = None,
        host: str | None = None,
    ) -> PortOut:
        body = _port_create(network_id, fixed_ips, mac, name, host)
        return self._call(PortOut, "POST", _ports(), json=body)

    def ports(
        self,
        *,
        network_id: str | None = None,
        host: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        page_size: int | None = None,
    ) -> list[PortOut]:
        """Every port matching the filters, ``page_size`` per request; only the first
        ``limit`` when given (one request)."""
        params = _present(network_id=network_id, host=host, status=status)
        if limit is not None:
            response = self._request("GET", _ports(), params={**params, "limit": limit})
            return parse_list(PortOut, response, "GET", _ports())
        return self._list(PortOut, _ports(), params, page_size=page_size)

    def port(self, port_id: str) -> PortOut:
        return self._call(PortOut, "GET", _port(port_id))

    def update_port(
        self,
        port_id: str,
        *,
        name: str | Unset | None = UNSET,
        fixed_ips: list[str] | Unset | None = UNSET,
        mac: str | Unset | None = UNSET,
        host: str | Unset | None = UNSET,
    ) -> PortOut:
        """Change the given fields; ``host=None`` unbinds the port."""
        body = _given(name=name, fixed_ips=fixed_ips, mac=mac, host=host)
        return self._call(PortOut, "PATCH", _port(port_id), json=body)

    def delete_port(self, port_id: str) -> None:
        self._request("DELETE", _port(port_id))

    def report_status(self, port_id: str, status: str) -> PortOut:
        """An agent's report that its port is ``ACTIVE`` or ``DOWN`` (its host's token)."""
        return self._call(PortOut, "PUT", _port_status(port_id), json={"status": status})

    # -- hosts

    def create_host(self, name: str, vtep_ip: str) -> HostCreated:
        body = {"name": name, "vtep_ip": vtep_ip}
        return self._call(HostCreated, "POST", _hosts(), json=body)

    def hosts(self, *, page_size: int | None = None) -> list[HostOut]:
        return self._list(HostOut, _hosts(), page_size=page_size)

    def host(self, name: str) -> HostOut:
        return self._call(HostOut, "GET", _host(name))

    def delete_host(self, name: str) -> None:
        self._request("DELETE", _host(name))

    def host_fdb(self, name: str) -> HostFdb:
        """The flood list, FDB and neighbour entries ``name`` must hold, with their digest."""
        return self._call(HostFdb, "GET", _host_fdb(name))

    # -- revisions

    def wait_revision(self, revision: int, timeout: float = 0.0) -> RevisionOut:
        """How far store revision ``revision`` (an answer's ``L2pop-Revision``) reached:
        with ``timeout`` > 0, once every host it had to reach applied it. Raises ``ApiError``
        with status 504 (code ``timeout``, the hosts behind in its message) when ``timeout``
        seconds ran out, 404 for a revision the store has not reached."""
        params = {"wait": timeout} if timeout else None
        response = self._request(
            "GET", _revision_path(revision), params=params, timeout=_wait_timeout(timeout)
        )
        return parse(RevisionOut, response, "GET", _revision_path(revision))

    def trace(self, after: int = 0) -> dict[str, Any]:
        """The server's recent revisions, each step with its monotonic time (admin):
        ``{now, revision, commits: [{revision, at}], batches: [{revision, prev_revision,
        read_at, applied_at, hosts}], sent: [{host, type, revision, at}]}``, only revisions
        after ``after``."""
        body = self._request("GET", _trace(), params={"after": after} if after else None).json()
        if not isinstance(body, dict):
            raise UnexpectedAnswer(f"GET {_trace()}: not a JSON object", 200)
        return body

    # -- operators' views

    def status(self) -> StatusOut:
        """The whole deployment at a glance (admin): replicas, revision, hosts in sync, the
        hosts furthest behind, networks, ports by status, the last events."""
        return self._call(StatusOut, "GET", STATUS_PATH)

    def events(self, *, after: int | None = None, limit: int = 100) -> list[EventOut]:
        """The server's recent events, oldest first (admin): the latest ``limit``, or the
        first ``limit`` after sequence number ``after``."""
        params: dict[str, int] = {"limit": limit}
        if after is not None:
            params["after"] = after
        return parse_list(
            EventOut, self._request("GET", EVENTS_PATH, params=params), "GET", EVENTS_PATH
        )

    def topology(self) -> TopologyOut:
        """Every network with its member hosts and ports by status (admin)."""
        return self._call(TopologyOut, "GET", TOPOLOGY_PATH)

    # -- operations

    def healthz(self) -> bool:
        """True when the server answers its liveness probe with 200."""
        return self._send("GET", "/healthz").status_code == 200

    def metrics(self) -> str:
        """The server's Prometheus exposition (``/metrics``), as text."""
        return self._request("GET", "/metrics").text

    # -- plumbing

    def _call(self, model: type[Model], method: str, path: str, **kwargs: Any) -> Model:
        return parse(model, self._request(method, path, **kwargs), method, path)

    def _list(
        self,
        model: type[Model],
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        page_size: int | None = None,
    ) -> list[Model]:
        """Every item of a list operation, page after page (``Link: rel="next"``)."""
        if page_size is not None:
            params = {**(params or {}), "limit": page_size}
        items: list[Model] = []
        seen: set[str] = set()
        response = self._request("GET", path, params=params)
        while True:
            items += parse_list(model, response, "GET", path)
            following = next_page(response, seen)
            if following is None:
                return items
            response = self._request("GET", following)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._send(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError.of(response)
        return response

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            response = self._http.request(
                method,
                path,
                json=json,
                params=dict(params) if params else None,
                headers=self._headers,
                **extra,
            )
        except httpx.UnsupportedProtocol:
            raise ClientError(
                f"invalid server URL {self.base_url!r}: use http:// or https://"
            ) from None
        except httpx.InvalidURL as exc:
            raise ClientError(f"invalid server URL {self.base_url!r}: {exc}") from None
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from None
        self.revision = _revision(response)
        return response

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- the asynchronous twin --------------------------------------------------------------


class AsyncClient:
    """``Client``'s calls for an event loop (the subset its callers need; same contract).

    Share one ``httpx.AsyncClient`` between many (the swarm's agents do): the token is sent
    per request, so clients of different hosts can use the same connection pool.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        verify: ssl.SSLContext | bool = True,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout, verify=verify)

    # -- networks

    async def networks(self, *, page_size: int | None = None) -> list[NetworkOut]:
        """See ``Client.networks``."""
        return await self._list(NetworkOut, _networks(), page_size=page_size)

    # -- ports

    async def create_port(
        self,
        network_id: str,
        *,
        fixed_ips: list[str] | None = None,
        mac: str | None = None,
        name: str | None = None,
        host: str | None = None,
    ) -> PortOut:
        """See ``Client.create_port``."""
        body = _port_create(network_id, fixed_ips, mac, name, host)
        return await self._call(PortOut, "POST", _ports(), json=body)

    async def ports(
        self,
        *,
        network_id: str | None = None,
        host: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        page_size: int | None = None,
    ) -> list[PortOut]:
        """See ``Client.ports``."""
        params = _present(network_id=network_id, host=host, status=status)
        if limit is not None:
            response = await self._request("GET", _ports(), params={**params, "limit": limit})
            return parse_list(PortOut, response, "GET", _ports())
        return await self._list(PortOut, _ports(), params, page_size=page_size)

    async def port(self, port_id: str) -> PortOut:
        return await self._call(PortOut, "GET", _port(port_id))

    async def update_port(
        self,
        port_id: str,
        *,
        name: str | Unset | None = UNSET,
        fixed_ips: list[str] | Unset | None = UNSET,
        mac: str | Unset | None = UNSET,
        host: str | Unset | None = UNSET,
    ) -> PortOut:
        """See ``Client.update_port``."""
        body = _given(name=name, fixed_ips=fixed_ips, mac=mac, host=host)
        return await self._call(PortOut, "PATCH", _port(port_id), json=body)

    async def report_status(self, port_id: str, status: str) -> PortOut:
        """See ``Client.report_status``."""
        return await self._call(PortOut, "PUT", _port_status(port_id), json={"status": status})

    # -- hosts

    async def hosts(self, *, page_size: int | None = None) -> list[HostOut]:
        return await self._list(HostOut, _hosts(), page_size=page_size)

    async def host_fdb(self, name: str) -> HostFdb:
        """See ``Client.host_fdb``."""
        return await self._call(HostFdb, "GET", _host_fdb(name))

    # -- revisions

    async def wait_revision(self, revision: int, timeout: float = 0.0) -> RevisionOut:
        """See ``Client.wait_revision``."""
        params = {"wait": timeout} if timeout else None
        response = await self._request(
            "GET", _revision_path(revision), params=params, timeout=_wait_timeout(timeout)
        )
        return parse(RevisionOut, response, "GET", _revision_path(revision))

    # -- plumbing

    async def _call(self, model: type[Model], method: str, path: str, **kwargs: Any) -> Model:
        return parse(model, await self._request(method, path, **kwargs), method, path)

    async def _list(
        self,
        model: type[Model],
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        page_size: int | None = None,
    ) -> list[Model]:
        """See ``Client._list``; a next page's URL is relative to the server's."""
        if page_size is not None:
            params = {**(params or {}), "limit": page_size}
        items: list[Model] = []
        seen: set[str] = set()
        response = await self._request("GET", path, params=params)
        while True:
            items += parse_list(model, response, "GET", path)
            following = next_page(response, seen)
            if following is None:
                return items
            response = await self._request("GET", following)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        url = path if "://" in path else self.base_url + path
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            response = await self._http.request(
                method,
                url,
                json=json,
                params=dict(params) if params else None,
                headers=self._headers,
                **extra,
            )
        except httpx.UnsupportedProtocol:
            raise ClientError(
                f"invalid server URL {self.base_url!r}: use http:// or https://"
            ) from None
        except httpx.InvalidURL as exc:
            raise ClientError(f"invalid server URL {self.base_url!r}: {exc}") from None
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from None
        if response.status_code >= 400:
            raise ApiError.of(response)
        return response

    async def close(self) -> None:
        if self._own_http:
            await self._http.aclose()


def _revision(response: httpx.Response) -> int | None:
    value = response.headers.get(REVISION_HEADER)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
