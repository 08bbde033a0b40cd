"""``l2pop server --workers N``: N replica processes behind one address, on one machine.

Design notes (docs/adr/0023-server-workers.md):

- **Why processes.** One server process runs one event loop and holds the GIL for its hub,
  channel and API threads, so it uses about one core. Replicas on one PostgreSQL already
  follow each other (ADR 21), so the way to use every core of one controller machine is
  several replicas there; ``--workers`` runs them as one service.
- **Why ``SO_REUSEPORT``, each worker with its own socket.** The kernel then spreads new
  connections over the workers' listening sockets by a hash of the connection, and a dead
  worker's socket closes with it, so it gets no new ones. A shared accept socket
  (one socket inherited by all, as uvicorn's and gunicorn's ``--workers`` do) lets every
  idle worker race for each connection (the thundering herd) and the kernel wakes them in
  LIFO order, so the least busy worker tends to take all the load: a channel of long-lived
  agent WebSockets then piles onto one process. uvicorn's own ``--workers`` is that shared
  socket; it also needs the app as an import string (ours is built from options and a
  store), gives every worker the same options (no replica name each) and restarts a dead
  worker at once, without a backoff.
- **Why ``subprocess`` of ``python -m l2pop server`` and not ``multiprocessing``.** A worker is
  then an ordinary server process with a readable command line (``ps`` shows its replica and
  its supervisor), started the way every test and operator starts one, with nothing of the
  parent's state inherited. ``multiprocessing``'s spawn re-imports ``l2pop.__main__``
  (which runs the CLI), starts a resource-tracker process of its own, and fork would copy a
  parent that may hold threads. Secrets do not go on the command line: the database URL and
  the admin token travel in the environment (``L2POP_DB``, ``L2POP_ADMIN_TOKEN``).
- **The parent is small.** It checks the options once (``main.check_options``), holds a
  socket of its own on the address (``SO_REUSEPORT``, never listening: it reserves the port
  while workers restart and turns port 0 into one real port), starts the workers, forwards
  SIGTERM/SIGINT to them and waits, and restarts a worker that dies unexpectedly after a
  backoff. It signals only the pids it started (held as ``Popen``, reaped by it).
- **Readiness** (ADR 26): under systemd the supervisor is the unit's main process. Workers
  never notify systemd themselves (a restarted worker's ``STOPPING=1`` would read as the
  service stopping); they notify the supervisor's ``sdnotify.Relay``, and the supervisor
  sends ``READY=1`` once every worker it started has, and ``STOPPING=1`` on SIGTERM.
- **A worker ends with its supervisor** (``die_with_parent``: ``PR_SET_PDEATHSIG``), so a
  ``kill -9`` of the parent leaves no orphan holding the port.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING

from l2pop import sdnotify
from l2pop.server.app import REPLICA_NAME_MAX

if TYPE_CHECKING:
    from l2pop.server.main import ServerOptions

log = logging.getLogger("l2pop.server.workers")

#: more workers than this is a typo, not a machine
MAX_WORKERS = 64
#: first restart delay of a worker that died; doubles with each death up to the max
RESTART_BACKOFF_MIN = 0.5
RESTART_BACKOFF_MAX = 30.0
#: a worker that lived this long had a healthy run: its next restart waits the minimum again
STABLE_RUN_S = 30.0
#: how long stopping waits for the workers (they close their connections, then their
#: store) before it kills the rest
STOP_GRACE_S = 30.0
#: how often the supervisor looks at its workers and its signals
POLL_S = 0.1

PR_SET_PDEATHSIG = 1


def format_listen(host: str, port: int) -> str:
    """``HOST:PORT``, an IPv6 host in brackets (what ``--listen`` takes)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def worker_replica_name(base: str, index: int) -> str:
    """``<base>/w<index>``, the base cut so that the whole fits the store's column."""
    suffix = f"/w{index}"
    return base[: REPLICA_NAME_MAX - len(suffix)] + suffix


def bind_reuseport(host: str, port: int) -> socket.socket:
    """A TCP socket bound (not listening) on ``host:port`` with ``SO_REUSEADDR`` and
    ``SO_REUSEPORT``: IPv6 for an IPv6 address, else IPv4 (a name resolves to its first
    IPv4 address).

    :raises OSError: if the address cannot be bound (in use without ``SO_REUSEPORT``, by
        another user, not local)
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn decides
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def die_with_parent(parent_pid: int) -> bool:
    """Have the kernel SIGTERM this process when its parent ends (Linux ``prctl``); False if
    the parent ``parent_pid`` is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    return os.getppid() == parent_pid  # checked after: the parent may have died before


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exited with {returncode}"


def worker_command(options: ServerOptions, replica: str, parent_pid: int) -> list[str]:
    """The worker's command line: every option but the secrets (see ``worker_env``)."""
    cmd = [sys.executable, "-m", "l2pop", "server"]
    cmd += ["--listen", format_listen(options.host, options.port)]
    cmd += ["--workers", "1", f"--replica={replica}", "--worker-of", str(parent_pid)]
    cmd += ["--heartbeat-interval", repr(options.heartbeat_interval)]
    cmd += ["--queue-limit", str(options.queue_limit)]
    cmd += ["--client-timeout", repr(options.client_timeout)]
    cmd += ["--max-body", str(options.max_body)]
    cmd += ["--max-connections", str(options.max_connections)]
    cmd += ["--log-level", options.log_level, "--log-format", options.log_format]
    if options.tls_cert and options.tls_key:
        cmd += ["--tls-cert", options.tls_cert, "--tls-key", options.tls_key]
    return cmd


def worker_env(options: ServerOptions) -> dict[str, str]:
    """The worker's environment: the parent's, with the database URL and the admin token
    (which may hold passwords, so not in ``ps``) and nothing that could override them: no
    config file (the command line holds what the parent made of it) and no systemd notify
    socket (see the module docstring)."""
    env = dict(os.environ)
    drop = ("L2POP_ADMIN_TOKEN", "L2POP_ADMIN_TOKEN_FILE", "L2POP_REPLICA", "L2POP_CONFIG")
    for name in (*drop, sdnotify.ENV_NOTIFY_SOCKET):
        env.pop(name, None)
    env["L2POP_DB"] = options.db_url
    if options.admin_token:
        env["L2POP_ADMIN_TOKEN"] = options.admin_token
    return env


@dataclasses.dataclass
class Worker:
    """One worker slot: its replica name and the process now filling it, if any."""

    index: int
    replica: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    #: deaths since the last stable run (the backoff's exponent)
    deaths: int = 0
    restart_at: float = 0.0


class Supervisor:
    """Starts the workers, restarts the ones that die, stops them all on a signal."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.parent_pid = os.getpid()
        base = options.replica_name
        self.workers = [Worker(i, worker_replica_name(base, i)) for i in range(options.workers)]
        self.signals: list[int] = []
        #: where workers report readiness; only under a service manager that wants it
        self.relay = sdnotify.Relay() if os.environ.get(sdnotify.ENV_NOTIFY_SOCKET) else None
        self.notified_ready = False

    # -- signals ---------------------------------------------------------------------------

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.signals.append(sig)  # the loop acts on it: nothing else here

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    # -- workers ---------------------------------------------------------------------------

    def spawn(self, worker: Worker) -> None:
        cmd = worker_command(self.options, worker.replica, self.parent_pid)
        # own process group: a terminal's Ctrl-C reaches the supervisor only, which forwards
        # one SIGTERM (a second SIGINT would make uvicorn skip its graceful shutdown)
        env = worker_env(self.options)
        if self.relay is not None:
            env.update(self.relay.environ())
        worker.proc = subprocess.Popen(cmd, env=env, process_group=0)
        worker.started_at = time.monotonic()
        log.info(
            "worker w%d pid %d started, replica %s", worker.index, worker.proc.pid, worker.replica
        )

    def check(self, worker: Worker, now: float) -> None:
        """Restart a worker whose time has come; notice one that died."""
        if worker.proc is None:
            if now >= worker.restart_at:
                self.spawn(worker)
            return
        returncode = worker.proc.poll()
        if returncode is None:
            return
        lived = now - worker.started_at
        if lived >= STABLE_RUN_S:
            worker.deaths = 0
        delay = min(RESTART_BACKOFF_MAX, RESTART_BACKOFF_MIN * 2**worker.deaths)
        worker.deaths += 1
        worker.restart_at = now + delay
        log.warning(
            "worker w%d pid %d %s after %.1f s; restarting it in %.1f s",
            worker.index,
            worker.proc.pid,
            describe_exit(returncode),
            lived,
            delay,
        )
        worker.proc = None

    def check_ready(self) -> None:
        """``READY=1`` once, when every worker slot holds a process that reported ready."""
        if self.relay is None or self.notified_ready:
            return
        ready = self.relay.ready_pids()
        if all(w.proc is not None and w.proc.pid in ready for w in self.workers):
            self.notified_ready = True
            sdnotify.ready(f"{len(self.workers)} workers serving")

    def live(self) -> list[subprocess.Popen[bytes]]:
        return [w.proc for w in self.workers if w.proc is not None and w.proc.poll() is None]

    def send(self, sig: int) -> None:
        """``sig`` to every live worker, by the pid we hold (never reaped yet, so never
        reused by another process)."""
        for proc in self.live():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM every worker and wait; a further signal asks them to hurry (SIGINT: uvicorn
        stops waiting for open connections); after ``grace`` the rest are killed."""
        handled = len(self.signals)
        self.send(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.live():
            if len(self.signals) > handled:
                handled = len(self.signals)
                log.info("stopping the workers now")
                self.send(signal.SIGINT)
            if time.monotonic() >= deadline:
                log.warning("workers still running after %.0f s: killing them", grace)
                self.send(signal.SIGKILL)
                break
            time.sleep(POLL_S)
        for worker in self.workers:
            if worker.proc is not None:
                worker.proc.wait()  # reap: no zombie, no pid left behind
        log.info("workers stopped")

    def run(self) -> int:
        """Until a signal: keep every worker running. Then stop them all; 0."""
        opts = self.options
        log.info(
            "l2pop server supervising %d workers on %s://%s (replicas %s .. %s)",
            len(self.workers),
            opts.scheme,
            format_listen(opts.host, opts.port),
            self.workers[0].replica,
            self.workers[-1].replica,
        )
        try:
            while not self.signals:
                now = time.monotonic()
                for worker in self.workers:
                    self.check(worker, now)
                self.check_ready()
                time.sleep(POLL_S)
            log.info("%s: stopping the workers", signal.Signals(self.signals[0]).name)
            sdnotify.stopping()
        finally:
            self.stop()
            if self.relay is not None:
                self.relay.close()
        return 0


def supervise(options: ServerOptions, reserve: socket.socket) -> int:
    """``l2pop server --workers N``: run the workers until a signal, on the address that
    ``reserve`` (``bind_reuseport``, held by the caller) is bound to; 0."""
    port = reserve.getsockname()[1]
    if port != options.port:  # port 0: the one the kernel chose, for every worker
        options = dataclasses.replace(options, port=port)
    supervisor = Supervisor(options)
    supervisor.install_signal_handlers()
    return supervisor.run()
