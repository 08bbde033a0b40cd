"""Agents as real processes: ``l2pop agent-swarm`` hosts one or many memory-datapath agents,
each with its own WebSocket to the server, and a local control endpoint to read them back.

Used by the integration tests (kill -9, restart), the scale benchmark and the simulated demo
(``hosts.SwarmHosts``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from l2pop.testbed.netns import ChildProcess
from l2pop.testbed.process import free_port


@dataclass(frozen=True)
class HostCredentials:
    host: str
    vtep_ip: str
    token: str


class AgentSwarm(ChildProcess):
    """One ``l2pop agent-swarm`` process running an agent per host in ``hosts``."""

    def __init__(
        self,
        server_url: str,
        hosts: Iterable[HostCredentials],
        workdir: Path,
        *,
        name: str = "swarm",
        test_hooks: bool = True,
        heartbeat_interval: float | None = None,
        encaps: Iterable[str] | None = None,
    ) -> None:
        """``encaps``: what the swarm's memory datapaths carry (None: all there are)."""
        self.server_url = server_url
        self.encaps = None if encaps is None else list(encaps)
        self.hosts = list(hosts)
        self.workdir = workdir
        self.name = name
        self.test_hooks = test_hooks
        self.heartbeat_interval = heartbeat_interval
        self.port = free_port()
        self.control_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.control_url, timeout=10.0)

    def command(self) -> list[str]:
        hosts_file = self.workdir / f"{self.name}-hosts.json"
        hosts_file.write_text(json.dumps([h.__dict__ for h in self.hosts]))
        cmd = [sys.executable, "-m", "l2pop", "agent-swarm", "--server", self.server_url]
        cmd += ["--hosts-file", str(hosts_file), "--control", f"127.0.0.1:{self.port}"]
        if self.test_hooks:
            cmd.append("--test-hooks")
        if self.heartbeat_interval is not None:
            cmd += ["--heartbeat-interval", str(self.heartbeat_interval)]
        if self.encaps is not None:
            cmd += ["--encaps", ",".join(self.encaps)]
        return cmd

    def start(self, timeout: float = 20.0) -> AgentSwarm:
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                self.http.get("/agents").raise_for_status()
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError(f"{self.name} control endpoint not up after {timeout}s")

    def stop(self) -> None:
        self.stop_child(10.0)
        self.http.close()

    # -- control endpoint -----------------------------------------------------------------

    def agents(self) -> list[dict[str, Any]]:
        return list(self.http.get("/agents").json())

    def tables(self, host: str) -> dict[str, Any]:
        return dict(self.http.get(f"/agents/{host}/tables").json())

    def stats(self, host: str) -> dict[str, Any]:
        return dict(self.http.get(f"/agents/{host}/stats").json())

    def post(self, host: str, action: str) -> None:
        self.http.post(f"/agents/{host}/{action}").raise_for_status()

    def __enter__(self) -> AgentSwarm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
