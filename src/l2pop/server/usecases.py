"""Use-cases: every write the API offers, each one store transaction.

A use-case validates against the current state inside its transaction, builds the new value
with the pure lifecycle rules of ``l2pop.model`` and writes it. The database has the last word
on uniqueness (races end in ``Conflict``); any error rolls the whole transaction back, so a
refused request changes nothing, the revision included.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TypeVar

from l2pop.model import (
    VNI_MAX,
    Conflict,
    Host,
    InvalidField,
    Network,
    NotFound,
    Port,
    PortStatus,
    lifecycle,
)
from l2pop.model.validation import generate_mac
from l2pop.store import Store, WriteTx
from l2pop.wire import HostCreate, NetworkCreate, NetworkUpdate, PortCreate, PortUpdate

T = TypeVar("T")

#: attempts for values the server picks itself (VNI, MAC) when a concurrent writer took them
ALLOCATION_ATTEMPTS = 8


def now() -> datetime:
    return datetime.now(UTC)


def hash_token(token: str) -> str:
    """Agent tokens are 256-bit random strings, so one fast hash is enough to store them."""
    return hashlib.sha256(token.encode()).hexdigest()


def _retry_allocation(field: str, attempt: Callable[[], T]) -> T:
    """Run ``attempt`` again when a value we allocated ourselves lost a race."""
    for _ in range(ALLOCATION_ATTEMPTS - 1):
        try:
            return attempt()
        except Conflict as exc:
            if exc.field != field:
                raise
    return attempt()


# -- networks ---------------------------------------------------------------------------


def _next_free_vni(tx: WriteTx) -> int:
    tx.serialize()  # concurrent creations would all read the same maximum
    used = sorted(n.vni for n in tx.list_networks())
    candidate = (used[-1] + 1) if used else 1
    if candidate <= VNI_MAX:
        return candidate
    expected = 1
    for vni in used:  # the top is taken: take the first gap
        if vni != expected:
            return expected
        expected += 1
    raise Conflict("every VNI is in use", field="vni")


def create_network(store: Store, req: NetworkCreate) -> Network:
    def attempt() -> Network:
        with store.write() as tx:
            network = Network(
                id=str(uuid.uuid4()),
                name=req.name,
                vni=req.vni if req.vni is not None else _next_free_vni(tx),
                arp_suppression=req.arp_suppression,
                created_at=now(),
                revision=0,
                encap=req.encap,
            )
            return tx.insert_network(network)

    if req.vni is not None:
        return attempt()
    return _retry_allocation("vni", attempt)


def _network(tx: WriteTx, network_id: str) -> Network:
    network = tx.get_network(network_id)
    if network is None:
        raise NotFound(f"network {network_id} not found")
    return network


def update_network(store: Store, network_id: str, req: NetworkUpdate) -> Network:
    with store.write() as tx:
        network = _network(tx, network_id)
        if req.vni is not None and req.vni != network.vni:
            raise InvalidField("vni", "cannot change; create a new network and move the ports")
        if req.encap is not None and req.encap != network.encap:
            raise Conflict(
                "encap cannot change; create a new network and move the ports", field="encap"
            )
        changed = replace(
            network,
            name=req.name if req.name is not None else network.name,
            arp_suppression=req.arp_suppression or network.arp_suppression,
        )
        if changed == network:
            return network
        return tx.update_network(changed)


def delete_network(store: Store, network_id: str) -> None:
    with store.write() as tx:
        _network(tx, network_id)
        ports = tx.count_ports(network_id)
        if ports:
            raise Conflict(f"network {network_id} still has {ports} port(s); delete them first")
        tx.delete_network(network_id)


# -- ports ------------------------------------------------------------------------------


def _port(tx: WriteTx, port_id: str) -> Port:
    port = tx.get_port(port_id)
    if port is None:
        raise NotFound(f"port {port_id} not found")
    return port


def _binding(tx: WriteTx, network_id: str, host: str | None) -> Network:
    """The network of a port being bound to ``host`` (None: unbound), read with the host in
    one query: 404 when the network is unknown, 422 when the host is, and ``Conflict`` when
    its agent announced it cannot carry the network's encap. Runs inside the write block,
    so the announcement and the bind are read and written under the same lock."""
    network, found = tx.get_binding(network_id, host)
    if network is None:
        raise NotFound(f"network {network_id} not found")
    if host is not None:
        if found is None:
            raise InvalidField("host", f"no host named {host!r} is registered")
        lifecycle.check_host_carries(found, network)
    return network


def create_port(store: Store, req: PortCreate) -> Port:
    def attempt() -> Port:
        with store.write() as tx:
            _binding(tx, req.network_id, req.host)
            port = Port(
                id=str(uuid.uuid4()),
                network_id=req.network_id,
                name=req.name,
                mac=req.mac or generate_mac(),
                fixed_ips=tuple(req.fixed_ips),
                host=req.host,
                status=lifecycle.initial_status(req.host),
                revision=0,
                created_at=now(),
            )
            return tx.insert_port(port)

    if req.mac is not None:
        return attempt()
    return _retry_allocation("mac", attempt)


def update_port(store: Store, port_id: str, req: PortUpdate) -> Port:
    """Rename, re-address, re-MAC, bind, migrate or unbind a port.

    A fixed-IP change is one update (remote neighbour tables change in place, no
    remove+add); binding to a host that announced it cannot carry the network's encap is
    refused (409, ``lifecycle.check_host_carries``); a host change is a migration: the port
    becomes BUILD on the new host and leaves every remote table until that host's agent
    reports it ACTIVE.
    """
    with store.write() as tx:
        port = _port(tx, port_id)
        changed = port
        if req.name is not None:
            changed = replace(changed, name=req.name)
        if req.mac is not None:
            lifecycle.check_mac_change(port, req.mac)
            changed = replace(changed, mac=req.mac)
        if req.fixed_ips is not None:
            changed = replace(changed, fixed_ips=tuple(req.fixed_ips))
        if req.host_given():
            if req.host != port.host:
                _binding(tx, port.network_id, req.host)
            status = lifecycle.status_after_binding(port, req.host)
            changed = replace(changed, host=req.host, status=status)
        if changed == port:
            return port
        return tx.update_port(changed)


def delete_port(store: Store, port_id: str) -> Port:
    with store.write() as tx:
        _port(tx, port_id)
        return tx.delete_port(port_id)


def report_port_status(store: Store, port_id: str, host: str, status: PortStatus) -> Port:
    """An agent says the device of a port bound to its host is wired (ACTIVE) or gone (DOWN)."""
    with store.write() as tx:
        port = _port(tx, port_id)
        new_status = lifecycle.status_after_report(port, host, status)
        if new_status is port.status:
            return port
        return tx.update_port(replace(port, status=new_status))


# -- hosts ------------------------------------------------------------------------------


def new_token() -> str:
    """A fresh agent token: 256 random bits, URL-safe, and never starting with ``-``, so
    ``l2pop agent --token TOKEN`` (the command ``host create`` prints) always parses."""
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def create_host(store: Store, req: HostCreate) -> tuple[Host, str]:
    """Register a host; returns it with its agent token, which is never stored in clear."""
    token = new_token()
    with store.write() as tx:
        host = tx.insert_host(
            Host(name=req.name, vtep_ip=req.vtep_ip, created_at=now()), hash_token(token)
        )
    return host, token


def delete_host(store: Store, name: str) -> None:
    """Decommission a host: its ports are unbound (DOWN) and leave every remote table."""
    with store.write() as tx:
        if tx.get_host(name) is None:
            raise NotFound(f"host {name} not found")
        for port in tx.list_ports(host=name):
            tx.update_port(replace(port, host=None, status=PortStatus.DOWN))
        tx.delete_host(name)


def authenticate_host(store: Store, token: str) -> Host | None:
    with store.read() as tx:
        return tx.get_host_by_token_hash(hash_token(token))
