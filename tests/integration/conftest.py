"""A real ``l2pop server`` process per test module and engine (SQLite file, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from channel_harness import Cluster
from replica_harness import Trio

from l2pop.client import Client
from l2pop.store import Store, open_store
from l2pop.testbed.postgres import ThrowawayPostgres
from l2pop.testbed.process import ServerProcess

ADMIN = "admin-secret"


class Api:
    """Set-up and reads for API tests, through ``l2pop.client`` (``client``), answers as the
    server's JSON (dicts); ``http`` (raw ``httpx``, admin) and ``as_token`` are for the tests
    that assert on statuses, headers and bodies themselves."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.http = server.client(ADMIN)
        self.client = Client(server.url, ADMIN, verify=server.verify)

    def as_token(self, token: str | None) -> httpx.Client:
        return self.server.client(token or "")

    def revision(self) -> int:
        return int(self.http.get("/healthz").json()["revision"])

    def snapshot(self) -> dict[str, object]:
        """Everything an operator can see; equal snapshots mean nothing changed."""
        return {
            "revision": self.revision(),
            "networks": [n.model_dump(mode="json") for n in self.client.networks()],
            "ports": [p.model_dump(mode="json") for p in self.client.ports()],
            "hosts": [
                h.model_dump(mode="json", exclude={"last_seen"}) for h in self.client.hosts()
            ],
        }

    def network(self, **fields: Any) -> dict[str, Any]:
        return self.client.create_network(**fields).model_dump(mode="json")

    def host(self, name: str, vtep_ip: str) -> dict[str, Any]:
        return self.client.create_host(name, vtep_ip).model_dump(mode="json")

    def port(self, *, network_id: Any, **fields: Any) -> dict[str, Any]:
        return self.client.create_port(str(network_id), **fields).model_dump(mode="json")

    def report(self, token: str, port_id: str, status: str = "ACTIVE") -> httpx.Response:
        """The status call as an agent makes it, raw: the tests assert on the answer's status
        and body (``Client.report_status`` is the client's way)."""
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
    client.client.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A server process plus agent-swarm processes (see ``channel_harness``)."""
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def trio(postgres: ThrowawayPostgres, tmp_path: Path) -> Iterator[Trio]:
    with postgres.database("l2pop_faults") as url, Trio(tmp_path, url, agents=True) as t:
        yield t


@pytest.fixture
def bare_trio(postgres: ThrowawayPostgres, tmp_path: Path) -> Iterator[Trio]:
    with postgres.database("l2pop_races") as url, Trio(tmp_path, url, agents=False) as t:
        yield t
