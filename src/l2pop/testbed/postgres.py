"""A real, throwaway PostgreSQL server for tests and benchmarks.

>>> with ThrowawayPostgres() as pg:
...     url = pg.create_database("l2pop_test")   # postgresql://postgres@127.0.0.1:PORT/...

The cluster lives in a fresh temporary directory (data and Unix socket), listens on a free
loopback port, trusts local connections, and trades durability for speed (no fsync). Debian's
``initdb`` refuses to run as root, so as root every server command runs as the ``postgres``
system user. ``stop()`` always stops the cluster by its data directory (``pg_ctl stop``), never
by process name, and removes the directory.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from l2pop.testbed.process import free_port

PG_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
START_ATTEMPTS = 3  # the free port may be taken between choosing and binding it


def bin_dir() -> Path | None:
    """The ``bin`` directory of the highest installed PostgreSQL version, if any."""
    found: list[tuple[tuple[int, ...], Path]] = []
    for path in PG_ROOT.glob("*/bin"):
        version = tuple(int(x) for x in re.findall(r"\d+", path.parent.name))
        if version and (path / "initdb").exists() and (path / "pg_ctl").exists():
            found.append((version, path))
    return max(found)[1] if found else None


def available() -> bool:
    """Whether the PostgreSQL server binaries are installed."""
    return bin_dir() is not None


class ThrowawayPostgres:
    """A PostgreSQL cluster of our own, removed on ``stop()`` (also used as a context manager)."""

    def __init__(self, *, max_connections: int = 300, durable_commits: bool = False) -> None:
        found = bin_dir()
        if found is None:
            raise RuntimeError(f"no PostgreSQL server binaries under {PG_ROOT}/*/bin")
        self.bin = found
        self.max_connections = max_connections
        # synchronous_commit=off acknowledges a commit before its WAL leaves the server's
        # memory, so a kill -9 of the postmaster may lose it: chaos tests need it on (fsync
        # stays off: the OS keeps what was written, only the machine's crash would lose it)
        self.durable_commits = durable_commits
        self.port = 0
        self.dir: Path | None = None
        self._started = False
        # as root, run the server as the postgres user (initdb refuses root)
        self._as_user = os.geteuid() == 0

    @property
    def data_dir(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "server.log"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._as_user:
            cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
        # cwd: the server user may not be allowed into the caller's working directory
        return subprocess.run(
            cmd, cwd=self.dir, capture_output=True, text=True, check=check, timeout=120
        )

    def start(self) -> ThrowawayPostgres:
        self.dir = Path(tempfile.mkdtemp(prefix="l2pop-pg-"))
        atexit.register(self.stop)
        try:
            if self._as_user:
                user = pwd.getpwnam(SERVER_USER)
                os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._run(
                str(self.bin / "initdb"),
                *("-D", str(self.data_dir), "-A", "trust", "-U", "postgres"),
                *("-E", "UTF8", "--locale=C", "--no-sync"),
            )
            self._start_server()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_server(self) -> None:
        for attempt in range(START_ATTEMPTS):
            self.port = free_port()
            result = self._pg_ctl_start()
            if result.returncode == 0:
                self._started = True
                return
            if attempt == START_ATTEMPTS - 1:
                log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
                raise RuntimeError(
                    f"PostgreSQL did not start: {result.stdout}{result.stderr}\n{log[-2000:]}"
                )

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        sync = "on" if self.durable_commits else "off"
        options = " ".join(
            [
                f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1",
                f"-c fsync=off -c synchronous_commit={sync} -c full_page_writes=off",
                f"-c max_connections={self.max_connections}",
            ]
        )
        return self._run(
            str(self.bin / "pg_ctl"),
            *("-D", str(self.data_dir), "-l", str(self.log_path), "-o", options),
            *("-w", "-t", "60", "start"),
            check=False,
        )

    def postmaster_pid(self) -> int | None:
        """The pid in *our* data directory's ``postmaster.pid``, if the file is there."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        return None

    def kill_postmaster(self) -> int | None:
        """``kill -9`` of our postmaster, by the pid in our pid file (a database crash; its
        backends exit on their own once it is gone). Returns the pid killed, if any."""
        pid = self.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pid

    def restart(self, timeout: float = 60.0) -> float:
        """Start again on the same data directory and port (after ``kill_postmaster``): crash
        recovery replays the WAL. Retries while the dead postmaster's backends still hold
        its shared memory. Returns the seconds it took."""
        start = time.monotonic()
        while True:
            result = self._pg_ctl_start()
            if result.returncode == 0:
                self._started = True
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
                raise RuntimeError(
                    f"PostgreSQL did not restart: {result.stdout}{result.stderr}\n{log[-2000:]}"
                )
            time.sleep(0.5)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create an empty database ``name``; returns its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    @contextmanager
    def database(self, prefix: str) -> Iterator[str]:
        """A fresh database ``<prefix>_<random>`` for the body: yields its URL, drops it
        afterwards (whoever is still connected is disconnected)."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        url = self.create_database(name)
        try:
            yield url
        finally:
            self.drop_database(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting whoever is still connected to it."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            stmt = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(stmt.format(sql.Identifier(name)))

    def stop(self) -> None:
        """Stop the server (immediate mode) and remove its directory. Safe to call twice."""
        atexit.unregister(self.stop)
        if self.dir is None:
            return
        try:
            if self._started or (self.data_dir / "postmaster.pid").exists():
                stopped = self._run(
                    str(self.bin / "pg_ctl"),
                    *("-D", str(self.data_dir), "-m", "immediate", "-w", "stop"),
                    check=False,
                )
                if stopped.returncode != 0:
                    self._kill_postmaster()
        finally:
            self._started = False
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def _kill_postmaster(self) -> None:
        """Last resort when pg_ctl failed: SIGKILL the postmaster named in *our* pid file
        (its backends exit on their own once it is gone)."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid_file = self.data_dir / "postmaster.pid"
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
