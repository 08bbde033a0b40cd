"""REST API bodies (docs/design.md, "REST contract"). Requests validate; responses only describe.

Every request field is checked by its ``l2pop.model.validation`` parser (a ``before``
validator), and its published JSON Schema is built from the same module's constants: the
OpenAPI contract states the rule the server applies, never a stricter one
(docs/adr/0013-input-contract.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator

from l2pop.model import ArpSuppression, Encap, Host, InvalidField, Network, Port, PortStatus
from l2pop.model import validation as v


def _check(fn: Any, value: Any, field: str) -> Any:
    """Run a model parser and turn its ``InvalidField`` into the ValueError pydantic expects."""
    try:
        return fn(value, field)
    except InvalidField as exc:
        raise ValueError(exc.message.removeprefix(f"{field}: ")) from None


parse_uuid = v.parse_uuid  # where it used to live

# -- JSON Schema of each rule, from the model's constants ---------------------------------

NAME_SCHEMA: dict[str, Any] = {
    "type": "string",
    "maxLength": v.NAME_MAX_LENGTH,
    "pattern": v.NAME_PATTERN,
    "description": f"display name: at most {v.NAME_MAX_LENGTH} characters, no control "
    "characters (C0, DEL, C1) and no lone surrogates",
}
HOST_NAME_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": v.HOST_NAME_MAX_LENGTH,
    "pattern": v.HOST_NAME_PATTERN,
    "description": "host name: 1-63 letters, digits, '.', '_' or '-', starting with a letter "
    "or digit",
}
MAC_SCHEMA: dict[str, Any] = {
    "type": "string",
    "maxLength": v.MAC_MAX_LENGTH,
    "pattern": v.MAC_PATTERN,
    "description": "unicast MAC, not all zeros: 'fa:16:3e:00:00:01', 'fa-16-3e-00-00-01' or "
    "'fa163e000001', any case; answered lower-case with colons",
}
UUID_SCHEMA: dict[str, Any] = {
    "type": "string",
    "format": "uuid",
    "minLength": v.UUID_LENGTH,
    "maxLength": v.UUID_LENGTH,
    "pattern": v.UUID_PATTERN,
    "description": "UUID in 8-4-4-4-12 form",
}
PORT_IP_SCHEMA: dict[str, Any] = {
    "type": "string",
    "maxLength": v.IP_MAX_LENGTH,
    "pattern": v.IP_PATTERN,
    "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
    "description": "IPv4 or IPv6 host address without zone id; not IPv4-mapped, unspecified, "
    "multicast, loopback, link-local or broadcast (refused with 422)",
}
FIXED_IPS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": PORT_IP_SCHEMA,
    "maxItems": v.MAX_FIXED_IPS,
    "uniqueItems": True,
    "description": "distinct addresses (two spellings of one address are refused with 422)",
}
VTEP_IP_SCHEMA: dict[str, Any] = {
    "type": "string",
    "format": "ipv4",
    "maxLength": v.IPV4_MAX_LENGTH,
    "pattern": v.VTEP_IP_PATTERN,
    "description": "unicast IPv4 address in 1.0.0.0-223.255.255.255, not loopback (127/8) or "
    "link-local (169.254/16)",
}
VNI_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": v.VNI_MIN, "maximum": v.VNI_MAX}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


# -- path and query parameters ------------------------------------------------------------


def _network_id(value: object) -> str:
    return str(_check(v.parse_uuid, value, "network_id"))


def _port_id(value: object) -> str:
    return str(_check(v.parse_uuid, value, "port_id"))


def _host_name(value: object) -> str:
    return str(_check(v.parse_host_name, value, "name"))


def _host_filter(value: object) -> str:
    return str(_check(v.parse_host_name, value, "host"))


#: ``{network_id}`` in a path, and the ``network_id`` filter: a canonical UUID
NetworkId = Annotated[str, BeforeValidator(_network_id), WithJsonSchema(UUID_SCHEMA)]
#: ``{port_id}`` in a path
PortId = Annotated[str, BeforeValidator(_port_id), WithJsonSchema(UUID_SCHEMA)]
#: ``{name}`` of a host in a path
HostName = Annotated[str, BeforeValidator(_host_name), WithJsonSchema(HOST_NAME_SCHEMA)]
#: the ``host`` filter of the ports list
HostFilter = Annotated[str, BeforeValidator(_host_filter), WithJsonSchema(HOST_NAME_SCHEMA)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- networks ---------------------------------------------------------------------------


class _NetworkFields(Request):
    @field_validator("name", mode="before", check_fields=False)
    @classmethod
    def _name(cls, value: object) -> str | None:
        return None if value is None else str(_check(v.parse_name, value, "name"))

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

    @field_validator("encap", mode="before", check_fields=False)
    @classmethod
    def _encap(cls, value: object) -> Encap | None:
        return None if value is None else Encap(_check(v.parse_encap, value, "encap"))


class NetworkCreate(_NetworkFields):
    name: Annotated[str, WithJsonSchema(NAME_SCHEMA)] = ""
    #: allocated (the next free one) when absent or null
    vni: Annotated[int | None, WithJsonSchema(_nullable(VNI_SCHEMA))] = None
    arp_suppression: ArpSuppression = ArpSuppression.NEIGH_SUPPRESS
    #: how the network crosses the underlay (the VNI is the GRE key); fixed for its life
    encap: Encap = Encap.VXLAN


class NetworkUpdate(_NetworkFields):
    """Only the fields present change; ``null`` leaves a field as it is. ``vni`` and
    ``encap`` are accepted only to say plainly they cannot change (422 unless it is the
    network's own value)."""

    name: Annotated[str | None, WithJsonSchema(_nullable(NAME_SCHEMA))] = None
    vni: Annotated[int | None, WithJsonSchema(_nullable(VNI_SCHEMA))] = None
    arp_suppression: ArpSuppression | None = None
    encap: Encap | None = None


class NetworkOut(Response):
    id: str
    name: str
    vni: int
    arp_suppression: ArpSuppression
    created_at: datetime
    revision: int
    encap: Encap = Encap.VXLAN

    @classmethod
    def of(cls, network: Network) -> NetworkOut:
        return cls(
            id=network.id,
            name=network.name,
            vni=network.vni,
            arp_suppression=network.arp_suppression,
            created_at=network.created_at,
            revision=network.revision,
            encap=network.encap,
        )


# -- ports ------------------------------------------------------------------------------


class _PortFields(Request):
    @field_validator("name", mode="before", check_fields=False)
    @classmethod
    def _name(cls, value: object) -> str | None:
        return None if value is None else str(_check(v.parse_name, value, "name"))

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
    network_id: Annotated[str, WithJsonSchema(UUID_SCHEMA)]
    fixed_ips: Annotated[list[str], WithJsonSchema(FIXED_IPS_SCHEMA)] = Field(default_factory=list)
    #: generated (``fa:16:3e`` prefix) when absent or null
    mac: Annotated[str | None, WithJsonSchema(_nullable(MAC_SCHEMA))] = None
    name: Annotated[str, WithJsonSchema(NAME_SCHEMA)] = ""
    #: a registered host (422 otherwise); unbound when absent or null
    host: Annotated[str | None, WithJsonSchema(_nullable(HOST_NAME_SCHEMA))] = None

    @field_validator("network_id", mode="before")
    @classmethod
    def _network_id(cls, value: object) -> str:
        return str(_check(v.parse_uuid, value, "network_id"))


class PortUpdate(_PortFields):
    """Only the fields present change; ``null`` leaves a field as it is, except
    ``{"host": null}``, which unbinds the port."""

    name: Annotated[str | None, WithJsonSchema(_nullable(NAME_SCHEMA))] = None
    fixed_ips: Annotated[list[str] | None, WithJsonSchema(_nullable(FIXED_IPS_SCHEMA))] = None
    mac: Annotated[str | None, WithJsonSchema(_nullable(MAC_SCHEMA))] = None
    host: Annotated[str | None, WithJsonSchema(_nullable(HOST_NAME_SCHEMA))] = None

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
    name: Annotated[str, WithJsonSchema(HOST_NAME_SCHEMA)]
    vtep_ip: Annotated[str, WithJsonSchema(VTEP_IP_SCHEMA)]

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: object) -> str:
        return str(_check(v.parse_host_name, value, "name"))

    @field_validator("vtep_ip", mode="before")
    @classmethod
    def _vtep(cls, value: object) -> str:
        return str(_check(v.parse_vtep_ip, value, "vtep_ip"))


class HostError(Response):
    """A network the host's agent reports it cannot program (from its last ack; the agent
    retries it with backoff): the entry the datapath refused, when known, and its message."""

    network_id: str
    vni: int
    entry: str | None = None
    message: str
    attempts: int = 1


class HostOut(Response):
    name: str
    vtep_ip: str
    connected: bool = False
    last_seen: datetime | None = None
    applied_revision: int | None = None
    in_sync: bool = False
    created_at: datetime | None = None
    #: networks the connected agent fails to program (empty when none, or not connected)
    errors: list[HostError] = []
    #: the datapath the host's agent last announced (null: never connected, or unknown)
    datapath: str | None = None
    #: the encapsulations it announced it carries, sorted (null: no agent ever connected)
    encaps: list[Encap] | None = None
    #: the server replica holding the agent's session (null: not connected)
    replica: str | None = None

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
            datapath=host.datapath,
            encaps=None if host.encaps is None else sorted(host.encaps),
        )


class HostCreated(HostOut):
    """Answer to creating a host: the agent token appears here once and never again."""

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
    encap: Encap = Encap.VXLAN
    flood: list[str]
    fdb: list[FdbEntry]
    neigh: list[NeighEntry]


class HostFdb(Response):
    host: str
    revision: int
    digest: str
    networks: list[NetworkFdb]


# -- revisions ---------------------------------------------------------------------------


class RevisionHost(Response):
    """One host a revision had to reach: what its agent applied, and why it is behind."""

    name: str
    connected: bool
    applied_revision: int | None = None
    #: null when it applied the revision; else why not (``not connected``, ``applied 40 of 42``)
    behind: str | None = None


class RevisionOut(Response):
    """How far a revision reached (``GET /v1/revisions/{revision}``, docs/adr/0024).

    ``batch_revision`` is the revision of the hub's batch that carried it to the hosts (what
    they ack; null when this server does not remember the batch, or has not read it yet);
    ``hosts`` are the hosts that batch had something to tell (every member of a network when
    the batch is not remembered); ``behind`` names those that have not applied it."""

    revision: int
    #: the revision this server's view of the store (its hub) has reached
    server_revision: int
    batch_revision: int | None = None
    hosts: list[RevisionHost] = []
    behind: list[str] = []
    complete: bool
    waited_ms: int


# -- errors -----------------------------------------------------------------------------


#: every ``error.code`` the server answers, by HTTP status
ERROR_CODES: dict[str, str] = {
    "bad_request": "400: the request is refused before it is read (e.g. its Host header)",
    "unauthorized": "401: no token, or one that is neither the admin's nor a host's",
    "forbidden": "403: the token may not do this (an agent token acts only for its host)",
    "not_found": "404: no such network, port or host",
    "method_not_allowed": "405: the path exists but not with this method",
    "timeout": "408: the request body did not arrive in time; 504: a wait ran out",
    "conflict": "409: well formed, but it collides with the current state",
    "too_large": "413: the request body is too large",
    "invalid": "422: malformed input; `field` names it (`body` for the body as a whole)",
    "unavailable": "503: the store cannot be reached; retry later",
    "error": "500: an internal error (logged with its traceback)",
}
ErrorCode = Literal[
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "timeout",
    "conflict",
    "too_large",
    "invalid",
    "unavailable",
    "error",
]


#: the code an error answer carries for its HTTP status when nothing more specific applies
CODE_OF_STATUS: dict[int, ErrorCode] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    500: "error",
    503: "unavailable",
    504: "timeout",
}


class ErrorDetail(Response):
    code: ErrorCode
    message: str
    #: the request field, path or query parameter at fault (``fixed_ips[1]``, ``body``)
    field: str | None = None


class ErrorBody(Response):
    """The body of every error answer: ``{"error": {"code", "message", "field"?}}``."""

    error: ErrorDetail
