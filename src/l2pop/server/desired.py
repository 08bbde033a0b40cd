"""Reading the desired state of hosts out of the store (one read transaction each)."""

from __future__ import annotations

from collections import defaultdict

from l2pop.model import NetworkTables, NotFound, Port, PortStatus, network_view
from l2pop.model.lifecycle import is_member_status
from l2pop.store import ReadTx


def host_tables(tx: ReadTx, host: str) -> dict[str, NetworkTables]:
    """network id -> tables that ``host``'s kernel must hold. Raises NotFound."""
    if tx.get_host(host) is None:
        raise NotFound(f"host {host} not found")
    member_of = sorted(
        {p.network_id for p in tx.list_ports(host=host) if is_member_status(p.status)}
    )
    if not member_of:
        return {}
    vteps = {h.name: h.vtep_ip for h in tx.list_hosts()}
    by_network: dict[str, list[Port]] = defaultdict(list)
    for port in tx.list_ports(network_ids=member_of):
        by_network[port.network_id].append(port)
    out: dict[str, NetworkTables] = {}
    for network_id in member_of:
        network = tx.get_network(network_id)
        if network is None:  # pragma: no cover - a port's network always exists
            continue
        out[network_id] = network_view(network, by_network[network_id], vteps)[host]
    return out


def count_ports_by_status(tx: ReadTx) -> dict[PortStatus, int]:
    counts = dict.fromkeys(PortStatus, 0)
    for port in tx.list_ports():
        counts[port.status] += 1
    return counts
