"""The agent: one WebSocket session to the server's agent channel at a time, forever (protocol in
``l2pop.wire.channel``).

Work structure (kubernetes sample-controller pattern): the socket reader only updates the
reconciler's in-memory state and wakes the worker; the datapath's port listener (any thread)
only wakes the worker; one worker task runs ``Reconciler.sync`` (in a thread when the datapath
is ``blocking``), then acks and queues status reports. A failed sync is retried with
rate-limited backoff and is FULL (mark and sweep). A network the datapath fails on is retried
on its own backoff inside the reconciler (``Reconciler.sync``): the worker also wakes when such
a retry is due, and acks carry the failing networks (``Ack.errors``) until they heal.

Session life: connect with the host token, send ``hello`` (with the datapath's name and the
encapsulations it carries, ``Datapath.encaps``, and the revision it can resume from, if it
holds one it trusts), then a snapshot (or a resume: only what changed since that revision,
docs/adr/0022-sessions-across-replicas.md) and deltas arrive. A
gap or a digest mismatch (delta or server heartbeat) sends ``resync`` once and ignores deltas
until the snapshot comes. The agent acks after each sync that changed what it applied, and
every ``heartbeat_interval`` as its heartbeat. WebSocket pings detect a dead link. On any end
of the session it reconnects with exponential backoff and full jitter (reset after a session
that lived long enough), and keeps the kernel as it is meanwhile (fail static).

Failover (ADR 21): the agent may be given several server URLs, replicas of one deployment. It
starts at a random one (``ServerRotation``: a swarm spreads over the replicas) and after every
end of a session (refused, closed, ping timeout) the next attempt goes to the next URL, round,
with the same backoff. The status reporter follows: it always sends to the URL the channel
uses (or tries) now, so port status reports keep flowing when one replica dies.

TLS: with an https (or wss) server URL both the channel and the status reports use TLS and
verify the server's certificate with the process's one SSL context (``l2pop.tlsconfig``). A
certificate that does not verify is logged and retried slowly, like a refused token; the agent
never falls back to an unverified or plain connection.

Fault injection is not in here: tests and the swarm pass an ``InboundFilter``
(``l2pop.testbed.faults``) that may drop or repeat server messages before the agent sees them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from l2pop.agent.backoff import Backoff
from l2pop.agent.reconciler import Gap, Reconciler
from l2pop.agent.reporter import StatusReporter
from l2pop.agent.servers import ServerRotation
from l2pop.agent.stats import AgentStats
from l2pop.clientpaths import channel_urls
from l2pop.datapath.abc import Datapath
from l2pop.tlsconfig import client_context, tls_failure
from l2pop.wire.channel import (
    Ack,
    AckError,
    CloseCode,
    Delta,
    ErrorCode,
    ErrorMsg,
    Heartbeat,
    Hello,
    Resume,
    Resync,
    ServerMessage,
    Snapshot,
    encode,
    server_message,
)

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("l2pop.agent")

#: server error codes that mean "you are not welcome as you are": retry slowly (the operator
#: may fix the token, the VTEP or the host record; until then the agent must not hammer).
REFUSED_CODES = frozenset(
    {
        ErrorCode.UNAUTHORIZED,
        ErrorCode.PROTOCOL,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.HOST_MISMATCH,
        ErrorCode.VTEP_MISMATCH,
        ErrorCode.TOO_MANY_SESSIONS,
    }
)
#: close codes after which the next attempt waits long: refused, replaced by a newer session
#: of the same host (another agent instance), host deleted
SLOW_RETRY_CLOSE_CODES = frozenset({CloseCode.REFUSED, CloseCode.REPLACED, CloseCode.HOST_GONE})
#: a session that lived this long resets the reconnect backoff
STABLE_SESSION_S = 10.0
#: largest message accepted: a big host's snapshot is several MB of JSON
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class InboundFilter(Protocol):
    """Stands between the socket and the agent: given each decoded server message, returns
    the messages the agent processes in its place, in order (none: lost on the wire; the
    message twice: repeated). The message is counted in ``AgentStats`` before the filter."""

    def __call__(self, msg: ServerMessage) -> Sequence[ServerMessage]: ...


class Agent:
    """The agent of one host. ``run()`` until ``stop()``; the datapath is the caller's."""

    def __init__(
        self,
        server_url: str | Sequence[str],
        host: str,
        vtep_ip: str,
        token: str,
        datapath: Datapath,
        *,
        heartbeat_interval: float = 5.0,
        http_client: httpx.AsyncClient | None = None,
        reconnect_backoff: Backoff | None = None,
        ssl_context: ssl.SSLContext | None = None,
        inbound_filter: InboundFilter | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``server_url``: one URL, several comma-separated, or a sequence of them
        (replicas; each as ``channel_urls`` takes it, the CLI checks them with
        ``parse_servers``). ``ssl_context`` verifies an https/wss server (default: the system
        trust store); ``http_client``, when given, must have been made with the same context.
        ``inbound_filter``: see ``InboundFilter`` (tests only; None in production).
        ``rng`` draws the first replica (tests pin it)."""
        self.host = host
        self.vtep_ip = vtep_ip
        self.datapath = datapath
        self.heartbeat_interval = heartbeat_interval
        given = server_url.split(",") if isinstance(server_url, str) else list(server_url)
        #: (http base URL, channel URL) of each replica, in the order given
        self._urls = {http: ws for http, ws in (channel_urls(u.strip()) for u in given)}
        self.servers = ServerRotation(list(self._urls), rng)
        self._token = token
        if ssl_context is None and any(ws.startswith("wss://") for ws in self._urls.values()):
            ssl_context = client_context()
        self._ssl_context = ssl_context
        self.reconciler = Reconciler(datapath)
        self.reporter = StatusReporter(
            self.http_url, token, client=http_client, host=host, ssl_context=ssl_context
        )
        self.stats = AgentStats()
        self._inbound = inbound_filter
        self._reconnect = reconnect_backoff or Backoff(0.2, 5.0)
        self._ws: ClientConnection | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._resync_pending = False
        self._refused = False
        self._last_acked: tuple[tuple[int, str], tuple[AckError, ...]] | None = None
        self.last_error: str | None = None

    # -- public -----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def http_url(self) -> str:
        """The http(s) base URL of the replica in use (or tried next)."""
        return self.servers.current

    @property
    def ws_url(self) -> str:
        """The agent channel's URL on the replica in use (or tried next)."""
        return self._urls[self.servers.current]

    @property
    def _ssl(self) -> ssl.SSLContext | None:
        """The TLS context for the current replica; None for a plain one."""
        return self._ssl_context if self.ws_url.startswith("wss://") else None

    async def run(self) -> None:
        """Hold a session to the server, reconnecting forever, until ``stop()``."""
        loop = asyncio.get_running_loop()

        def wake() -> None:  # called from the datapath's thread: a device came or went
            self.reconciler.mark_ports_dirty()
            loop.call_soon_threadsafe(self._wake.set)

        self.datapath.set_port_listener(wake)
        tasks = [
            asyncio.create_task(self._worker(), name=f"agent-{self.host}-worker"),
            asyncio.create_task(self.reporter.run(), name=f"agent-{self.host}-reporter"),
        ]
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                self._session_task = asyncio.create_task(self._session())
                try:
                    await self._session_task
                except asyncio.CancelledError:
                    if not self._stopping.is_set():
                        raise  # run() itself was cancelled
                if self._stopping.is_set():
                    break
                if time.monotonic() - started > STABLE_SESSION_S and not self._refused:
                    self._reconnect.reset()
                delay = self._reconnect.long() if self._refused else self._reconnect.next()
                self._refused = False
                self._fail_over()
                log.debug(
                    "%s: reconnecting to %s in %.2fs",
                    self.host,
                    self.http_url,
                    delay,
                    extra=self._log_context(),
                )
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError):
                    await task
            await self.reporter.close()

    def _fail_over(self) -> None:
        """After a session ended: the next attempt, and the status reports, go to the next
        replica (the same one when there is only one)."""
        if len(self.servers.urls) > 1:
            self.servers.advance()
            self.reporter.use_server(self.http_url)
            self.stats.failovers += 1

    async def stop(self) -> None:
        """End ``run()``: close the session; the datapath keeps its state (fail static)."""
        self._stopping.set()
        ws, task = self._ws, self._session_task
        if ws is not None:
            with suppress(Exception):
                await ws.close()
        if task is not None and not task.done():
            task.cancel()  # still connecting: do not wait for the open timeout

    def _log_context(self) -> dict[str, object]:
        """The ``extra`` of this agent's log lines (``l2pop.logfmt``): its host and the
        revision its datapath has applied, if any."""
        applied = self.reconciler.applied()
        return {"host": self.host, "revision": applied[0] if applied else None}

    def status(self) -> dict[str, Any]:
        applied = self.reconciler.applied()
        return {
            "host": self.host,
            "vtep_ip": self.vtep_ip,
            "connected": self.connected,
            "server": self.http_url,
            "revision": applied[0] if applied else None,
            "digest": applied[1] if applied else None,
            "last_error": self.last_error,
            "errors": [msgspec.structs.asdict(e.wire()) for e in self.reconciler.errors()],
        }

    # -- session ----------------------------------------------------------------------

    async def _session(self) -> None:
        """One connection, from connect to close; never raises for network trouble."""
        headers = {"Authorization": f"Bearer {self._token}"}
        # websockets refuses ssl= (even None) with ws:// and ssl=None with wss://
        tls: dict[str, Any] = {"ssl": self._ssl} if self._ssl is not None else {}
        try:
            async with connect(
                self.ws_url,
                additional_headers=headers,
                # the agent's check that the server is alive (the server sends none): a
                # server too busy to answer for 10 s is left, as a dead one is at once
                ping_interval=self.heartbeat_interval,
                ping_timeout=max(self.heartbeat_interval * 3, 10.0),
                # a server just restarted answers a thousand handshakes at once; one that
                # gave up after 10 s and reconnected would only add to the queue
                open_timeout=30.0,
                close_timeout=2.0,
                max_size=MAX_MESSAGE_BYTES,
                proxy=None,
                # no permessage-deflate: on a data-centre underlay the CPU it costs both ends
                # is worth more than the bytes it saves (snapshots are the only big messages)
                compression=None,
                **tls,
            ) as ws:
                self._ws = ws
                self.stats.sessions += 1
                self.last_error = None
                self._resync_pending = False
                self._last_acked = None
                self.reconciler.new_session()
                hello = Hello(
                    host=self.host,
                    vtep_ip=self.vtep_ip,
                    datapath=self.datapath.name,
                    encaps=sorted(self.datapath.encaps),
                    resume_revision=self.reconciler.resume_point(),
                )
                await ws.send(encode(hello))  # without its None fields
                log.info("%s: connected to %s", self.host, self.ws_url, extra=self._log_context())
                beat = asyncio.create_task(self._heartbeat(ws))
                try:
                    async for raw in ws:
                        await self._on_message(ws, raw)
                finally:
                    beat.cancel()
                    with suppress(asyncio.CancelledError):
                        await beat
                    if ws.close_code in SLOW_RETRY_CLOSE_CODES:
                        self._refused = True
                        log.warning(
                            "%s: closed by the server (%s)",
                            self.host,
                            ws.close_code,
                            extra=self._log_context(),
                        )
        except InvalidStatus as exc:
            code = exc.response.status_code
            self.stats.connect_failures += 1
            self._refused = code in (401, 403, 409)
            self.stats.refused += self._refused
            self.last_error = f"upgrade refused: HTTP {code}"
            log.warning(
                "%s: server refused the channel: HTTP %d",
                self.host,
                code,
                extra=self._log_context(),
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            self._channel_down(exc)
        except Exception as exc:
            # A bug must not end the agent for good: log it and start a fresh session.
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("%s: session failed", self.host, extra=self._log_context())
        finally:
            if self._ws is not None:
                log.info(
                    "%s: disconnected; keeping the datapath as is",
                    self.host,
                    extra=self._log_context(),
                )
            self._ws = None

    def _channel_down(self, exc: OSError | TimeoutError | WebSocketException) -> None:
        """Record a failed connect or a lost session."""
        if isinstance(exc, ConnectionClosed):
            tls_error = None
        else:
            self.stats.connect_failures += 1
            tls_error = tls_failure(exc)
        if tls_error is not None:
            # The operator must fix the certificate or the CA: retry slowly, never insecurely.
            self._refused = True
            self.last_error = tls_error
            log.warning(
                "%s: cannot connect to %s: %s",
                self.host,
                self.ws_url,
                tls_error,
                extra=self._log_context(),
            )
        else:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.info("%s: channel down: %s", self.host, self.last_error, extra=self._log_context())

    async def _heartbeat(self, ws: ClientConnection) -> None:
        """Send an ack every ``heartbeat_interval``: the agent's heartbeat."""
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            await self._send_ack(ws, force=True)

    async def _send_ack(self, ws: ClientConnection | None, *, force: bool = False) -> None:
        applied = self.reconciler.applied()
        if ws is None or applied is None:
            return
        errors = [e.wire() for e in self.reconciler.errors()]
        said = (applied, tuple(errors))
        if not force and said == self._last_acked:
            return
        ack = Ack(revision=applied[0], digest=applied[1], errors=errors)
        with suppress(ConnectionClosed):
            # without errors the ack is exactly what older agents sent (``Ack`` omits them)
            await ws.send(encode(ack))
            self._last_acked = said
            self.stats.acks_sent += 1

    async def _request_resync(self, ws: ClientConnection, reason: str) -> None:
        if self._resync_pending:
            return
        log.warning("%s: requesting a resync: %s", self.host, reason, extra=self._log_context())
        self._resync_pending = True
        self.stats.resyncs_requested += 1
        await ws.send(encode(Resync(reason=reason)))

    # -- messages ---------------------------------------------------------------------

    async def _on_message(self, ws: ClientConnection, raw: str | bytes) -> None:
        """Record one server message; kernel work is left to the worker."""
        self.stats.bytes_received += len(raw)
        try:
            msg: ServerMessage = server_message.decode(raw)
        except msgspec.DecodeError as exc:
            self.stats.messages["invalid"] += 1
            log.warning(
                "%s: ignoring a malformed server message: %s",
                self.host,
                exc,
                extra=self._log_context(),
            )
            return
        self.stats.messages[msg.type] += 1
        if isinstance(msg, Snapshot | Resume | Delta):
            self._note_networks(msg)
        for one in (msg,) if self._inbound is None else self._inbound(msg):
            await self._dispatch(ws, one)

    async def _dispatch(self, ws: ClientConnection, msg: ServerMessage) -> None:
        """Act on one message, as the inbound filter passed it."""
        if isinstance(msg, Snapshot):
            self.reconciler.on_snapshot(msg)
            self._resync_pending = False
            self._wake.set()
        elif isinstance(msg, Resume):
            try:
                self.reconciler.on_resume(msg)
            except Gap as gap:
                self.stats.gaps_detected += 1
                await self._request_resync(ws, gap.reason)
            else:
                self._resync_pending = False
            self._wake.set()
        elif isinstance(msg, Delta):
            await self._on_delta(ws, msg)
        elif isinstance(msg, Heartbeat):
            if not self._resync_pending:
                reason = self.reconciler.mismatch(msg)
                if reason is not None:
                    await self._request_resync(ws, reason)
        elif isinstance(msg, ErrorMsg):
            self.last_error = f"{msg.code}: {msg.message}"
            if msg.code in REFUSED_CODES:
                self._refused = True
                self.stats.refused += 1
            log.error(
                "%s: server error %s: %s",
                self.host,
                msg.code,
                msg.message,
                extra=self._log_context(),
            )

    async def _on_delta(self, ws: ClientConnection, msg: Delta) -> None:
        if self._resync_pending:
            return  # a snapshot is on its way and will replace all of this
        try:
            if self.reconciler.on_delta(msg):
                self._wake.set()
            else:
                self.stats.duplicates_ignored += 1
        except Gap as gap:
            self.stats.gaps_detected += 1
            await self._request_resync(ws, gap.reason)

    def _note_networks(self, msg: Snapshot | Resume | Delta) -> None:
        seen = self.stats.networks_seen
        seen.update(n.network_id for n in msg.networks)
        seen.update(p.network_id for p in msg.ports)

    # -- worker -----------------------------------------------------------------------

    async def _worker(self) -> None:
        """The only place the datapath is programmed: one sync per wake-up, retried. Also
        wakes by itself when a failing network's retry is due (``SyncResult.retry_in``)."""
        retry = Backoff(0.2, 10.0)
        retry_in: float | None = None
        while True:
            if retry_in is None:
                await self._wake.wait()
            else:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), retry_in)
            self._wake.clear()
            try:
                if self.datapath.blocking:
                    result = await asyncio.to_thread(self.reconciler.sync)
                else:
                    result = self.reconciler.sync()
            except Exception as exc:
                self.stats.sync_errors += 1
                delay = retry.next()
                log.exception(
                    "%s: sync failed (%s); FULL retry in %.2fs",
                    self.host,
                    exc,
                    delay,
                    extra=self._log_context(),
                )
                await asyncio.sleep(delay)  # rate limit: a broken kernel is not hammered
                self._wake.set()
                continue
            retry.reset()
            retry_in = result.retry_in
            self.stats.syncs += 1
            self._log_applied()
            if result.full:
                self.stats.full_syncs += 1
            # status reports first: a port going ACTIVE waits on its report, not on the ack
            for port_id, status in result.reports:
                self.reporter.report(port_id, status)
            await self._send_ack(self._ws)

    def _log_applied(self) -> None:
        applied = self.reconciler.applied()
        log_ = self.stats.applied_log
        if applied is not None and (not log_ or log_[-1][0] != applied[0]):
            log_.append((applied[0], time.monotonic()))
