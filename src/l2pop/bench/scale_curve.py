"""``l2pop bench curve``: how the control plane's cost grows with the number of hosts.

For each host count N of ``CurveConfig.hosts``, one pass of the scale benchmark's pieces
(``l2pop.bench.scale``: the same bulk-populated store, real ``l2pop server`` process and
simulated agents in ``agent-swarm`` processes) on a store scaled with N: 2 x N networks
and 100 x N ports (N = 1,000 is ``bench scale``'s default size), the span bounds unchanged
(5-50 hosts a network). Per pass, in this order:

1. initial sync: seconds from starting the agents until every host is connected and in sync;
   the server's RSS right after.
2. idle: once in sync (and ``settle_s`` later), the server's CPU time (``/proc/<pid>/stat``)
   over ``idle`` seconds in which nothing but heartbeats flow (no churn, no API call, no
   scrape): microseconds of server CPU per host per second, and per heartbeat (that times
   the 5 s heartbeat interval: each host's one heartbeat from the server and one from its
   agent per interval, with the WebSocket pings that go with them). The heartbeats the
   server sent in the window are counted too (they go out in bursts, every host at once).
3. churn: one open-loop rate (``rate`` events/s for ``duration`` s, ``scale.measure_rate``):
   p50/p99 convergence and server CPU per event, gross (as ``bench scale`` reports it) and
   net of the idle heartbeat cost over the same window (``server_cpu_ms_per_event_net``).
4. ``kill -9`` of the server and a restart: seconds until every agent is in sync again.

Each pass records how long it took, the load average at its start and end (the machine may
be shared), and the memory left; a pass that fails records its error and the passes after
it still run, and one that would not fit in the memory available (the previous pass's memory
per host times its hosts) is not started and says so. The open-file limit is raised to the
hard limit for this process and the server and swarms it starts (each agent is one socket at
both ends).
"""

from __future__ import annotations

import math
import os
import random
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from l2pop.bench.scale import (
    Progress,
    ScaleConfig,
    admin_client,
    channel_counters,
    lagging_hosts,
    measure_rate,
    open_database,
    populate,
    proc_stats,
    start_swarms,
    stop_run,
    wait_in_sync,
)
from l2pop.bench.scale_replicas import resync
from l2pop.client import Unreachable
from l2pop.testbed.agents import AgentSwarm
from l2pop.testbed.process import ServerProcess

#: the store per host: ``bench scale``'s default (1,000 hosts, 2,000 networks, 100,000 ports)
NETWORKS_PER_HOST = 2
PORTS_PER_HOST = 100
#: the server's and the agents' heartbeat interval (both defaults; the bench sets neither)
HEARTBEAT_INTERVAL_S = 5.0
#: agents per ``agent-swarm`` process when ``--swarms`` is not given (at least 4 processes)
AGENTS_PER_SWARM = 1000


@dataclass
class CurveConfig:
    hosts: list[int] = field(default_factory=lambda: [1000, 3000, 10_000])
    engine: str = "sqlite"  # or "postgresql"
    rate: float = 10.0  # churn events/s
    duration: float = 10.0  # seconds of churn
    idle: float = 30.0  # seconds of the idle (heartbeats only) window
    settle_s: float = 5.0  # after the initial sync, before the idle window
    sync_timeout: float = 1800.0  # seconds the initial sync and the resync may take
    swarms: int | None = None  # None: ``swarms_for(hosts)``
    min_span: int = 5
    max_span: int = 50
    seed: int = 1


def swarms_for(hosts: int, given: int | None = None) -> int:
    """The ``agent-swarm`` processes for ``hosts`` agents: ``given``, else one per
    ``AGENTS_PER_SWARM`` agents and at least 4 (``bench scale``'s default)."""
    if given is not None:
        return given
    return max(4, math.ceil(hosts / AGENTS_PER_SWARM))


def scale_config(cfg: CurveConfig, hosts: int) -> ScaleConfig:
    """The ``bench scale`` configuration of the pass with ``hosts`` hosts."""
    return ScaleConfig(
        hosts=hosts,
        networks=NETWORKS_PER_HOST * hosts,
        ports=PORTS_PER_HOST * hosts,
        min_span=cfg.min_span,
        max_span=cfg.max_span,
        swarms=swarms_for(hosts, cfg.swarms),
        engine=cfg.engine,
        rates=[cfg.rate],
        duration=cfg.duration,
        seed=cfg.seed,
    )


def raise_open_files(hosts: int) -> dict[str, int]:
    """Raise this process's soft open-file limit to its hard limit (the children inherit
    it); ``RuntimeError`` when even the hard limit cannot hold ``hosts`` agent sockets
    and some room. Returns the limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    need = hosts + 1024
    if soft != resource.RLIM_INFINITY and soft < need:
        raise RuntimeError(
            f"{hosts} agents need about {need} open files in the server; the limit is "
            f"{soft} (raise the hard limit: ulimit -Hn)"
        )
    return {"soft": soft, "hard": hard}


def mem_available_gib() -> float | None:
    """``MemAvailable`` of ``/proc/meminfo``, GiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return round(int(line.split()[1]) / 2**20, 1)
    return None


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def memory_check(hosts: int, per_host_mib: float | None) -> None:
    """``MemoryError`` when a pass of ``hosts`` hosts would not fit: the server and swarms
    took ``per_host_mib`` MiB per host in the previous pass (None: no estimate yet), and
    this one needs that per host, and a fifth more, of the memory available now."""
    available = mem_available_gib()
    if per_host_mib is None or available is None:
        return
    need = per_host_mib * hosts * 1.2 / 1024
    if need > available:
        raise MemoryError(
            f"{hosts} hosts need about {need:.1f} GiB (server and swarms, "
            f"{per_host_mib:.2f} MiB per host in the previous pass); {available} GiB available"
        )


def heartbeats_sent(counters: dict[str, float]) -> float:
    """Heartbeats the server has sent, from its channel counters."""
    return sum(
        v
        for k, v in counters.items()
        if k.startswith("l2pop_channel_sent_messages_total") and 'type="heartbeat"' in k
    )


def measure_idle(server: ServerProcess, hosts: int, seconds: float) -> dict[str, Any]:
    """Server CPU over ``seconds`` in which only heartbeats flow: the counters are read
    before and after the CPU window, so no scrape falls inside it."""
    with admin_client(server) as api:
        before = channel_counters(api)
        cpu0, _ = proc_stats(server.pid)
        t0 = time.monotonic()
        time.sleep(seconds)
        cpu1, _ = proc_stats(server.pid)
        took = time.monotonic() - t0
        after = channel_counters(api)
    cpu = cpu1 - cpu0
    beats = heartbeats_sent(after) - heartbeats_sent(before)
    return {
        "idle_s": round(took, 2),
        "idle_server_cpu_s": round(cpu, 3),
        "idle_server_cpu_ms_per_s": round(cpu / took * 1000, 2),
        "idle_server_cpu_us_per_host_per_s": round(cpu / took / hosts * 1e6, 2),
        "idle_heartbeats": int(beats),
        "idle_heartbeats_per_s": round(beats / took, 1),
        # one heartbeat each way per host and interval: the heartbeats the server sent come
        # in bursts (every host at once), so the count over a window is one burst more or
        # less; the interval is what they average out to
        "idle_server_cpu_us_per_heartbeat": round(
            cpu / took / hosts * HEARTBEAT_INTERVAL_S * 1e6, 1
        ),
    }


def net_cpu_per_event(row: dict[str, Any], idle_ms_per_s: float) -> float | None:
    """Server CPU per event of a churn row without the heartbeat cost that the idle window
    measured, over the row's CPU window (``cpu_window_s``)."""
    events = int(row.get("events") or 0)
    gross, window = row.get("server_cpu_ms_per_event"), row.get("cpu_window_s")
    if not events or gross is None or window is None:
        return None
    return round((float(gross) * events - idle_ms_per_s * float(window)) / events, 2)


def stalled(
    server: ServerProcess, swarms: list[AgentSwarm], hosts: int, out: dict[str, Any]
) -> None:
    """What an initial sync that timed out had reached, into ``out``: hosts in sync
    (``in_sync_at_timeout``, None if the server did not answer), memory of the server and
    swarms, and how many sessions the server refused (its log's ``agent refused`` lines:
    an agent gone before its hello, e.g. its opening handshake timed out)."""
    try:
        with admin_client(server) as api:
            out["in_sync_at_timeout"] = hosts - len(lagging_hosts([api]))
    except Unreachable:
        out["in_sync_at_timeout"] = None
    out["server_rss_mib_at_timeout"] = round(proc_stats(server.pid)[1] / 2**20, 1)
    out["swarms_rss_mib_at_timeout"] = round(sum(proc_stats(s.pid)[1] for s in swarms) / 2**20, 1)
    if server.log_path is not None and server.log_path.exists():
        with server.log_path.open(errors="replace") as log:
            out["sessions_refused"] = sum("agent refused" in line for line in log)


def one_size(
    cfg: CurveConfig, hosts: int, workdir: Path, progress: Progress, out: dict[str, Any]
) -> None:
    """The pass with ``hosts`` hosts (see the module docstring), its figures put in ``out``
    as they are measured: on a failure (raised) ``out`` holds what was measured before."""
    sc = scale_config(cfg, hosts)
    where = workdir / f"hosts-{hosts}"
    where.mkdir(parents=True, exist_ok=True)
    out.update(
        hosts=hosts,
        networks=sc.networks,
        ports=sc.ports,
        swarms=sc.swarms,
        load_average_start=load_average(),
    )
    url, pg = open_database(sc, where)
    swarms: list[AgentSwarm] = []
    # every agent holds a connection, and during a restart an old one may linger beside its
    # reconnect: the default limit (4,096) is below what 10,000 agents need
    connections = str(max(4096, 2 * hosts + 256))
    server = ServerProcess(
        url,
        log_path=where / "server.log",
        extra_args=("--queue-limit", "1024", "--max-connections", connections),
    )
    poll = max(0.5, hosts / 5000)  # listing every host is work for the server too
    try:
        t = time.monotonic()
        plan = populate(url, sc, progress)
        out["populate_s"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        server.start(timeout=1200)
        out["server_start_s"] = round(time.monotonic() - t, 2)
        progress(
            f"{hosts} hosts: store of {sc.networks:,} networks, {sc.ports:,} ports in "
            f"{out['populate_s']} s; server up in {out['server_start_s']} s"
        )
        t = time.monotonic()
        swarms = start_swarms(sc, server.url, plan, where)
        try:
            with admin_client(server) as api:
                wait_in_sync(api, cfg.sync_timeout, poll=poll)
        except TimeoutError:
            stalled(server, swarms, hosts, out)
            raise
        out["initial_sync_s"] = round(time.monotonic() - t, 2)
        out["server_rss_mib"] = round(proc_stats(server.pid)[1] / 2**20, 1)
        out["swarms_rss_mib"] = round(sum(proc_stats(s.pid)[1] for s in swarms) / 2**20, 1)
        out["mem_available_gib_after_sync"] = mem_available_gib()
        progress(
            f"{hosts} hosts: all in sync {out['initial_sync_s']} s after the agents started; "
            f"server RSS {out['server_rss_mib']} MiB, swarms {out['swarms_rss_mib']} MiB"
        )
        time.sleep(cfg.settle_s)
        out.update(measure_idle(server, hosts, cfg.idle))
        progress(
            f"{hosts} hosts idle {out['idle_s']} s: server CPU "
            f"{out['idle_server_cpu_ms_per_s']} ms/s = {out['idle_server_cpu_us_per_host_per_s']}"
            f" µs per host per s, {out['idle_server_cpu_us_per_heartbeat']} µs per heartbeat "
            f"({out['idle_heartbeats_per_s']} heartbeats/s)"
        )
        rng = random.Random(cfg.seed + 1)
        row = measure_rate(sc, [server], swarms, plan, rate=cfg.rate, rng=rng)
        out["churn"] = row
        out["p50_ms"], out["p99_ms"] = row["p50_ms"], row["p99_ms"]
        out["server_cpu_ms_per_event"] = row["server_cpu_ms_per_event"]
        out["server_cpu_ms_per_event_net"] = net_cpu_per_event(row, out["idle_server_cpu_ms_per_s"])
        progress(
            f"{hosts} hosts, churn {cfg.rate:g}/s: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} "
            f"ms, server CPU {row['server_cpu_ms_per_event']} ms/event "
            f"({out['server_cpu_ms_per_event_net']} without the heartbeats)"
        )
        out["restart_resync_s"] = resync([server], swarms, progress)["restart_resync_s"]
    finally:
        stop_run(swarms, [server], pg)
    out["load_average_end"] = load_average()


def run(cfg: CurveConfig, workdir: Path, progress: Progress = print) -> dict[str, Any]:
    """One pass per host count of ``cfg.hosts`` (ascending). Returns ``{"config", "sizes",
    "open_files"}``: ``sizes`` one entry per host count, each with ``elapsed_s``; a pass that
    failed has ``error`` (and what it measured before) instead of the rest."""
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "config": asdict(cfg),
        "open_files": raise_open_files(max(cfg.hosts)),
        "sizes": [],
    }
    per_host: float | None = None  # MiB of server + swarms per host, the last pass
    for hosts in sorted(cfg.hosts):
        t = time.monotonic()
        progress(f"{hosts} hosts: load average {load_average()}")
        size: dict[str, Any] = {"hosts": hosts}
        try:
            memory_check(hosts, per_host)
            one_size(cfg, hosts, workdir, progress, size)
        except Exception as exc:  # keep the sizes measured; say where this one stopped
            size["error"] = f"{type(exc).__name__}: {exc}"
            progress(f"{hosts} hosts failed: {size['error']}")
        size["elapsed_s"] = round(time.monotonic() - t, 1)
        if size.get("server_rss_mib") and size.get("swarms_rss_mib"):
            per_host = (size["server_rss_mib"] + size["swarms_rss_mib"]) / hosts
        progress(f"{hosts} hosts: pass took {size['elapsed_s']} s")
        result["sizes"].append(size)
    return result
