"""``l2pop server``: check the options, open the store, build the app, serve it with uvicorn.

With ``--workers N`` (N > 1) this process only supervises N worker processes
(``server/workers.py``); each worker is this module again, serving on its own
``SO_REUSEPORT`` socket.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import socket
import sys
from pathlib import Path

import uvicorn

from l2pop import logfmt, sdnotify
from l2pop.server.app import REPLICA_NAME_MAX, create_app, default_replica_name
from l2pop.server.channel import MAX_AGENT_FRAME
from l2pop.server.limits import (
    DEFAULT_CLIENT_TIMEOUT,
    DEFAULT_MAX_BODY,
    GuardedHttpProtocol,
    is_loopback,
)
from l2pop.server.workers import (
    MAX_WORKERS,
    bind_reuseport,
    die_with_parent,
    format_listen,
    supervise,
)
from l2pop.store import open_store, sqlite_path
from l2pop.tlsconfig import TlsConfigError, check_server_files

log = logging.getLogger("l2pop.server")

#: seconds an idle kept-alive connection stays open after its last response
KEEP_ALIVE_TIMEOUT = 5
#: open connections (agents' channels included) before new requests get 503
DEFAULT_MAX_CONNECTIONS = 4096
#: uvicorn's exit status when the server could not start (its ``STARTUP_FAILURE``)
STARTUP_FAILURE = 3


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


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """``l2pop server``'s options once checked (``check_options``)."""

    db_url: str
    host: str
    port: int
    admin_token: str | None
    heartbeat_interval: float = 5.0
    queue_limit: int = 256
    tls_cert: str | None = None
    tls_key: str | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    client_timeout: float = DEFAULT_CLIENT_TIMEOUT
    max_body: int = DEFAULT_MAX_BODY
    #: as given (None: ``default_replica_name(port)``); workers append ``/w<i>``
    replica: str | None = None
    workers: int = 1
    log_level: str = "INFO"
    log_format: str = "text"

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def replica_name(self) -> str:
        return self.replica or default_replica_name(self.port)


class OptionError(Exception):
    """A bad option or file: reported as one ``error:`` line, exit status 2."""


def check_options(options: ServerOptions) -> None:
    """Every start-up rule that needs no store and no socket.

    :raises OptionError: with the message of the ``error:`` line
    """
    if not options.admin_token and not is_loopback(options.host):
        raise OptionError(
            f"refusing to listen on {options.host}: without --admin-token (or "
            "L2POP_ADMIN_TOKEN) the API is open, so it listens on loopback only"
        )
    if bool(options.tls_cert) != bool(options.tls_key):
        raise OptionError("--tls-cert and --tls-key go together: give both or neither")
    if options.tls_cert and options.tls_key:
        try:
            check_server_files(options.tls_cert, options.tls_key)
        except TlsConfigError as exc:
            raise OptionError(str(exc)) from None
    workers = options.workers
    if not 1 <= workers <= MAX_WORKERS:
        raise OptionError(f"--workers must be 1 to {MAX_WORKERS}, got {workers}")
    if workers > 1 and sqlite_path(options.db_url) is not None:
        raise OptionError(
            f"--workers {workers} needs PostgreSQL: SQLite serves one server process "
            "(run one worker, or use postgresql://...)"
        )
    if options.replica is not None:
        longest = len(options.replica)
        if workers > 1:  # the longest worker's name, uncut (worker_replica_name cuts)
            longest += len(f"/w{workers - 1}")
        if not options.replica or longest > REPLICA_NAME_MAX:
            suffix = ", its /wN suffix included" if workers > 1 else ""
            raise OptionError(f"--replica must be 1 to {REPLICA_NAME_MAX} characters{suffix}")


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
    workers: int = 1,
    worker_of: int | None = None,
    log_level: str = "INFO",
    log_format: str = "text",
) -> int:
    """Serve until stopped; 2 (after one ``error:`` line) for a bad option or file.

    ``workers`` > 1: supervise that many worker processes instead (``server/workers.py``).
    ``worker_of`` (a supervisor's pid) makes this process one of its workers: it serves on
    its own ``SO_REUSEPORT`` socket and ends with the supervisor. Logs go to stderr in
    ``log_format`` (``l2pop.logfmt``).
    """
    logfmt.configure(log_level, log_format, text=logfmt.SERVER_TEXT)
    try:
        host, port = parse_listen(listen)
        options = ServerOptions(
            normalise_db_url(db_url),
            host,
            port,
            admin_token or None,
            heartbeat_interval=heartbeat_interval,
            queue_limit=queue_limit,
            tls_cert=tls_cert,
            tls_key=tls_key,
            max_connections=max_connections,
            client_timeout=client_timeout,
            max_body=max_body,
            replica=replica,
            workers=workers,
            log_level=log_level,
            log_format=log_format,
        )
        check_options(options)
    except (ValueError, OptionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if options.workers > 1:
        try:  # the supervisor's own socket on the address (see server/workers.py)
            reserve = bind_reuseport(options.host, options.port)
        except OSError as exc:
            where = format_listen(options.host, options.port)
            print(f"error: cannot listen on {where}: {exc}", file=sys.stderr)
            return 2
        with reserve:
            warn_insecure(options)
            return supervise(options, reserve)
    return serve(options, worker_of=worker_of)


def warn_insecure(options: ServerOptions) -> None:
    """Once per server (by the supervisor, not by each worker), after every refusal."""
    if not options.tls_cert and not is_loopback(options.host):
        log.warning("no TLS: tokens and tables cross the network to %s in clear", options.host)
    if not options.admin_token:
        log.warning("no admin token: the API is open to local callers on %s", options.host)


def serve(options: ServerOptions, *, worker_of: int | None = None) -> int:
    """One server process: lock SQLite, open the store, serve until stopped."""
    sock: socket.socket | None = None
    if worker_of is not None:
        if not die_with_parent(worker_of):
            log.error("the supervisor (pid %d) is gone: not starting", worker_of)
            return 1
        sock = bind_reuseport(options.host, options.port)  # OSError: a traceback, exit 1
    database = sqlite_path(options.db_url)
    lock_fd: int | None = None
    if database is not None:
        try:
            lock_fd = lock_sqlite(database)
        except DatabaseInUse as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if worker_of is None:
        warn_insecure(options)
    try:
        store = open_store(options.db_url)
        app = create_app(
            store,
            options.admin_token,
            heartbeat_interval=options.heartbeat_interval,
            queue_limit=options.queue_limit,
            max_body=options.max_body,
            client_timeout=options.client_timeout,
            replica=options.replica_name,
        )
        where = store.url.split("@")[-1]
        log.info(
            "l2pop server on %s://%s, store %s, replica %s",
            options.scheme,
            format_listen(options.host, options.port),
            where,
            options.replica_name,
        )
        server = NotifyingServer(uvicorn_config(app, options))
        try:
            server.run(sockets=None if sock is None else [sock])
        except KeyboardInterrupt:
            pass
        finally:
            store.close()
        if not server.started:
            return STARTUP_FAILURE  # uvicorn logged why (the address in use, say)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)  # the kernel would too, at exit; this is for in-process callers
        if sock is not None:
            sock.close()
    return 0


def uvicorn_config(app: object, options: ServerOptions) -> uvicorn.Config:
    """How every server process runs uvicorn, alone or as a worker."""
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=options.host,
        port=options.port,
        log_level="warning",
        access_log=False,
        # uvicorn's loggers propagate to ours (l2pop.logfmt): one format, JSON included
        log_config=None,
        # No WebSocket pings from the server: the channel's own heartbeats already prove the
        # agent alive (an ack each interval; a session silent for three is closed, see
        # server/channel.py), and a second liveness check per session costs every agent
        # a ping and the server a pong each interval. Agents' pings are still answered.
        ws_ping_interval=None,
        ws_per_message_deflate=False,  # see agent/channel.py: CPU over bytes
        ssl_certfile=options.tls_cert,
        ssl_keyfile=options.tls_key,
        # bounded before authentication (server/limits.py): request heads, idle
        # keep-alive connections, agent frames and the number of connections
        http=GuardedHttpProtocol.with_timeout(options.client_timeout),
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
        ws_max_size=MAX_AGENT_FRAME,
        limit_concurrency=options.max_connections,
    )


class NotifyingServer(uvicorn.Server):
    """uvicorn's server, telling systemd (``sdnotify``) when it serves and when it stops.

    uvicorn's ``startup`` runs the app's lifespan (the hub loads the store) and then listens,
    so once it returns with ``started`` set, ``/healthz`` answers: that is ``READY=1``. A
    failed start (the address in use, the store unreadable) never sends it.
    """

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            sdnotify.ready(f"serving on {self.config.host}:{self.config.port}")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        sdnotify.stopping()
        await super().shutdown(sockets=sockets)
