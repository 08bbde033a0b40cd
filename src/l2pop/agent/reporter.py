"""Port status reports: the REST status call with the host's token (``StatusHttp``, the
agent's own HTTP/1.1 client; ``l2pop.client.AsyncClient`` on a shared ``httpx.AsyncClient``
when one is given, as the swarm and the tests do: the same contract).

Contract: ``report(port_id, status)`` never blocks and never fails; the latest status per port
wins (a report still waiting is replaced, not queued behind). ``run()`` sends pending reports
and retries failures (connection errors, 5xx, 401 while the operator fixes the token) with
exponential backoff and jitter, without bound: pending reports are one per port, so memory
stays bounded however long the server is away. A 403 or 404 means the port moved to another
host or is gone: retrying can never succeed, so the report is dropped (and logged); so is any
other 4xx, which names a bug rather than a passing state.

Failover: ``use_server(url)`` points the reporter at another replica (the agent calls it when
its channel moves on); reports pending or retried from then on go there.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from contextlib import suppress
from typing import TYPE_CHECKING, Protocol

from l2pop.agent.backoff import Backoff
from l2pop.agent.statushttp import StatusHttp
from l2pop.clienterrors import ApiError, ClientError, UnexpectedAnswer
from l2pop.model import PortStatus

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("l2pop.agent")

#: at most this many status calls in flight per reporter
MAX_IN_FLIGHT = 8
_RETRY_STATUSES = frozenset({401, 408, 425, 429})


class StatusCall(Protocol):
    """The one call the reporter makes (``StatusHttp`` or ``l2pop.client.AsyncClient``)."""

    base_url: str

    async def report_status(self, port_id: str, status: str) -> object: ...

    async def close(self) -> None: ...


class StatusReporter:
    """Reports port statuses of one host; many may share one ``httpx.AsyncClient``."""

    def __init__(
        self,
        server_url: str,
        token: str,
        *,
        client: httpx.AsyncClient | None = None,
        backoff: Backoff | None = None,
        host: str = "",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context`` verifies an https server (for the client made here, not ``client``).
        Without ``client`` the calls go through ``StatusHttp`` (no httpx in the process)."""
        self.base_url = server_url.rstrip("/")
        self.host = host
        self._api: StatusCall
        if client is None:
            self._api = StatusHttp(self.base_url, token, timeout=10.0, ssl_context=ssl_context)
        else:
            from l2pop.client import AsyncClient

            self._api = AsyncClient(
                self.base_url,
                token,
                timeout=10.0,
                verify=ssl_context if ssl_context is not None else True,
                http=client,
            )
        self._backoff = backoff or Backoff()
        self._pending: dict[str, PortStatus] = {}
        self._wake = asyncio.Event()
        self._moved = asyncio.Event()
        self.sent = 0
        self.dropped = 0
        self.failures = 0

    def use_server(self, server_url: str) -> None:
        """Send from now on to ``server_url`` (another replica of the same deployment, same
        TLS settings); a call in flight finishes where it went. Reports waiting out a backoff
        after failures against the old replica are retried at once."""
        self.base_url = server_url.rstrip("/")
        self._api.base_url = self.base_url
        self._backoff.reset()
        self._moved.set()

    def report(self, port_id: str, status: PortStatus) -> None:
        """Queue a report; replaces one still pending for the same port."""
        self._pending[port_id] = status
        self._wake.set()

    def pending(self) -> dict[str, PortStatus]:
        return dict(self._pending)

    async def run(self) -> None:
        """Send reports until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._moved.clear()
            if not await self.flush():
                # the backoff rate-limits retries against one server; a move cuts it short
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._moved.wait(), self._backoff.next())
                self._wake.set()  # retry what is left
            else:
                self._backoff.reset()

    async def flush(self) -> bool:
        """Send every pending report once; True when none is left to retry."""
        batch = dict(self._pending)
        if not batch:
            return True
        limit = asyncio.Semaphore(MAX_IN_FLIGHT)

        async def one(port_id: str, status: PortStatus) -> bool:
            async with limit:
                done = await self._send(port_id, status)
            # Only forget it if no newer status was queued while this one was in flight.
            if done and self._pending.get(port_id) is status:
                del self._pending[port_id]
            return done

        results = await asyncio.gather(*(one(p, s) for p, s in batch.items()))
        return all(results)

    async def _send(self, port_id: str, status: PortStatus) -> bool:
        """One attempt; True when finished (sent or dropped), False to retry later."""
        code, why = 200, ""
        try:
            await self._api.report_status(port_id, status.value)
        except ApiError as exc:
            code, why = exc.status, exc.message
        except UnexpectedAnswer as exc:  # a 2xx all the same: the server took the report
            code, why = exc.status, exc.message
        except ClientError as exc:  # Unreachable: no answer (or no usable server URL)
            self.failures += 1
            log.info(
                "%s: status of port %s not sent (%s); will retry",
                self.host,
                port_id,
                exc.message,
                extra={"host": self.host, "port": port_id},
            )
            return False
        if 200 <= code < 300:
            self.sent += 1
            return True
        if code >= 500 or code in _RETRY_STATUSES:
            self.failures += 1
            log.info(
                "%s: status of port %s: server answered %d; will retry",
                self.host,
                port_id,
                code,
                extra={"host": self.host, "port": port_id},
            )
            return False
        self.dropped += 1
        reason = "moved to another host or gone" if code in (403, 404) else "refused"
        log.warning(
            "%s: status %s of port %s dropped: %s (%s)",
            self.host,
            status.value,
            port_id,
            reason,
            why[:200],
            extra={"host": self.host, "port": port_id},
        )
        return True

    async def close(self) -> None:
        await self._api.close()
