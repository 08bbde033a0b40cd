"""The server side of the agent channel: ``/agent`` under the API prefix (WebSocket, JSON).

A session: the agent authenticates with its host token in the upgrade request and says
``hello`` (host, VTEP, and what its datapath carries, saved on the host's record). The
server answers with a snapshot of the host's state, then ordered deltas, each stamped with a
revision and chained by ``prev_revision``; heartbeats carry the digest the host must have.
The agent acks revision + digest of what it applied.

This module is the WebSocket side: authentication, hello, reading agent frames, acks,
heartbeats and telemetry. What a session sends, and its bounded outbox, are
``server/sessions.py``; the route hands its ``WebSocket`` to the session as its ``Sender``.
One session per host: a new one replaces the old.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import msgspec
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from l2pop.model import Host
from l2pop.server.auth import TokenCache, find_host, parse_bearer
from l2pop.server.hub import Hub
from l2pop.server.replicas import Presence
from l2pop.server.sessions import ChannelStats, Session, SessionRegistry
from l2pop.store import HostReport, Store, StoreUnavailable
from l2pop.wire.channel import (
    PROTOCOL_VERSION,
    Ack,
    AckError,
    CloseCode,
    ErrorCode,
    ErrorMsg,
    Hello,
    Resync,
    agent_message,
    encode,
    hello_message,
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
#: seconds a resuming session waits for this replica's hub to reach the agent's revision
RESUME_CATCH_UP_S = 1.0
#: seconds between saves of the agents' latest acks, which other replicas read
REPORT_FLUSH_S = 0.25
#: sessions whose first message (snapshot or resume) is being built and written at once:
#: after a restart every agent connects together, and handshakes must not wait behind a
#: thousand snapshots being built (an agent gives its handshake 30 s)
FIRST_MESSAGE_SLOTS = 16


@dataclass(frozen=True, slots=True)
class HostStatus:
    """A host's session as the REST API shows it; ``replica``: who holds it."""

    connected: bool
    applied_revision: int | None
    in_sync: bool
    replica: str | None


class Observer(Protocol):
    """Where a duration goes (a ``prometheus_client.Histogram`` is one)."""

    def observe(self, amount: float, /) -> None: ...


class ProtocolViolation(Exception):
    """The agent sent something the protocol does not allow; the session is closed."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class Channel:
    """All sessions of one server: serving the socket, heartbeats, acks and telemetry.

    Hub updates reach sessions through ``registry`` (the hub's subscriber), not through
    this class.

    ``apply_latency`` (None: not measured; ``server/metrics.py`` sets it) hears, for each
    ack that advances its session's applied revision without errors, the seconds from
    when this server's hub first heard of the commit of the acked revision to the ack's
    arrival. An ack covers a batch, which ends with its latest commit, so earlier commits
    of the batch waited longer than observed; a revision the hub no longer remembers, or
    heard of before the session began, is not observed.
    """

    def __init__(
        self,
        store: Store,
        hub: Hub,
        registry: SessionRegistry,
        tokens: TokenCache,
        presence: Presence,
        *,
        queue_limit: int = 256,
        heartbeat_interval: float = 5.0,
        hello_timeout: float = HELLO_TIMEOUT,
    ) -> None:
        self.store = store
        self.presence = presence
        self.first_slots = asyncio.Semaphore(FIRST_MESSAGE_SLOTS)
        self.replica = presence.replica
        self.hello_timeout = hello_timeout
        self.hub = hub
        self.registry = registry
        self.tokens = tokens
        self.queue_limit = queue_limit
        self.heartbeat_interval = heartbeat_interval
        self.stats = ChannelStats()
        self._reports: dict[str, HostReport] = {}  # host -> last ack not yet saved
        self._opening: Counter[str] = Counter()  # host -> sessions being served
        self.apply_latency: Observer | None = None

    async def report_loop(self) -> None:
        """Save the agents' latest acks every ``REPORT_FLUSH_S`` (at most one transaction,
        none when no ack came): what other replicas show of this one's hosts."""
        while True:
            await asyncio.sleep(min(REPORT_FLUSH_S, self.heartbeat_interval))
            await self.flush_reports()

    async def heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            deadline = time.monotonic() - 3 * self.heartbeat_interval
            for session in self.registry.live():
                if session.last_heard < deadline:
                    log.warning(
                        "agent %s silent for 3 heartbeats: closing",
                        session.host,
                        extra={"host": session.host},
                    )
                    await session.close(1001, "heartbeat timeout")
                else:
                    session.push_heartbeat(self.hub.digest_of(session.host))

    # -- per-connection -----------------------------------------------------------------

    async def serve(self, ws: WebSocket) -> None:
        await ws.accept()
        host = await self._token_host(ws)
        if host is None:
            return
        if self._opening[host.name] >= MAX_SESSIONS_PER_HOST:
            self.stats.refused_sessions += 1
            await self._refuse(
                ws, ErrorCode.TOO_MANY_SESSIONS, f"host {host.name} has enough sessions"
            )
            return
        self._opening[host.name] += 1  # counted while it waits for hello, too
        try:
            hello = await self._hello(ws, host)
            if hello is not None:
                await self._serve(ws, host, hello)
        finally:
            self._opening[host.name] -= 1
            if not self._opening[host.name]:
                del self._opening[host.name]

    async def _serve(self, ws: WebSocket, host: Host, hello: Hello) -> None:
        generation = await self._claim(ws, host, hello)
        if generation is None:
            return
        try:
            await self._serve_claimed(ws, host, hello, generation)
        finally:
            await self._release(host.name, generation)

    async def _serve_claimed(
        self, ws: WebSocket, host: Host, hello: Hello, generation: int
    ) -> None:
        resume_from = hello.resume_revision
        if resume_from is not None:
            await self._catch_up_to(resume_from)
        # the WebSocket is the session's Sender: it has send_text and close
        session = Session(
            host.name,
            ws,
            self.hub,
            self.queue_limit,
            self.stats,
            resume_from=resume_from,
            generation=generation,
            first_slots=self.first_slots,
        )
        current = self.registry.get(host.name)
        if current is not None and current.generation > generation:
            # a newer claim went live while ours was being written: ours lost the race
            await session.close(CloseCode.REPLACED, "replaced by a newer session")
            return
        old = self.registry.make_live(session)
        if old is not None:
            await old.close(CloseCode.REPLACED, "replaced by a new session")
        self.registry.opened(host.name)
        log.info(
            "agent %s connected (vtep %s)",
            host.name,
            host.vtep_ip,
            extra={"host": host.name, "revision": resume_from},
        )
        sender = asyncio.create_task(session.send_loop())
        try:
            await self._receive_loop(ws, session)
        except ProtocolViolation as exc:
            self.stats.protocol_violations += 1
            log.warning(
                "agent %s: %s; closing its session",
                host.name,
                exc.reason,
                extra={"host": host.name, "revision": session.acked_revision},
            )
            await session.close(exc.code, exc.reason)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            session.stop()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            self.registry.discard(session)
            await self.flush_reports()  # the store keeps its last word for host_status
            self.registry.closed(host.name)
            log.info(
                "agent %s disconnected",
                host.name,
                extra={"host": host.name, "revision": session.acked_revision},
            )

    async def _catch_up_to(self, revision: int) -> None:
        """Wait (bounded) for the hub to reach ``revision``: an agent coming from another
        replica may have seen a commit this one's hub has not read yet; resuming needs the
        hub at or past it (else the session starts with a snapshot, which is correct too)."""
        deadline = time.monotonic() + RESUME_CATCH_UP_S
        while self.hub.revision < revision and time.monotonic() < deadline:
            self.hub.notify(revision)
            await asyncio.sleep(0.01)

    async def _token_host(self, ws: WebSocket) -> Host | None:
        """The host whose token rides in the upgrade request, or None (refused)."""
        token = parse_bearer(ws.headers.get("authorization"))
        host = None if token is None else await find_host(self.tokens, token)
        if host is None:
            await self._refuse(ws, ErrorCode.UNAUTHORIZED, "missing or invalid host token")
        return host

    async def _hello(self, ws: WebSocket, host: Host) -> Hello | None:
        """Wait (bounded) for the agent's hello and check it names ``host`` and its VTEP."""
        try:
            async with asyncio.timeout(self.hello_timeout):
                hello = hello_message.decode(await receive_text(ws))
        except TimeoutError:
            await self._refuse(ws, ErrorCode.PROTOCOL, f"no hello within {self.hello_timeout:g} s")
            return None
        except (WebSocketDisconnect, RuntimeError):
            # gone before its hello (e.g. it gave up waiting for the handshake): no refusal
            log.info("agent of host %s left before its hello", host.name, extra={"host": host.name})
            return None
        except (msgspec.DecodeError, ProtocolViolation):
            await self._refuse(ws, ErrorCode.PROTOCOL, "expected a hello message first")
            return None
        if hello.version != PROTOCOL_VERSION:
            await self._refuse(
                ws,
                ErrorCode.UNSUPPORTED_VERSION,
                f"this server speaks channel protocol {PROTOCOL_VERSION}, the agent "
                f"{hello.version}: run matching versions",
            )
            return None
        if not hmac.compare_digest(hello.host, host.name):
            await self._refuse(
                ws, ErrorCode.HOST_MISMATCH, f"this token belongs to host {host.name}"
            )
            return None
        if hello.vtep_ip != host.vtep_ip:
            await self._refuse(
                ws,
                ErrorCode.VTEP_MISMATCH,
                f"host {host.name} is registered with VTEP {host.vtep_ip}, not {hello.vtep_ip}",
            )
            return None
        return hello

    async def _claim(self, ws: WebSocket, host: Host, hello: Hello) -> int | None:
        """Claim the host's session for this replica (``Store.claim_session``: the newest
        claim on any replica holds it) and save what the agent announced it carries
        (datapath, encaps) before the session goes live, so a bind checked after the connect
        sees it (docs/adr/0017). Returns the session's generation; None when the store
        cannot take the claim: the agent is told to come back later (it keeps its tables)."""
        report = HostReport(
            host.name, datetime.now(UTC), datapath=hello.datapath, encaps=frozenset(hello.encaps)
        )
        try:
            return await asyncio.to_thread(self.store.claim_session, report, self.replica)
        except Exception as exc:
            log.warning(
                "agent %s: cannot claim its session: %s", host.name, exc, extra={"host": host.name}
            )
            with contextlib.suppress(Exception):
                message = "the store is unavailable; try again later"
                await ws.send_text(encode(ErrorMsg(code=ErrorCode.CLOSED, message=message)))
                await ws.close(CloseCode.TRY_AGAIN, message)
            return None

    async def _release(self, name: str, generation: int) -> None:
        """The session ended: the host has no holder any more (unless a newer claim)."""
        try:
            await asyncio.to_thread(self.store.release_session, name, self.replica, generation)
        except Exception as exc:
            # the beat's check and the replica's TTL cover it: the others see it go stale
            log.warning(
                "agent %s: releasing its session failed: %s", name, exc, extra={"host": name}
            )

    async def _refuse(self, ws: WebSocket, code: str, message: str) -> None:
        log.warning("agent refused: %s", message)
        with contextlib.suppress(Exception):
            await ws.send_text(encode(ErrorMsg(code=code, message=message)))
            await ws.close(CloseCode.REFUSED, message[:120])

    async def _receive_loop(self, ws: WebSocket, session: Session) -> None:
        while not session.closed:
            text = await receive_text(ws)
            session.heard()
            try:
                message = agent_message.decode(text)
            except msgspec.DecodeError as exc:
                raise ProtocolViolation(
                    CloseCode.POLICY, f"malformed message: {_first(exc)}"
                ) from None
            if isinstance(message, Ack):
                check_ack(session, message)
                self._on_ack(session, message)
            elif isinstance(message, Resync):
                self.stats.resyncs += 1
                log.info(
                    "agent %s asks for a resync: %s",
                    session.host,
                    message.reason,
                    extra={"host": session.host, "revision": session.acked_revision},
                )
                session.request_snapshot()

    def _on_ack(self, session: Session, ack: Ack) -> None:
        said = (ack.revision, ack.digest)
        previous = session.acked_revision
        unchanged = (previous, session.acked_digest) == said
        session.record_ack(ack)
        now = time.monotonic()
        if (
            self.apply_latency is not None
            and (previous is None or ack.revision > previous)
            and not ack.errors
        ):
            # one dictionary look-up per advancing ack (RevisionTrace.heard_at); a heartbeat's
            # ack repeats its revision and costs a comparison
            heard = self.hub.trace.heard_at(ack.revision)
            if heard is not None and heard >= session.started_at:
                self.apply_latency.observe(now - heard)
        if unchanged and now - session.saved_at < self.heartbeat_interval:
            # the agent's heartbeat repeats what the store has: save it (for last_seen) no
            # more than once per heartbeat interval; a new revision or digest goes at once
            return
        session.saved_at = now
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
        except StoreUnavailable as exc:
            # the database is away: one line, not one per agent; keep the newest acks for
            # the next flush unless newer ones came meanwhile
            log.warning("saving %d agent reports failed: %s", len(reports), exc)
            for report in reports:
                self._reports.setdefault(report.name, report)
        except Exception:
            # one host's report must not cost the others theirs: retry one by one
            log.exception("saving %d agent reports failed; saving them one by one", len(reports))
            await asyncio.to_thread(self._record_each, reports)

    def _record_each(self, reports: list[HostReport]) -> None:
        for report in reports:
            try:
                self.store.record_host_reports([report])
            except Exception:
                log.exception(
                    "saving the report of agent %s failed",
                    report.name,
                    extra={"host": report.name, "revision": report.applied_revision},
                )

    # -- views for the REST API ---------------------------------------------------------------

    def host_status(self, host: Host) -> HostStatus:
        """``host``'s session as every replica tells it (docs/adr/0022).

        Held here: what this session's agent acknowledged. Held by another live replica:
        what the store has of the agent's acks (flushed every ``REPORT_FLUSH_S``). Neither:
        disconnected, with the store's last word. In sync: the digest the agent last
        acknowledged equals the digest of what the host must hold now; an in-sync host with
        nothing in flight is current as of the hub's revision even if no message concerned
        it since.
        """
        local = self.local_status(host.name)
        if local is not None:
            return local
        expected = self.hub.digest_of(host.name)
        in_sync = host.applied_digest == expected
        holder = host.session_replica
        if holder == self.replica or not self.presence.holds(holder, host.last_seen):
            return HostStatus(False, host.applied_revision, in_sync, None)
        applied = host.applied_revision
        if in_sync:
            applied = max(applied or 0, self.hub.revision)
        return HostStatus(True, applied, in_sync, holder)

    def local_status(self, name: str) -> HostStatus | None:
        """``host_status`` of a host whose session this replica holds (None: it holds none):
        a dictionary look-up, no store row needed."""
        session = self.registry.get(name)
        if session is None:
            return None
        in_sync = session.acked_digest == self.hub.digest_of(name)
        applied = session.acked_revision
        if in_sync and session.idle:
            applied = max(applied or 0, self.hub.revision)
        return HostStatus(True, applied, in_sync, self.replica)

    def host_errors(self, name: str) -> list[AckError]:
        """The networks host ``name``'s agent reported failing in its last ack; empty when
        it reported none or is not connected."""
        session = self.registry.get(name)
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
    """An agent can only have applied what this session sent it, or what it said in its
    hello that it holds: an ack ahead of both is refused (the wire model already bounds its
    range and the digest's form). The second matters while a session waits for a
    first-message slot: the agent's heartbeat acks go on, saying what it holds from its
    previous session, and refusing them would close every waiting session after a restart
    and keep the fleet reconnecting behind the queue."""
    allowed = max(session.prev_revision, session.offered_revision)
    if ack.revision > allowed:
        raise ProtocolViolation(
            CloseCode.POLICY,
            f"ack of revision {ack.revision}, but this session was sent up to "
            f"{session.prev_revision} and the agent offered {session.offered_revision}",
        )


def _first(exc: msgspec.DecodeError) -> str:
    """What was wrong, bounded: msgspec names the first error and its path (``Expected
    `int`, got `str` - at `$.revision```). The text may quote the agent's (``Invalid value
    'x' - at `$.type```); a lone surrogate in it, should one get through, is escaped."""
    text = str(exc) or "invalid"
    return text.encode("utf-8", "backslashreplace").decode()[:200]


@router.websocket("/agent")  # mounted under the API prefix (server/app.py)
async def agent_channel(ws: WebSocket) -> None:
    channel: Channel = ws.app.state.channel
    await channel.serve(ws)
