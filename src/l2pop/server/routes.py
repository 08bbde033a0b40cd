"""REST routes under ``/v1`` (docs/design.md, "REST contract").

Thin: parse, authorise, call a use-case.

Every path and query parameter is typed with its ``l2pop.wire`` rule (ids are canonical
UUIDs, host names follow the host-name rule), so a malformed one is 422 naming it, before
any store lookup; a query parameter the operation does not declare is 422 too. Each
operation documents every status it can answer, all with the ``ErrorBody`` shape.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from msgspec import structs
from pydantic import BaseModel, Field, TypeAdapter

from l2pop.model import Host, InvalidField, NotFound, PortStatus, canonical, digest
from l2pop.server import usecases
from l2pop.server.auth import Caller, require_admin, require_admin_or_host, require_agent
from l2pop.server.channel import Channel
from l2pop.server.desired import host_tables
from l2pop.server.errors import RETRY_AFTER_SECONDS, error_response
from l2pop.server.waits import MAX_WAIT_S, TooManyWaits, WaitResult, Waits
from l2pop.store import Store
from l2pop.wire import (
    ErrorBody,
    HostCreate,
    HostCreated,
    HostFdb,
    HostOut,
    NetworkCreate,
    NetworkOut,
    NetworkUpdate,
    PortCreate,
    PortOut,
    PortStatusReport,
    PortUpdate,
)
from l2pop.wire.api import (
    HostError,
    HostFilter,
    HostName,
    NetworkFdb,
    NetworkId,
    PortId,
    RevisionHost,
    RevisionOut,
)
from l2pop.wire.channel import REVISION_MAX

# -- the statuses each operation documents ------------------------------------------------

_STATUS_TEXT = {
    400: "Refused before it is read: a Host header the server does not answer to",
    401: "No bearer token, or one that is neither the admin token nor a host's",
    403: "The token may not do this (an agent token acts only for its own host)",
    404: "No such network, port or host",
    408: "The request body did not arrive in time",
    409: "Well formed, but it collides with the current state",
    413: "The request body is too large",
    422: "Malformed input: `error.field` names the body field, path or query parameter",
    503: "The store is unavailable (or, for a wait, too many waits are under way); retry "
    "after the `Retry-After` seconds",
    504: "The wait ran out before every host applied the revision: `error.message` names "
    "the hosts behind and why",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of an operation: every one carries ``ErrorBody``."""
    return {s: {"model": ErrorBody, "description": _STATUS_TEXT[s]} for s in statuses}


_ALWAYS = (400, 401, 403, 422, 503)  # every /v1 operation: Host, token, parameters, store
_BODY = (408, 413)  # operations with a request body
READ = error_responses(*_ALWAYS)
#: list operations: a page, and the next one named in a Link header (see page_response)
LIST: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One page, at most `limit` items",
        "headers": {
            "Link": {
                "description": 'When the page is full: `<URL>; rel="next"`, the next page',
                "schema": {"type": "string"},
            }
        },
    },
    **READ,
}
READ_ONE = error_responses(*_ALWAYS, 404)
CREATE = error_responses(*_ALWAYS, *_BODY, 409)
CREATE_IN = error_responses(*_ALWAYS, *_BODY, 404, 409)  # refers to another resource by id
UPDATE = error_responses(*_ALWAYS, *_BODY, 404, 409)
DELETE = error_responses(*_ALWAYS, 404, 409)

# -- who may call -------------------------------------------------------------------------

admin_bearer = HTTPBearer(
    scheme_name="adminToken",
    description="The operator's admin token (`--admin-token` / `L2POP_ADMIN_TOKEN`).",
    auto_error=False,
)
agent_bearer = HTTPBearer(
    scheme_name="agentToken",
    description="A host's agent token, answered once by `POST /v1/hosts`.",
    auto_error=False,
)
Credentials = HTTPAuthorizationCredentials | None

#: query parameters of the list operations that are not declared by their signature alone
PAGINATION = frozenset({"limit", "marker"})
LIST_OPERATIONS = frozenset({"list_networks", "list_ports", "list_hosts"})
_known_query: dict[int, frozenset[str]] = {}


def known_query(route: APIRoute) -> frozenset[str]:
    """The query parameters ``route`` takes: those it declares, plus pagination on lists."""
    known = _known_query.get(id(route))
    if known is None:
        declared: set[str] = set()
        todo: list[Dependant] = [route.dependant]
        while todo:
            dependant = todo.pop()
            declared.update(p.alias for p in dependant.query_params)
            todo.extend(dependant.dependencies)
        extra = PAGINATION if route.name in LIST_OPERATIONS else frozenset()
        known = _known_query[id(route)] = frozenset(declared) | extra
    return known


def refuse_unknown_query(request: Request) -> None:
    """422 naming a query parameter the operation does not take (``?network_id[$ne]=x``
    must not list every port) or one given twice (which of the two would apply?)."""
    route = request.scope.get("route")
    known = known_query(route) if isinstance(route, APIRoute) else frozenset()
    seen: set[str] = set()
    for key, _ in request.query_params.multi_items():
        if key not in known:
            raise InvalidField(key, "is not a query parameter of this operation")
        if key in seen:
            raise InvalidField(key, "is given more than once")
        seen.add(key)


def admin(request: Request, _: Annotated[Credentials, Depends(admin_bearer)]) -> Caller:
    caller = require_admin(request)
    refuse_unknown_query(request)  # after authentication: 401/403 come first
    return caller


def agent(request: Request, _: Annotated[Credentials, Depends(agent_bearer)]) -> Host:
    host = require_agent(request)
    refuse_unknown_query(request)
    return host


def admin_or_host(
    request: Request,
    _a: Annotated[Credentials, Depends(admin_bearer)],
    _h: Annotated[Credentials, Depends(agent_bearer)],
) -> Caller:
    # the raw path value: authorisation comes before the name is validated (an agent token
    # is refused for any name but its host's, well formed or not)
    caller = require_admin_or_host(request, str(request.path_params.get("name", "")))
    refuse_unknown_query(request)
    return caller


# -- pages ----------------------------------------------------------------------------------

#: items per page of a list operation, at most and by default: one call never holds a
#: worker for long, whatever the size of the store (docs/adr/0015-bounded-api-work.md)
PAGE_MAX = 1000
MARKER_TEXT = "the last item of the previous page (its id, or name for hosts)"
Limit = Annotated[int, Query(ge=1, le=PAGE_MAX, description="items per page")]


def page_response(request: Request, items: list[Any], keys: list[str], limit: int) -> Response:
    """A page of a list operation, encoded here, in the worker thread: the event loop only
    writes the bytes (it also serves the agent channel and ``/healthz``, which must not wait
    behind the encoding of a thousand items). A full page may have a next one: it is named
    in ``Link: <URL>; rel="next"`` (RFC 8288), this query with ``marker`` set to the page's
    last item."""
    headers = {}
    if len(keys) >= limit:
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "marker"]
        query.append(("marker", keys[-1]))
        headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    return json_response(ITEMS.dump_json(items), headers)


def json_response(body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(content=body, media_type="application/json", headers=headers)


#: encodes any list of response models (they are already valid: built from the store)
ITEMS: TypeAdapter[list[Any]] = TypeAdapter(list[Any])


#: the path every REST route lives under (the middlewares in ``limits`` and ``metrics`` test it)
API_PREFIX = "/v1"
router = APIRouter(prefix=API_PREFIX)
Admin = Annotated[Caller, Depends(admin)]
Agent = Annotated[Host, Depends(agent)]
AdminOrHost = Annotated[Caller, Depends(admin_or_host)]


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


StoreDep = Annotated[Store, Depends(store_of)]

# -- networks ---------------------------------------------------------------------------


@router.post("/networks", status_code=201, response_model=NetworkOut, responses=CREATE)
def create_network(body: NetworkCreate, store: StoreDep, _: Admin) -> NetworkOut:
    return NetworkOut.of(usecases.create_network(store, body))


@router.get("/networks", response_model=list[NetworkOut], responses=LIST)
def list_networks(
    *,
    request: Request,
    store: StoreDep,
    _: Admin,
    limit: Limit = PAGE_MAX,
    marker: Annotated[NetworkId | None, Query(description=MARKER_TEXT)] = None,
) -> Response:
    with store.read() as tx:
        after = None
        if marker is not None:
            last = tx.get_network(marker)
            if last is None:
                raise InvalidField("marker", f"no network {marker}: start from the first page")
            after = last.vni
        networks = tx.page_networks(limit=limit, after_vni=after)
    out = [NetworkOut.of(n) for n in networks]
    return page_response(request, out, [n.id for n in networks], limit)


@router.get("/networks/{network_id}", response_model=NetworkOut, responses=READ_ONE)
def get_network(network_id: NetworkId, store: StoreDep, _: Admin) -> NetworkOut:
    with store.read() as tx:
        network = tx.get_network(network_id)
    if network is None:
        raise NotFound(f"network {network_id} not found")
    return NetworkOut.of(network)


@router.patch("/networks/{network_id}", response_model=NetworkOut, responses=UPDATE)
def update_network(
    network_id: NetworkId, body: NetworkUpdate, store: StoreDep, _: Admin
) -> NetworkOut:
    return NetworkOut.of(usecases.update_network(store, network_id, body))


@router.delete("/networks/{network_id}", status_code=204, responses=DELETE)
def delete_network(network_id: NetworkId, store: StoreDep, _: Admin) -> Response:
    usecases.delete_network(store, network_id)
    return Response(status_code=204)


# -- ports ------------------------------------------------------------------------------


@router.post("/ports", status_code=201, response_model=PortOut, responses=CREATE_IN)
def create_port(body: PortCreate, store: StoreDep, _: Admin) -> PortOut:
    return PortOut.of(usecases.create_port(store, body))


@router.get("/ports", response_model=list[PortOut], responses=LIST)
def list_ports(
    *,
    store: StoreDep,
    _: Admin,
    request: Request,
    network_id: NetworkId | None = None,
    host: HostFilter | None = None,
    status: Annotated[PortStatus | None, Query()] = None,
    limit: Limit = PAGE_MAX,
    marker: Annotated[PortId | None, Query(description=MARKER_TEXT)] = None,
) -> Response:
    with store.read() as tx:
        ports = tx.page_ports(
            limit=limit, after=marker, network_id=network_id, host=host, status=status
        )
    return page_response(request, [PortOut.of(p) for p in ports], [p.id for p in ports], limit)


@router.get("/ports/{port_id}", response_model=PortOut, responses=READ_ONE)
def get_port(port_id: PortId, store: StoreDep, _: Admin) -> PortOut:
    with store.read() as tx:
        port = tx.get_port(port_id)
    if port is None:
        raise NotFound(f"port {port_id} not found")
    return PortOut.of(port)


@router.patch("/ports/{port_id}", response_model=PortOut, responses=UPDATE)
def update_port(port_id: PortId, body: PortUpdate, store: StoreDep, _: Admin) -> PortOut:
    return PortOut.of(usecases.update_port(store, port_id, body))


@router.delete("/ports/{port_id}", status_code=204, responses=DELETE)
def delete_port(port_id: PortId, store: StoreDep, _: Admin) -> Response:
    usecases.delete_port(store, port_id)
    return Response(status_code=204)


@router.put("/ports/{port_id}/status", response_model=PortOut, responses=UPDATE)
def report_port_status(
    port_id: PortId, body: PortStatusReport, store: StoreDep, host: Agent
) -> PortOut:
    port = usecases.report_port_status(store, port_id, host.name, PortStatus(body.status))
    return PortOut.of(port)


# -- hosts ------------------------------------------------------------------------------


@router.post("/hosts", status_code=201, response_model=HostCreated, responses=CREATE)
def create_host(body: HostCreate, store: StoreDep, _: Admin) -> HostCreated:
    host, token = usecases.create_host(store, body)
    return HostCreated(**HostOut.of(host).model_dump(), token=token)


def host_out(request: Request, host: Host) -> HostOut:
    channel: Channel = request.app.state.channel
    status = channel.host_status(host)
    out = HostOut.of(host, connected=status.connected, in_sync=status.in_sync)
    out.replica = status.replica
    out.applied_revision = status.applied_revision
    out.errors = [HostError(**structs.asdict(e)) for e in channel.host_errors(host.name)]
    return out


@router.get("/hosts", response_model=list[HostOut], responses=LIST)
def list_hosts(
    *,
    request: Request,
    store: StoreDep,
    _: Admin,
    limit: Limit = PAGE_MAX,
    marker: Annotated[HostName | None, Query(description=MARKER_TEXT)] = None,
) -> Response:
    with store.read() as tx:
        hosts = tx.page_hosts(limit=limit, after=marker)
    out = [host_out(request, h) for h in hosts]
    return page_response(request, out, [h.name for h in hosts], limit)


@router.get("/hosts/{name}", response_model=HostOut, responses=READ_ONE)
def get_host(name: HostName, request: Request, store: StoreDep, _: Admin) -> HostOut:
    with store.read() as tx:
        host = tx.get_host(name)
    if host is None:
        raise NotFound(f"host {name} not found")
    return host_out(request, host)


@router.delete("/hosts/{name}", status_code=204, responses=DELETE)
def delete_host(name: HostName, request: Request, store: StoreDep, _: Admin) -> Response:
    usecases.delete_host(store, name)
    request.app.state.tokens.clear()  # now, not when the hub catches up: the token is dead
    return Response(status_code=204)


@router.get("/hosts/{name}/fdb", response_model=HostFdb, responses=READ_ONE)
def host_fdb(name: HostName, store: StoreDep, _: AdminOrHost) -> Response:
    with store.read() as tx:
        revision = tx.revision()
        tables = host_tables(tx, name)
    networks = [NetworkFdb.model_validate(n) for n in canonical(tables)]
    fdb = HostFdb(host=name, revision=revision, digest=digest(tables), networks=networks)
    return json_response(fdb.model_dump_json().encode())


# -- revisions --------------------------------------------------------------------------

WAIT = error_responses(*_ALWAYS, 404, 504)
RevisionNumber = Annotated[
    int, Path(ge=0, le=REVISION_MAX, description="a store revision (`L2pop-Revision`)")
]
WaitSeconds = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_WAIT_S,
        allow_inf_nan=False,
        description=f"seconds to wait for every host to apply it (0: answer at once; at most "
        f"{MAX_WAIT_S:g})",
    ),
]


def revision_out(result: WaitResult) -> RevisionOut:
    hosts = [RevisionHost(**asdict(h)) for h in result.hosts]
    return RevisionOut(
        revision=result.revision,
        server_revision=result.server_revision,
        batch_revision=result.batch_revision,
        hosts=hosts,
        behind=[h.name for h in result.behind],
        complete=result.complete,
        waited_ms=result.waited_ms,
    )


@router.get("/revisions/{revision}", response_model=RevisionOut, responses=WAIT)
async def get_revision(
    revision: RevisionNumber, request: Request, _: Admin, wait: WaitSeconds = 0.0
) -> Response:
    """Which hosts revision ``revision`` had to reach and which applied it; with ``wait``,
    answers once all did (200) or when ``wait`` seconds ran out (504 naming those behind)."""
    waits: Waits = request.app.state.waits
    try:
        result = await waits.wait(revision, wait)
    except TooManyWaits as exc:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return error_response(503, "unavailable", str(exc), headers=headers)
    if wait > 0 and not result.complete:
        message = f"revision {revision} not applied after {wait:g} s: {result.why_not()}"
        return error_response(504, "timeout", message)
    return json_response(revision_out(result).model_dump_json().encode())


# -- trace --------------------------------------------------------------------------------
# Where the time of recent revisions went on this server process, from bounded in-memory
# rings (``Hub.trace``, ``ChannelStats.sent_log``): for an operator, and for the stage-by-stage
# activation benchmark (``l2pop bench activation``). Times are this machine's
# ``time.monotonic()`` (CLOCK_MONOTONIC), comparable with other processes' on the machine.


class TraceCommit(BaseModel):
    revision: int = Field(description="a committed store revision")
    at: float = Field(description="when the hub heard of the commit (monotonic seconds)")


class TraceBatch(BaseModel):
    revision: int = Field(description="the revision the batch moved the hub to")
    prev_revision: int = Field(description="the hub's revision before it")
    read_at: float = Field(description="its change-log read began (monotonic seconds)")
    applied_at: float = Field(description="applied, every message queued (monotonic seconds)")
    hosts: int = Field(description="hosts it had something to tell")


class TraceSent(BaseModel):
    host: str
    type: str = Field(description="delta, snapshot or resume")
    revision: int
    at: float = Field(description="its write to the host's socket began (monotonic seconds)")


class TraceOut(BaseModel):
    now: float = Field(description="this server's monotonic clock when it answered")
    revision: int = Field(description="the hub's revision")
    commits: list[TraceCommit]
    batches: list[TraceBatch]
    sent: list[TraceSent]


TraceAfter = Annotated[
    int,
    Query(ge=0, le=REVISION_MAX, description="only revisions after this one (default: all kept)"),
]


@router.get("/trace", response_model=TraceOut, responses=error_responses(*_ALWAYS))
def get_trace(request: Request, _: Admin, after: TraceAfter = 0) -> Response:
    """The recent revisions this server process handled, each step with its monotonic time:
    commits heard, hub batches (read, applied), messages written to each host's socket.
    Bounded rings: the oldest entries are forgotten (a few thousand of each are kept)."""
    hub = request.app.state.hub
    stats = request.app.state.channel.stats
    out = TraceOut(
        now=time.monotonic(),
        revision=hub.revision,
        commits=[TraceCommit(revision=r, at=t) for r, t in list(hub.trace.commits) if r > after],
        batches=[TraceBatch(**asdict(b)) for b in list(hub.trace.batches) if b.revision > after],
        sent=[
            TraceSent(host=h, type=k, revision=r, at=t)
            for h, k, r, t in list(stats.sent_log)
            if r > after
        ],
    )
    return json_response(out.model_dump_json().encode())
