"""Start and stop a real ``l2pop server`` process for tests, demos and benchmarks.

Processes are stopped by the pid we started, never by name, and always reaped.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from l2pop.client import Client
from l2pop.testbed.netns import ChildProcess
from l2pop.tlsconfig import client_context


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServerProcess(ChildProcess):
    """``l2pop server`` as a child process on a free loopback port.

    >>> with ServerProcess(db_url, admin_token="t") as server:
    ...     httpx.get(server.url + "/healthz")

    With ``tls=(cert, key, ca)`` it serves https; ``server.verify`` trusts ``ca``.
    """

    def __init__(
        self,
        db_url: str,
        *,
        admin_token: str | None = "admin-secret",
        listen_host: str = "127.0.0.1",
        port: int | None = None,
        log_path: Path | None = None,
        extra_args: tuple[str, ...] = (),
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        self.db_url = db_url
        self.admin_token = admin_token
        self.listen_host = listen_host
        self.port = port or free_port(listen_host)
        self.tls = tls
        self.verify: ssl.SSLContext | bool = client_context(str(tls[2])) if tls else True
        self.url = f"{'https' if tls else 'http'}://{listen_host}:{self.port}"
        self.log_path = log_path
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "l2pop", "server", "--db", self.db_url]
        cmd += ["--listen", f"{self.listen_host}:{self.port}", *self.extra_args]
        if self.admin_token:
            cmd.append(f"--admin-token={self.admin_token}")  # a token may start with "-"
        if self.tls:
            cmd += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        return cmd

    def start(self, timeout: float = 20.0) -> ServerProcess:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("L2POP_ADMIN_TOKEN", None)
        env.pop("L2POP_ADMIN_TOKEN_FILE", None)
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, env=env)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}; see {self.log_path}"
                )
            try:
                health = httpx.get(self.url + "/healthz", timeout=1.0, verify=self.verify)
                if health.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server at {self.url} not healthy after {timeout}s")

    def restart(self, timeout: float = 20.0) -> ServerProcess:
        """Start again on the same port and database (after ``kill`` or ``stop``)."""
        return self.start(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_child(timeout)

    def client(self, token: str | None = None) -> httpx.Client:
        """A raw ``httpx.Client`` on the server (for tests that send deliberate requests)."""
        token = token if token is not None else self.admin_token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, verify=self.verify)

    def api(self, token: str | None = None) -> Client:
        """The typed REST client on the server, with ``token`` (default: the admin's)."""
        token = token if token is not None else self.admin_token
        return Client(self.url, token, verify=self.verify)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
