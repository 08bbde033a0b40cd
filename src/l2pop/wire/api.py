"""REST API bodies (SPEC.md "REST API"). Requests validate; responses only describe."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from l2pop.model import ArpSuppression, Host, InvalidField, Network, Port, PortStatus
from l2pop.model import validation as v


def _check(fn: Any, value: Any, field: str) -> Any:
    """Run a model parser and turn its ``InvalidField`` into the ValueError pydantic expects."""
    try:
        return fn(value, field)
    except InvalidField as exc:
        raise ValueError(exc.message.removeprefix(f"{field}: ")) from None


def parse_uuid(value: object, field: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise InvalidField(field, f"{value!r} is not a UUID") from None


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- networks ---------------------------------------------------------------------------


class _NetworkFields(Request):
    @field_validator("name", mode="before", check_fields=False)
    @classmethod
    def _name(cls, value: object) -> str:
        return str(_check(v.parse_name, value, "name"))

    @field_validator("vni", mode="before", check_fields=False)
    @classmethod
    def _vni(cls, value: object) -> int | None:
        return None if value is None else int(_check(v.parse_vni, value, "vni"))

    @field_validator("arp_suppression", mode="before", check_fields=False)
    @classmethod
    def _mode(cls, value: object) -> ArpSuppression | None:
        if value is None:
            return None
        return ArpSuppression(_check(v.parse_arp_suppression, value, "arp_suppression"))


class NetworkCreate(_NetworkFields):
    name: str = ""
    vni: int | None = None
    arp_suppression: ArpSuppression = ArpSuppression.NEIGH_SUPPRESS


class NetworkUpdate(_NetworkFields):
    """Only the fields present change. ``vni`` is accepted only to say plainly it cannot."""

    name: str | None = None
    vni: int | None = None
    arp_suppression: ArpSuppression | None = None


class NetworkOut(Response):
    id: str
    name: str
    vni: int
    arp_suppression: ArpSuppression
    created_at: datetime
    revision: int

    @classmethod
    def of(cls, network: Network) -> NetworkOut:
        return cls(
            id=network.id,
            name=network.name,
            vni=network.vni,
            arp_suppression=network.arp_suppression,
            created_at=network.created_at,
            revision=network.revision,
        )


# -- ports ------------------------------------------------------------------------------


class _PortFields(Request):
    @field_validator("name", mode="before", check_fields=False)
    @classmethod
    def _name(cls, value: object) -> str:
        return str(_check(v.parse_name, value, "name"))

    @field_validator("mac", mode="before", check_fields=False)
    @classmethod
    def _mac(cls, value: object) -> str | None:
        return None if value is None else str(_check(v.parse_mac, value, "mac"))

    @field_validator("fixed_ips", mode="before", check_fields=False)
    @classmethod
    def _ips(cls, value: object) -> list[str] | None:
        return None if value is None else list(_check(v.parse_fixed_ips, value, "fixed_ips"))

    @field_validator("host", mode="before", check_fields=False)
    @classmethod
    def _host(cls, value: object) -> str | None:
        return None if value is None else str(_check(v.parse_host_name, value, "host"))


class PortCreate(_PortFields):
    network_id: str
    fixed_ips: list[str] = []
    mac: str | None = None
    name: str = ""
    host: str | None = None

    @field_validator("network_id", mode="before")
    @classmethod
    def _network_id(cls, value: object) -> str:
        return str(_check(parse_uuid, value, "network_id"))


class PortUpdate(_PortFields):
    """Only the fields present change. ``{"host": null}`` unbinds the port."""

    name: str | None = None
    fixed_ips: list[str] | None = None
    mac: str | None = None
    host: str | None = None

    def host_given(self) -> bool:
        return "host" in self.model_fields_set


class PortOut(Response):
    id: str
    network_id: str
    name: str
    mac: str
    fixed_ips: list[str]
    host: str | None
    status: PortStatus
    revision: int
    created_at: datetime | None = None

    @classmethod
    def of(cls, port: Port) -> PortOut:
        return cls(
            id=port.id,
            network_id=port.network_id,
            name=port.name,
            mac=port.mac,
            fixed_ips=list(port.fixed_ips),
            host=port.host,
            status=port.status,
            revision=port.revision,
            created_at=port.created_at,
        )


class PortStatusReport(Request):
    status: Literal["ACTIVE", "DOWN"]


# -- hosts ------------------------------------------------------------------------------


class HostCreate(Request):
    name: str
    vtep_ip: str

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: object) -> str:
        return str(_check(v.parse_host_name, value, "name"))

    @field_validator("vtep_ip", mode="before")
    @classmethod
    def _vtep(cls, value: object) -> str:
        return str(_check(v.parse_vtep_ip, value, "vtep_ip"))


class HostOut(Response):
    name: str
    vtep_ip: str
    connected: bool = False
    last_seen: datetime | None = None
    applied_revision: int | None = None
    in_sync: bool = False
    created_at: datetime | None = None

    @classmethod
    def of(cls, host: Host, *, connected: bool = False, in_sync: bool = False) -> HostOut:
        return cls(
            name=host.name,
            vtep_ip=host.vtep_ip,
            connected=connected,
            last_seen=host.last_seen,
            applied_revision=host.applied_revision,
            in_sync=in_sync,
            created_at=host.created_at,
        )


class HostCreated(HostOut):
    """Answer to ``POST /v1/hosts``: the agent token appears here once and never again."""

    token: str


# -- desired state ----------------------------------------------------------------------


class FdbEntry(Response):
    mac: str
    vtep: str


class NeighEntry(Response):
    ip: str
    mac: str


class NetworkFdb(Response):
    network_id: str
    vni: int
    arp_suppression: ArpSuppression
    flood: list[str]
    fdb: list[FdbEntry]
    neigh: list[NeighEntry]


class HostFdb(Response):
    host: str
    revision: int
    digest: str
    networks: list[NetworkFdb]


# -- errors -----------------------------------------------------------------------------


class ErrorDetail(Response):
    code: Literal["invalid", "not_found", "conflict", "forbidden", "unauthorized", "error"]
    message: str
    field: str | None = None


class ErrorBody(Response):
    error: ErrorDetail
