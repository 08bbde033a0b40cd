"""REST routes under ``/v1`` (SPEC.md "REST API"). Thin: parse, authorise, call a use-case."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from l2pop.model import Host, NotFound, PortStatus, canonical, digest
from l2pop.server import usecases
from l2pop.server.auth import Caller, require_admin, require_admin_or_host, require_agent
from l2pop.server.channel import Channel
from l2pop.server.desired import host_tables
from l2pop.store import Store
from l2pop.wire import (
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
from l2pop.wire.api import NetworkFdb

router = APIRouter(prefix="/v1")
Admin = Annotated[Caller, Depends(require_admin)]


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


StoreDep = Annotated[Store, Depends(store_of)]

# -- networks ---------------------------------------------------------------------------


@router.post("/networks", status_code=201, response_model=NetworkOut)
def create_network(body: NetworkCreate, store: StoreDep, _: Admin) -> NetworkOut:
    return NetworkOut.of(usecases.create_network(store, body))


@router.get("/networks", response_model=list[NetworkOut])
def list_networks(store: StoreDep, _: Admin) -> list[NetworkOut]:
    with store.read() as tx:
        return [NetworkOut.of(n) for n in tx.list_networks()]


@router.get("/networks/{network_id}", response_model=NetworkOut)
def get_network(network_id: str, store: StoreDep, _: Admin) -> NetworkOut:
    with store.read() as tx:
        network = tx.get_network(network_id)
    if network is None:
        raise NotFound(f"network {network_id} not found")
    return NetworkOut.of(network)


@router.patch("/networks/{network_id}", response_model=NetworkOut)
def update_network(network_id: str, body: NetworkUpdate, store: StoreDep, _: Admin) -> NetworkOut:
    return NetworkOut.of(usecases.update_network(store, network_id, body))


@router.delete("/networks/{network_id}", status_code=204)
def delete_network(network_id: str, store: StoreDep, _: Admin) -> Response:
    usecases.delete_network(store, network_id)
    return Response(status_code=204)


# -- ports ------------------------------------------------------------------------------


@router.post("/ports", status_code=201, response_model=PortOut)
def create_port(body: PortCreate, store: StoreDep, _: Admin) -> PortOut:
    return PortOut.of(usecases.create_port(store, body))


@router.get("/ports", response_model=list[PortOut])
def list_ports(
    store: StoreDep,
    _: Admin,
    network_id: str | None = None,
    host: str | None = None,
    status: Annotated[PortStatus | None, Query()] = None,
) -> list[PortOut]:
    with store.read() as tx:
        ports = tx.list_ports(network_id=network_id, host=host, status=status)
    return [PortOut.of(p) for p in ports]


@router.get("/ports/{port_id}", response_model=PortOut)
def get_port(port_id: str, store: StoreDep, _: Admin) -> PortOut:
    with store.read() as tx:
        port = tx.get_port(port_id)
    if port is None:
        raise NotFound(f"port {port_id} not found")
    return PortOut.of(port)


@router.patch("/ports/{port_id}", response_model=PortOut)
def update_port(port_id: str, body: PortUpdate, store: StoreDep, _: Admin) -> PortOut:
    return PortOut.of(usecases.update_port(store, port_id, body))


@router.delete("/ports/{port_id}", status_code=204)
def delete_port(port_id: str, store: StoreDep, _: Admin) -> Response:
    usecases.delete_port(store, port_id)
    return Response(status_code=204)


@router.put("/ports/{port_id}/status", response_model=PortOut)
def report_port_status(
    port_id: str, body: PortStatusReport, request: Request, store: StoreDep
) -> PortOut:
    host = require_agent(request)
    port = usecases.report_port_status(store, port_id, host.name, PortStatus(body.status))
    return PortOut.of(port)


# -- hosts ------------------------------------------------------------------------------


@router.post("/hosts", status_code=201, response_model=HostCreated)
def create_host(body: HostCreate, store: StoreDep, _: Admin) -> HostCreated:
    host, token = usecases.create_host(store, body)
    return HostCreated(**HostOut.of(host).model_dump(), token=token)


def host_out(request: Request, host: Host) -> HostOut:
    channel: Channel = request.app.state.channel
    connected, applied, in_sync = channel.host_status(host)
    out = HostOut.of(host, connected=connected, in_sync=in_sync)
    out.applied_revision = applied
    return out


@router.get("/hosts", response_model=list[HostOut])
def list_hosts(request: Request, store: StoreDep, _: Admin) -> list[HostOut]:
    with store.read() as tx:
        hosts = tx.list_hosts()
    return [host_out(request, h) for h in hosts]


@router.get("/hosts/{name}", response_model=HostOut)
def get_host(name: str, request: Request, store: StoreDep, _: Admin) -> HostOut:
    with store.read() as tx:
        host = tx.get_host(name)
    if host is None:
        raise NotFound(f"host {name} not found")
    return host_out(request, host)


@router.delete("/hosts/{name}", status_code=204)
def delete_host(name: str, request: Request, store: StoreDep, _: Admin) -> Response:
    usecases.delete_host(store, name)
    request.app.state.tokens.clear()  # now, not when the hub catches up: the token is dead
    return Response(status_code=204)


@router.get("/hosts/{name}/fdb", response_model=HostFdb)
def host_fdb(name: str, request: Request, store: StoreDep) -> HostFdb:
    require_admin_or_host(request, name)
    with store.read() as tx:
        revision = tx.revision()
        tables = host_tables(tx, name)
    networks = [NetworkFdb.model_validate(n) for n in canonical(tables)]
    return HostFdb(host=name, revision=revision, digest=digest(tables), networks=networks)
