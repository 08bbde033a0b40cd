"""The pure domain of l2pop: types, validation, lifecycle, membership, desired state, diff,
digests and fan-out.

Standard library only and no I/O, so every rule here is testable in isolation and shared
verbatim by the server, the agent and the simulator.
"""

from l2pop.model.desired import (
    HostState,
    NetworkTables,
    canonical,
    canonical_network,
    desired_state,
    digest,
    host_state,
    network_sum,
    network_view,
    tables_for,
)
from l2pop.model.diff import NetworkDelta, apply_delta, apply_deltas, diff_network, diff_state
from l2pop.model.digests import member_sums
from l2pop.model.errors import Conflict, DomainError, Forbidden, InvalidField, NotFound
from l2pop.model.membership import Membership, RemoteEntry, membership
from l2pop.model.types import (
    VNI_MAX,
    VNI_MIN,
    ArpSuppression,
    Encap,
    Host,
    Network,
    Port,
    PortStatus,
)

__all__ = [
    "VNI_MAX",
    "VNI_MIN",
    "ArpSuppression",
    "Conflict",
    "DomainError",
    "Encap",
    "Forbidden",
    "Host",
    "HostState",
    "InvalidField",
    "Membership",
    "Network",
    "NetworkDelta",
    "NetworkTables",
    "NotFound",
    "Port",
    "PortStatus",
    "RemoteEntry",
    "apply_delta",
    "apply_deltas",
    "canonical",
    "canonical_network",
    "desired_state",
    "diff_network",
    "diff_state",
    "digest",
    "host_state",
    "member_sums",
    "membership",
    "network_sum",
    "network_view",
    "tables_for",
]
