"""The hub against a real store: its incremental per-host deltas always equal a full recompute,
it tells only member hosts, a slow session's backlog stays bounded, and a truncated change
log ends in a reload and snapshots (on both engines).

Random sequences of real use-cases (the same code the REST API runs) write to a SQLite
store; after each one the hub reads the change log and fans out. Every host's running
tables (what its agent would hold) must equal ``desired_state`` of the whole store.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from l2pop.model import (
    NetworkTables,
    PortStatus,
    apply_deltas,
    desired_state,
    digest,
)
from l2pop.server import usecases
from l2pop.server.hub import Hub, local_port
from l2pop.server.hubapi import HostUpdate, NetworkChanges, PortChanges
from l2pop.server.sessions import ChannelStats, Session, SessionRegistry
from l2pop.store import ChangeLogTruncated, Store, open_store
from l2pop.wire import HostCreate, NetworkCreate, NetworkUpdate, PortCreate, PortUpdate
from l2pop.wire.channel import CloseCode, Delta, LocalPort, Snapshot, server_message

HOSTS = [f"h{i}" for i in range(1, 6)]


def full_state(store: Store) -> dict[str, dict[str, NetworkTables]]:
    with store.read() as tx:
        return desired_state(tx.list_networks(), tx.list_ports(), tx.list_hosts())


def bound_ports(store: Store) -> dict[str, dict[str, LocalPort]]:
    """host -> its local ports (port id -> what its agent must wire), from the store."""
    out: dict[str, dict[str, LocalPort]] = {}
    with store.read() as tx:
        networks = {n.id: n for n in tx.list_networks()}
        for port in tx.list_ports():
            if port.host is not None:
                out.setdefault(port.host, {})[port.id] = local_port(networks[port.network_id], port)
    return out


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


def loaded_hub(tmp_path: Path) -> tuple[Store, Hub, dict[str, str]]:
    """A SQLite store with the hosts of ``HOSTS``, a hub that loaded it, and the hosts'
    tokens (``random_step`` creates hosts again with them)."""
    store = open_store(f"sqlite:///{tmp_path / 'hub.db'}")
    tokens: dict[str, str] = {}
    for i, name in enumerate(HOSTS, 1):
        tokens[name] = usecases.create_host(store, HostCreate(name=name, vtep_ip=f"192.0.2.{i}"))[1]
    hub = Hub(store)
    hub.load()
    return store, hub, tokens


def test_hub_deltas_equal_full_recompute(tmp_path: Path) -> None:
    store, hub, tokens = loaded_hub(tmp_path)
    agents: dict[str, dict[str, NetworkTables]] = {h: {} for h in HOSTS}
    local: dict[str, dict[str, LocalPort]] = {}
    rng = random.Random(20261124)
    told = Counter[str]()
    for _ in range(250):
        for _ in range(rng.choice([1, 1, 2, 4])):  # sometimes several changes per batch
            random_step(store, rng, tokens)
        batch = hub.read_batch()
        if batch is None:
            continue
        before = full_state(store)  # read after the batch: equals the batch's state
        bound = bound_ports(store)
        updates = hub.apply_batch(batch)
        for host, update in updates.items():
            told[host] += 1
            agents.setdefault(host, {})
            agents[host] = apply_deltas(agents[host], update.deltas)
            mine = local.setdefault(host, {})
            for port_id in update.ports_removed:
                mine.pop(port_id, None)
            mine.update(update.ports)
        desired = before
        for host in list(agents):
            if host not in desired:
                del agents[host]  # host deleted: its agent is gone
                local.pop(host, None)
        for host, tables in desired.items():
            assert agents.get(host, {}) == tables, f"host {host} diverged"
            assert hub.digest_of(host) == digest(tables)
            assert hub.tables_of(host) == tables
            # the local ports it was told of, and those a snapshot would give, are the store's
            expected = bound.get(host, {})
            assert local.get(host, {}) == expected, f"host {host}: local ports diverged"
            assert {p.id: p for p in hub.local_ports_of(host)} == expected
    assert sum(told.values()) > 50
    store.close()


class StuckSocket:
    """A ``Sender`` whose sends block until released: an agent that stopped reading."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.release = asyncio.Event()
        self.closed: tuple[int, str] | None = None

    async def send_text(self, text: str, /) -> None:
        await self.release.wait()
        self.sent.append(text)

    async def close(self, code: int, reason: str, /) -> None:
        self.closed = (code, reason)


def test_first_messages_wait_for_a_slot_and_hold_what_changed_meanwhile(tmp_path: Path) -> None:
    """With one slot, a second session's snapshot is built only once the first one's was
    written, and then holds a change committed while it waited (no delta is lost)."""
    store, hub, tokens = loaded_hub(tmp_path)
    hosts = [h for h in HOSTS if h in full_state(store)][:2]
    assert len(hosts) == 2

    async def scenario() -> tuple[list[str], list[str], int]:
        slots = asyncio.Semaphore(1)
        first, second = StuckSocket(), StuckSocket()
        stats = ChannelStats()
        a = Session(hosts[0], first, hub, 16, stats, first_slots=slots)
        b = Session(hosts[1], second, hub, 16, stats, first_slots=slots)
        tasks = [asyncio.create_task(a.send_loop()), asyncio.create_task(b.send_loop())]
        await asyncio.sleep(0.05)  # a's snapshot is stuck in its write, holding the slot
        waited_at = hub.revision
        rng = random.Random(7)
        for _ in range(10):  # the store moves on while b waits for the slot
            random_step(store, rng, tokens)
            batch = hub.read_batch()
            if batch is not None:
                for name, update in hub.apply_batch(batch).items():
                    for session in (a, b):
                        if session.host == name:
                            session.push_update(batch.revision, update)
        first.release.set()
        second.release.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if a.idle and b.idle:
                break
        for task in tasks:
            task.cancel()
        return first.sent, second.sent, waited_at

    sent_a, sent_b, waited_at = asyncio.run(scenario())
    snapshot_b = server_message.decode(sent_b[0])
    assert isinstance(snapshot_b, Snapshot)
    assert snapshot_b.revision > waited_at, "b's snapshot was built before the slot was free"
    final = full_state(store)
    for host, sent in zip(hosts, (sent_a, sent_b), strict=True):
        last = server_message.decode(sent[-1])
        assert last.digest == digest(final.get(host, {})), f"{host} did not converge"
    store.close()


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

    async def scenario() -> tuple[int, list[str], ChannelStats]:
        ws = StuckSocket()
        stats = ChannelStats()
        session = Session(host.name, ws, hub, queue_limit=5, stats=stats)
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
            longest = max(longest, session.backlog)
        ws.release.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if session.idle:
                break
        session.stop()
        sender.cancel()
        return longest, ws.sent, stats

    longest, sent, stats = asyncio.run(scenario())
    assert longest <= 5, "the backlog grew past the limit"
    assert stats.coalesced >= 1
    kinds = [server_message.decode(t) for t in sent]
    assert len(sent) < 20, f"{len(sent)} messages for 200 changes: nothing was coalesced"
    last = kinds[-1]
    final = full_state(store)["h1"]
    assert last.digest == digest(final)
    store.close()


class Recorder:
    """A ``HubSubscriber`` that writes down what it hears."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def changed(self, revision: int, networks: NetworkChanges, ports: PortChanges) -> None:
        pass

    def host_updates(self, revision: int, updates: Mapping[str, HostUpdate]) -> None:
        self.events.append(("updates", revision))

    def hosts_changed(self, gone: frozenset[str]) -> None:
        self.events.append(("hosts_changed", gone))

    def reloaded(self, revision: int) -> None:
        self.events.append(("reloaded", revision))


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def test_truncated_change_log_reloads_and_resyncs(store: Store) -> None:
    """A change log pruned past the hub's revision (say, by another server on the same
    database) is not retried forever: the hub reloads the whole store, closes the sessions
    of hosts deleted meanwhile, sends every live session a snapshot of the current state,
    and then follows the change log again from there."""
    for i in (1, 2, 3):
        usecases.create_host(store, HostCreate(name=f"h{i}", vtep_ip=f"192.0.2.{i}"))
    net = usecases.create_network(store, NetworkCreate(name="blue"))
    p1 = usecases.create_port(store, PortCreate(network_id=net.id, host="h1"))
    p2 = usecases.create_port(store, PortCreate(network_id=net.id, host="h2"))
    for port, host in ((p1, "h1"), (p2, "h2")):
        usecases.report_port_status(store, port.id, host, PortStatus.ACTIVE)
    recorder = Recorder()
    registry = SessionRegistry()
    hub = Hub(store, subscribers=(registry, recorder))
    hub.load()
    store.subscribe(hub.notify)  # what the server's InProcessFeed does

    async def scenario() -> tuple[int, list[str], StuckSocket]:
        live, doomed = StuckSocket(), StuckSocket()
        live.release.set()
        doomed.release.set()
        tasks = []
        for name, socket in (("h1", live), ("h3", doomed)):
            session = Session(name, socket, hub, queue_limit=16, stats=ChannelStats())
            registry.make_live(session)
            tasks.append(asyncio.create_task(session.send_loop()))
        await until(lambda: len(live.sent) == 1)  # the session's first snapshot
        # behind the hub's back: changes, then a prune past all of them
        usecases.update_port(store, p2.id, PortUpdate(fixed_ips=["198.19.0.9"]))
        usecases.delete_host(store, "h3")
        with store.read() as tx:
            current = tx.revision()
        store.prune_changes(current + 1)
        with pytest.raises(ChangeLogTruncated):
            hub.read_batch()
        tasks.append(asyncio.create_task(hub.follow()))
        await until(lambda: len(live.sent) == 2 and doomed.closed is not None)
        # the hub follows the log again: the next change is a delta chained to the reload
        usecases.update_port(store, p2.id, PortUpdate(fixed_ips=["198.19.0.10"]))
        await until(lambda: len(live.sent) == 3)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return current, live.sent, doomed

    current, sent, doomed = asyncio.run(scenario())
    assert hub.reloads == 1
    assert recorder.events[:2] == [("hosts_changed", frozenset({"h3"})), ("reloaded", current)]
    assert doomed.closed == (CloseCode.HOST_GONE, "host deleted")
    resync = server_message.decode(sent[1])
    assert isinstance(resync, Snapshot)
    assert resync.revision == current
    neigh = [pair for network in resync.networks for pair in network.neigh]
    assert [ip for ip, _ in neigh] == ["198.19.0.9"]
    delta = server_message.decode(sent[2])
    assert isinstance(delta, Delta)
    assert delta.prev_revision == current and delta.revision == hub.revision
    desired = full_state(store)
    assert delta.digest == digest(desired["h1"]) == hub.digest_of("h1")
    assert set(hub.hosts()) == set(desired) == {"h1", "h2"}
    for host, tables in desired.items():
        assert hub.tables_of(host) == tables
        assert hub.digest_of(host) == digest(tables)
