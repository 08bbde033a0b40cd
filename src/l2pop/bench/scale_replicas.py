"""``l2pop bench scale --replicas N1,N2,..``: the scale benchmark on N server replicas.

One throwaway PostgreSQL; per replica count N, a full pass on a fresh database of the same
size (same seed: the same store and the same churn): N ``l2pop server`` processes on that
database (``--replica r1..rN``, each its own port; their hubs follow each other through
LISTEN/NOTIFY, ADR 21), every agent given all N URLs (each starts at a random replica, so
they spread), the churn's API calls spread round-robin over the replicas. Per pass:

- how many agents each replica holds (the host list's ``replica``) after the
  initial sync;
- activation p50/p99 under churn per rate (``scale.measure_rate``: messages and server CPU
  per event summed over the replicas, RSS per replica) and the highest rate with p99 <= 1 s;
- N = 1: the server killed (``kill -9``) and restarted, seconds until every agent is in sync
  (``restart_resync_s``, as the single-server benchmark); N >= 2: replica r1 killed and not
  restarted, seconds until every agent is connected to a surviving replica and in sync
  through it (``failover_resync_s``).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from l2pop.bench.scale import (
    Progress,
    ScaleConfig,
    admin_client,
    lagging_hosts,
    measure_rates,
    populate,
    proc_stats,
    start_swarms,
    stop_run,
    wait_in_sync,
)
from l2pop.testbed.agents import AgentSwarm
from l2pop.testbed.process import ServerProcess


def replica_name(k: int) -> str:
    return f"r{k}"


def agents_per_replica(servers: list[ServerProcess], first: int = 1) -> dict[str, int]:
    """Sessions per replica (``servers`` are replicas ``first``, ``first + 1``..), as the host
    list of the first of them tells it: the replica holding each connected host's session
    (the same through every replica, ADR 22)."""
    with admin_client(servers[0]) as api:
        held = Counter(h.replica for h in api.hosts() if h.connected and h.replica)
    names = [replica_name(k) for k in range(first, first + len(servers))]
    return {name: held.get(name, 0) for name in names}


def swarm_agents(swarms: list[AgentSwarm]) -> list[dict[str, Any]]:
    return [a for s in swarms for a in s.agents()]


def wait_failover(
    survivors: list[ServerProcess], swarms: list[AgentSwarm], killed_url: str, timeout: float
) -> float:
    """Seconds until every agent is connected to a surviving replica (its own view) and every
    host is connected and in sync through one of the survivors (theirs)."""
    apis = [admin_client(s) for s in survivors]
    killed = killed_url.rstrip("/")
    start = time.monotonic()
    try:
        while time.monotonic() - start < timeout:
            agents = swarm_agents(swarms)
            moved = all(a["connected"] and a["server"].rstrip("/") != killed for a in agents)
            if moved and not lagging_hosts(apis):
                return time.monotonic() - start
            time.sleep(0.1)
        raise TimeoutError(
            f"{len(lagging_hosts(apis))} hosts not in sync on the survivors after {timeout}s"
        )
    finally:
        for api in apis:
            api.close()


def resync(
    servers: list[ServerProcess], swarms: list[AgentSwarm], progress: Progress
) -> dict[str, Any]:
    """One replica: kill -9 + restart, ``restart_resync_s``. Several: kill -9 of r1 (not
    restarted), ``failover_resync_s`` and where the agents are afterwards."""
    if len(servers) == 1:
        [server] = servers
        server.kill()
        t = time.monotonic()
        server.restart(timeout=600)
        with admin_client(server) as api:
            wait_in_sync(api, 900)
        took = round(time.monotonic() - t, 2)
        progress(f"1 replica: kill -9 + restart, all agents in sync after {took} s")
        return {"restart_resync_s": took}
    killed, survivors = servers[0], servers[1:]
    moved = agents_per_replica(servers)[replica_name(1)]
    killed.kill()
    took = round(wait_failover(survivors, swarms, killed.url, 900), 2)
    after = agents_per_replica(survivors, first=2)
    progress(
        f"{len(servers)} replicas: kill -9 of {replica_name(1)} ({moved} agents), all agents "
        f"in sync on the survivors after {took} s; agents per replica now {after}"
    )
    return {
        "failover_killed": replica_name(1),
        "failover_agents_moved": moved,
        "failover_resync_s": took,
        "agents_per_replica_after_failover": after,
    }


def one_pass(
    cfg: ScaleConfig, pg: Any, replicas: int, workdir: Path, progress: Progress
) -> dict[str, Any]:
    """The scale measurements with ``replicas`` servers on a fresh database."""
    dbname = f"l2pop_bench_r{replicas}"
    url = pg.create_database(dbname)
    rng = random.Random(cfg.seed + 1)  # every pass the same churn
    where = workdir / f"replicas-{replicas}"
    where.mkdir(parents=True, exist_ok=True)
    servers = [
        ServerProcess(
            url,
            log_path=where / f"server-{replica_name(k)}.log",
            extra_args=("--queue-limit", "1024", "--replica", replica_name(k)),
        )
        for k in range(1, replicas + 1)
    ]
    swarms: list[AgentSwarm] = []
    result: dict[str, Any] = {"replicas": replicas}
    try:
        t = time.monotonic()
        plan = populate(url, cfg, progress)
        result["populate_s"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        for server in servers:
            server.start(timeout=600)
        result["server_start_s"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        swarms = start_swarms(cfg, ",".join(s.url for s in servers), plan, where)
        apis = [admin_client(s) for s in servers]
        wait_in_sync(apis, 900)
        for api in apis:
            api.close()
        result["initial_sync_s"] = round(time.monotonic() - t, 2)
        result["agents_per_replica"] = agents_per_replica(servers)
        rss = {replica_name(k): proc_stats(s.pid)[1] for k, s in enumerate(servers, 1)}
        result["server_rss_mib_per_replica"] = {k: round(v / 2**20, 1) for k, v in rss.items()}
        progress(
            f"{replicas} replica(s): {cfg.hosts} agents in sync {result['initial_sync_s']} s "
            f"after start; agents per replica {result['agents_per_replica']}; "
            f"RSS MiB {result['server_rss_mib_per_replica']}"
        )
        result["rates"], result["max_rate_p99_le_1s"] = measure_rates(
            cfg,
            servers,
            swarms,
            plan,
            rng,
            describe=lambda row: (
                f"{replicas} replica(s), churn {row['rate']:g}/s: p50 {row['p50_ms']} ms, "
                f"p99 {row['p99_ms']} ms, {row['messages_per_event']} msgs/event, "
                f"server CPU {row['server_cpu_ms_per_event']} ms/event (all replicas), "
                f"RSS MiB {row['server_rss_mib_per_replica']}"
            ),
            progress=progress,
        )
        if cfg.restart:
            result.update(resync(servers, swarms, progress))
    finally:
        stop_run(swarms, servers, None)
        pg.drop_database(dbname)
    return result


def run(cfg: ScaleConfig, workdir: Path, progress: Progress = print) -> dict[str, Any]:
    """One pass per replica count of ``cfg.replicas``; the figures side by side."""
    from l2pop.testbed.postgres import ThrowawayPostgres

    if cfg.engine != "postgresql":
        raise ValueError("replicas need the postgresql engine")
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"config": asdict(cfg), "passes": []}
    # each replica holds its pool and a LISTEN connection: room for several
    pg = ThrowawayPostgres().start()
    try:
        for replicas in cfg.replicas or [1]:
            result["passes"].append(one_pass(cfg, pg, replicas, workdir, progress))
    finally:
        pg.stop()
    return result
