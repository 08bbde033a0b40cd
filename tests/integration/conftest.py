"""A real ``l2pop server`` process per test module and engine (SQLite file, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from channel_harness import Cluster

from l2pop.store import Store, open_store
from l2pop.testbed.process import ServerProcess

ADMIN = "admin-secret"


class Api:
    """A tiny client for tests: admin by default, ``as_host(token)`` for agent calls."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.http = server.client(ADMIN)

    def as_token(self, token: str | None) -> httpx.Client:
        return self.server.client(token or "")

    def revision(self) -> int:
        return int(self.http.get("/healthz").json()["revision"])

    def snapshot(self) -> dict[str, object]:
        """Everything an operator can see; equal snapshots mean nothing changed."""
        return {
            "revision": self.revision(),
            "networks": self.http.get("/v1/networks").json(),
            "ports": self.http.get("/v1/ports").json(),
            "hosts": [
                {k: v for k, v in h.items() if k not in ("last_seen",)}
                for h in self.http.get("/v1/hosts").json()
            ],
        }

    def network(self, **body: object) -> dict[str, object]:
        r = self.http.post("/v1/networks", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def host(self, name: str, vtep_ip: str) -> dict[str, object]:
        r = self.http.post("/v1/hosts", json={"name": name, "vtep_ip": vtep_ip})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def port(self, **body: object) -> dict[str, object]:
        r = self.http.post("/v1/ports", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def report(self, token: str, port_id: str, status: str = "ACTIVE") -> httpx.Response:
        with self.as_token(token) as c:
            return c.put(f"/v1/ports/{port_id}/status", json={"status": status})


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """The store of a fresh database on each engine, opened in this process."""
    s = open_store(store_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def server(store_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(store_url, admin_token=ADMIN, log_path=tmp_path / "server.log") as srv:
        yield srv


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.http.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A server process plus agent-swarm processes (see ``channel_harness``)."""
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()
