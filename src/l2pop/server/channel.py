"""The server side of the agent channel: ``/v1/agent`` (WebSocket, JSON text frames).

A session: the agent authenticates with its host token in the upgrade request and says
``hello`` (host, VTEP). The server answers with a snapshot of the host's state, then ordered
deltas, each stamped with a revision and chained by ``prev_revision``; heartbeats carry the
digest the host must have. The agent acks revision + digest of what it applied.

Memory per session is bounded (docs/design.md, "Agent channel"): a session's outbox holds at most
``queue_limit`` messages. When a slow agent lets it fill, the queued deltas are dropped and
replaced by one snapshot, built when the socket is writable again: the backlog coalesces
into the current state instead of growing. One session per host: a new one replaces the old.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections import Counter, deque
from datetime import UTC, datetime

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from l2pop.model import Host
from l2pop.server.auth import TokenCache, find_host, parse_bearer
from l2pop.server.hub import HostUpdate, Hub
from l2pop.server.sessions import SessionRegistry
from l2pop.store import HostReport, Store
from l2pop.wire.channel import (
    PROTOCOL_VERSION,
    Ack,
    AckError,
    CloseCode,
    Delta,
    ErrorCode,
    ErrorMsg,
    Heartbeat,
    Hello,
    Message,
    NetworkDeltaMsg,
    NetworkTablesMsg,
    Resync,
    Snapshot,
    agent_message,
)

log = logging.getLogger("l2pop.channel")
router = APIRouter()

#: the largest frame an agent may send: hello, ack (with at most 32 bounded errors) and
#: resync are all well under 16 KiB; snapshots go the other way and are not bounded by this
MAX_AGENT_FRAME = 64 * 1024
#: seconds from the upgrade to the agent's hello
HELLO_TIMEOUT = 10.0
#: sessions per host being opened or open at once; one is live, the others replace it or
#: are refused, so more than a few at a time is a misbehaving or hostile client
MAX_SESSIONS_PER_HOST = 4


class ProtocolViolation(Exception):
    """The agent sent something the protocol does not allow; the session is closed."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class Session:
    """One live agent connection and its bounded outbox."""

    def __init__(
        self, host: Host, ws: WebSocket, hub: Hub, queue_limit: int, stats: Counter[str]
    ) -> None:
        self.host = host.name
        self.stats = stats
        self.ws = ws
        self.hub = hub
        self.queue_limit = queue_limit
        self.outbox: deque[Message] = deque()
        self.needs_snapshot = True
        self.prev_revision = 0  # revision of the last message queued on this session
        self.wake = asyncio.Event()
        self.wake.set()
        self.closed = False
        self.acked_revision: int | None = None
        self.acked_digest: str | None = None
        self.errors: list[AckError] = []  # networks the agent failed on, as of its last ack
        self.last_heard = time.monotonic()

    def push(self, message: Message) -> None:
        if self.needs_snapshot or self.closed:
            return  # the snapshot on its way will hold this change
        if len(self.outbox) >= self.queue_limit:
            self.outbox.clear()
            self.needs_snapshot = True
            self.stats["coalesced"] += 1
            log.warning("agent %s is slow: backlog replaced by a snapshot", self.host)
        else:
            self.outbox.append(message)
        self.wake.set()

    def push_update(self, revision: int, update: HostUpdate) -> None:
        if self.needs_snapshot:
            return
        delta = Delta.model_construct(
            type="delta",
            revision=revision,
            prev_revision=self.prev_revision,
            digest=self.hub.digest_of(self.host),
            networks=[NetworkDeltaMsg.of(d) for d in update.deltas],
            ports=sorted(update.ports.values(), key=lambda p: p.id),
            ports_removed=sorted(update.ports_removed),
        )
        self.prev_revision = revision
        self.push(delta)

    def push_heartbeat(self) -> None:
        digest = self.hub.digest_of(self.host)
        self.push(
            Heartbeat.model_construct(type="heartbeat", revision=self.prev_revision, digest=digest)
        )

    def snapshot(self) -> Snapshot:
        hub = self.hub
        self.prev_revision = hub.revision
        return Snapshot.model_construct(
            type="snapshot",
            revision=hub.revision,
            digest=hub.digest_of(self.host),
            networks=[NetworkTablesMsg.of(t) for t in hub.tables_of(self.host).values()],
            ports=hub.local_ports_of(self.host),
        )

    async def send_loop(self) -> None:
        while not self.closed:
            await self.wake.wait()
            self.wake.clear()
            while not self.closed and (self.needs_snapshot or self.outbox):
                if self.needs_snapshot:
                    self.needs_snapshot = False
                    self.outbox.clear()
                    message: Message = self.snapshot()
                else:
                    message = self.outbox.popleft()
                text = message.model_dump_json()
                await self.ws.send_text(text)
                kind = getattr(message, "type", "other")
                self.stats[f"sent_{kind}"] += 1
                self.stats[f"bytes_{kind}"] += len(text)


class Channel:
    """All sessions of one server: fan-out of hub updates, heartbeats, bookkeeping."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        registry: SessionRegistry,
        tokens: TokenCache,
        *,
        queue_limit: int = 256,
        heartbeat_interval: float = 5.0,
        hello_timeout: float = HELLO_TIMEOUT,
    ) -> None:
        self.store = store
        self.hello_timeout = hello_timeout
        self.hub = hub
        self.registry = registry
        self.tokens = tokens
        self.queue_limit = queue_limit
        self.heartbeat_interval = heartbeat_interval
        self.sessions: dict[str, Session] = {}
        self.stats: Counter[str] = Counter()  # sent_<type>, bytes_<type>, coalesced, ...
        self._background: set[asyncio.Task[None]] = set()
        self._reports: dict[str, HostReport] = {}  # host -> last ack not yet saved
        self._opening: Counter[str] = Counter()  # host -> sessions being served
        hub.listeners.append(self.publish)
        hub.host_listeners.append(self.hosts_gone)

    # -- fan-out ----------------------------------------------------------------------------

    def publish(self, revision: int, updates: dict[str, HostUpdate]) -> None:
        for host, update in updates.items():
            session = self.sessions.get(host)
            if session is not None:
                session.push_update(revision, update)

    def hosts_gone(self, hosts: set[str]) -> None:
        for host in hosts:
            session = self.sessions.get(host)
            if session is not None:
                task = asyncio.create_task(
                    self._close(session, CloseCode.HOST_GONE, "host deleted")
                )
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            await self.flush_reports()
            deadline = time.monotonic() - 3 * self.heartbeat_interval
            for session in list(self.sessions.values()):
                if session.last_heard < deadline:
                    log.warning("agent %s silent for 3 heartbeats: closing", session.host)
                    await self._close(session, 1001, "heartbeat timeout")
                else:
                    session.push_heartbeat()

    # -- per-connection -----------------------------------------------------------------

    async def serve(self, ws: WebSocket) -> None:
        await ws.accept()
        host = await self._token_host(ws)
        if host is None:
            return
        if self._opening[host.name] >= MAX_SESSIONS_PER_HOST:
            self.stats["refused_sessions"] += 1
            await self._refuse(
                ws, ErrorCode.TOO_MANY_SESSIONS, f"host {host.name} has enough sessions"
            )
            return
        self._opening[host.name] += 1  # counted while it waits for hello, too
        try:
            if await self._hello(ws, host):
                await self._serve(ws, host)
        finally:
            self._opening[host.name] -= 1
            if not self._opening[host.name]:
                del self._opening[host.name]

    async def _serve(self, ws: WebSocket, host: Host) -> None:
        session = Session(host, ws, self.hub, self.queue_limit, self.stats)
        old = self.sessions.get(host.name)
        if old is not None:
            await self._close(old, CloseCode.REPLACED, "replaced by a new session")
        self.sessions[host.name] = session
        self.registry.opened(host.name)
        log.info("agent %s connected (vtep %s)", host.name, host.vtep_ip)
        sender = asyncio.create_task(session.send_loop())
        try:
            await self._receive_loop(session)
        except ProtocolViolation as exc:
            self.stats["protocol_violations"] += 1
            log.warning("agent %s: %s; closing its session", host.name, exc.reason)
            await self._close(session, exc.code, exc.reason)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            session.closed = True
            session.wake.set()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            if self.sessions.get(host.name) is session:
                del self.sessions[host.name]
            await self.flush_reports()  # the store keeps its last word for host_status
            self.registry.closed(host.name)
            log.info("agent %s disconnected", host.name)

    async def _token_host(self, ws: WebSocket) -> Host | None:
        """The host whose token rides in the upgrade request, or None (refused)."""
        token = parse_bearer(ws.headers.get("authorization"))
        host = None if token is None else await find_host(self.tokens, token)
        if host is None:
            await self._refuse(ws, ErrorCode.UNAUTHORIZED, "missing or invalid host token")
        return host

    async def _hello(self, ws: WebSocket, host: Host) -> bool:
        """Wait (bounded) for the agent's hello and check it names ``host`` and its VTEP."""
        try:
            async with asyncio.timeout(self.hello_timeout):
                hello = Hello.model_validate_json(await receive_text(ws))
        except TimeoutError:
            await self._refuse(ws, ErrorCode.PROTOCOL, f"no hello within {self.hello_timeout:g} s")
            return False
        except (ValidationError, ProtocolViolation, WebSocketDisconnect, RuntimeError):
            await self._refuse(ws, ErrorCode.PROTOCOL, "expected a hello message first")
            return False
        if hello.version != PROTOCOL_VERSION:
            await self._refuse(
                ws,
                ErrorCode.UNSUPPORTED_VERSION,
                f"this server speaks channel protocol {PROTOCOL_VERSION}, the agent "
                f"{hello.version}: run matching versions",
            )
            return False
        if not hmac.compare_digest(hello.host, host.name):
            await self._refuse(
                ws, ErrorCode.HOST_MISMATCH, f"this token belongs to host {host.name}"
            )
            return False
        if hello.vtep_ip != host.vtep_ip:
            await self._refuse(
                ws,
                ErrorCode.VTEP_MISMATCH,
                f"host {host.name} is registered with VTEP {host.vtep_ip}, not {hello.vtep_ip}",
            )
            return False
        return True

    async def _refuse(self, ws: WebSocket, code: str, message: str) -> None:
        log.warning("agent refused: %s", message)
        with contextlib.suppress(Exception):
            await ws.send_text(ErrorMsg(code=code, message=message).model_dump_json())
            await ws.close(CloseCode.REFUSED, message[:120])

    async def _close(self, session: Session, code: int, reason: str) -> None:
        session.closed = True
        session.wake.set()
        with contextlib.suppress(Exception):
            await session.ws.send_text(
                ErrorMsg(code=ErrorCode.CLOSED, message=reason).model_dump_json()
            )
            await session.ws.close(code, reason)

    async def _receive_loop(self, session: Session) -> None:
        while not session.closed:
            text = await receive_text(session.ws)
            session.last_heard = time.monotonic()
            try:
                message = agent_message.validate_json(text)
            except ValidationError as exc:
                raise ProtocolViolation(
                    CloseCode.POLICY, f"malformed message: {_first(exc)}"
                ) from None
            if isinstance(message, Ack):
                check_ack(session, message)
                await self._on_ack(session, message)
            elif isinstance(message, Resync):
                self.stats["resyncs"] += 1
                log.info("agent %s asks for a resync: %s", session.host, message.reason)
                session.needs_snapshot = True
                session.outbox.clear()
                session.wake.set()

    async def _on_ack(self, session: Session, ack: Ack) -> None:
        session.acked_revision, session.acked_digest = ack.revision, ack.digest
        session.errors = list(ack.errors)  # bounded by Ack's validation
        self._reports[session.host] = HostReport(
            session.host, datetime.now(UTC), ack.revision, ack.digest
        )

    async def flush_reports(self) -> None:
        """Persist the latest ack of each host, all in one transaction.

        Acks arrive per delta per member host; writing each would cost the store a
        transaction per message. The live view (``host_status``) reads the sessions; the
        store only needs the last word for hosts that disconnect and for ``last_seen``.
        """
        if not self._reports:
            return
        reports, self._reports = list(self._reports.values()), {}
        try:
            await asyncio.to_thread(self.store.record_host_reports, reports)
        except Exception:
            # one host's report must not cost the others theirs: retry one by one
            log.exception("saving %d agent reports failed; saving them one by one", len(reports))
            await asyncio.to_thread(self._record_each, reports)

    def _record_each(self, reports: list[HostReport]) -> None:
        for report in reports:
            try:
                self.store.record_host_reports([report])
            except Exception:
                log.exception("saving the report of agent %s failed", report.name)

    # -- views for the REST API ---------------------------------------------------------------

    def host_status(self, host: Host) -> tuple[bool, int | None, bool]:
        """(connected, applied revision, in sync) of ``host`` for the REST API.

        In sync: the digest the agent last acknowledged equals the digest of what the host
        must hold now. A connected, in-sync agent with nothing in flight is current as of
        the hub's revision even if no message concerned it since.
        """
        expected = self.hub.digest_of(host.name)
        session = self.sessions.get(host.name)
        if session is None:
            return False, host.applied_revision, host.applied_digest == expected
        in_sync = session.acked_digest == expected
        applied = session.acked_revision
        if in_sync and not session.outbox and not session.needs_snapshot:
            applied = max(applied or 0, self.hub.revision)
        return True, applied, in_sync

    def host_errors(self, name: str) -> list[AckError]:
        """The networks host ``name``'s agent reported failing in its last ack; empty when
        it reported none or is not connected."""
        session = self.sessions.get(name)
        return list(session.errors) if session is not None else []


async def receive_text(ws: WebSocket) -> str:
    """The next text frame. A binary frame is a protocol violation (the channel is JSON
    text); a disconnect raises ``WebSocketDisconnect``."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        raise ProtocolViolation(CloseCode.UNSUPPORTED, "binary frames are not part of the protocol")
    return str(text)


def check_ack(session: Session, ack: Ack) -> None:
    """An agent can only have applied what this session sent it: an ack ahead of the last
    revision queued on the session is refused (the wire model already bounds its range and
    the digest's form)."""
    if ack.revision > session.prev_revision:
        raise ProtocolViolation(
            CloseCode.POLICY,
            f"ack of revision {ack.revision}, but this session was sent up to "
            f"{session.prev_revision}",
        )


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err.get('msg', 'invalid')}"[:200]


@router.websocket("/v1/agent")
async def agent_channel(ws: WebSocket) -> None:
    channel: Channel = ws.app.state.channel
    await channel.serve(ws)
