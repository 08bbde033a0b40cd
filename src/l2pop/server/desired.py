"""Reading the desired state of hosts out of the store (one read transaction each)."""

from __future__ import annotations

from l2pop.model import Network, NetworkTables, NotFound, host_state
from l2pop.store import ReadTx


def host_tables(tx: ReadTx, host: str) -> dict[str, NetworkTables]:
    """network id -> tables that ``host``'s kernel must hold (``model.host_state`` over the
    networks ``host`` has a port in). Raises NotFound for an unknown host."""
    if tx.get_host(host) is None:
        raise NotFound(f"host {host} not found")
    bound = sorted({p.network_id for p in tx.list_ports(host=host)})
    if not bound:
        return {}
    networks: list[Network] = []
    for network_id in bound:
        network = tx.get_network(network_id)
        if network is not None:  # a port's network always exists; the check is for mypy
            networks.append(network)
    vteps = {h.name: h.vtep_ip for h in tx.list_hosts()}
    return host_state(host, networks, tx.list_ports(network_ids=bound), vteps)
