"""REST API under load: many concurrent clients, mostly reads, and a liveness probe beside them.

What an operator's automation does to the controller: a real ``l2pop server`` process on a
store filled through the API (hosts, networks, ports), then ``clients`` concurrent
closed-loop clients for ``duration`` seconds, each sending its next request as soon as the
last one answered. The mix is 90 % reads (one port, one network's ports, every port, hosts,
networks, one host's FDB) and 10 % writes (rename, re-address). Beside them a probe asks
``/healthz`` every 100 ms, as a load balancer or kubelet would with a 1 s timeout.

Every request goes through ``l2pop.client`` (``AsyncClient`` for the load, ``Client`` for
filling the store and the probe), so a latency is what a caller of the typed client waits: the
request, and decoding the answer into its ``l2pop.wire`` models. "Every port" is the first
page (``FIRST_PAGE`` ports, the server's default page), one request like the other kinds.

Figures: requests/s, latency p50/p99 per kind, errors by status (a transport failure by its
kind, e.g. ``ReadTimeout``), and the probe's p50/p99/max.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from l2pop.bench.report import table
from l2pop.bench.scale import percentile
from l2pop.client import ApiError, AsyncClient, Client, ClientError, Unreachable
from l2pop.testbed.process import ServerProcess

ADMIN = "bench-admin"
#: a probe answer slower than this counts as a failure (kubelet's default is 1 s)
PROBE_TIMEOUT = 1.0
#: "every port" reads this many: the server's default page, so one request
FIRST_PAGE = 1000

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


def populate(api: Client, hosts: int, networks: int, ports: int) -> dict[str, Any]:
    """Hosts, networks and ports through the API; returns their ids."""
    names = [f"h{i}" for i in range(hosts)]
    for i, name in enumerate(names):
        api.create_host(name, f"192.0.2.{i + 1}")
    network_ids = [api.create_network(name=f"n{i}", vni=5000 + i).id for i in range(networks)]
    port_ids = []
    for i in range(ports):
        port = api.create_port(
            network_ids[i % networks],
            fixed_ips=[f"198.19.{i // 250}.{i % 250 + 1}"],
            host=names[i % hosts],
        )
        port_ids.append(port.id)
    return {"hosts": names, "networks": network_ids, "ports": port_ids}


def probe(url: str, duration: float, results: multiprocessing.Queue[list[float | None]]) -> None:
    """``/healthz`` every 100 ms for ``duration`` s, as a liveness probe with a 1 s timeout
    would; puts the latencies (None for a failure) on ``results``."""
    samples: list[float | None] = []
    until = time.monotonic() + duration
    with Client(url, timeout=PROBE_TIMEOUT) as api:
        while time.monotonic() < until:
            start = time.perf_counter()
            try:
                ok = api.healthz()
            except ClientError:
                ok = False
            samples.append(time.perf_counter() - start if ok else None)
            time.sleep(0.1)
    results.put(samples)


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

    def _call(self, api: AsyncClient, kind: str) -> Awaitable[object]:
        """The call of one ``kind`` (not awaited yet: the clock starts at the await)."""
        ids, rng = self.ids, self.rng
        port = rng.choice(ids["ports"])
        if kind == "get_port":
            return api.port(port)
        if kind == "list_network_ports":
            return api.ports(network_id=rng.choice(ids["networks"]))
        if kind == "list_ports":
            return api.ports(limit=FIRST_PAGE)
        if kind == "list_hosts":
            return api.hosts()
        if kind == "list_networks":
            return api.networks()
        if kind == "host_fdb":
            return api.host_fdb(rng.choice(ids["hosts"]))
        if kind == "rename_port":
            return api.update_port(port, name=f"r{rng.randrange(10**6)}")
        self._readdressed += 1
        n = self._readdressed
        ip = f"203.0.113.{n % 250 + 1}" if n % 2 else f"2001:db8::{n:x}"
        return api.update_port(port, fixed_ips=[ip])

    async def client(self, api: AsyncClient, until: float) -> None:
        while time.monotonic() < until:
            kind = self.rng.choices(self._kinds, self._weights)[0]
            call = self._call(api, kind)
            start = time.perf_counter()
            try:
                await call
                code = "200"  # every kind of the mix is a GET or a PATCH
            except ApiError as exc:
                code = str(exc.status)
            except Unreachable as exc:
                code = exc.kind or type(exc).__name__
            except ClientError as exc:
                code = type(exc).__name__
            self.latency[kind].append(time.perf_counter() - start)
            self.status[code] += 1

    async def run(self, clients: int, duration: float) -> float:
        limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
        async with httpx.AsyncClient(limits=limits, timeout=60.0) as http:
            api = AsyncClient(self.url, ADMIN, http=http)
            start = time.monotonic()
            until = start + duration
            # the probe has a process of its own: in this one it would measure the load
            # generator's event loop, busy decoding the clients' answers, not the server
            spawn = multiprocessing.get_context("spawn")  # no fork of a threaded process
            results: multiprocessing.Queue[list[float | None]] = spawn.Queue()
            prober = spawn.Process(target=probe, args=(self.url, duration, results))
            prober.start()
            tasks = [asyncio.create_task(self.client(api, until)) for _ in range(clients)]
            await asyncio.gather(*tasks)
            elapsed = time.monotonic() - start
            samples = await asyncio.to_thread(results.get, True, duration + 30)
            prober.join()
            self.probe = [x for x in samples if x is not None]
            self.probe_failures = sum(x is None for x in samples)
            return elapsed


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
    db_url: str | None = None,
    server_src: str | None = None,
    rng_seed: int = 1,
    progress: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Fill a fresh server, drive the load, return the figures (see the module docstring).

    ``db_url``: an empty database (default: a SQLite file in a temporary directory).
    ``server_src``: run the server from another source tree (``PYTHONPATH``), to measure an
    earlier build on the same machine with the same load.
    """
    with tempfile.TemporaryDirectory(prefix="l2pop-bench-rest-") as tmp:
        url = db_url or f"sqlite:///{Path(tmp) / 'l2pop.db'}"
        server = ServerProcess(url, admin_token=ADMIN, log_path=Path(tmp) / "server.log")
        saved = os.environ.get("PYTHONPATH")
        if server_src:
            os.environ["PYTHONPATH"] = server_src  # inherited by the server process only
        try:
            server.start()
        finally:
            if server_src:
                os.environ.pop("PYTHONPATH")
                if saved is not None:
                    os.environ["PYTHONPATH"] = saved
        try:
            progress(f"filling the store: {hosts} hosts, {networks} networks, {ports} ports")
            with Client(server.url, ADMIN, verify=server.verify) as api:
                ids = populate(api, hosts, networks, ports)
            progress(f"{clients} clients for {duration:g} s")
            load = Load(server.url, ids, random.Random(rng_seed))
            elapsed = asyncio.run(load.run(clients, duration))
        finally:
            server.stop()
    result = summarise(load, elapsed)
    result["params"] = {
        "clients": clients,
        "duration_s": duration,
        "hosts": hosts,
        "networks": networks,
        "ports": ports,
        "db": url.split(":", 1)[0],
        "server_src": server_src,
        "mix": dict(MIX),
    }
    return result


def section(bench_dir: Path) -> str:
    """The ``rest`` section of ``docs/benchmarks.md``: this build, and the baseline build
    when one was measured (``rest-baseline.json``), side by side."""
    runs = [
        (label, json.loads(path.read_text()))
        for label, path in (
            ("baseline", bench_dir / "rest-baseline.json"),
            ("this build", bench_dir / "rest.json"),
        )
        if path.exists()
    ]
    lines = [
        "## REST API under load: 200 clients, and a liveness probe beside them",
        "",
        "A real server on a store filled through the API (20 hosts, 40 networks, 2,000 "
        "ports); closed-loop clients, each sending its next request when the last one "
        "answered: 90 % reads (one port, a network's ports, all ports, hosts, networks, a "
        "host's FDB), 10 % writes (rename, re-address). A probe in a process of its own asks "
        "`/healthz` every 100 ms with a 1 s timeout, as a kubelet would. Load generator, "
        "probe and server share this 2-core machine.",
        "",
    ]
    if not runs:
        return "\n".join([*lines, "_No result yet: run `l2pop bench rest --write-docs`._"])
    header = ["build", "requests/s", "p50 ms", "p99 ms", "healthz p50 ms", "p99 ms", "max ms"]
    header.append("probes failed (> 1 s)")
    rows = []
    for label, saved in runs:
        r, h = saved["result"], saved["result"]["healthz"]
        rows.append(
            [
                label,
                f"{r['requests_per_s']:g}",
                f"{r['p50_ms']:g}",
                f"{r['p99_ms']:g}",
                f"{h['p50_ms']:g}",
                f"{h['p99_ms']:g}",
                f"{h['max_ms']:g}",
                f"{h['failures']} of {h['probes'] + h['failures']}",
            ]
        )
    lines += [table(header, rows), ""]
    for label, saved in runs:
        lines += [f"- {label}: `{saved.get('command', '?')}` ({saved.get('started_at', '?')})"]
    lines += [
        "",
        "Request latency at 200 closed-loop clients is the queue: by Little's law it is "
        "clients / throughput, so it falls only as the server does more per second. The "
        "probe is what must never wait: answered on the event loop, it no longer queues "
        "behind API calls (ADR 15).",
    ]
    return "\n".join(lines)
