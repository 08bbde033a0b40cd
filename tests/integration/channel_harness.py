"""A cluster for channel tests: one real server process, hosts registered through the API,
agents in real ``l2pop agent-swarm`` processes, and checks that compare every agent's tables,
entry by entry, with ``GET /v1/hosts/{name}/fdb``."""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from l2pop.testbed.agents import AgentSwarm, HostCredentials
from l2pop.testbed.process import ServerProcess, list_all

HEARTBEAT = 0.5  # seconds; short so that lost messages are found quickly in tests


class Cluster:
    def __init__(self, tmp_path: Path, db_url: str | None = None) -> None:
        self.tmp_path = tmp_path
        self.server = ServerProcess(
            db_url or f"sqlite:///{tmp_path / 'l2pop.db'}",
            log_path=tmp_path / "server.log",
            extra_args=("--heartbeat-interval", str(HEARTBEAT)),
        )
        self.server.start()
        self.http = self.server.client()
        self.creds: dict[str, HostCredentials] = {}
        self.swarms: list[AgentSwarm] = []
        self.swarm_of: dict[str, AgentSwarm] = {}

    # -- set-up ---------------------------------------------------------------------------

    def add_hosts(self, count: int, prefix: str = "h", first: int = 1) -> list[str]:
        names = []
        for i in range(first, first + count):
            name = f"{prefix}{i}"
            vtep = f"192.0.2.{i}" if i < 255 else f"198.18.{i // 250}.{i % 250 + 1}"
            body = self.ok(self.http.post("/v1/hosts", json={"name": name, "vtep_ip": vtep}))
            self.creds[name] = HostCredentials(name, vtep, body["token"])
            names.append(name)
        return names

    def start_agents(self, hosts: Iterable[str], name: str | None = None) -> AgentSwarm:
        hosts = list(hosts)
        swarm = AgentSwarm(
            self.server.url,
            [self.creds[h] for h in hosts],
            self.tmp_path,
            name=name or f"swarm{len(self.swarms)}",
            heartbeat_interval=HEARTBEAT,
        )
        swarm.start()
        self.swarms.append(swarm)
        for h in hosts:
            self.swarm_of[h] = swarm
        return swarm

    def network(self, name: str, **body: Any) -> str:
        return str(self.ok(self.http.post("/v1/networks", json={"name": name, **body}))["id"])

    def port(self, network_id: str, host: str | None, *ips: str, **body: Any) -> str:
        req = {"network_id": network_id, "host": host, "fixed_ips": list(ips), **body}
        return str(self.ok(self.http.post("/v1/ports", json=req))["id"])

    def patch_port(self, port_id: str, **body: Any) -> dict[str, Any]:
        return self.ok(self.http.patch(f"/v1/ports/{port_id}", json=body))

    @staticmethod
    def ok(response: httpx.Response) -> Any:
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    # -- checks ---------------------------------------------------------------------------

    def mismatches(self, hosts: Iterable[str]) -> dict[str, str]:
        """host -> why its agent does not hold exactly the desired state (empty: all good)."""
        hosts = list(hosts)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(self._mismatch, hosts))
        return {h: why for h, why in zip(hosts, results, strict=True) if why}

    def _mismatch(self, host: str) -> str:
        desired = self.http.get(f"/v1/hosts/{host}/fdb").json()
        try:
            actual = self.swarm_of[host].tables(host)
        except httpx.HTTPError as exc:
            return f"agent unreachable: {exc}"
        if actual["networks"] != desired["networks"]:
            return "tables differ"
        if actual["digest"] != desired["digest"]:
            return "digest differs"
        return ""

    def converge(self, hosts: Iterable[str] | None = None, timeout: float = 30.0) -> float:
        """Wait until every agent holds exactly its desired state and the server says so.

        Returns the seconds it took; fails with the hosts still wrong after ``timeout``.
        """
        hosts = list(hosts if hosts is not None else self.swarm_of)
        start = time.monotonic()
        wrong: dict[str, str] = {}
        while time.monotonic() - start < timeout:
            wrong = self.mismatches(hosts)
            if not wrong:
                listed = {h["name"]: h for h in list_all(self.http, "/v1/hosts")}
                wrong = {h: "server says not in sync" for h in hosts if not listed[h]["in_sync"]}
                if not wrong:
                    return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(f"not converged after {timeout}s: {wrong}")

    def wait_status(self, port_id: str, status: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.http.get(f"/v1/ports/{port_id}").json()["status"] == status:
                return
            time.sleep(0.05)
        raise AssertionError(f"port {port_id} not {status} after {timeout}s")

    def metric(self, name: str) -> float:
        total = 0.0
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def close(self) -> None:
        for swarm in self.swarms:
            swarm.stop()
        self.server.stop()
        self.http.close()
