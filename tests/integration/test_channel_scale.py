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
    active = cluster.http.get("/v1/ports", params={"status": "ACTIVE"}).json()
    assert len(active) == NETWORKS * PORTS_PER_NETWORK

    # one port event: how long until every member holds it, and what it cost
    sent_before = cluster.metric('l2pop_channel_messages_sent_total{type="delta"')
    port = port_ids[0]
    t0 = time.monotonic()
    cluster.patch_port(port, fixed_ips=["198.19.200.1"])
    members = placements[requests[0][0]]
    event = cluster.converge(members, timeout=30)
    cluster.converge(timeout=30)
    sent = cluster.metric('l2pop_channel_messages_sent_total{type="delta"') - sent_before
    assert sent <= HOSTS_PER_NETWORK - 1 + 1, f"{sent} deltas for one event in one network"
    print(
        f"\n50 agents / 2,000 ports: created in {created:.1f}s, all in sync "
        f"{total:.1f}s after the first POST; one IP change converged on "
        f"{len(members)} members in {event * 1000:.0f} ms (poll granularity 100 ms, "
        f"{time.monotonic() - t0:.2f}s incl. full check); {sent:.0f} delta messages sent"
    )
