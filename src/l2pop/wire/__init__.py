"""Messages shared by the server, the agent and the CLI: the REST models (pydantic, here),
the channel's messages (msgspec Structs, ``l2pop.wire.channel``).

Field rules come from ``l2pop.model.validation`` so every entry point agrees on what a MAC,
a VNI or an address is. The REST models reject unknown fields (a typo is an error, not a
no-op); the channel's ignore them (a newer peer may add some).

The REST models (``l2pop.wire.api``, re-exported here) are imported on first use of one of
these names, not with the package: the agent imports ``l2pop.wire.channel`` alone and never
builds them (tests/unit/test_agent_imports.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    if name == "api":  # ``l2pop.wire.api`` reached as an attribute of the package
        return importlib.import_module("l2pop.wire.api")
    if name in __all__:
        value = getattr(importlib.import_module("l2pop.wire.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
