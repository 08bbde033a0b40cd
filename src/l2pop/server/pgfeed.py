"""``PostgresFeed``: the ``CommitFeed`` of a server that shares its PostgreSQL with replicas.

Every write block that moves the revision sends ``NOTIFY l2pop_revision, '<revision>'`` in
its transaction (``store/sql.py``), so PostgreSQL tells every listening session once the
block commits. One thread per process holds one dedicated psycopg connection that LISTENs
and hands each revision to the listener (the hub's ``notify``): a replica's commit reaches
this server's hub within a round trip (docs/adr/0021-replicas-follow-the-change-log.md).

What a notification cannot promise is covered by a poll, not by trust: a notification sent
while the LISTEN connection was down is gone, so the same thread reads the store's revision
every ``POLL_INTERVAL`` seconds whatever the connection's state. A lost notification
therefore delays a change by at most that long, and a database that went away delays
nothing beyond it once it is back. The LISTEN connection is re-made with backoff; nothing
here raises into the server.

This process's own commits need no round trip: the feed also subscribes to the store's
commit hook (``Store.subscribe``), as ``InProcessFeed`` does, and wakes the hub in the
writer's thread. The NOTIFY of the same commit arrives a moment later and changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Callable

import psycopg
from psycopg import sql

from l2pop.agent.backoff import Backoff
from l2pop.store import (
    NOTIFY_CHANNEL,
    SESSION_CHANNEL,
    CommitListener,
    Store,
    StoreUnavailable,
)

log = logging.getLogger("l2pop.feed")

#: called with (host, generation) for each session claim heard (the feed's thread)
SessionListener = Callable[[str, int], None]

#: seconds between reads of the store's revision: the most a lost notification delays a change
POLL_INTERVAL = 1.0
#: first and longest wait before re-making the LISTEN connection
RECONNECT_BASE = 0.2
RECONNECT_CAP = 10.0
#: the LISTEN connection's name in pg_stat_activity
APPLICATION_NAME = "l2pop-feed"
#: seconds to wait for the database when (re)connecting the LISTEN connection
CONNECT_TIMEOUT = 5
#: TCP keepalive idle seconds on the LISTEN connection (probes every 2 s, 5 of them): a
#: silently dead peer is found within ~15 s instead of the kernel's two hours
KEEPALIVE_IDLE = 5


class PostgresFeed:
    """``CommitFeed`` over PostgreSQL LISTEN/NOTIFY, with a poll of the store's revision.

    ``on_commit(revision)`` is called with each revision higher than any heard before (from
    this process's commits, a notification or the poll), from the writer's thread or the
    feed's thread; it must only hand the news on. ``revision`` never goes back.

    ``dsn`` is a libpq URI of the store's database (``l2pop.store.notify_dsn``); ``channel``
    the one the store notifies on (``NOTIFY_CHANNEL``). Call ``start()`` once the listener
    can take news, ``close()`` when done; until ``start()`` only the store's hook runs.
    """

    def __init__(
        self,
        store: Store,
        on_commit: CommitListener,
        dsn: str,
        *,
        channel: str = NOTIFY_CHANNEL,
        poll_interval: float = POLL_INTERVAL,
        on_session: SessionListener | None = None,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self._store = store
        self._on_commit = on_commit
        self._on_session = on_session
        self._dsn = dsn
        self._channel = channel
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._revision = 0
        self._stop = threading.Event()
        # close() writes to _wake_w to end the thread's wait on the LISTEN socket
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._backoff = Backoff(RECONNECT_BASE, RECONNECT_CAP)
        #: LISTEN connections made (the first included) and notifications heard: for tests
        #: and the log, never for decisions
        self.connects = 0
        self.notifications = 0
        store.subscribe(self._heard)  # before reading: no commit falls in between
        with store.read() as tx:
            self._heard(tx.revision())

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is up (False: only the poll hears other replicas)."""
        return self._conn is not None

    def start(self) -> None:
        """Start the feed's thread (once)."""
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._run, name="l2pop-pgfeed", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the thread at once (a connect in progress may take up to its timeout; the
        thread is a daemon and never holds up the process's exit); it closes the LISTEN
        connection itself."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        thread = self._thread
        if thread is not None:
            thread.join(timeout=CONNECT_TIMEOUT + 1.0)
        if thread is None or not thread.is_alive():
            self._wake_r.close()
            self._wake_w.close()

    # -- the feed's thread ----------------------------------------------------------------

    def _heard(self, revision: int) -> None:
        """A revision from any source: keep the highest, pass on only what is new."""
        with self._lock:
            if revision <= self._revision:
                return
            self._revision = revision
        self._on_commit(revision)

    def _run(self) -> None:
        next_connect = 0.0
        next_poll = 0.0  # poll at once: covers commits between construction and LISTEN
        store_answered = True  # whether the last poll reached the store
        while not self._stop.is_set():
            now = time.monotonic()
            if self._conn is None and now >= next_connect:
                if self._connect():
                    next_poll = now  # notifications sent while we were away are lost
                else:
                    next_connect = time.monotonic() + self._backoff.next()
            if now >= next_poll:
                answered = self._poll()
                if answered and not store_answered and self._conn is None:
                    # the database is back after an outage: LISTEN again at once rather
                    # than after a backoff grown while it was down (up to RECONNECT_CAP,
                    # all that time hearing other replicas only through the poll)
                    self._backoff.reset()
                    next_connect = 0.0
                store_answered = answered
                next_poll = time.monotonic() + self.poll_interval
            until = min(next_poll, next_connect) if self._conn is None else next_poll
            self._wait(max(0.0, until - time.monotonic()))
        self._disconnect()

    def _connect(self) -> bool:
        try:
            conn = psycopg.connect(
                self._dsn,
                autocommit=True,
                application_name=APPLICATION_NAME,
                connect_timeout=CONNECT_TIMEOUT,
                keepalives=1,
                keepalives_idle=KEEPALIVE_IDLE,
                keepalives_interval=2,
                keepalives_count=5,
            )
        except psycopg.Error as exc:
            log.warning(
                "feed: cannot LISTEN (%s); polling every %.1fs",
                _first_line(exc),
                self.poll_interval,
            )
            return False
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            if self._on_session is not None:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(SESSION_CHANNEL)))
        except psycopg.Error as exc:
            log.warning("feed: LISTEN failed (%s)", _first_line(exc))
            conn.close()
            return False
        self._conn = conn
        self.connects += 1
        self._backoff.reset()
        if self.connects > 1:
            log.info("feed: listening again on %s", self._channel)
        return True

    def _wait(self, timeout: float) -> None:
        """Hand on notifications for up to ``timeout`` seconds, or until ``close()``.

        Waits on the connection's socket and the wake-up socket together (libpq's own recipe:
        ``select``, ``consume_input``, ``notifies``), so ``close()`` ends the wait at once.
        """
        conn = self._conn
        waiting: list[int | socket.socket] = [self._wake_r]
        if conn is not None:
            waiting.append(conn.pgconn.socket)
        try:
            ready, _, _ = select.select(waiting, [], [], timeout)
            if conn is None or not ready or ready == [self._wake_r]:
                return
            conn.pgconn.consume_input()
            while (notify := conn.pgconn.notifies()) is not None:
                self.notifications += 1
                if notify.relname.decode() == SESSION_CHANNEL:
                    self._session_claimed(notify.extra.decode())
                    continue
                try:
                    revision = int(notify.extra)
                except ValueError:
                    log.warning("feed: ignoring notification %r", notify.extra)
                    continue
                self._heard(revision)
        except (psycopg.Error, OSError) as exc:
            # the database went away (restart, failover, network): poll until it is back;
            # notifications sent meanwhile are lost, the poll covers them
            log.warning("feed: LISTEN connection lost (%s); reconnecting", _first_line(exc))
            self._disconnect()

    def _session_claimed(self, payload: str) -> None:
        """``"<generation> <host>"`` from a session claim (``Store.claim_session``)."""
        generation, _, host = payload.partition(" ")
        if self._on_session is None or not generation.isdigit() or not host:
            log.warning("feed: ignoring session notification %r", payload[:80])
            return
        try:
            self._on_session(host, int(generation))
        except Exception:
            log.exception("feed: session listener failed")

    def _poll(self) -> bool:
        """Read the store's revision; whether the store answered."""
        try:
            with self._store.read() as tx:
                revision = tx.revision()
        except StoreUnavailable as exc:
            log.debug("feed: poll failed: %s", exc)
            return False
        except Exception:
            # the feed's thread must survive anything the store raises: it is the server's
            # only news of other replicas' commits
            log.exception("feed: poll failed")
            return False
        self._heard(revision)
        return True

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
