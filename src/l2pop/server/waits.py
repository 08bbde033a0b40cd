"""Waiting for a revision to reach the hosts: what ``GET /v1/revisions/{revision}?wait=S``
answers, and what ``--wait`` on the CLI's writes is built on (docs/adr/0024).

Design notes
------------
*Applied* means acknowledged: a host has applied revision R when its agent acked a revision
at or after the batch that carried R (``Channel.host_status``: the agent's ack for a session
held here, the store's copy of the acks, flushed every ``REPORT_FLUSH_S``, for one held by
another replica; an in-sync agent with nothing in flight counts as current as of the hub's
revision). An agent acks only once its datapath holds what it was sent, so "applied" is
"programmed", not "received".

*Who is waited for*: the hosts the hub's batch that carried R had something to tell
(``Hub.told_at``), against that batch's revision: the hub may batch R with later commits,
and a host acks the batch, not R. Hosts that had nothing to hear about R are not waited for
(a non-member host never hears of a network). When the hub no longer remembers R (before its
load, or older than its window) it cannot say who heard it: every host that is a member of
any network is waited for, against R itself (over-inclusive, never wrong). A host deleted
meanwhile drops out; a host whose agent is not connected is behind ("not connected") until
it is, however old its last ack: the point of waiting is that the hosts *hold* the change.

*How*: first the hub must have read R (it is woken with ``Hub.notify``; a revision beyond the
store's is an error, ``RevisionAhead``, answered 404). Then a poll on the event loop: local
sessions every ``LOCAL_POLL_S`` (a dictionary look-up per pending host, no I/O), the rows of
the pending hosts re-read from the store every ``REMOTE_POLL_S`` in a thread (remote
replicas' acks reach the store only every ``REPORT_FLUSH_S`` anyway, and a deleted host is
seen there). Polling rather than an event per ack keeps the sessions, hub and channel
untouched by waits, and its cost is bounded: at most ``MAX_WAITS`` waits at once per server,
each at most ``MAX_WAIT_S``, each one short transaction per ``REMOTE_POLL_S``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from l2pop.model import Host, NotFound
from l2pop.server.channel import Channel
from l2pop.server.feed import CommitFeed
from l2pop.server.hub import Hub
from l2pop.store import Store

#: the longest wait a request may ask for, and how many may be under way at once
MAX_WAIT_S = 60.0
MAX_WAITS = 64
#: seconds between looks at the local sessions, and between re-reads of the hosts' rows
LOCAL_POLL_S = 0.01
REMOTE_POLL_S = 0.1
#: hosts named in the message of a wait that timed out
NAMED_BEHIND = 20


class RevisionAhead(NotFound):
    """The revision does not exist yet: the store has not reached it (404 naming it)."""

    def __init__(self, revision: int, store_revision: int) -> None:
        super().__init__(f"revision: {revision} is ahead of the store's ({store_revision})")
        self.field = "revision"


class TooManyWaits(Exception):
    """``MAX_WAITS`` waits are already under way on this server (503)."""


@dataclass(frozen=True, slots=True)
class HostApplied:
    """One host a revision had to reach: what it applied, and why it is behind (or None)."""

    name: str
    connected: bool
    applied_revision: int | None
    behind: str | None


@dataclass(frozen=True, slots=True)
class WaitResult:
    revision: int
    server_revision: int
    batch_revision: int | None
    hosts: list[HostApplied]
    waited_ms: int
    pending: str | None = None  # why no host could be judged yet (the hub is behind)

    @property
    def behind(self) -> list[HostApplied]:
        return [h for h in self.hosts if h.behind is not None]

    @property
    def complete(self) -> bool:
        return self.pending is None and not self.behind

    def why_not(self) -> str:
        """One line: what is still behind and why (at most ``NAMED_BEHIND`` hosts named)."""
        if self.pending is not None:
            return self.pending
        behind = self.behind
        named = ", ".join(f"{h.name} ({h.behind})" for h in behind[:NAMED_BEHIND])
        more = f" and {len(behind) - NAMED_BEHIND} more" if len(behind) > NAMED_BEHIND else ""
        return f"{len(behind)} of {len(self.hosts)} hosts behind: {named}{more}"


@dataclass
class _Target:
    """What a wait waits for: hosts (name -> last row read) to reach ``wanted``."""

    wanted: int
    batch_revision: int | None
    rows: dict[str, Host | None]
    done: dict[str, HostApplied] = field(default_factory=dict)


class Waits:
    """The waits of one server: ``wait`` for a revision, at most ``limit`` at once."""

    def __init__(
        self, store: Store, hub: Hub, channel: Channel, feed: CommitFeed, limit: int = MAX_WAITS
    ) -> None:
        self.store, self.hub, self.channel, self.feed = store, hub, channel, feed
        self.limit = limit
        self.active = 0

    async def wait(self, revision: int, timeout: float) -> WaitResult:
        """Until every host revision ``revision`` had to reach applied it, or ``timeout``
        seconds (0: look once); the result says which hosts are behind. Raises
        ``RevisionAhead`` for a revision the store has not reached, ``TooManyWaits``."""
        timeout = min(max(timeout, 0.0), MAX_WAIT_S)
        if timeout > 0 and self.active >= self.limit:
            raise TooManyWaits(
                f"too many waits: {self.active} are under way on this server, at most "
                f"{self.limit}; retry later"
            )
        self.active += timeout > 0
        try:
            return await self._wait(revision, time.monotonic(), timeout)
        finally:
            self.active -= timeout > 0

    async def _wait(self, revision: int, start: float, timeout: float) -> WaitResult:
        deadline = start + timeout
        if revision > self.hub.revision:
            await self._exists(revision)
            while revision > self.hub.revision and time.monotonic() < deadline:
                await asyncio.sleep(LOCAL_POLL_S)
            if revision > self.hub.revision:
                why = f"this server has read up to revision {self.hub.revision}, not yet {revision}"
                return self._result(revision, None, [], start, pending=why)
        target = await self._target(revision)
        next_read = time.monotonic() + REMOTE_POLL_S
        while True:
            hosts = self._judge(target)
            if all(h.behind is None for h in hosts) or time.monotonic() >= deadline:
                return self._result(revision, target.batch_revision, hosts, start)
            await asyncio.sleep(min(LOCAL_POLL_S, max(deadline - time.monotonic(), 0.0)))
            if time.monotonic() >= next_read:
                await self._reread(target)
                next_read = time.monotonic() + REMOTE_POLL_S

    async def _exists(self, revision: int) -> None:
        """Raise ``RevisionAhead`` unless the store reached ``revision``; wake the hub."""
        known = self.feed.revision
        if revision > known:
            known = await asyncio.to_thread(self._store_revision)
            if revision > known:
                raise RevisionAhead(revision, known)
        self.hub.notify(known)

    def _store_revision(self) -> int:
        with self.store.read() as tx:
            return tx.revision()

    async def _target(self, revision: int) -> _Target:
        told = self.hub.told_at(revision)
        if told is not None:
            batch_revision, names = told
            target = _Target(batch_revision, batch_revision, dict.fromkeys(sorted(names)))
        else:  # before the hub's memory: every member of any network, against R itself
            members = sorted(h for h, nets in self.hub.member_of.items() if nets)
            target = _Target(revision, None, dict.fromkeys(members))
        target.rows = await asyncio.to_thread(self._rows, target.rows)
        return target

    async def _reread(self, target: _Target) -> None:
        pending = [n for n in target.rows if n not in target.done]
        if pending:
            target.rows.update(await asyncio.to_thread(self._rows, pending))

    def _rows(self, names: Iterable[str]) -> dict[str, Host | None]:
        with self.store.read() as tx:
            return {name: tx.get_host(name) for name in names}

    def _judge(self, target: _Target) -> list[HostApplied]:
        """Every host still waited for, judged now; a host once done stays done."""
        out: list[HostApplied] = []
        for name, row in target.rows.items():
            if name in target.done:
                out.append(target.done[name])
                continue
            if row is None or name not in self.hub.vteps:
                continue  # deleted meanwhile: nothing to wait for
            status = self.channel.host_status(row)
            applied = status.applied_revision
            if not status.connected:
                why: str | None = "not connected"
            elif applied is None or applied < target.wanted:
                why = f"applied {applied if applied is not None else 'nothing'}"
                why += f" of {target.wanted}"
            else:
                why = None
            judged = HostApplied(name, status.connected, applied, why)
            if why is None:
                target.done[name] = judged
            out.append(judged)
        return out

    def _result(
        self,
        revision: int,
        batch_revision: int | None,
        hosts: list[HostApplied],
        start: float,
        pending: str | None = None,
    ) -> WaitResult:
        waited = round((time.monotonic() - start) * 1000)
        return WaitResult(revision, self.hub.revision, batch_revision, hosts, waited, pending)
