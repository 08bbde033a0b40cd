"""``l2pop server``: open the store, build the app, serve it with uvicorn."""

from __future__ import annotations

import fcntl
import logging
import os
import sys
from pathlib import Path

import uvicorn

from l2pop.server.app import REPLICA_NAME_MAX, create_app, default_replica_name
from l2pop.server.channel import MAX_AGENT_FRAME
from l2pop.server.limits import (
    DEFAULT_CLIENT_TIMEOUT,
    DEFAULT_MAX_BODY,
    GuardedHttpProtocol,
    is_loopback,
)
from l2pop.store import open_store, sqlite_path
from l2pop.tlsconfig import TlsConfigError, check_server_files

log = logging.getLogger("l2pop.server")

#: seconds an idle kept-alive connection stays open after its last response
KEEP_ALIVE_TIMEOUT = 5
#: open connections (agents' channels included) before new requests get 503
DEFAULT_MAX_CONNECTIONS = 4096


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def normalise_db_url(db: str) -> str:
    """A bare path means a SQLite file."""
    return db if "://" in db else f"sqlite:///{db}"


class DatabaseInUse(Exception):
    """Another ``l2pop server`` holds the SQLite database's lock."""


def lock_sqlite(database: Path) -> int:
    """Take the lock that makes a SQLite database one server's: an exclusive ``flock`` on
    ``<database>.lock``, held through the returned descriptor for the process's life.

    One process per file because the hub learns of commits only from its own process's
    store on SQLite (no NOTIFY): a second server would serve stale tables. The kernel drops
    the lock when the process dies, ``kill -9`` included, so no stale lock outlives it. Other
    tools that open the database (the tests, ``l2pop`` commands) do not take it.

    :raises DatabaseInUse: if another process holds it
    """
    lock_path = database.with_name(database.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DatabaseInUse(
            f"another l2pop server is using the SQLite database {database} (it holds "
            f"{lock_path}); SQLite serves one server process, run replicas on PostgreSQL"
        ) from None
    return fd


def run(
    db_url: str,
    listen: str,
    admin_token: str | None,
    *,
    heartbeat_interval: float = 5.0,
    queue_limit: int = 256,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    client_timeout: float = DEFAULT_CLIENT_TIMEOUT,
    max_body: int = DEFAULT_MAX_BODY,
    replica: str | None = None,
) -> int:
    """Serve until stopped; 2 (after one ``error:`` line) for a bad option or file."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not admin_token and not is_loopback(host):
        print(
            f"error: refusing to listen on {host}: without --admin-token (or L2POP_ADMIN_TOKEN)"
            " the API is open, so it listens on loopback only",
            file=sys.stderr,
        )
        return 2
    if bool(tls_cert) != bool(tls_key):
        print("error: --tls-cert and --tls-key go together: give both or neither", file=sys.stderr)
        return 2
    if tls_cert and tls_key:
        try:
            check_server_files(tls_cert, tls_key)
        except TlsConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if replica is not None and not 0 < len(replica) <= REPLICA_NAME_MAX:
        print(f"error: --replica must be 1 to {REPLICA_NAME_MAX} characters", file=sys.stderr)
        return 2
    url = normalise_db_url(db_url)
    database = sqlite_path(url)
    lock_fd: int | None = None
    if database is not None:
        try:
            lock_fd = lock_sqlite(database)
        except DatabaseInUse as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if not tls_cert and not is_loopback(host):
        log.warning("no TLS: tokens and tables cross the network to %s in clear", host)
    if not admin_token:
        log.warning("no admin token: the API is open to local callers on %s", host)
    try:
        store = open_store(url)
        app = create_app(
            store,
            admin_token or None,
            heartbeat_interval=heartbeat_interval,
            queue_limit=queue_limit,
            max_body=max_body,
            client_timeout=client_timeout,
            replica=replica or default_replica_name(port),
        )
        scheme = "https" if tls_cert else "http"
        where = store.url.split("@")[-1]
        log.info("l2pop server on %s://%s:%d, store %s", scheme, host, port, where)
        try:
            uvicorn.run(
                app,
                host=host,
                port=port,
                log_level="warning",
                access_log=False,
                ws_ping_interval=heartbeat_interval,
                ws_ping_timeout=3 * heartbeat_interval,
                ws_per_message_deflate=False,  # see agent/channel.py: CPU over bytes
                ssl_certfile=tls_cert,
                ssl_keyfile=tls_key,
                # bounded before authentication (server/limits.py): request heads, idle
                # keep-alive connections, agent frames and the number of connections
                http=GuardedHttpProtocol.with_timeout(client_timeout),
                timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
                ws_max_size=MAX_AGENT_FRAME,
                limit_concurrency=max_connections,
            )
        finally:
            store.close()
    finally:
        if lock_fd is not None:
            os.close(lock_fd)  # the kernel would too, at exit; this is for in-process callers
    return 0
