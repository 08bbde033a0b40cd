"""Replicas of one deployment, and which one holds each host's agent session.

Design notes (docs/adr/0022-sessions-across-replicas.md)
-------------------------------------------------------
Several server processes may serve one PostgreSQL database. A host's agent must have one
live session among all of them, and every replica must tell the same story about the host.
Both live in the store, not in any one process:

* **Claims.** A session that passed its hello claims the host (``Store.claim_session``): one
  ``UPDATE ... RETURNING`` adds one to the host's ``session_generation`` and names this
  replica, so racing claims anywhere are ordered by the database. The claim NOTIFYs
  ``SESSION_CHANNEL`` in its transaction; every replica's feed hears it and the replica
  holding an older session of that host closes it (``REPLACED``) at once. A notification
  can be lost (the LISTEN connection was down), so each beat also reads every host's
  holder and closes what a newer claim superseded: a duplicate session lives at most one
  beat past a lost notification.
* **Beats.** Every ``interval`` this replica writes its row in ``replicas`` (name, last
  beat). A replica is alive while its last beat is younger than ``REPLICA_TTL_BEATS``
  intervals; a host whose holder is not alive is not connected. So when a replica dies
  (``kill -9``, power), every replica shows its hosts disconnected within about
  ``(REPLICA_TTL_BEATS + 1) x interval``, unless their agents claimed elsewhere first.
* A session that ends releases its claim (``Store.release_session``, only if no newer one
  replaced it), so its host reads disconnected everywhere at once.

One store read per beat (hosts and replicas) and one upsert: O(hosts) a beat, not a query
per API call; the API reads the alive set from memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from l2pop.server.sessions import SessionRegistry
from l2pop.store import Store

log = logging.getLogger("l2pop.replicas")

#: beats a replica may miss before the others count it dead
REPLICA_TTL_BEATS = 3


class Presence:
    """This replica's beat, the set of live replicas, and the closing of sessions that a
    newer claim (on any replica) superseded."""

    def __init__(
        self, store: Store, replica: str, registry: SessionRegistry, interval: float
    ) -> None:
        self.store = store
        self.replica = replica
        self.registry = registry
        self.interval = interval
        self._alive: frozenset[str] = frozenset({replica})
        self._known: frozenset[str] = frozenset({replica})
        self._loop: asyncio.AbstractEventLoop | None = None
        self.beats = 0

    def alive(self, replica: str | None) -> bool:
        """Whether ``replica`` beat recently enough (this one always is)."""
        return replica is not None and (replica == self.replica or replica in self._alive)

    @property
    def replicas_alive(self) -> frozenset[str]:
        return self._alive

    def holds(self, replica: str | None, last_seen: datetime | None) -> bool:
        """Whether ``replica`` may still hold a session whose host was last seen at
        ``last_seen``: it beat recently, or it is one this replica has not heard of yet (it
        started after our last beat read) and the host's agent was heard recently."""
        if replica is None:
            return False
        if self.alive(replica):
            return True
        if replica in self._known or last_seen is None:
            return False
        ttl = timedelta(seconds=REPLICA_TTL_BEATS * self.interval)
        return datetime.now(UTC) - last_seen < ttl

    def claimed(self, host: str, generation: int) -> None:
        """A claim of ``host`` at ``generation`` was heard (any thread: the feed's)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.registry.supersede, host, generation)

    async def run(self) -> None:
        """Forever: beat, learn who is alive, close superseded sessions."""
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                await self.beat()
            except Exception as exc:
                log.warning("replica beat failed: %s", exc)
            await asyncio.sleep(self.interval)

    async def beat(self) -> None:
        """One beat (store errors propagate; ``run`` logs them and beats again)."""
        now = datetime.now(UTC)
        holders, seen = await asyncio.to_thread(self._beat_and_read, now)
        fresh = now - timedelta(seconds=REPLICA_TTL_BEATS * self.interval)
        self._alive = frozenset(name for name, at in seen.items() if at >= fresh)
        self._known = frozenset(seen)
        self.beats += 1
        for host, generation in holders.items():
            self.registry.supersede(host, generation)

    def _beat_and_read(self, now: datetime) -> tuple[dict[str, int], dict[str, datetime]]:
        started = time.monotonic()
        self.store.beat_replica(self.replica, now)
        live = {s.host for s in self.registry.live()}
        with self.store.read() as tx:
            hosts = tx.list_hosts() if live else []
            seen = tx.list_replicas()
        holders = {h.name: h.session_generation for h in hosts if h.name in live}
        took = time.monotonic() - started
        if took > self.interval:
            log.warning("replica beat took %.2fs (interval %.2fs)", took, self.interval)
        return holders, seen
