"""Messages of the agent channel (``/v1/agent``, JSON text frames over a WebSocket).

    agent -> server   hello    who I am (host, vtep_ip); the token rides in the upgrade
                      ack      I have applied everything up to ``revision``; my tables hash to
                               ``digest``. Also sent as the agent's heartbeat.
                      resync   I lost track (gap, digest mismatch): send me a snapshot
    server -> agent   snapshot the host's whole state at ``revision``
                      delta    what changed for this host at ``revision``; ``prev_revision`` is
                               the revision of the message sent before it on this session, so a
                               lost message is a visible gap
                      heartbeat the server's view: ``revision`` and ``digest`` of what the
                               host must hold now; a mismatch means the agent must resync
                      error    why the session is refused; the server closes it

Every server message carries ``digest``, the hash the agent's tables must have once the
message is applied (``l2pop.model.digest``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from l2pop.model import ArpSuppression, NetworkDelta, NetworkTables, PortStatus
from l2pop.wire.api import FdbEntry, NeighEntry

PROTOCOL_VERSION = 1


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class NetworkTablesMsg(Message):
    network_id: str
    vni: int
    arp_suppression: ArpSuppression
    flood: list[str] = []
    fdb: list[FdbEntry] = []
    neigh: list[NeighEntry] = []

    @classmethod
    def of(cls, t: NetworkTables) -> NetworkTablesMsg:
        return cls(
            network_id=t.network_id,
            vni=t.vni,
            arp_suppression=t.arp_suppression,
            flood=sorted(t.flood),
            fdb=[FdbEntry(mac=m, vtep=v) for m, v in sorted(t.fdb.items())],
            neigh=[NeighEntry(ip=i, mac=m) for i, m in sorted(t.neigh.items())],
        )

    def tables(self) -> NetworkTables:
        return NetworkTables(
            self.network_id,
            self.vni,
            self.arp_suppression,
            frozenset(self.flood),
            {e.mac: e.vtep for e in self.fdb},
            {e.ip: e.mac for e in self.neigh},
        )


class NetworkDeltaMsg(Message):
    network_id: str
    vni: int
    arp_suppression: ArpSuppression
    leave: bool = False
    flood_add: list[str] = []
    flood_remove: list[str] = []
    fdb_add: list[FdbEntry] = []
    fdb_remove: list[FdbEntry] = []
    neigh_add: list[NeighEntry] = []
    neigh_remove: list[NeighEntry] = []

    @classmethod
    def of(cls, d: NetworkDelta) -> NetworkDeltaMsg:
        return cls(
            network_id=d.network_id,
            vni=d.vni,
            arp_suppression=d.arp_suppression,
            leave=d.leave,
            flood_add=sorted(d.flood_add),
            flood_remove=sorted(d.flood_remove),
            fdb_add=[FdbEntry(mac=m, vtep=v) for m, v in sorted(d.fdb_add.items())],
            fdb_remove=[FdbEntry(mac=m, vtep=v) for m, v in sorted(d.fdb_remove.items())],
            neigh_add=[NeighEntry(ip=i, mac=m) for i, m in sorted(d.neigh_add.items())],
            neigh_remove=[NeighEntry(ip=i, mac=m) for i, m in sorted(d.neigh_remove.items())],
        )

    def delta(self) -> NetworkDelta:
        return NetworkDelta(
            self.network_id,
            self.vni,
            self.arp_suppression,
            leave=self.leave,
            flood_add=frozenset(self.flood_add),
            flood_remove=frozenset(self.flood_remove),
            fdb_add={e.mac: e.vtep for e in self.fdb_add},
            fdb_remove={e.mac: e.vtep for e in self.fdb_remove},
            neigh_add={e.ip: e.mac for e in self.neigh_add},
            neigh_remove={e.ip: e.mac for e in self.neigh_remove},
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


class Hello(Message):
    type: Literal["hello"] = "hello"
    host: str
    vtep_ip: str
    version: int = PROTOCOL_VERSION


class Ack(Message):
    type: Literal["ack"] = "ack"
    revision: int
    digest: str


class Resync(Message):
    type: Literal["resync"] = "resync"
    reason: str = ""


AgentMessage = Annotated[Hello | Ack | Resync, Field(discriminator="type")]
agent_message = TypeAdapter(AgentMessage)

# -- server -> agent --------------------------------------------------------------------


class Snapshot(Message):
    type: Literal["snapshot"] = "snapshot"
    revision: int
    digest: str
    networks: list[NetworkTablesMsg] = []
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


ServerMessage = Annotated[Snapshot | Delta | Heartbeat | ErrorMsg, Field(discriminator="type")]
server_message = TypeAdapter(ServerMessage)
