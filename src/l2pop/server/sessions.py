"""Agent sessions of this server process (in memory: they are per process).

A ``Session`` is one live agent connection and its bounded outbox (docs/design.md, "Agent
channel"): at most ``queue_limit`` messages wait; when a slow agent lets the outbox fill,
the queued deltas are dropped and replaced by one snapshot, built when the socket is
writable again, so the backlog coalesces into the current state instead of growing. A
session writes through a ``Sender`` (the WebSocket route passes its socket) and builds
snapshots from a ``SnapshotSource`` (the hub); it never reaches back into either for a
digest: updates and heartbeats bring theirs.

``SessionRegistry`` knows the live session of each host and is the hub's subscriber for
them (``HubSubscriber``): it queues each host's update on its session, closes the sessions
of deleted hosts and asks every session for a snapshot after a hub reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from l2pop.server.hubapi import HostResume, HostSnapshot, HostUpdate, NetworkChanges, PortChanges
from l2pop.wire.channel import (
    Ack,
    AckError,
    CloseCode,
    Delta,
    ErrorCode,
    ErrorMsg,
    Heartbeat,
    Message,
    NetworkDeltaMsg,
    NetworkTablesMsg,
    Resume,
    Snapshot,
    encode,
)

log = logging.getLogger("l2pop.channel")

#: messages (heartbeats aside) whose sending ``ChannelStats.sent_log`` keeps
SENT_LOG_KEEP = 8_192


class Sender(Protocol):
    """The half of a socket a session writes to (Starlette's ``WebSocket`` is one)."""

    async def send_text(self, data: str, /) -> None: ...

    async def close(self, code: int, reason: str, /) -> None: ...


class SnapshotSource(Protocol):
    """Where a session's snapshots and resumes come from (the hub)."""

    def snapshot_of(self, host: str) -> HostSnapshot: ...

    def resume_of(self, host: str, base: int) -> HostResume | None: ...


@dataclass
class ChannelStats:
    """Counters of the agent channel (exported by ``server/metrics.py``)."""

    messages_sent: Counter[str] = field(default_factory=Counter)  # message type -> count
    bytes_sent: Counter[str] = field(default_factory=Counter)  # message type -> bytes
    coalesced: int = 0  # slow-agent backlogs replaced by a snapshot
    resumes: int = 0  # sessions that began with a resume instead of a snapshot
    resumes_refused: int = 0  # resumes offered that got a snapshot (revision not covered)
    resyncs: int = 0  # snapshots asked for by agents
    refused_sessions: int = 0  # sessions over MAX_SESSIONS_PER_HOST
    protocol_violations: int = 0  # sessions closed for breaking the protocol
    #: (host, message type, revision, time.monotonic() as its write to the socket began) of each
    #: delta, snapshot and resume sent, newest last (``GET /v1/trace``)
    sent_log: deque[tuple[str, str, int, float]] = field(
        default_factory=lambda: deque(maxlen=SENT_LOG_KEEP)
    )

    def sent(self, kind: str, size: int) -> None:
        self.messages_sent[kind] += 1
        self.bytes_sent[kind] += size


class Session:
    """One live agent connection and its bounded outbox.

    Runs on the event loop: ``send_loop`` writes the outbox to ``sender``; everything else
    only queues and returns.
    """

    def __init__(
        self,
        host: str,
        sender: Sender,
        snapshots: SnapshotSource,
        queue_limit: int,
        stats: ChannelStats,
        *,
        resume_from: int | None = None,
        generation: int = 0,
        first_slots: asyncio.Semaphore | None = None,
    ) -> None:
        """``resume_from``: the revision the agent offered to resume from (its hello); the
        first message is then a resume when the hub still knows what changed since.
        ``generation``: the host's session generation this session holds (the store's).
        ``first_slots``: shared by the server's sessions, bounds how many snapshots and
        resumes are being built and written at once (None: no bound)."""
        self.host = host
        self._first_slots = first_slots
        self.generation = generation
        self._resume_from = resume_from
        #: the revision the agent said it holds (its hello): until this session's first
        #: message it keeps acking that, as its heartbeat
        self.offered_revision = resume_from or 0
        self._sender = sender
        self._snapshots = snapshots
        self._queue_limit = queue_limit
        self._stats = stats
        self._outbox: deque[Message] = deque()
        self._needs_snapshot = True  # every session starts with one
        self._wake = asyncio.Event()
        self._wake.set()
        self._closed = False
        #: revision of the last message queued on this session (what a delta chains from)
        self.prev_revision = 0
        self.acked_revision: int | None = None
        self.acked_digest: str | None = None
        self.errors: list[AckError] = []  # networks the agent failed on, as of its last ack
        #: when the session was made (``time.monotonic()``): commits heard before it are
        #: not timed when acked (``Channel._on_ack``), they would time the agent's absence
        self.started_at = self.last_heard = time.monotonic()
        #: when this session's ack was last queued to be saved (``Channel._on_ack``)
        self.saved_at = 0.0

    # -- state, read by the channel -----------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def backlog(self) -> int:
        """Messages waiting in the outbox."""
        return len(self._outbox)

    @property
    def idle(self) -> bool:
        """Nothing in flight: no message queued and no snapshot owed."""
        return not self._outbox and not self._needs_snapshot

    # -- what the agent said ----------------------------------------------------------------

    def heard(self) -> None:
        """The agent sent something (any frame): it is alive."""
        self.last_heard = time.monotonic()

    @property
    def acked(self) -> tuple[int | None, str | None, int, bool]:
        """What a host's view is judged from (``server/activity.py``): the revision and
        digest the agent last acked, how many networks it fails on, and whether nothing is
        in flight."""
        return self.acked_revision, self.acked_digest, len(self.errors), self.idle

    def record_ack(self, ack: Ack) -> None:
        """Keep the agent's last word on what it applied (bounded by ``Ack``'s validation)."""
        self.acked_revision, self.acked_digest = ack.revision, ack.digest
        self.errors = list(ack.errors)

    # -- what the agent must hear -----------------------------------------------------------

    def request_snapshot(self) -> None:
        """Drop whatever is queued: the next message is a snapshot of the current state."""
        self._needs_snapshot = True
        self._outbox.clear()
        self._wake.set()

    def push_update(self, revision: int, update: HostUpdate) -> None:
        """Queue the delta that brings the host to ``revision`` (its digest: ``update``'s)."""
        if self._needs_snapshot:
            return  # the snapshot on its way will hold this change
        delta = Delta(
            revision=revision,
            prev_revision=self.prev_revision,
            digest=update.digest,
            networks=[NetworkDeltaMsg.of(d) for d in update.deltas],
            ports=sorted(update.ports.values(), key=lambda p: p.id),
            ports_removed=sorted(update.ports_removed),
        )
        self.prev_revision = revision
        self._push(delta)

    def push_heartbeat(self, digest: str) -> None:
        """Queue a heartbeat: ``digest`` is what the host must hold now."""
        self._push(Heartbeat(revision=self.prev_revision, digest=digest))

    def _push(self, message: Message) -> None:
        if self._needs_snapshot or self._closed:
            return  # the snapshot on its way will hold this change
        if len(self._outbox) >= self._queue_limit:
            self._outbox.clear()
            self._needs_snapshot = True
            self._stats.coalesced += 1
            log.warning(
                "agent %s is slow: backlog replaced by a snapshot",
                self.host,
                extra={"host": self.host},
            )
        else:
            self._outbox.append(message)
        self._wake.set()

    def _first_or_snapshot(self) -> Snapshot | Resume:
        """A snapshot, or a resume as the session's first message when the agent offered one
        and the hub covers it (it is offered once: a later snapshot is a snapshot)."""
        base, self._resume_from = self._resume_from, None
        if base is None:
            return self._snapshot()
        resume = self._snapshots.resume_of(self.host, base)
        if resume is None:
            self._stats.resumes_refused += 1
            return self._snapshot()
        self._stats.resumes += 1
        return self._resume(resume)

    def _resume(self, resume: HostResume) -> Resume:
        self.prev_revision = resume.revision
        return Resume(
            revision=resume.revision,
            prev_revision=resume.base,
            digest=resume.digest,
            networks=[NetworkTablesMsg.of(t) for t in resume.tables.values()],
            networks_left=resume.left,
            ports=resume.ports,
        )

    def _snapshot(self) -> Snapshot:
        current = self._snapshots.snapshot_of(self.host)
        self.prev_revision = current.revision
        return Snapshot(
            revision=current.revision,
            digest=current.digest,
            networks=[NetworkTablesMsg.of(t) for t in current.tables.values()],
            ports=current.ports,
        )

    async def send_loop(self) -> None:
        """Write the outbox until the session stops; a snapshot owed goes first."""
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            while not self._closed and (self._needs_snapshot or self._outbox):
                if self._needs_snapshot:
                    # Built once a slot is free, so it holds every change up to then; a
                    # thousand agents connecting at once are served a few at a time
                    # instead of a thousand big messages being built and buffered together.
                    async with self._first_slots or contextlib.nullcontext():
                        if self._closed or not self._needs_snapshot:
                            continue
                        self._needs_snapshot = False
                        self._outbox.clear()
                        await self._send(self._first_or_snapshot())
                else:
                    await self._send(self._outbox.popleft())

    async def _send(self, message: Message) -> None:
        text = encode(message)
        writing = time.monotonic()  # before: the agent may read it before we resume
        await self._sender.send_text(text)
        kind = getattr(message, "type", "other")
        self._stats.sent(kind, len(text))
        if kind != "heartbeat":
            revision = getattr(message, "revision", 0)
            self._stats.sent_log.append((self.host, kind, revision, writing))

    # -- ending -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Send nothing more (the socket is gone or going); ``send_loop`` returns."""
        self._closed = True
        self._wake.set()

    async def close(self, code: int, reason: str) -> None:
        """Stop, tell the agent why (an ``error`` message, all of ``reason``) and close the
        socket with ``code`` (and ``reason`` cut to what a close frame holds). A socket that
        is already gone is not an error."""
        self.stop()
        with contextlib.suppress(Exception):
            await self._sender.send_text(encode(ErrorMsg(code=ErrorCode.CLOSED, message=reason)))
            await self._sender.close(code, close_reason(reason))


#: RFC 6455 5.5.1: a close frame's reason is at most 123 bytes of UTF-8; a longer one fails
#: the close (the agent then sees no close code at all)
CLOSE_REASON_MAX_BYTES = 123


def close_reason(reason: str) -> str:
    """``reason`` cut to ``CLOSE_REASON_MAX_BYTES`` of UTF-8, on a character boundary (a
    refusal may quote the agent's own text, e.g. an unknown message type)."""
    return reason.encode()[:CLOSE_REASON_MAX_BYTES].decode(errors="ignore")


class SessionRegistry:
    """The live session of each host, and how many are open (``connected`` in the API).

    One session per host is live: a new one replaces the old. The counts are kept apart
    from the live map because a replaced session stays open until its agent is gone.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._live: dict[str, Session] = {}
        self._background: set[asyncio.Task[None]] = set()

    # -- the live map ---------------------------------------------------------------------

    def get(self, host: str) -> Session | None:
        return self._live.get(host)

    def live(self) -> list[Session]:
        return list(self._live.values())

    def make_live(self, session: Session) -> Session | None:
        """``session`` becomes its host's live session; returns the one it replaces."""
        old = self._live.get(session.host)
        self._live[session.host] = session
        return old

    def discard(self, session: Session) -> None:
        """``session`` ended: it is no longer live (unless already replaced)."""
        if self._live.get(session.host) is session:
            del self._live[session.host]

    # -- open counts ------------------------------------------------------------------------

    def opened(self, host: str) -> None:
        with self._lock:
            self._open[host] = self._open.get(host, 0) + 1

    def closed(self, host: str) -> None:
        with self._lock:
            left = self._open.get(host, 0) - 1
            if left > 0:
                self._open[host] = left
            else:
                self._open.pop(host, None)

    def connected(self, host: str) -> bool:
        with self._lock:
            return host in self._open

    def count(self) -> int:
        with self._lock:
            return len(self._open)

    # -- HubSubscriber ----------------------------------------------------------------------

    def changed(self, revision: int, networks: NetworkChanges, ports: PortChanges) -> None:
        pass

    def host_updates(self, revision: int, updates: Mapping[str, HostUpdate]) -> None:
        for host, update in updates.items():
            session = self._live.get(host)
            if session is not None:
                session.push_update(revision, update)

    def hosts_changed(self, gone: frozenset[str]) -> None:
        for host in gone:
            session = self._live.get(host)
            if session is not None:
                self._close_later(session, CloseCode.HOST_GONE, "host deleted")

    def supersede(self, host: str, generation: int) -> None:
        """A session of ``host`` was claimed at ``generation`` (here or on another replica):
        the live session here, if older, is closed as replaced (event loop only)."""
        session = self._live.get(host)
        if session is not None and session.generation < generation:
            del self._live[host]
            log.info(
                "agent %s: a newer session took over; closing this one",
                host,
                extra={"host": host},
            )
            self._close_later(session, CloseCode.REPLACED, "replaced by a newer session")

    def _close_later(self, session: Session, code: int, reason: str) -> None:
        task = asyncio.create_task(session.close(code, reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def reloaded(self, revision: int) -> None:
        for session in self._live.values():
            session.request_snapshot()
