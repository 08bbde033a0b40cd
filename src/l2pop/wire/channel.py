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

The messages are msgspec Structs, frozen, tagged on ``type``. Decoding (``agent_message``,
``hello_message``, ``server_message``: one ``msgspec.json.Decoder`` each, in a
``FrameDecoder``) validates every bound below and ignores unknown fields, so newer peers can
add some; a malformed frame raises ``msgspec.DecodeError`` (bad JSON, nesting too deep) or
its subclass ``msgspec.ValidationError`` (a value out of bounds; the text names its path,
e.g. "Expected `int`, got `str` - at `$.revision`"). Building a Struct in code checks
nothing: the values come from the model, already valid. ``encode`` writes a message as the
wire carries it, the same JSON text (field names, order, defaults) as the pydantic models it
replaced.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, Literal, TypeAlias, TypeVar

import msgspec
from msgspec import Meta

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
#: a digest is 32 hex digits (``DIGEST_PATTERN``); the length bound also refuses what the
#: pattern's ``$`` lets through in Python's ``re``, a trailing newline
DIGEST_TEXT_LEN = 32
INT32_MAX = 2**31 - 1
VNI_MAX = 2**24 - 1


_T = TypeVar("_T")


class FrameDecoder(Generic[_T]):
    """Decodes (and validates) one kind of frame: a ``msgspec.json.Decoder`` whose every
    failure is a ``msgspec.DecodeError``. JSON nested deeper than the interpreter's recursion
    limit makes msgspec raise ``RecursionError`` (a ``RuntimeError``, which the server's
    channel takes for a closed socket); it is malformed input like any other here."""

    __slots__ = ("_decoder",)

    def __init__(self, kind: Any) -> None:
        self._decoder: msgspec.json.Decoder[_T] = msgspec.json.Decoder(kind)

    def decode(self, frame: str | bytes) -> _T:
        """The message ``frame`` holds; raises ``msgspec.DecodeError`` (bad JSON) or its
        subclass ``msgspec.ValidationError`` (a bad value, its path named in the text)."""
        try:
            return self._decoder.decode(frame)
        except RecursionError:
            raise msgspec.DecodeError("JSON nested too deeply") from None


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the channel's Structs: frozen, keyword-only, unknown fields ignored on
    decoding (msgspec's default). The top-level messages add ``tag_field="type"``."""


#: (mac, vtep) for FDB entries, (ip, mac) for neighbour entries. Pairs, not objects: a big
#: host's snapshot holds thousands of entries, and pairs cost a tenth of the CPU to encode and
#: to validate (measured: 0.4 ms vs 18 ms to build, 1.6 ms vs 16 ms to parse 2,700 entries).
#: On the wire a pair is a 2-element JSON array.
Pair = tuple[str, str]


def _pairs(mapping: Mapping[str, str]) -> list[Pair]:
    return sorted(mapping.items())


class NetworkTablesMsg(Message, frozen=True, kw_only=True):
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
        """The wire form of ``t`` (flood sorted, entries as sorted pairs)."""
        return cls(
            network_id=t.network_id,
            vni=t.vni,
            arp_suppression=t.arp_suppression,
            flood=sorted(t.flood),
            fdb=_pairs(t.fdb),
            neigh=_pairs(t.neigh),
            encap=t.encap,
        )

    def tables(self) -> NetworkTables:
        """The model's form of this message."""
        return NetworkTables(
            self.network_id,
            self.vni,
            self.arp_suppression,
            frozenset(self.flood),
            dict(self.fdb),
            dict(self.neigh),
            self.encap,
        )


class NetworkDeltaMsg(Message, frozen=True, kw_only=True):
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
        """The wire form of ``d`` (sets sorted, entries as sorted pairs)."""
        return cls(
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
        """The model's form of this message."""
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


class LocalPort(Message, frozen=True, kw_only=True):
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
_KNOWN_ENCAPS = frozenset(e.value for e in Encap)


def _vxlan_only() -> list[Encap]:
    return [Encap.VXLAN]


class Hello(Message, tag_field="type", tag="hello", frozen=True, kw_only=True):
    """The agent's first message. ``datapath`` and ``encaps`` say what it carries; both are
    optional within protocol 1, and their defaults (datapath unknown, VXLAN only) describe an
    agent older than them, which could only carry VXLAN (docs/adr/0017-network-encap.md).
    ``type`` may be absent when a frame is decoded as a ``Hello`` (``hello_message``)."""

    type: ClassVar[Literal["hello"]] = "hello"
    host: Annotated[str, Meta(max_length=HOST_NAME_MAX)]
    vtep_ip: Annotated[str, Meta(max_length=ADDRESS_TEXT_MAX)]
    version: Annotated[int, Meta(ge=0, le=INT32_MAX)] = PROTOCOL_VERSION
    #: the agent's datapath (``Datapath.name``); None: not said
    datapath: Annotated[str, Meta(max_length=DATAPATH_NAME_MAX)] | None = None
    #: the encapsulations the datapath carries (``Datapath.encaps``), at most ``ENCAPS_MAX``;
    #: values this side does not know (a newer agent's) are dropped, since no network here
    #: can have them. Decoded as strings, then made ``Encap`` values by ``__post_init__``
    #: (msgspec has no "drop unknown enum values"), hence the two annotations.
    if TYPE_CHECKING:
        encaps: list[Encap] = msgspec.field(default_factory=_vxlan_only)
    else:
        encaps: list[str] = msgspec.field(default_factory=_vxlan_only)

    #: the revision the agent's tables are at, offered for a resume (absent: it has none it
    #: trusts, e.g. after a start or a gap; the server then sends a snapshot)
    resume_revision: Annotated[int, Meta(ge=0, le=REVISION_MAX)] | None = None

    def __post_init__(self) -> None:
        # in place: the Struct is frozen, its list is not (run on decoding and on building)
        self.encaps[:] = [Encap(e) for e in self.encaps if e in _KNOWN_ENCAPS]
        if len(self.encaps) > ENCAPS_MAX:
            raise ValueError(f"Expected at most {ENCAPS_MAX} known encaps - at `$.encaps`")


#: bounds of the errors an ack may carry; the server refuses an ack beyond them as malformed
ACK_ERRORS_MAX = 32
ACK_ERROR_TEXT_MAX = 200
ACK_NETWORK_ID_MAX = 64
RESYNC_REASON_MAX = 200


class AckError(Message, frozen=True, kw_only=True):
    """A network the agent failed to program: the entry the datapath refused, when it named
    one (``"fdb MAC -> VTEP"``, ``"device vxlan-V"``), what it said, and how many attempts in
    a row failed. The agent retries it with backoff; its tables are not in the ack's digest."""

    network_id: Annotated[str, Meta(min_length=1, max_length=ACK_NETWORK_ID_MAX)]
    vni: Annotated[int, Meta(ge=0, le=VNI_MAX)]
    entry: Annotated[str, Meta(max_length=ACK_ERROR_TEXT_MAX)] | None = None
    message: Annotated[str, Meta(max_length=ACK_ERROR_TEXT_MAX)]
    attempts: Annotated[int, Meta(ge=1, le=INT32_MAX)] = 1


class Ack(Message, tag_field="type", tag="ack", frozen=True, kw_only=True, omit_defaults=True):
    """``omit_defaults``: an ack without errors is written without ``errors``, exactly what
    agents older than the field sent."""

    type: ClassVar[Literal["ack"]] = "ack"
    #: never ahead of what this session was sent (checked by the server's channel)
    revision: Annotated[int, Meta(ge=0, le=REVISION_MAX)]
    digest: Annotated[
        str, Meta(pattern=DIGEST_PATTERN, min_length=DIGEST_TEXT_LEN, max_length=DIGEST_TEXT_LEN)
    ]
    #: networks that failed to program (absent from agents older than this field)
    errors: Annotated[list[AckError], Meta(max_length=ACK_ERRORS_MAX)] = []


class Resync(Message, tag_field="type", tag="resync", frozen=True, kw_only=True):
    type: ClassVar[Literal["resync"]] = "resync"
    reason: Annotated[str, Meta(max_length=RESYNC_REASON_MAX)] = ""


AgentMessage: TypeAlias = Hello | Ack | Resync
#: decodes (and validates) any agent -> server frame
agent_message: FrameDecoder[AgentMessage] = FrameDecoder(AgentMessage)
#: decodes a session's first frame, which must be a hello (``type`` may be absent)
hello_message: FrameDecoder[Hello] = FrameDecoder(Hello)

# -- server -> agent --------------------------------------------------------------------


class Snapshot(Message, tag_field="type", tag="snapshot", frozen=True, kw_only=True):
    type: ClassVar[Literal["snapshot"]] = "snapshot"
    revision: int
    digest: str
    networks: list[NetworkTablesMsg] = []
    ports: list[LocalPort] = []


class Resume(Message, tag_field="type", tag="resume", frozen=True, kw_only=True):
    """The first message of a session whose agent offered ``prev_revision`` and whose server
    still knows what changed since then (docs/adr/0022-sessions-across-replicas.md): every
    network that changed since ``prev_revision`` and that the host must hold comes whole in
    ``networks`` (the agent diffs it against what it holds and programs only the
    difference); ``networks_left`` are networks that changed and that the host no longer
    holds; ``ports`` is the host's whole list of local ports. Networks in neither list are as
    the agent has them. ``digest`` is what the host's tables hash to at ``revision``."""

    type: ClassVar[Literal["resume"]] = "resume"
    revision: int
    prev_revision: int
    digest: str
    networks: list[NetworkTablesMsg] = []
    networks_left: list[str] = []
    ports: list[LocalPort] = []


class Delta(Message, tag_field="type", tag="delta", frozen=True, kw_only=True):
    type: ClassVar[Literal["delta"]] = "delta"
    revision: int
    prev_revision: int
    digest: str
    networks: list[NetworkDeltaMsg] = []
    ports: list[LocalPort] = []
    ports_removed: list[str] = []


class Heartbeat(Message, tag_field="type", tag="heartbeat", frozen=True, kw_only=True):
    type: ClassVar[Literal["heartbeat"]] = "heartbeat"
    revision: int
    digest: str


class ErrorMsg(Message, tag_field="type", tag="error", frozen=True, kw_only=True):
    type: ClassVar[Literal["error"]] = "error"
    code: str
    message: str


ServerMessage: TypeAlias = Snapshot | Resume | Delta | Heartbeat | ErrorMsg
#: decodes (and validates) any server -> agent frame
server_message: FrameDecoder[ServerMessage] = FrameDecoder(ServerMessage)

# -- encoding ---------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()


def encode(message: Message) -> str:
    """The JSON text of ``message`` as the channel carries it: the tag (``"type"``) first,
    then every field in declaration order, as the pydantic models wrote them, except that a
    ``Hello`` leaves out its None fields (``datapath``, ``resume_revision``) and an ``Ack``
    its empty ``errors``, as agents always have."""
    if isinstance(message, Hello):
        return _encoder.encode(_hello_fields(message)).decode()
    return _encoder.encode(message).decode()


def encode_bytes(message: Message) -> bytes:
    """``encode`` as UTF-8 bytes (what it writes before decoding them to text)."""
    if isinstance(message, Hello):
        return _encoder.encode(_hello_fields(message))
    return _encoder.encode(message)


def _hello_fields(hello: Hello) -> dict[str, object]:
    fields: dict[str, object] = {"type": hello.type}
    for name in hello.__struct_fields__:
        value = getattr(hello, name)
        if value is not None:
            fields[name] = value
    return fields
