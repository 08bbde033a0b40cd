"""Messages shared by the server, the agent and the CLI (pydantic models).

Field rules come from ``l2pop.model.validation`` so every entry point agrees on what a MAC,
a VNI or an address is. Models reject unknown fields: a typo is an error, not a no-op.
"""

from l2pop.wire.api import (
    ErrorBody,
    ErrorDetail,
    FdbEntry,
    HostCreate,
    HostCreated,
    HostFdb,
    HostOut,
    NeighEntry,
    NetworkCreate,
    NetworkFdb,
    NetworkOut,
    NetworkUpdate,
    PortCreate,
    PortOut,
    PortStatusReport,
    PortUpdate,
)

__all__ = [
    "ErrorBody",
    "ErrorDetail",
    "FdbEntry",
    "HostCreate",
    "HostCreated",
    "HostFdb",
    "HostOut",
    "NeighEntry",
    "NetworkCreate",
    "NetworkFdb",
    "NetworkOut",
    "NetworkUpdate",
    "PortCreate",
    "PortOut",
    "PortStatusReport",
    "PortUpdate",
]
