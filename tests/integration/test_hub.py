"""The hub against a real store: its incremental per-host deltas always equal a full recompute,
it tells only member hosts, and a slow session's backlog stays bounded.

Random sequences of real use-cases (the same code the REST API runs) write to a SQLite
store; after each one the hub reads the change log and fans out. Every host's running
tables (what its agent would hold) must equal ``desired_state`` of the whole store.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

from l2pop.model import (
    NetworkTables,
    PortStatus,
    apply_deltas,
    desired_state,
    digest,
)
from l2pop.server import usecases
from l2pop.server.channel import Session
from l2pop.server.hub import Hub
from l2pop.store import Store, open_store
from l2pop.wire import HostCreate, NetworkCreate, NetworkUpdate, PortCreate, PortUpdate
from l2pop.wire.channel import Delta, Snapshot

HOSTS = [f"h{i}" for i in range(1, 6)]


def full_state(store: Store) -> dict[str, dict[str, NetworkTables]]:
    with store.read() as tx:
        return desired_state(tx.list_networks(), tx.list_ports(), tx.list_hosts())


def random_step(store: Store, rng: random.Random, tokens: dict[str, str]) -> None:
    with store.read() as tx:
        networks = tx.list_networks()
        ports = tx.list_ports()
        hosts = [h.name for h in tx.list_hosts()]
    choice = rng.random()
    try:
        if choice < 0.05 or not networks:
            mode = rng.choice(["neigh_suppress", "proxy", "off"])
            usecases.create_network(store, NetworkCreate(arp_suppression=mode))
        elif choice < 0.35:
            net = rng.choice(networks)
            host = rng.choice([*hosts, None])
            ip = f"198.19.{rng.randrange(4)}.{rng.randrange(1, 30)}"
            usecases.create_port(store, PortCreate(network_id=net.id, fixed_ips=[ip], host=host))
        elif choice < 0.6 and ports:
            port = rng.choice(ports)
            if port.host:  # the agent of its host reports it wired or gone
                status = PortStatus.ACTIVE if rng.random() < 0.8 else PortStatus.DOWN
                usecases.report_port_status(store, port.id, port.host, status)
        elif choice < 0.75 and ports:
            port = rng.choice(ports)
            usecases.update_port(store, port.id, PortUpdate(host=rng.choice([*hosts, None])))
        elif choice < 0.85 and ports:
            port = rng.choice(ports)
            ip = f"198.19.{rng.randrange(4)}.{rng.randrange(1, 30)}"
            usecases.update_port(store, port.id, PortUpdate(fixed_ips=[ip]))
        elif choice < 0.9 and ports:
            usecases.delete_port(store, rng.choice(ports).id)
        elif choice < 0.93:
            net = rng.choice(networks)
            mode = rng.choice(["neigh_suppress", "proxy", "off"])
            usecases.update_network(store, net.id, NetworkUpdate(arp_suppression=mode))
        elif choice < 0.96 and hosts:
            usecases.delete_host(store, rng.choice(hosts))
        else:
            missing = [h for h in HOSTS if h not in hosts]
            if missing:
                name = rng.choice(missing)
                vtep = f"192.0.2.{HOSTS.index(name) + 1}"
                tokens[name] = usecases.create_host(store, HostCreate(name=name, vtep_ip=vtep))[1]
    except Exception as exc:  # conflicts are part of the game (duplicate IPs, ...)
        if type(exc).__name__ not in ("Conflict", "NotFound", "InvalidField"):
            raise


def test_hub_deltas_equal_full_recompute(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'hub.db'}")
    tokens: dict[str, str] = {}
    for i, name in enumerate(HOSTS, 1):
        tokens[name] = usecases.create_host(store, HostCreate(name=name, vtep_ip=f"192.0.2.{i}"))[1]
    hub = Hub(store)
    hub.load()
    agents: dict[str, dict[str, NetworkTables]] = {h: {} for h in HOSTS}
    rng = random.Random(20261124)
    told = Counter[str]()
    for _ in range(250):
        for _ in range(rng.choice([1, 1, 2, 4])):  # sometimes several changes per batch
            random_step(store, rng, tokens)
        batch = hub.read_batch()
        if batch is None:
            continue
        before = full_state(store)  # read after the batch: equals the batch's state
        updates = hub.apply_batch(batch)
        for host, update in updates.items():
            told[host] += 1
            agents.setdefault(host, {})
            agents[host] = apply_deltas(agents[host], update.deltas)
        desired = before
        for host in list(agents):
            if host not in desired:
                del agents[host]  # host deleted: its agent is gone
        for host, tables in desired.items():
            assert agents.get(host, {}) == tables, f"host {host} diverged"
            assert hub.digest_of(host) == digest(tables)
            assert hub.tables_of(host) == tables
    assert sum(told.values()) > 50
    store.close()


class StuckSocket:
    """A WebSocket whose sends block until released: an agent that stopped reading."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.release = asyncio.Event()

    async def send_text(self, text: str) -> None:
        await self.release.wait()
        self.sent.append(text)


def test_slow_session_backlog_is_bounded_and_coalesced(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'slow.db'}")
    usecases.create_host(store, HostCreate(name="h1", vtep_ip="192.0.2.1"))
    usecases.create_host(store, HostCreate(name="h2", vtep_ip="192.0.2.2"))
    net = usecases.create_network(store, NetworkCreate(name="blue"))
    usecases.create_port(store, PortCreate(network_id=net.id, host="h1"))
    other = usecases.create_port(store, PortCreate(network_id=net.id, host="h2"))
    usecases.report_port_status(store, other.id, "h2", PortStatus.ACTIVE)
    hub = Hub(store)
    hub.load()
    with store.read() as tx:
        host = tx.get_host("h1")
    assert host is not None

    async def scenario() -> tuple[int, list[str], Any]:
        ws = StuckSocket()
        stats: Counter[str] = Counter()
        session = Session(host, ws, hub, queue_limit=5, stats=stats)  # type: ignore[arg-type]
        sender = asyncio.create_task(session.send_loop())
        await asyncio.sleep(0.01)  # the first snapshot is now stuck in send_text
        longest = 0
        for i in range(200):
            ip = f"198.19.0.{i % 250 + 1}"
            usecases.update_port(store, other.id, PortUpdate(fixed_ips=[ip]))
            batch = hub.read_batch()
            assert batch is not None
            for name, update in hub.apply_batch(batch).items():
                if name == "h1":
                    session.push_update(batch.revision, update)
            longest = max(longest, len(session.outbox))
        ws.release.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not session.outbox and not session.needs_snapshot:
                break
        session.closed = True
        session.wake.set()
        sender.cancel()
        return longest, ws.sent, stats

    longest, sent, stats = asyncio.run(scenario())
    assert longest <= 5, "the backlog grew past the limit"
    assert stats["coalesced"] >= 1
    kinds = [
        Snapshot.model_validate_json(t) if '"snapshot"' in t else Delta.model_validate_json(t)
        for t in sent
    ]
    assert len(sent) < 20, f"{len(sent)} messages for 200 changes: nothing was coalesced"
    last = kinds[-1]
    final = full_state(store)["h1"]
    assert last.digest == digest(final)
    store.close()
