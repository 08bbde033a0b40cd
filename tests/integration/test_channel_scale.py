"""50 agents (5 real processes of 10) and 2,000 ports: every agent's tables equal its desired
state exactly, and a port event costs messages only to that network's members."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor

from channel_harness import Cluster

HOSTS, SWARMS, NETWORKS, PORTS_PER_NETWORK, HOSTS_PER_NETWORK = 50, 5, 40, 50, 10


def test_fifty_agents_two_thousand_ports(cluster: Cluster) -> None:
    rng = random.Random(50)
    hosts = cluster.add_hosts(HOSTS)
    per = HOSTS // SWARMS
    for i in range(SWARMS):
        cluster.start_agents(hosts[i * per : (i + 1) * per], name=f"swarm{i}")
    networks = [cluster.network(f"net{i}") for i in range(NETWORKS)]
    placements = {net: rng.sample(hosts, HOSTS_PER_NETWORK) for net in networks}
    requests = [
        (net, placements[net][j % HOSTS_PER_NETWORK], f"198.19.{n}.{j + 1}")
        for n, net in enumerate(networks)
        for j in range(PORTS_PER_NETWORK)
    ]
    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        port_ids = list(pool.map(lambda r: cluster.port(r[0], r[1], r[2]), requests))
    created = time.monotonic() - start
    cluster.converge(timeout=120)
    total = time.monotonic() - start
    active = cluster.api.ports(status="ACTIVE")  # pages of 1,000
    assert len(active) == NETWORKS * PORTS_PER_NETWORK

    # one port event: how long until every other member has applied it, and what it cost
    sent_before = cluster.metric("l2pop_channel_sent_messages_total", type="delta")
    port, (network, owner, _) = port_ids[0], requests[0]
    t0 = time.monotonic()
    revision = cluster.patch_port(port, fixed_ips=["198.19.200.1"])["revision"]
    others = [h for h in placements[network] if h != owner]
    cluster.converge(timeout=30)
    applied: dict[str, list[list[float]]] = {}
    for swarm in cluster.swarms:
        applied |= swarm.http.get("/applied").json()
    # agents log (revision, time.monotonic()) per apply; the clock is system-wide
    latency = max(next(t for rev, t in applied[h] if rev >= revision) for h in others) - t0
    sent = cluster.metric("l2pop_channel_sent_messages_total", type="delta") - sent_before
    assert sent <= HOSTS_PER_NETWORK, f"{sent} deltas for one event in a 10-host network"
    assert latency < 5.0
    print(
        f"\n50 agents / 2,000 ports: created in {created:.1f}s (8 API clients), every agent "
        f"exact {total:.1f}s after the first POST; one fixed-IP change applied by all "
        f"{len(others)} other members {latency * 1000:.0f} ms after the API call; "
        f"{sent:.0f} delta messages sent for it (fanout-to-all: {HOSTS})"
    )
