"""Property tests: the incremental paths the channel uses always equal recomputing.

A random sequence of operator and agent actions runs against a small pure world using the
model's lifecycle rules. After every action the deltas for only the networks it touched are
applied to each host's running tables (what an agent holds); they must equal the full
``desired_state`` recomputed from scratch, and the structural invariants must hold. The
hub, fed the batches the change log would give, must end each step with the same tables,
digests and local ports as the recompute, and every update it emits must carry the digest
of the host's recomputed tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from l2pop.model import (
    ArpSuppression,
    Conflict,
    Forbidden,
    Host,
    Network,
    NetworkDelta,
    NetworkTables,
    Port,
    PortStatus,
    apply_delta,
    apply_deltas,
    desired_state,
    diff_network,
    diff_state,
    digest,
    member_sums,
    membership,
    network_sum,
    network_view,
)
from l2pop.model import lifecycle as lc
from l2pop.model.diff import delta_sum_change
from l2pop.server.hub import Batch, Hub
from l2pop.store import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOST_NAMES = ["h1", "h2", "h3", "h4"]
NET_IDS = ["n1", "n2", "n3"]
MACS = [f"fa:16:3e:00:00:{i:02x}" for i in range(1, 9)]
IPS = ["198.19.0.1", "198.19.0.2", "203.0.113.3", "2001:db8::4", "2001:db8::5"]


@dataclass
class World:
    networks: dict[str, Network] = field(default_factory=dict)
    ports: dict[str, Port] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)

    def vteps(self) -> dict[str, str]:
        return {h.name: h.vtep_ip for h in self.hosts.values()}

    def desired(self) -> dict[str, dict[str, NetworkTables]]:
        return desired_state(self.networks.values(), self.ports.values(), self.hosts.values())

    def view(self, network_id: str) -> dict[str, NetworkTables]:
        network = self.networks.get(network_id)
        if network is None:
            return {}
        ports = [p for p in self.ports.values() if p.network_id == network_id]
        return network_view(network, ports, self.vteps())

    def free(self, network_id: str, mac: str, ips: tuple[str, ...], skip: str = "") -> bool:
        for p in self.ports.values():
            same_net = p.network_id == network_id and p.id != skip
            if same_net and (p.mac == mac or set(p.fixed_ips) & set(ips)):
                return False
        return True


# Each action returns the network ids it may have touched (what the change log tells).
def act(world: World, action: tuple[object, ...]) -> set[str]:
    kind, *args = action
    if kind == "host_add":
        (i,) = args
        name = HOST_NAMES[int(i)]  # type: ignore[call-overload]
        if name not in world.hosts:
            world.hosts[name] = Host(name, f"192.0.2.{int(i) + 1}")  # type: ignore[call-overload]
        return set()
    if kind == "host_del":
        name = HOST_NAMES[args[0]]  # type: ignore[index]
        touched = {p.network_id for p in world.ports.values() if p.host == name}
        for p in list(world.ports.values()):
            if p.host == name:
                world.ports[p.id] = replace(p, host=None, status=PortStatus.DOWN)
        world.hosts.pop(name, None)
        return touched
    if kind == "net_add":
        nid = NET_IDS[args[0]]  # type: ignore[index]
        if nid not in world.networks:
            vni = 100 + int(args[0])  # type: ignore[call-overload]
            world.networks[nid] = Network(nid, nid, vni, ArpSuppression.NEIGH_SUPPRESS, T0, 0)
        return set()
    if kind == "net_mode":
        nid = NET_IDS[args[0]]  # type: ignore[index]
        if nid in world.networks:
            mode = ArpSuppression.PROXY if args[1] else ArpSuppression.NEIGH_SUPPRESS
            world.networks[nid] = replace(world.networks[nid], arp_suppression=mode)
        return {nid}
    if kind == "port_add":
        pid, net_i, mac_i, ip_is, host_i = args
        nid = NET_IDS[net_i]  # type: ignore[index]
        host = HOST_NAMES[host_i] if host_i is not None else None  # type: ignore[index]
        mac = MACS[mac_i]  # type: ignore[index]
        ips = tuple(sorted({IPS[i] for i in ip_is}))  # type: ignore[attr-defined]
        if nid not in world.networks or f"p{pid}" in world.ports:
            return set()
        if host is not None and host not in world.hosts:
            return set()
        if not world.free(nid, mac, ips):
            return set()
        status = lc.initial_status(host)
        world.ports[f"p{pid}"] = Port(f"p{pid}", nid, "", mac, ips, host, status, 0)
        return {nid}
    port = world.ports.get(f"p{args[0]}")
    if port is None:
        return set()
    if kind == "port_del":
        del world.ports[port.id]
    elif kind == "bind":
        host = HOST_NAMES[args[1]] if args[1] is not None else None  # type: ignore[index]
        if host is not None and host not in world.hosts:
            return set()
        status = lc.status_after_binding(port, host)
        world.ports[port.id] = replace(port, host=host, status=status)
    elif kind == "report":
        # host index None: the agent of the port's own host reports (the common case)
        reporter = port.host or "" if args[1] is None else HOST_NAMES[args[1]]  # type: ignore[index]
        wanted = PortStatus.ACTIVE if args[2] else PortStatus.DOWN
        try:
            status = lc.status_after_report(port, reporter, wanted)
        except Forbidden:
            return set()
        world.ports[port.id] = replace(port, status=status)
    elif kind == "ips":
        ips = tuple(sorted({IPS[i] for i in args[1]}))  # type: ignore[attr-defined]
        if not world.free(port.network_id, port.mac, ips, skip=port.id):
            return set()
        world.ports[port.id] = replace(port, fixed_ips=ips)
    elif kind == "mac":
        mac = MACS[args[1]]  # type: ignore[index]
        try:
            lc.check_mac_change(port, mac)
        except Conflict:
            return set()
        if not world.free(port.network_id, mac, (), skip=port.id):
            return set()
        world.ports[port.id] = replace(port, mac=mac)
    return {port.network_id}


pid = st.integers(0, 7)
host_i = st.integers(0, 3)
actions = st.one_of(
    st.tuples(st.just("host_add"), host_i),
    st.tuples(st.just("host_del"), host_i),
    st.tuples(st.just("net_add"), st.integers(0, 2)),
    st.tuples(st.just("net_mode"), st.integers(0, 2), st.booleans()),
    st.tuples(
        st.just("port_add"),
        pid,
        st.integers(0, 2),
        st.integers(0, 7),
        st.frozensets(st.integers(0, 4), max_size=2),
        st.none() | host_i,
    ),
    st.tuples(st.just("port_add"), pid, st.integers(0, 2), st.integers(0, 7), st.just(()), host_i),
    st.tuples(st.just("port_del"), pid),
    st.tuples(st.just("bind"), pid, st.none() | host_i),
    st.tuples(st.just("report"), pid, host_i, st.booleans()),
    st.tuples(st.just("report"), pid, st.just(None), st.just(True)),
    st.tuples(st.just("report"), pid, st.just(None), st.just(True)),
    st.tuples(st.just("ips"), pid, st.frozensets(st.integers(0, 4), max_size=2)),
    st.tuples(st.just("mac"), pid, st.integers(0, 7)),
)
# start from a busy world (6 ACTIVE ports over 3 networks and 4 hosts) so short random
# sequences already exercise migrations, deletions and host loss of live ports
bootstrap: list[tuple[object, ...]] = [
    *[("host_add", i) for i in range(4)],
    *[("net_add", i) for i in range(3)],
    *[("port_add", i, i % 3, i, frozenset({i % 5}), i % 4) for i in range(6)],
    *[("report", i, None, True) for i in range(6)],
]


def check_invariants(world: World, state: dict[str, dict[str, NetworkTables]]) -> None:
    vteps = world.vteps()
    for host, tables in state.items():
        own_macs = {(p.network_id, p.mac) for p in world.ports.values() if p.host == host}
        for nid, t in tables.items():
            assert vteps[host] not in t.flood, "a host never floods to itself"
            assert vteps[host] not in t.fdb.values()
            assert not {(nid, m) for m in t.fdb} & own_macs, "a host never holds its own ports"
            active_elsewhere = {
                vteps[p.host]
                for p in world.ports.values()
                if p.network_id == nid
                and p.status is PortStatus.ACTIVE
                and p.host not in (None, host)
            }
            assert t.flood == active_elsewhere
            assert set(t.neigh.values()) <= set(t.fdb)


@settings(max_examples=300, deadline=None)
@given(st.lists(actions, min_size=10, max_size=80))
def test_incremental_deltas_equal_recompute(steps: list[tuple[object, ...]]) -> None:
    world = World()
    agents: dict[str, dict[str, NetworkTables]] = {}
    for step in [*bootstrap, *steps]:
        touched = act(world, step)
        for name in world.hosts:
            agents.setdefault(name, {})
        for name in list(agents):
            if name not in world.hosts:
                del agents[name]  # a deleted host's agent is gone with it
        for nid in touched:
            view = world.view(nid)
            for name, held in agents.items():
                delta = diff_network(held.get(nid), view.get(name))
                if delta is not None:
                    agents[name] = apply_deltas(held, [delta])
        desired = world.desired()
        assert agents == desired
        check_invariants(world, desired)


def batch_between(before: World, after: World, revision: int) -> Batch:
    """What the hub reads from the change log for the step from ``before`` to ``after``:
    the current rows of the networks and ports that changed, and every VTEP when hosts
    changed (``Hub.read_batch`` against a store)."""
    changed = [p for pid, p in after.ports.items() if before.ports.get(pid) != p]
    deleted = {pid: p.network_id for pid, p in before.ports.items() if pid not in after.ports}
    touched = {p.network_id for p in changed} | set(deleted.values())
    touched |= {
        nid
        for nid in before.networks.keys() | after.networks.keys()
        if before.networks.get(nid) != after.networks.get(nid)
    }
    networks = {nid: after.networks.get(nid) for nid in sorted(touched)}
    vteps = after.vteps() if before.hosts != after.hosts else None
    return Batch(revision, networks, changed, deleted, vteps)


class NoStore:
    """The hub below is fed batches directly: it must never reach for a store."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the hub used the store ({name})")


@settings(max_examples=200, deadline=None)
@given(st.lists(actions, min_size=10, max_size=60))
def test_hub_incremental_state_equals_recompute(steps: list[tuple[object, ...]]) -> None:
    """The hub's running state (per-host digest, tables, local ports) and the updates it
    emits, after any sequence of changes, equal ``desired_state`` recomputed from scratch."""
    world = World()
    hub = Hub(cast(Store, NoStore()))
    held: dict[str, dict[str, NetworkTables]] = {}  # what each agent holds after the deltas
    local: dict[str, set[str]] = {}  # each agent's own ports, from the updates
    revision = 0
    for step in [*bootstrap, *steps]:
        before = World(dict(world.networks), dict(world.ports), dict(world.hosts))
        act(world, step)
        batch = batch_between(before, world, revision + 1)
        if not (batch.networks or batch.ports or batch.deleted_ports or batch.vteps):
            continue
        revision += 1
        desired = world.desired()
        for host, update in hub.apply_batch(batch).items():
            held[host] = apply_deltas(held.get(host, {}), update.deltas)
            local[host] = (local.get(host, set()) | update.ports.keys()) - update.ports_removed
            assert update.digest == digest(desired.get(host, {})), "an update's own digest"
        for gone in set(held) - set(world.hosts):
            held.pop(gone)
            local.pop(gone, None)
        assert hub.revision == revision
        for host in world.hosts:
            assert hub.digest_of(host) == digest(desired[host]), host
            assert hub.tables_of(host) == desired[host], host
            assert held.get(host, {}) == desired[host], host
            own = {p.id for p in world.ports.values() if p.host == host}
            assert {p.id for p in hub.local_ports_of(host)} == own == local.get(host, set())


@settings(max_examples=300, deadline=None)
@given(st.lists(actions, min_size=5, max_size=40))
def test_member_sums_equal_table_sums(steps: list[tuple[object, ...]]) -> None:
    """``member_sums`` (total minus own entries) is each member's ``network_sum``."""
    world = World()
    for step in [*bootstrap, *steps]:
        act(world, step)
    vteps = world.vteps()
    for nid, network in world.networks.items():
        ports = [p for p in world.ports.values() if p.network_id == nid]
        view = world.view(nid)
        sums = member_sums(network, membership(ports, vteps))
        assert sums == {host: network_sum(tables) for host, tables in view.items()}


tables_st = st.builds(
    lambda flood, fdb, neigh: NetworkTables(
        "n1", 100, ArpSuppression.PROXY, frozenset(flood), fdb, neigh
    ),
    st.frozensets(st.sampled_from(["192.0.2.1", "192.0.2.2", "192.0.2.3"])),
    st.dictionaries(st.sampled_from(MACS), st.sampled_from(["192.0.2.1", "192.0.2.2"])),
    st.dictionaries(st.sampled_from(IPS), st.sampled_from(MACS)),
)


@given(st.none() | tables_st, st.none() | tables_st)
def test_diff_then_apply_reaches_target(
    old: NetworkTables | None, new: NetworkTables | None
) -> None:
    before = {"n1": old} if old else {}
    after = {"n1": new} if new else {}
    assert apply_deltas(before, diff_state(before, after)) == after


def test_late_removal_for_old_location_keeps_new_one() -> None:
    mac = MACS[0]
    current = NetworkTables("n1", 100, ArpSuppression.PROXY, frozenset(), {mac: "192.0.2.2"}, {})
    stale = NetworkDelta("n1", 100, ArpSuppression.PROXY, fdb_remove={mac: "192.0.2.1"})
    after = apply_delta(current, stale)
    assert after is not None
    assert after.fdb == {mac: "192.0.2.2"}


delta_st = st.builds(
    lambda leave, fa, fr, da, dr, na, nr, mode: NetworkDelta(
        "n1", 100, mode, leave, frozenset(fa), frozenset(fr), da, dr, na, nr
    ),
    st.booleans() | st.just(False),
    st.frozensets(st.sampled_from(["192.0.2.1", "192.0.2.2", "192.0.2.3"])),
    st.frozensets(st.sampled_from(["192.0.2.1", "192.0.2.2", "192.0.2.3"])),
    st.dictionaries(st.sampled_from(MACS), st.sampled_from(["192.0.2.1", "192.0.2.2"])),
    st.dictionaries(st.sampled_from(MACS), st.sampled_from(["192.0.2.1", "192.0.2.2"])),
    st.dictionaries(st.sampled_from(IPS), st.sampled_from(MACS)),
    st.dictionaries(st.sampled_from(IPS), st.sampled_from(MACS)),
    st.sampled_from(list(ArpSuppression)),
)


@given(st.none() | tables_st, delta_st)
def test_incremental_digest_follows_apply(
    tables: NetworkTables | None, delta: NetworkDelta
) -> None:
    before = network_sum(tables) if tables is not None else 0
    after_tables = apply_delta(tables, delta)
    after = network_sum(after_tables) if after_tables is not None else 0
    assert (before + delta_sum_change(tables, delta)) % 2**128 == after
