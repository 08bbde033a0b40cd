"""The Store contract (``l2pop/store/abc.py``), one suite run against SQLite and PostgreSQL
(the change log, commit listeners and telemetry: ``test_store_log.py``)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from l2pop.model import ArpSuppression, Conflict, Host, Network, NotFound, Port, PortStatus
from l2pop.store import Store, open_store
from l2pop.store.abc import Change, StoreCounts, WriteTx

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def network(vni: int, name: str = "net") -> Network:
    return Network(
        id=str(uuid.uuid4()),
        name=name,
        vni=vni,
        arp_suppression=ArpSuppression.NEIGH_SUPPRESS,
        created_at=T0,
        revision=0,
    )


def port(
    network_id: str,
    mac: str,
    ips: tuple[str, ...] = (),
    host: str | None = None,
    status: PortStatus = PortStatus.DOWN,
) -> Port:
    return Port(
        id=str(uuid.uuid4()),
        network_id=network_id,
        name="p",
        mac=mac,
        fixed_ips=ips,
        host=host,
        status=status,
        revision=0,
        created_at=T0,
    )


def host(name: str, vtep: str) -> Host:
    return Host(name=name, vtep_ip=vtep, created_at=T0)


def add_network(store: Store, vni: int, name: str = "net") -> Network:
    with store.write() as tx:
        return tx.insert_network(network(vni, name))


def add_host(store: Store, name: str, vtep: str, token_hash: str | None = None) -> Host:
    with store.write() as tx:
        return tx.insert_host(host(name, vtep), token_hash or f"hash-{name}")


def add_port(  # noqa: PLR0917 (mirrors port())
    store: Store,
    network_id: str,
    mac: str,
    ips: tuple[str, ...] = (),
    host: str | None = None,
    status: PortStatus = PortStatus.DOWN,
) -> Port:
    with store.write() as tx:
        return tx.insert_port(port(network_id, mac, ips, host, status))


def revision(store: Store) -> int:
    with store.read() as tx:
        return tx.revision()


def in_write(store: Store, fn: Callable[[WriteTx], object]) -> object:
    with store.write() as tx:
        return fn(tx)


def conflict(fn: Callable[[], object]) -> Conflict:
    with pytest.raises(Conflict) as info:
        fn()
    return info.value


# -- CRUD ----------------------------------------------------------------------------------


def test_empty_store(store: Store) -> None:
    with store.read() as tx:
        assert tx.revision() == 0
        assert tx.list_networks() == [] and tx.list_ports() == [] and tx.list_hosts() == []
        assert tx.changes_since(0) == []


def test_reopen_keeps_data(store: Store) -> None:
    net = add_network(store, 7)
    again = open_store(store.url)
    try:
        with again.read() as tx:
            assert tx.get_network(net.id) == net and tx.revision() == 1
    finally:
        again.close()


def test_network_crud(store: Store) -> None:
    b = add_network(store, 200, "b")
    a = add_network(store, 100, "a")
    assert (a.revision, b.revision) == (2, 1)
    with store.read() as tx:
        assert tx.get_network(a.id) == a
        assert tx.get_network(str(uuid.uuid4())) is None
        assert tx.list_networks() == [a, b]  # by VNI
        got = tx.get_network(a.id)
        assert got is not None and got.created_at == T0 and got.created_at.tzinfo is not None
    with store.write() as tx:
        changed = tx.update_network(replace(a, name="a2", arp_suppression=ArpSuppression.PROXY))
    assert changed.revision == 3
    with store.read() as tx:
        assert tx.get_network(a.id) == changed
    with store.write() as tx:
        tx.delete_network(b.id)
    with store.read() as tx:
        assert tx.list_networks() == [changed] and tx.revision() == 4


def test_port_crud_with_fixed_ips(store: Store) -> None:
    net = add_network(store, 1)
    add_host(store, "h1", "192.0.2.1")
    ips = ("2001:db8::5", "198.19.0.10", "198.19.0.9")
    created = add_port(store, net.id, "fa:16:3e:00:00:01", ips, "h1", PortStatus.BUILD)
    assert created.fixed_ips == ("198.19.0.9", "198.19.0.10", "2001:db8::5")
    assert created.revision == 3
    with store.read() as tx:
        got = tx.get_port(created.id)
        assert got == created and got is not None and got.created_at == T0
        assert tx.count_ports(net.id) == 1
        assert tx.get_port(str(uuid.uuid4())) is None
    moved = replace(
        created,
        fixed_ips=("198.19.0.9", "198.19.0.11"),
        status=PortStatus.ACTIVE,
        name="renamed",
    )
    with store.write() as tx:
        updated = tx.update_port(moved)
    assert updated.revision == 4
    with store.read() as tx:
        assert tx.get_port(created.id) == updated
        assert updated.fixed_ips == ("198.19.0.9", "198.19.0.11")
    # the addresses given up are free again
    add_port(store, net.id, "fa:16:3e:00:00:02", ("198.19.0.10", "2001:db8::5"))
    with store.write() as tx:
        before = tx.delete_port(created.id)
    assert before == updated
    with store.read() as tx:
        assert tx.get_port(created.id) is None and tx.count_ports(net.id) == 1
    add_port(store, net.id, "fa:16:3e:00:00:03", ("198.19.0.9", "198.19.0.11"))


def test_list_ports_filters(store: Store) -> None:
    n1, n2, n3 = (add_network(store, v) for v in (1, 2, 3))
    add_host(store, "h1", "192.0.2.1")
    add_host(store, "h2", "192.0.2.2")
    made = [
        add_port(store, n1.id, "fa:16:3e:00:00:01", ("198.19.0.1",), "h1", PortStatus.ACTIVE),
        add_port(store, n1.id, "fa:16:3e:00:00:02", (), "h2", PortStatus.BUILD),
        add_port(store, n2.id, "fa:16:3e:00:00:03", ("198.19.0.3", "2001:db8::3"), "h1"),
        add_port(store, n3.id, "fa:16:3e:00:00:04", (), None),
    ]
    ordered = sorted(made, key=lambda p: (p.network_id, p.id))
    with store.read() as tx:
        assert tx.list_ports() == ordered
        assert tx.list_ports(network_id=n1.id) == [p for p in ordered if p.network_id == n1.id]
        assert tx.list_ports(host="h1") == [p for p in ordered if p.host == "h1"]
        assert tx.list_ports(status=PortStatus.ACTIVE) == [made[0]]
        assert tx.list_ports(host="h1", status=PortStatus.DOWN) == [made[2]]
        assert tx.list_ports(network_id=n1.id, host="h2") == [made[1]]
        assert tx.list_ports(network_ids=[]) == []
        # thousands of ids are split into chunks; ordering holds across chunks
        many = [str(uuid.uuid4()) for _ in range(3000)] + [n3.id, n1.id, n2.id]
        assert tx.list_ports(network_ids=many) == ordered
        assert tx.list_ports(network_ids=iter([n3.id, n2.id])) == [
            p for p in ordered if p.network_id in (n2.id, n3.id)
        ]
        assert tx.list_ports(network_ids=many, host="h1") == [p for p in ordered if p.host == "h1"]


def test_counts_come_from_the_database(store: Store) -> None:
    with store.read() as tx:
        assert tx.counts() == StoreCounts(0, 0, dict.fromkeys(PortStatus, 0))
    n1, n2 = add_network(store, 1), add_network(store, 2)
    add_host(store, "h1", "192.0.2.1")
    add_port(store, n1.id, "fa:16:3e:00:00:01", (), "h1", PortStatus.ACTIVE)
    add_port(store, n1.id, "fa:16:3e:00:00:02", (), "h1", PortStatus.ACTIVE)
    add_port(store, n2.id, "fa:16:3e:00:00:03", (), "h1", PortStatus.BUILD)
    with store.read() as tx:
        counts = tx.counts()
    assert (counts.networks, counts.hosts) == (2, 1)
    assert counts.ports == {PortStatus.ACTIVE: 2, PortStatus.BUILD: 1, PortStatus.DOWN: 0}


def test_host_crud(store: Store) -> None:
    b = add_host(store, "b-host", "192.0.2.2", "hash-b")
    a = add_host(store, "a-host", "192.0.2.1", "hash-a")
    with store.read() as tx:
        assert tx.list_hosts() == [a, b]
        assert tx.get_host("a-host") == a
        assert tx.get_host("nope") is None
        assert tx.get_host_by_token_hash("hash-b") == b
        assert tx.get_host_by_token_hash("hash-x") is None
        got = tx.get_host("a-host")
        assert got is not None and got.created_at == T0
        assert got.last_seen is None and got.applied_revision is None
    with store.write() as tx:
        tx.delete_host("b-host")
    with store.read() as tx:
        assert tx.list_hosts() == [a] and tx.get_host_by_token_hash("hash-b") is None


# -- uniqueness ---------------------------------------------------------------------------


def test_vni_unique(store: Store) -> None:
    add_network(store, 100)
    err = conflict(lambda: add_network(store, 100))
    assert err.field == "vni" and "vni 100 is already used" in err.message
    other = add_network(store, 101)
    err = conflict(lambda: in_write(store, lambda tx: tx.update_network(replace(other, vni=100))))
    assert err.field == "vni"


def test_host_name_and_vtep_unique(store: Store) -> None:
    add_host(store, "h1", "192.0.2.1")
    err = conflict(lambda: add_host(store, "h1", "192.0.2.9", "other-hash"))
    assert err.field == "name" and "h1" in err.message
    err = conflict(lambda: add_host(store, "h2", "192.0.2.1", "other-hash"))
    assert err.field == "vtep_ip" and "192.0.2.1" in err.message
    with store.read() as tx:
        assert [h.name for h in tx.list_hosts()] == ["h1"]


def test_mac_unique_in_network(store: Store) -> None:
    n1, n2 = add_network(store, 1), add_network(store, 2)
    add_port(store, n1.id, "fa:16:3e:00:00:01")
    err = conflict(lambda: add_port(store, n1.id, "fa:16:3e:00:00:01"))
    assert err.field == "mac" and "fa:16:3e:00:00:01" in err.message and n1.id in err.message
    add_port(store, n2.id, "fa:16:3e:00:00:01")  # another network: fine
    second = add_port(store, n1.id, "fa:16:3e:00:00:02")
    changed = replace(second, mac="fa:16:3e:00:00:01")
    err = conflict(lambda: in_write(store, lambda tx: tx.update_port(changed)))
    assert err.field == "mac"


@pytest.mark.parametrize("ip", ["198.19.0.5", "2001:db8::5"])
def test_fixed_ip_unique_in_network(store: Store, ip: str) -> None:
    n1, n2 = add_network(store, 1), add_network(store, 2)
    add_port(store, n1.id, "fa:16:3e:00:00:01", (ip,))
    err = conflict(lambda: add_port(store, n1.id, "fa:16:3e:00:00:02", ("198.19.9.9", ip)))
    assert err.field == "fixed_ips"
    assert err.message == f"ip {ip} is already used in network {n1.id}"
    add_port(store, n2.id, "fa:16:3e:00:00:02", (ip,))  # another network: fine
    other = add_port(store, n1.id, "fa:16:3e:00:00:03", ("198.19.1.1",))
    changed = replace(other, fixed_ips=("198.19.1.1", ip))
    err = conflict(lambda: in_write(store, lambda tx: tx.update_port(changed)))
    assert err.field == "fixed_ips"
    with store.read() as tx:
        assert tx.get_port(other.id) == other


def test_constraints_have_the_last_word(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the explicit checks gone (as when a concurrent writer slips past them), the
    database constraints still refuse, and the error still names the field."""
    from sqlalchemy import insert

    from l2pop.store._read import row_values
    from l2pop.store._write import SqlWriteTx
    from l2pop.store.schema import ports

    def unguarded(tx: SqlWriteTx, stored: Port) -> bool:  # no IP check riding on the insert
        tx._exec(insert(ports).values(row_values(ports, stored)), subject=stored)
        return True

    monkeypatch.setattr(SqlWriteTx, "_check_ips", lambda *a: None)
    monkeypatch.setattr(SqlWriteTx, "_insert_port_row", unguarded)
    monkeypatch.setattr(SqlWriteTx, "_check_host", lambda *a: None)
    net = add_network(store, 1)
    add_port(store, net.id, "fa:16:3e:00:00:01", ("198.19.0.5",))
    err = conflict(lambda: add_port(store, net.id, "fa:16:3e:00:00:02", ("198.19.0.5",)))
    assert err.field == "fixed_ips" and "198.19.0.5" in err.message
    err = conflict(lambda: add_port(store, net.id, "fa:16:3e:00:00:02", (), "ghost"))
    assert err.field == "host"
    with store.read() as tx:
        assert tx.count_ports(net.id) == 1 and tx.revision() == 2


# -- references ---------------------------------------------------------------------------


def test_port_references(store: Store) -> None:
    net = add_network(store, 1)
    with pytest.raises(NotFound):
        add_port(store, str(uuid.uuid4()), "fa:16:3e:00:00:01")
    err = conflict(lambda: add_port(store, net.id, "fa:16:3e:00:00:01", (), "ghost"))
    assert err.field == "host"
    p = add_port(store, net.id, "fa:16:3e:00:00:01")
    rebound = replace(p, host="ghost", status=PortStatus.BUILD)
    err = conflict(lambda: in_write(store, lambda tx: tx.update_port(rebound)))
    assert err.field == "host"
    assert revision(store) == 2


def test_network_delete_refused_while_ports_exist(store: Store) -> None:
    net = add_network(store, 1)
    p = add_port(store, net.id, "fa:16:3e:00:00:01")
    with store.write() as tx:
        conflict(lambda: tx.delete_network(net.id))
    with store.write() as tx:
        tx.delete_port(p.id)
        tx.delete_network(net.id)
    with store.read() as tx:
        assert tx.list_networks() == [] and tx.revision() == 3


def test_host_delete_refused_while_ports_bound(store: Store) -> None:
    net = add_network(store, 1)
    add_host(store, "h1", "192.0.2.1")
    p = add_port(store, net.id, "fa:16:3e:00:00:01", (), "h1", PortStatus.BUILD)
    with store.write() as tx:
        assert conflict(lambda: tx.delete_host("h1")).field == "host"
    with store.write() as tx:
        tx.update_port(replace(p, host=None, status=PortStatus.DOWN))
        tx.delete_host("h1")
    with store.read() as tx:
        assert tx.list_hosts() == []


def test_missing_rows_not_found(store: Store) -> None:
    ghost_net = network(5)
    ghost_port = port(str(uuid.uuid4()), "fa:16:3e:00:00:01")
    with store.write() as tx:
        calls: list[Callable[[], object]] = [
            lambda: tx.update_network(ghost_net),
            lambda: tx.delete_network(ghost_net.id),
            lambda: tx.update_port(ghost_port),
            lambda: tx.delete_port(ghost_port.id),
            lambda: tx.delete_host("ghost"),
        ]
        for call in calls:
            with pytest.raises(NotFound):
                call()
    assert revision(store) == 0
    with pytest.raises(NotFound):
        store.record_host_report("ghost", last_seen=T0)


# -- transactions and revisions -----------------------------------------------------------


def test_failed_block_changes_nothing(store: Store) -> None:
    kept = add_network(store, 1)
    with pytest.raises(Conflict), store.write() as tx:
        tx.insert_network(network(2))
        tx.update_network(replace(kept, name="changed"))
        tx.insert_network(network(1))  # duplicate VNI
    with pytest.raises(RuntimeError, match="boom"), store.write() as tx:
        tx.insert_network(network(3))
        raise RuntimeError("boom")
    with store.read() as tx:
        assert tx.revision() == 1
        assert tx.list_networks() == [kept]
        assert [c.revision for c in tx.changes_since(0)] == [1]
    assert add_network(store, 2).revision == 2  # the rolled-back revisions are reused


def test_swallowed_database_error_still_rolls_back(store: Store) -> None:
    add_network(store, 1)
    with pytest.raises(RuntimeError, match="rolled back"), store.write() as tx:
        tx.insert_network(network(2))
        with pytest.raises(Conflict):
            tx.insert_network(network(1))
    with store.read() as tx:
        assert [n.vni for n in tx.list_networks()] == [1] and tx.revision() == 1


def test_one_revision_per_block(store: Store) -> None:
    with store.write() as tx:
        net = tx.insert_network(network(10))
        h = tx.insert_host(host("h1", "192.0.2.1"), "hash")
        p = tx.insert_port(port(net.id, "fa:16:3e:00:00:01", ("198.19.0.1",), h.name))
        assert tx.revision() == 1
    assert net.revision == p.revision == 1
    with store.write() as tx:
        p2 = tx.update_port(replace(p, status=PortStatus.ACTIVE))
        net2 = tx.update_network(replace(net, name="x"))
    assert p2.revision == net2.revision == 2
    with store.read() as tx:
        assert tx.revision() == 2
        assert tx.changes_since(0) == [
            Change(1, "network", net.id, "create", net.id),
            Change(1, "host", "h1", "create", None),
            Change(1, "port", p.id, "create", net.id),
            Change(2, "port", p.id, "update", net.id),
            Change(2, "network", net.id, "update", net.id),
        ]


def test_blocks_without_writes_leave_revision(store: Store) -> None:
    add_network(store, 1)
    with store.read() as tx:
        tx.list_networks()
    with store.write() as tx:
        tx.list_ports()
        with pytest.raises(NotFound):  # a refused call, caught: the block is still usable
            tx.delete_port(str(uuid.uuid4()))
    assert revision(store) == 1


def test_read_is_a_snapshot(store: Store) -> None:
    add_network(store, 1)
    with store.read() as tx:
        assert len(tx.list_networks()) == 1
        add_network(store, 2)  # committed by another connection meanwhile
        assert len(tx.list_networks()) == 1 and tx.revision() == 1
    assert revision(store) == 2


# -- concurrency --------------------------------------------------------------------------

RACERS = 20


def race(store: Store, make: Callable[[int], Callable[[WriteTx], object]]) -> list[object]:
    """Run ``make(i)(tx)`` in RACERS threads at once, each in its own write block; returns
    each thread's result or exception."""
    barrier = threading.Barrier(RACERS)
    results: list[object] = [None] * RACERS

    def run(i: int) -> None:
        barrier.wait()
        try:
            with store.write() as tx:
                results[i] = make(i)(tx)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def assert_one_winner(results: list[object], field: str) -> None:
    conflicts = [r for r in results if isinstance(r, Conflict)]
    others = [r for r in results if isinstance(r, BaseException) and not isinstance(r, Conflict)]
    assert others == []
    assert len(conflicts) == RACERS - 1, results
    assert {c.field for c in conflicts} == {field}


def test_race_same_vni(store: Store) -> None:
    results = race(store, lambda i: lambda tx: tx.insert_network(network(42, f"n{i}")))
    assert_one_winner(results, "vni")
    with store.read() as tx:
        assert len(tx.list_networks()) == 1 and tx.revision() == 1


def test_race_same_mac(store: Store) -> None:
    net = add_network(store, 1)
    results = race(store, lambda i: lambda tx: tx.insert_port(port(net.id, "fa:16:3e:00:00:01")))
    assert_one_winner(results, "mac")
    with store.read() as tx:
        assert tx.count_ports(net.id) == 1 and tx.revision() == 2


def test_race_same_fixed_ip(store: Store) -> None:
    net = add_network(store, 1)
    results = race(
        store,
        lambda i: (
            lambda tx: tx.insert_port(
                port(net.id, f"fa:16:3e:00:01:{i:02x}", ("198.19.0.5", f"198.19.1.{i + 1}"))
            )
        ),
    )
    assert_one_winner(results, "fixed_ips")
    with store.read() as tx:
        assert tx.count_ports(net.id) == 1 and tx.revision() == 2


def test_bulk_insert_ports_is_one_revision_and_all_or_nothing(store: Store) -> None:
    net = add_network(store, 700)
    add_host(store, "h1", "192.0.2.1")
    many = [
        port(
            net.id,
            f"fa:16:3e:00:{i // 256:02x}:{i % 256:02x}",
            (f"198.19.{i // 250}.{i % 250 + 1}",),
            host="h1",
            status=PortStatus.ACTIVE,
        )
        for i in range(1500)
    ]
    with store.read() as tx:
        before = tx.revision()
    with store.write() as tx:
        assert tx.insert_ports(many) == 1500
    with store.read() as tx:
        assert tx.revision() == before + 1
        stored = tx.list_ports(network_id=net.id)
        assert len(stored) == 1500
        assert {p.revision for p in stored} == {before + 1}
        assert stored[0].fixed_ips and stored[0].status is PortStatus.ACTIVE
        assert len(tx.changes_since(before)) == 1500

    clash = [port(net.id, "fa:16:3e:aa:00:01"), port(net.id, many[0].mac)]
    with pytest.raises(Conflict), store.write() as tx:
        tx.insert_ports(clash)
    with store.read() as tx:
        assert tx.revision() == before + 1
        assert len(tx.list_ports(network_id=net.id)) == 1500


def test_list_ports_by_ids(store: Store) -> None:
    net = add_network(store, 710)
    other = add_network(store, 711)
    ports = [add_port(store, net.id, f"fa:16:3e:00:07:{i:02x}") for i in range(5)]
    elsewhere = add_port(store, other.id, "fa:16:3e:00:07:99")
    with store.read() as tx:
        wanted = [ports[3].id, ports[1].id, elsewhere.id, str(uuid.uuid4())]
        assert [p.id for p in tx.list_ports(port_ids=wanted)] == sorted(
            [ports[1].id, ports[3].id, elsewhere.id],
            key=lambda pid: (next(p.network_id for p in [*ports, elsewhere] if p.id == pid), pid),
        )
        assert tx.list_ports(port_ids=[]) == []
        only_net = tx.list_ports(port_ids=wanted, network_ids=[net.id])
        assert {p.id for p in only_net} == {ports[1].id, ports[3].id}


def test_pages_cover_everything_once_in_order(store: Store) -> None:
    """Keyset pages: concatenated they are the whole list, each item once, even when an
    item of an earlier page is deleted between two calls."""
    a, b = add_network(store, 10, "a"), add_network(store, 5, "b")
    add_host(store, "h1", "192.0.2.1")
    add_host(store, "h0", "192.0.2.2")
    made = [
        add_port(store, (a, b)[i % 2].id, f"fa:16:3e:00:02:{i:02x}", (f"198.19.4.{i + 1}",))
        for i in range(25)
    ]
    seen: list[Port] = []
    after: str | None = None
    while True:
        with store.read() as tx:
            page = tx.page_ports(limit=7, after=after)
        if not page:
            break
        if not seen:
            with store.write() as tx:
                tx.delete_port(page[0].id)  # deleting the marker's row shifts nothing
        seen += page
        after = page[-1].id
    assert sorted(p.id for p in seen) == sorted(p.id for p in made)
    assert len({p.id for p in seen}) == len(seen) == 25
    assert all(len(p.fixed_ips) == 1 for p in seen)
    with store.read() as tx:
        only_b = tx.page_ports(limit=100, network_id=b.id)
        assert [p.id for p in only_b] == sorted(p.id for p in tx.list_ports(network_id=b.id))
        assert [n.vni for n in tx.page_networks(limit=1)] == [5]
        assert [n.vni for n in tx.page_networks(limit=5, after_vni=5)] == [10]
        assert [h.name for h in tx.page_hosts(limit=1)] == ["h0"]
        assert [h.name for h in tx.page_hosts(limit=5, after="h0")] == ["h1"]
