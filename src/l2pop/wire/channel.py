"""Messages of the agent channel (``l2pop.client.CHANNEL_PATH``, JSON text frames over a
WebSocket).

    agent -> server   hello    who I am (host, vtep_ip) and what I carry (datapath, encaps);
                               the token rides in the upgrade; ``resume_revision``: the
                               revision my tables are at, if I can resume from it
                      ack      I have applied everything up to ``revision``; my tables hash to
                               ``digest``; ``errors`` names the networks I failed to program
                               (bounded). Also sent as the agent's heartbeat.
                      resync   I lost track (gap, digest mismatch): send me a snapshot
    server -> agent   snapshot the host's whole state at ``revision``
                      resume   instead of a snapshot, to an agent that offered to resume from
                               ``prev_revision``: the whole tables of every network that changed
                               since then (``networks``), the networks it no longer holds
                               (``networks_left``) and all of its local ports
                      delta    what changed for this host at ``revision``; ``prev_revision`` is
                               the revision of the message sent before it on this session, so a
                               lost message is a visible gap
                      heartbeat the server's view: ``revision`` and ``digest`` of what the
                               host must hold now; a mismatch means the agent must resync
                      error    why the session is refused; the server closes it

Every server message carries ``digest``, the hash the agent's tables must have once the
message is applied (``l2pop.model.digests``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from l2pop.model import ArpSuppression, Encap, NetworkDelta, NetworkTables, PortStatus
from l2pop.model.digests import DIGEST_PATTERN

PROTOCOL_VERSION = 1


class CloseCode(enum.IntEnum):
    """WebSocket close codes of the channel, sent by the server, read by the agent."""

    REPLACED = 4000  # a newer session of the same host took over
    REFUSED = 4401  # authentication or hello refused (an ``ErrorMsg`` says why)
    HOST_GONE = 4404  # the host was deleted
    TRY_AGAIN = 1013  # RFC 6455 "try again later": the server cannot take the session now
    UNSUPPORTED = 1003  # RFC 6455: a binary frame; the channel is JSON text
    POLICY = 1008  # RFC 6455: a message the protocol does not allow


class ErrorCode(enum.StrEnum):
    """``ErrorMsg.code`` values the server sends before it closes a session."""

    UNAUTHORIZED = "unauthorized"
    PROTOCOL = "protocol"
    UNSUPPORTED_VERSION = "unsupported_version"
    HOST_MISMATCH = "host_mismatch"
    VTEP_MISMATCH = "vtep_mismatch"
    TOO_MANY_SESSIONS = "too_many_sessions"
    CLOSED = "closed"


#: revisions are BIGINT in the store
REVISION_MAX = 2**63 - 1
HOST_NAME_MAX = 63
ADDRESS_TEXT_MAX = 45


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


#: (mac, vtep) for FDB entries, (ip, mac) for neighbour entries. Pairs, not objects: a big
#: host's snapshot holds thousands of entries, and pairs cost a tenth of the CPU to encode and
#: to validate (measured: 0.4 ms vs 18 ms to build, 1.6 ms vs 16 ms to parse 2,700 entries).
Pair = tuple[str, str]


def _pairs(mapping: Mapping[str, str]) -> list[Pair]:
    return sorted(mapping.items())


class NetworkTablesMsg(Message):
    network_id: str
    vni: int
    arp_suppression: ArpSuppression
    flood: list[str] = []
    fdb: list[Pair] = []  # (mac, vtep)
    neigh: list[Pair] = []  # (ip, mac)
    #: absent from servers older than the field: their networks are all VXLAN
    encap: Encap = Encap.VXLAN

    @classmethod
    def of(cls, t: NetworkTables) -> NetworkTablesMsg:
        # built from the model's own values: no validation needed on the way out
        return cls.model_construct(
            network_id=t.network_id,
            vni=t.vni,
            arp_suppression=t.arp_suppression,
            flood=sorted(t.flood),
            fdb=_pairs(t.fdb),
            neigh=_pairs(t.neigh),
            encap=t.encap,
        )

    def tables(self) -> NetworkTables:
        return NetworkTables(
            self.network_id,
            self.vni,
            self.arp_suppression,
            frozenset(self.flood),
            dict(self.fdb),
            dict(self.neigh),
            self.encap,
        )


class NetworkDeltaMsg(Message):
    network_id: str
    vni: int
    arp_suppression: ArpSuppression
    leave: bool = False
    flood_add: list[str] = []
    flood_remove: list[str] = []
    fdb_add: list[Pair] = []  # (mac, vtep)
    fdb_remove: list[Pair] = []  # (mac, the vtep it must still point at)
    neigh_add: list[Pair] = []  # (ip, mac)
    neigh_remove: list[Pair] = []  # (ip, the mac it must still resolve to)
    encap: Encap = Encap.VXLAN

    @classmethod
    def of(cls, d: NetworkDelta) -> NetworkDeltaMsg:
        return cls.model_construct(
            network_id=d.network_id,
            vni=d.vni,
            arp_suppression=d.arp_suppression,
            leave=d.leave,
            flood_add=sorted(d.flood_add),
            flood_remove=sorted(d.flood_remove),
            fdb_add=_pairs(d.fdb_add),
            fdb_remove=_pairs(d.fdb_remove),
            neigh_add=_pairs(d.neigh_add),
            neigh_remove=_pairs(d.neigh_remove),
            encap=d.encap,
        )

    def delta(self) -> NetworkDelta:
        return NetworkDelta(
            self.network_id,
            self.vni,
            self.arp_suppression,
            leave=self.leave,
            flood_add=frozenset(self.flood_add),
            flood_remove=frozenset(self.flood_remove),
            fdb_add=dict(self.fdb_add),
            fdb_remove=dict(self.fdb_remove),
            neigh_add=dict(self.neigh_add),
            neigh_remove=dict(self.neigh_remove),
            encap=self.encap,
        )


class LocalPort(Message):
    """A port bound to the agent's own host: what it must wire (``tap`` + id[:11])."""

    id: str
    network_id: str
    vni: int
    mac: str
    fixed_ips: list[str] = []
    status: PortStatus


# -- agent -> server --------------------------------------------------------------------


DATAPATH_NAME_MAX = 32
ENCAPS_MAX = 8


def _vxlan_only() -> list[Encap]:
    return [Encap.VXLAN]


class Hello(Message):
    """The agent's first message. ``datapath`` and ``encaps`` say what it carries; both are
    optional within protocol 1, and their defaults (datapath unknown, VXLAN only) describe an
    agent older than them, which could only carry VXLAN (docs/adr/0017-network-encap.md)."""

    type: Literal["hello"] = "hello"
    host: str = Field(max_length=HOST_NAME_MAX)
    vtep_ip: str = Field(max_length=ADDRESS_TEXT_MAX)
    version: int = Field(default=PROTOCOL_VERSION, ge=0, le=2**31 - 1)
    #: the agent's datapath (``Datapath.name``); None: not said
    datapath: str | None = Field(default=None, max_length=DATAPATH_NAME_MAX)
    #: the encapsulations the datapath carries (``Datapath.encaps``); values this side does
    #: not know (a newer agent's) are dropped, since no network here can have them
    encaps: list[Encap] = Field(default_factory=_vxlan_only, max_length=ENCAPS_MAX)

    #: the revision the agent's tables are at, offered for a resume (absent: it has none it
    #: trusts, e.g. after a start or a gap; the server then sends a snapshot)
    resume_revision: int | None = Field(default=None, ge=0, le=REVISION_MAX)

    @field_validator("encaps", mode="before")
    @classmethod
    def _known_encaps(cls, value: Any) -> Any:
        if isinstance(value, list):
            known = {e.value for e in Encap}
            return [e for e in value if not isinstance(e, str) or e in known]
        return value


#: bounds of the errors an ack may carry; the server refuses an ack beyond them as malformed
ACK_ERRORS_MAX = 32
ACK_ERROR_TEXT_MAX = 200
ACK_NETWORK_ID_MAX = 64


class AckError(Message):
    """A network the agent failed to program: the entry the datapath refused, when it named
    one (``"fdb MAC -> VTEP"``, ``"device vxlan-V"``), what it said, and how many attempts in
    a row failed. The agent retries it with backoff; its tables are not in the ack's digest."""

    network_id: str = Field(min_length=1, max_length=ACK_NETWORK_ID_MAX)
    vni: int = Field(ge=0, le=2**24 - 1)
    entry: str | None = Field(default=None, max_length=ACK_ERROR_TEXT_MAX)
    message: str = Field(max_length=ACK_ERROR_TEXT_MAX)
    attempts: int = Field(default=1, ge=1, le=2**31 - 1)


class Ack(Message):
    type: Literal["ack"] = "ack"
    #: never ahead of what this session was sent (checked by the server's channel)
    revision: int = Field(ge=0, le=REVISION_MAX)
    digest: str = Field(pattern=DIGEST_PATTERN)
    #: networks that failed to program (absent from agents older than this field)
    errors: list[AckError] = Field(default_factory=list, max_length=ACK_ERRORS_MAX)


class Resync(Message):
    type: Literal["resync"] = "resync"
    reason: str = Field(default="", max_length=200)


AgentMessage = Annotated[Hello | Ack | Resync, Field(discriminator="type")]
agent_message = TypeAdapter(AgentMessage)

# -- server -> agent --------------------------------------------------------------------


class Snapshot(Message):
    type: Literal["snapshot"] = "snapshot"
    revision: int
    digest: str
    networks: list[NetworkTablesMsg] = []
    ports: list[LocalPort] = []


class Resume(Message):
    """The first message of a session whose agent offered ``prev_revision`` and whose server
    still knows what changed since then (docs/adr/0022-sessions-across-replicas.md): every
    network that changed since ``prev_revision`` and that the host must hold comes whole in
    ``networks`` (the agent diffs it against what it holds and programs only the
    difference); ``networks_left`` are networks that changed and that the host no longer
    holds; ``ports`` is the host's whole list of local ports. Networks in neither list are as
    the agent has them. ``digest`` is what the host's tables hash to at ``revision``."""

    type: Literal["resume"] = "resume"
    revision: int
    prev_revision: int
    digest: str
    networks: list[NetworkTablesMsg] = []
    networks_left: list[str] = []
    ports: list[LocalPort] = []


class Delta(Message):
    type: Literal["delta"] = "delta"
    revision: int
    prev_revision: int
    digest: str
    networks: list[NetworkDeltaMsg] = []
    ports: list[LocalPort] = []
    ports_removed: list[str] = []


class Heartbeat(Message):
    type: Literal["heartbeat"] = "heartbeat"
    revision: int
    digest: str


class ErrorMsg(Message):
    type: Literal["error"] = "error"
    code: str
    message: str


ServerMessage = Annotated[
    Snapshot | Resume | Delta | Heartbeat | ErrorMsg, Field(discriminator="type")
]
server_message = TypeAdapter(ServerMessage)
