"""REST API under load: many concurrent clients, mostly reads, and a liveness probe beside them.

What an operator's automation does to the controller: a real ``l2pop server`` process on a
store seeded through the API (hosts, networks, ports), then ``clients`` concurrent
closed-loop clients for ``duration`` seconds, each sending its next request as soon as the
last one answered. The mix is 90 % reads (one port, one network's ports, every port, hosts,
networks, one host's FDB) and 10 % writes (rename, re-address). Beside them a probe asks
``/healthz`` every 100 ms, as a load balancer or kubelet would with a 1 s timeout.

Figures: requests/s, latency p50/p99 per kind, errors by status, and the probe's p50/p99/max.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from l2pop.testbed.process import ServerProcess

ADMIN = "bench-admin"

#: (kind, weight): reads 90 %, writes 10 %
MIX = (
    ("get_port", 35),
    ("list_network_ports", 20),
    ("list_ports", 10),
    ("list_hosts", 10),
    ("list_networks", 5),
    ("host_fdb", 10),
    ("rename_port", 5),
    ("readdress_port", 5),
)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def seed(http: httpx.Client, hosts: int, networks: int, ports: int) -> dict[str, Any]:
    """Hosts, networks and ports through the API; returns their ids."""
    names = [f"h{i}" for i in range(hosts)]
    for i, name in enumerate(names):
        r = http.post("/v1/hosts", json={"name": name, "vtep_ip": f"192.0.2.{i + 1}"})
        r.raise_for_status()
    network_ids = []
    for i in range(networks):
        r = http.post("/v1/networks", json={"name": f"n{i}", "vni": 5000 + i})
        r.raise_for_status()
        network_ids.append(r.json()["id"])
    port_ids = []
    for i in range(ports):
        body = {
            "network_id": network_ids[i % networks],
            "fixed_ips": [f"198.19.{i // 250}.{i % 250 + 1}"],
            "host": names[i % hosts],
        }
        r = http.post("/v1/ports", json=body)
        r.raise_for_status()
        port_ids.append(r.json()["id"])
    return {"hosts": names, "networks": network_ids, "ports": port_ids}


class Load:
    """The closed-loop clients and the probe, sharing one result record."""

    def __init__(self, url: str, ids: dict[str, Any], rng: random.Random) -> None:
        self.url = url
        self.ids = ids
        self.rng = rng
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: Counter[str] = Counter()
        self.probe: list[float] = []
        self.probe_failures = 0
        kinds, weights = zip(*MIX, strict=True)
        self._kinds: list[str] = list(kinds)
        self._weights: list[int] = list(weights)
        self._readdressed = 0

    def _request(self, kind: str) -> tuple[str, str, Any]:
        ids, rng = self.ids, self.rng
        port = rng.choice(ids["ports"])
        if kind == "get_port":
            return "GET", f"/v1/ports/{port}", None
        if kind == "list_network_ports":
            return "GET", f"/v1/ports?network_id={rng.choice(ids['networks'])}", None
        if kind == "list_ports":
            return "GET", "/v1/ports", None
        if kind == "list_hosts":
            return "GET", "/v1/hosts", None
        if kind == "list_networks":
            return "GET", "/v1/networks", None
        if kind == "host_fdb":
            return "GET", f"/v1/hosts/{rng.choice(ids['hosts'])}/fdb", None
        if kind == "rename_port":
            return "PATCH", f"/v1/ports/{port}", {"name": f"r{rng.randrange(10**6)}"}
        self._readdressed += 1
        n = self._readdressed
        ip = f"203.0.113.{n % 250 + 1}" if n % 2 else f"2001:db8::{n:x}"
        return "PATCH", f"/v1/ports/{port}", {"fixed_ips": [ip]}

    async def client(self, http: httpx.AsyncClient, until: float) -> None:
        while time.monotonic() < until:
            kind = self.rng.choices(self._kinds, self._weights)[0]
            method, path, body = self._request(kind)
            start = time.perf_counter()
            try:
                r = await http.request(method, path, json=body)
                code = str(r.status_code)
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            self.latency[kind].append(time.perf_counter() - start)
            self.status[code] += 1

    async def run_probe(self, http: httpx.AsyncClient, until: float) -> None:
        while time.monotonic() < until:
            start = time.perf_counter()
            try:
                r = await http.get("/healthz", timeout=5.0)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            self.probe.append(time.perf_counter() - start)
            self.probe_failures += not ok
            await asyncio.sleep(0.1)

    async def run(self, clients: int, duration: float) -> float:
        limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with (
            httpx.AsyncClient(
                base_url=self.url, headers=headers, limits=limits, timeout=60.0
            ) as http,
            httpx.AsyncClient(base_url=self.url, timeout=5.0) as probe,
        ):
            start = time.monotonic()
            until = start + duration
            tasks = [asyncio.create_task(self.client(http, until)) for _ in range(clients)]
            tasks.append(asyncio.create_task(self.run_probe(probe, until)))
            await asyncio.gather(*tasks)
            return time.monotonic() - start


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def summarise(load: Load, elapsed: float) -> dict[str, Any]:
    every = [x for values in load.latency.values() for x in values]
    per_kind = {
        kind: {
            "requests": len(values),
            "p50_ms": _ms(percentile(values, 0.50)),
            "p99_ms": _ms(percentile(values, 0.99)),
        }
        for kind, values in sorted(load.latency.items())
    }
    return {
        "requests": len(every),
        "requests_per_s": round(len(every) / elapsed, 1),
        "p50_ms": _ms(percentile(every, 0.50)),
        "p99_ms": _ms(percentile(every, 0.99)),
        "mean_ms": _ms(statistics.fmean(every)) if every else None,
        "status": dict(sorted(load.status.items())),
        "per_kind": per_kind,
        "healthz": {
            "probes": len(load.probe),
            "failures": load.probe_failures,
            "p50_ms": _ms(percentile(load.probe, 0.50)),
            "p99_ms": _ms(percentile(load.probe, 0.99)),
            "max_ms": _ms(max(load.probe)) if load.probe else None,
        },
    }


def run(
    *,
    clients: int = 200,
    duration: float = 30.0,
    hosts: int = 20,
    networks: int = 40,
    ports: int = 2000,
    db: str = "sqlite",
    postgres_url: str | None = None,
    seed_value: int = 1,
    progress: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Seed a fresh server, drive the load, return the figures (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="l2pop-bench-rest-") as tmp:
        url = postgres_url if db == "postgresql" else f"sqlite:///{Path(tmp) / 'l2pop.db'}"
        if url is None:
            raise ValueError("postgresql needs a database URL")
        with ServerProcess(url, admin_token=ADMIN, log_path=Path(tmp) / "server.log") as server:
            progress(f"seeding {hosts} hosts, {networks} networks, {ports} ports")
            with server.client(ADMIN) as http:
                ids = seed(http, hosts, networks, ports)
            progress(f"{clients} clients for {duration:.0f} s")
            load = Load(server.url, ids, random.Random(seed_value))
            elapsed = asyncio.run(load.run(clients, duration))
    result = summarise(load, elapsed)
    result["params"] = {
        "clients": clients,
        "duration_s": duration,
        "hosts": hosts,
        "networks": networks,
        "ports": ports,
        "db": db,
        "mix": dict(MIX),
    }
    return result
