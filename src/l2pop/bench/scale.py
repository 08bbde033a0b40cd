"""Control-plane scale: a real server, many simulated agents, a large store, steady churn.

What it measures:

(a) convergence of a port activation under steady churn: the operator's API call (a port
    created bound to a host, ``AsyncClient.create_port``) -> that host's agent reports
    ACTIVE -> every other member agent has applied the entry. Per event, the latency is the
    time from the API call to the last member's apply, read from each agent's apply log
    (``time.monotonic`` is system-wide, so the agents' timestamps and ours compare
    directly). p50/p99 per rate.
(b) messages and bytes the server sent per event (its ``/metrics``), beside what a
    fanout-to-all design would send (Neutron casts each event to every agent, each
    activation twice: 2 x hosts messages).
(c) server restart (``kill -9``): seconds until every agent is ``in_sync`` again.
(d) server memory (RSS) and CPU seconds per event (``/proc/<pid>``).

With ``replicas`` (PostgreSQL), ``l2pop.bench.scale_replicas`` runs the same measurements
once per replica count, N servers on one database; the functions here take a list of servers
(the replicas, or just the one) for that.

The agents run the memory datapath in ``l2pop agent-swarm`` processes, one real WebSocket
each, spread over several processes so both cores work. The store is populated in bulk
(``insert_ports``), ports already ACTIVE, as after a long steady state.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from l2pop.client import ApiError, AsyncClient, Client, ClientError, Unreachable
from l2pop.model import ArpSuppression, Host, Network, Port, PortStatus
from l2pop.server.usecases import hash_token
from l2pop.store import open_store
from l2pop.testbed.agents import AgentSwarm, HostCredentials
from l2pop.testbed.process import ServerProcess

Progress = Callable[[str], None]
T = TypeVar("T")


def retrying(read: Callable[[], T], attempts: int = 3) -> T:
    """``read()`` (an idempotent GET), again after a transport error: on a loaded machine a
    kept-alive connection the server has just closed fails the next request."""
    for attempt in range(attempts):
        try:
            return read()
        except Unreachable:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


@dataclass
class ScaleConfig:
    hosts: int = 1000
    networks: int = 2000
    ports: int = 100_000
    min_span: int = 5  # hosts per network
    max_span: int = 50
    swarms: int = 4
    engine: str = "sqlite"  # or "postgresql"
    rates: list[float] = field(default_factory=lambda: [25.0, 50.0, 100.0, 200.0])
    duration: float = 20.0  # seconds of churn per rate
    restart: bool = True
    seed: int = 1
    # server replicas per pass (PostgreSQL; ``scale_replicas``); None: the one server
    replicas: list[int] | None = None


@dataclass
class Plan:
    creds: list[HostCredentials]
    spans: dict[str, list[str]]  # network id -> hosts it spans
    next_ip: dict[str, int]  # network id -> next free host index for new ports


def vtep_of(i: int) -> str:
    return f"198.18.{i // 250}.{i % 250 + 1}"


def ip_of(j: int) -> str:
    return f"198.19.{j // 250}.{j % 250 + 1}"


def populate(url: str, cfg: ScaleConfig, progress: Progress) -> Plan:
    """Hosts, networks and ACTIVE ports written in bulk (a few transactions)."""
    rng = random.Random(cfg.seed)
    now = datetime.now(UTC)
    store = open_store(url)
    creds = []
    with store.write() as tx:
        for i in range(cfg.hosts):
            token = secrets.token_urlsafe(24)
            host = Host(name=f"h{i:04d}", vtep_ip=vtep_of(i), created_at=now)
            tx.insert_host(host, hash_token(token))
            creds.append(HostCredentials(host.name, host.vtep_ip, token))
    names = [c.host for c in creds]
    spans: dict[str, list[str]] = {}
    with store.write() as tx:
        for n in range(cfg.networks):
            net = Network(
                str(uuid.uuid4()), f"net{n}", 10_000 + n, ArpSuppression.NEIGH_SUPPRESS, now, 0
            )
            tx.insert_network(net)
            width = min(rng.randint(cfg.min_span, cfg.max_span), len(names))
            spans[net.id] = rng.sample(names, width)
    per_network = cfg.ports // max(cfg.networks, 1)
    # a network spans only the hosts that get one of its ports: those are its members
    spans = {nid: span[: max(per_network, 1)] for nid, span in spans.items()}
    batch: list[Port] = []
    serial = 0
    for net_id, span in spans.items():
        for j in range(per_network):
            serial += 1
            mac = f"fa:16:3e:{serial >> 16 & 255:02x}:{serial >> 8 & 255:02x}:{serial & 255:02x}"
            batch.append(
                Port(
                    str(uuid.uuid4()),
                    net_id,
                    "",
                    mac,
                    (ip_of(j),),
                    span[j % len(span)],
                    PortStatus.ACTIVE,
                    0,
                )
            )
        if len(batch) >= 10_000:
            with store.write() as tx:
                tx.insert_ports(batch)
            progress(f"populated {serial:,} ports")
            batch = []
    if batch:
        with store.write() as tx:
            tx.insert_ports(batch)
    store.close()
    return Plan(creds, spans, dict.fromkeys(spans, per_network))


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds, RSS bytes) of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return cpu, rss


def channel_counters(api: Client) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in retrying(api.metrics).splitlines():
        if line.startswith("l2pop_channel_") and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def counter_delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    """Growth of ``name`` over the event-carrying message types (heartbeats excluded)."""
    return sum(
        value - before.get(key, 0.0)
        for key, value in after.items()
        if key.startswith(name) and 'type="heartbeat"' not in key
    )


def wait_all_active(api: Client, timeout: float) -> None:
    """Until no port is BUILD: every activation of the churn has been reported."""
    deadline = time.monotonic() + timeout
    while retrying(lambda: api.ports(status="BUILD", limit=1)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"ports still BUILD after {timeout}s")
        time.sleep(0.2)


def lagging_hosts(apis: Sequence[Client]) -> list[str]:
    """Hosts no server of ``apis`` holds connected and in sync (each replica knows only the
    sessions it holds itself: a host counts as in sync through any one of them)."""
    hosts: set[str] = set()
    good: set[str] = set()
    for api in apis:
        for h in retrying(api.hosts):
            hosts.add(h.name)
            if h.connected and h.in_sync:
                good.add(h.name)
    return sorted(hosts - good)


def wait_in_sync(api: Client | Sequence[Client], timeout: float, poll: float = 0.5) -> float:
    """Seconds until every host is connected and in sync (through one of ``api``, when
    several replicas are given). A server too busy to answer the host list (thousands of
    agents syncing at once) counts as not in sync yet, until ``timeout``."""
    apis = [api] if isinstance(api, Client) else list(api)
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if not lagging_hosts(apis):
                return time.monotonic() - start
        except Unreachable:
            pass
        except ApiError as exc:
            if exc.status != 503:  # 503: at its connection limit while agents reconnect
                raise
        time.sleep(poll)
    try:
        lagging = lagging_hosts(apis)
    except Unreachable:
        raise TimeoutError(f"server not answering the host list after {timeout}s") from None
    raise TimeoutError(f"{len(lagging)} hosts not in sync after {timeout}s: {lagging[:5]}")


async def churn(
    servers: Sequence[ServerProcess],
    plan: Plan,
    rate: float,
    duration: float,
    rng: random.Random,
) -> tuple[list[tuple[float, str, str, list[str]]], int]:
    """Open-loop: one activation every 1/rate s for ``duration`` s, whatever the replies;
    the API calls go to ``servers`` in turn (round-robin over the replicas).

    Returns (t0, port id, binding host, other member hosts) per event, and how many calls
    failed (a transport error or an error status, e.g. the 408 of a request body that the
    overloaded load generator sent too late: not retried, a create is not idempotent).
    """
    events: list[tuple[float, str, str, list[str]]] = []
    failed = 0
    networks = list(plan.spans)
    apis = [AsyncClient(s.url, s.admin_token, timeout=60, verify=s.verify) for s in servers]
    try:

        async def one(api: AsyncClient, net_id: str, host: str, ip: str) -> None:
            nonlocal failed
            t0 = time.monotonic()
            try:
                port = await api.create_port(net_id, host=host, fixed_ips=[ip])
            except ClientError:  # unreachable, or refused when overloaded (408, 503)
                failed += 1
                return
            others = [h for h in plan.spans[net_id] if h != host]
            events.append((t0, port.id, host, others))

        tasks = []
        start = time.monotonic()
        for i in range(int(rate * duration)):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            net_id = rng.choice(networks)
            host = rng.choice(plan.spans[net_id])
            plan.next_ip[net_id] += 1
            ip = ip_of(plan.next_ip[net_id])
            tasks.append(asyncio.create_task(one(apis[i % len(apis)], net_id, host, ip)))
        await asyncio.gather(*tasks)
    finally:
        for api in apis:
            await api.close()
    return events, failed


def latencies(
    api: Client,
    swarms: list[AgentSwarm],
    events: list[tuple[float, str, str, list[str]]],
) -> list[float]:
    """Per event: API call -> the last other member applied the port's ACTIVE revision."""
    logs: dict[str, list[tuple[int, float]]] = {}
    for swarm in swarms:
        logs.update(
            {h: [tuple(x) for x in v] for h, v in swarm.http.get("/applied").json().items()}
        )
    out = []
    for t0, port_id, _host, others in events:
        port = retrying(functools.partial(api.port, port_id))
        if port.status != "ACTIVE":
            continue
        revision = port.revision
        worst = 0.0
        for member in others:
            applied = next((t for rev, t in logs.get(member, []) if rev >= revision), None)
            if applied is None:
                worst = float("inf")
                break
            worst = max(worst, applied - t0)
        if not others:
            continue
        out.append(worst)
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def open_database(cfg: ScaleConfig, workdir: Path) -> tuple[str, Any]:
    """(URL of an empty database, the PostgreSQL server to stop afterwards or None)."""
    if cfg.engine == "postgresql":
        from l2pop.testbed.postgres import ThrowawayPostgres

        pg = ThrowawayPostgres().start()
        return pg.create_database("l2pop_bench"), pg
    db = workdir / "scale.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{db}", None


def admin_client(server: ServerProcess) -> Client:
    """The operator's client of ``server``; a minute per call (a big store's lists)."""
    return Client(server.url, server.admin_token, timeout=60, verify=server.verify)


def start_swarms(cfg: ScaleConfig, server_url: str, plan: Plan, workdir: Path) -> list[AgentSwarm]:
    """The agents in ``cfg.swarms`` processes; ``server_url`` may list replicas (``A,B``)."""
    per = -(-len(plan.creds) // cfg.swarms)
    swarms = []
    for i in range(cfg.swarms):
        chunk = plan.creds[i * per : (i + 1) * per]
        if chunk:
            swarm = AgentSwarm(server_url, chunk, workdir, name=f"swarm{i}", test_hooks=False)
            swarms.append(swarm.start(timeout=120))
    return swarms


def summed_counters(apis: Sequence[Client]) -> dict[str, float]:
    """The channel counters of every server of ``apis``, added up."""
    out: dict[str, float] = {}
    for api in apis:
        for key, value in channel_counters(api).items():
            out[key] = out.get(key, 0.0) + value
    return out


def measure_rates(
    cfg: ScaleConfig,
    servers: Sequence[ServerProcess],
    swarms: list[AgentSwarm],
    plan: Plan,
    rng: random.Random,
    *,
    describe: Callable[[dict[str, Any]], str],
    progress: Progress,
) -> tuple[list[dict[str, Any]], float | None]:
    """``measure_rate`` at each of ``cfg.rates`` in turn (each row said by ``describe``);
    returns the rows and the highest rate whose p99 was at most 1 s (None: none was)."""
    rows = []
    for rate in cfg.rates:
        row = measure_rate(cfg, servers, swarms, plan, rate=rate, rng=rng)
        rows.append(row)
        progress(describe(row))
    ok = [r["rate"] for r in rows if r["p99_ms"] <= 1000]
    return rows, max(ok, default=None)


def measure_rate(
    cfg: ScaleConfig,
    servers: ServerProcess | Sequence[ServerProcess],
    swarms: list[AgentSwarm],
    plan: Plan,
    *,
    rate: float,
    rng: random.Random,
) -> dict[str, Any]:
    """Steady churn at ``rate`` events/s: latency percentiles, cost per event. With several
    servers (replicas) the writes go round-robin, messages and CPU are summed over them and
    RSS is given per server (``server_rss_mib``: the largest)."""
    servers = [servers] if isinstance(servers, ServerProcess) else list(servers)
    apis = [admin_client(s) for s in servers]
    api = apis[0]
    before = summed_counters(apis)
    cpu_before = sum(proc_stats(s.pid)[0] for s in servers)
    swarm_before = sum(proc_stats(s.pid)[0] for s in swarms)
    driver_before = time.process_time()
    window_start = time.monotonic()
    events, failed = asyncio.run(churn(servers, plan, rate, cfg.duration, rng))
    wait_all_active(api, 300)  # the agents' status reports may still be on their way
    wait_in_sync(apis, 300)
    stats = [proc_stats(s.pid) for s in servers]
    window_s = time.monotonic() - window_start
    cpu_after = sum(cpu for cpu, _ in stats)
    rss_each = [round(rss / 2**20, 1) for _, rss in stats]
    swarm_cpu = sum(proc_stats(s.pid)[0] for s in swarms) - swarm_before
    driver_cpu = time.process_time() - driver_before
    after = summed_counters(apis)
    lat = latencies(api, swarms, events)
    for each in apis:
        each.close()
    n = max(len(events), 1)
    return {
        "rate": rate,
        "events": len(events),
        "failed_calls": failed,
        "p50_ms": round(percentile(lat, 0.5) * 1000, 1),
        "p99_ms": round(percentile(lat, 0.99) * 1000, 1),
        "max_ms": round(max(lat, default=float("nan")) * 1000, 1),
        "messages_per_event": round(
            counter_delta(before, after, "l2pop_channel_sent_messages_total") / n, 1
        ),
        "bytes_per_event": round(
            counter_delta(before, after, "l2pop_channel_sent_bytes_total") / n
        ),
        "fanout_to_all_messages_per_event": 2 * cfg.hosts,
        "server_cpu_ms_per_event": round((cpu_after - cpu_before) / n * 1000, 2),
        # the wall time the server CPU above was read over (churn, then the waits until
        # every activation was reported and applied): heartbeats flowed all along
        "cpu_window_s": round(window_s, 2),
        # where the machine's two cores went: the simulated agents and the load generator
        # share them with the server
        "agents_cpu_ms_per_event": round(swarm_cpu / n * 1000, 2),
        "driver_cpu_ms_per_event": round(driver_cpu / n * 1000, 2),
        "server_rss_mib": max(rss_each),
        "server_rss_mib_per_replica": rss_each,
    }


def run(cfg: ScaleConfig, workdir: Path, progress: Progress = print) -> dict[str, Any]:
    """The whole scale benchmark; returns the figures (also printed through ``progress``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(cfg.seed + 1)
    url, pg = open_database(cfg, workdir)
    result: dict[str, Any] = {"config": asdict(cfg)}
    swarms: list[AgentSwarm] = []
    server = ServerProcess(
        url, log_path=workdir / "server.log", extra_args=("--queue-limit", "1024")
    )
    try:
        t = time.monotonic()
        plan = populate(url, cfg, progress)
        result["populate_s"] = round(time.monotonic() - t, 2)
        progress(
            f"store ({cfg.engine}): {cfg.hosts} hosts, {cfg.networks} networks, "
            f"{cfg.ports:,} ports in {result['populate_s']} s"
        )
        t = time.monotonic()
        server.start(timeout=600)
        result["server_start_s"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        swarms = start_swarms(cfg, server.url, plan, workdir)
        with admin_client(server) as api:
            wait_in_sync(api, 900)
        result["initial_sync_s"] = round(time.monotonic() - t, 2)
        result["server_rss_mib"] = round(proc_stats(server.pid)[1] / 2**20, 1)
        progress(
            f"{cfg.hosts} agents in sync {result['initial_sync_s']} s after start; "
            f"server RSS {result['server_rss_mib']} MiB"
        )
        result["rates"], result["max_rate_p99_le_1s"] = measure_rates(
            cfg,
            [server],
            swarms,
            plan,
            rng,
            describe=lambda row: (
                f"churn {row['rate']:g}/s: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                f"{row['messages_per_event']} msgs/event "
                f"(fanout-to-all: {row['fanout_to_all_messages_per_event']}), "
                f"CPU ms/event: server {row['server_cpu_ms_per_event']}, "
                f"agents {row['agents_cpu_ms_per_event']}, "
                f"load generator {row['driver_cpu_ms_per_event']}"
            ),
            progress=progress,
        )
        if cfg.restart:
            server.kill()
            t = time.monotonic()
            server.restart(timeout=600)
            with admin_client(server) as api:
                wait_in_sync(api, 900)
            result["restart_resync_s"] = round(time.monotonic() - t, 2)
            progress(
                f"server kill -9 + restart: all agents in sync after {result['restart_resync_s']} s"
            )
    finally:
        stop_run(swarms, [server], pg)
    return result


def stop_run(swarms: Sequence[AgentSwarm], servers: Sequence[ServerProcess], pg: Any) -> None:
    """A run's teardown, agents first (so that no agent hammers a stopping server), then
    the servers, then the throwaway PostgreSQL if the run started one (None: none)."""
    for swarm in swarms:
        swarm.stop()
    for server in servers:
        server.stop()
    if pg is not None:
        pg.stop()


def main_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, sort_keys=True)
