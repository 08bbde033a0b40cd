"""A cluster for channel tests: one real server process, hosts registered through the API,
agents in real ``l2pop agent-swarm`` processes, and checks that compare every agent's tables,
entry by entry, with the host's desired state (``Client.host_fdb``).

Set-up and checks go through ``l2pop.client`` (``api``); ``http`` is a raw admin client for
tests that look at answers themselves."""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from l2pop.client import Client
from l2pop.testbed.agents import AgentSwarm, HostCredentials
from l2pop.testbed.process import ServerProcess

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
        self.api = Client(self.server.url, self.server.admin_token, verify=self.server.verify)
        self.creds: dict[str, HostCredentials] = {}
        self.swarms: list[AgentSwarm] = []
        self.swarm_of: dict[str, AgentSwarm] = {}

    # -- set-up ---------------------------------------------------------------------------

    def add_hosts(self, count: int, prefix: str = "h", first: int = 1) -> list[str]:
        names = []
        for i in range(first, first + count):
            name = f"{prefix}{i}"
            vtep = f"192.0.2.{i}" if i < 255 else f"198.18.{i // 250}.{i % 250 + 1}"
            made = self.api.create_host(name, vtep)
            self.creds[name] = HostCredentials(name, vtep, made.token)
            names.append(name)
        return names

    def start_agents(
        self, hosts: Iterable[str], name: str | None = None, encaps: Iterable[str] | None = None
    ) -> AgentSwarm:
        """One swarm process for ``hosts``; ``encaps``: what its datapaths carry (all)."""
        hosts = list(hosts)
        swarm = AgentSwarm(
            self.server.url,
            [self.creds[h] for h in hosts],
            self.tmp_path,
            name=name or f"swarm{len(self.swarms)}",
            heartbeat_interval=HEARTBEAT,
            encaps=encaps,
        )
        swarm.start()
        self.swarms.append(swarm)
        for h in hosts:
            self.swarm_of[h] = swarm
        return swarm

    def network(self, name: str, **fields: Any) -> str:
        return self.api.create_network(name=name, **fields).id

    def port(self, network_id: str, host: str | None, *ips: str, **fields: Any) -> str:
        return self.api.create_port(network_id, host=host, fixed_ips=list(ips), **fields).id

    def patch_port(self, port_id: str, **fields: Any) -> dict[str, Any]:
        """``Client.update_port``; the answer as the server's JSON."""
        return self.api.update_port(port_id, **fields).model_dump(mode="json")

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
        desired = self.api.host_fdb(host).model_dump(mode="json")
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
                listed = {h.name: h for h in self.api.hosts()}
                wrong = {h: "server says not in sync" for h in hosts if not listed[h].in_sync}
                if not wrong:
                    return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(f"not converged after {timeout}s: {wrong}")

    def wait_status(self, port_id: str, status: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api.port(port_id).status == status:
                return
            time.sleep(0.05)
        raise AssertionError(f"port {port_id} not {status} after {timeout}s")

    def metric(self, sample: str, **labels: str) -> float:
        """The sum of the ``/metrics`` samples named ``sample`` that carry ``labels``."""
        return sum(
            s.value
            for family in text_string_to_metric_families(self.api.metrics())
            for s in family.samples
            if s.name == sample and labels.items() <= s.labels.items()
        )

    def close(self) -> None:
        for swarm in self.swarms:
            swarm.stop()
        self.server.stop()
        self.http.close()
        self.api.close()
