"""SQL round trips per use-case, on each engine: upper bounds so that they cannot creep back.

The server's CPU per port activation is mostly statements (a create, the agent's status
report, the hub's read of the batch). Counted with ``statements.counting``; ``-s`` prints
them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace

import pytest
from statements import counting
from test_store import add_host, add_network, port, revision

from l2pop.model import Conflict, PortStatus
from l2pop.server import usecases
from l2pop.server.hub import Hub
from l2pop.store import Change, ChangeLogTruncated, Store
from l2pop.wire import HostCreate, NetworkCreate, PortCreate, PortUpdate

#: use-case -> (SQLite, PostgreSQL): the most statements it may send. SQLite counts its
#: BEGIN IMMEDIATE; PostgreSQL's BEGIN and COMMIT are not statements of the cursor. Before
#: the write block remembered what it read: (10, 11), (6, 5), (6, 7), (2, 2), (6, 7), (9, 10)
BOUNDS = {
    "create_port": (6, 5),  # lock, network + host, insert guarded by the IP check, IPs, log
    "read_batch": (4, 3),  # revision and watermark, changes joined with networks, ports
    "report_changed": (5, 4),
    "report_unchanged": (2, 2),  # the lock and the port
    "patch_name": (5, 4),
    "patch_host": (6, 5),
}


def count(store: Store, title: str, call: Callable[[], object]) -> int:
    with counting(store) as statements:
        call()
    print(f"[{store.url.split(':')[0]}] " + statements.show(title))
    return len(statements)


def test_statement_counts(store: Store) -> None:
    engine = "postgresql" if store.url.startswith("postgresql") else "sqlite"
    usecases.create_host(store, HostCreate(name="h1", vtep_ip="192.0.2.1"))
    usecases.create_host(store, HostCreate(name="h2", vtep_ip="192.0.2.2"))
    net = usecases.create_network(store, NetworkCreate(name="blue"))
    hub = Hub(store)
    hub.load()
    got: dict[str, int] = {}
    holder: list[str] = []

    def create() -> None:
        req = PortCreate(network_id=net.id, host="h1", fixed_ips=["198.19.0.1"])
        holder.append(usecases.create_port(store, req).id)

    got["create_port"] = count(store, "create_port", create)
    pid = holder[0]
    got["read_batch"] = count(store, "hub read_batch (one create)", hub.read_batch)
    hub.apply_batch(hub.read_batch())  # type: ignore[arg-type]
    report = lambda: usecases.report_port_status(store, pid, "h1", PortStatus.ACTIVE)  # noqa: E731
    got["report_changed"] = count(store, "report_port_status (BUILD -> ACTIVE)", report)
    got["report_unchanged"] = count(store, "report_port_status (ACTIVE again)", report)
    rename = lambda: usecases.update_port(store, pid, PortUpdate(name="renamed"))  # noqa: E731
    got["patch_name"] = count(store, "update_port (name)", rename)
    migrate = lambda: usecases.update_port(store, pid, PortUpdate(host="h2"))  # noqa: E731
    got["patch_host"] = count(store, "update_port (host)", migrate)
    print(engine, got)
    for name, n in got.items():
        bound = BOUNDS[name][engine == "postgresql"]
        assert n <= bound, f"{name} on {engine}: {n} statements, at most {bound} expected"


# -- what the savings must keep ---------------------------------------------------------


def test_refused_port_leaves_block_and_revision(store: Store) -> None:
    """The IP check rides on the port's insert; refused, it has written nothing (the
    revision it took is given back) and the block goes on."""
    net = add_network(store, 1)
    add_host(store, "h1", "192.0.2.1")
    with store.write() as tx:
        tx.insert_port(port(net.id, "fa:16:3e:00:00:01", ("198.19.0.5",)))
    before = revision(store)
    taken = port(net.id, "fa:16:3e:00:00:01", ("198.19.9.9", "198.19.0.5"))  # MAC taken too
    with store.write() as tx:
        with pytest.raises(Conflict) as info:
            tx.insert_port(taken)
        assert info.value.field == "fixed_ips"
        assert info.value.message == f"ip 198.19.0.5 is already used in network {net.id}"
        assert tx.revision() == before
    assert revision(store) == before
    with store.write() as tx:
        with pytest.raises(Conflict):
            tx.insert_port(taken)
        ok = tx.insert_port(port(net.id, "fa:16:3e:00:00:02", ("198.19.0.6",), "h1"))
    assert ok.revision == before + 1 == revision(store)
    with store.read() as tx:
        assert tx.changes_since(before) == [Change(before + 1, "port", ok.id, "create", net.id)]
        assert tx.count_ports(net.id) == 2


def test_write_block_sees_its_own_writes(store: Store) -> None:
    """What the block remembers (ports read, change rows not yet written) is what a fresh
    query would answer."""
    net = add_network(store, 1)
    add_host(store, "h1", "192.0.2.1")
    before = revision(store)
    with store.write() as tx:
        p = tx.insert_port(port(net.id, "fa:16:3e:00:00:01", ("198.19.0.5",)))
        assert tx.revision() == before + 1
        assert tx.get_port(p.id) == p
        moved = tx.update_port(replace(p, host="h1", status=PortStatus.BUILD))
        assert tx.get_port(p.id) == moved and tx.list_ports(host="h1") == [moved]
        assert [c.op for c in tx.changes_since(before)] == ["create", "update"]
        tx.delete_port(p.id)
        assert tx.get_port(p.id) is None
        assert [c.op for c in tx.changes_with_rows(before).changes] == [
            "create",
            "update",
            "delete",
        ]
    with store.read() as tx:
        assert [c.op for c in tx.changes_since(before)] == ["create", "update", "delete"]
        assert tx.revision() == before + 1


def test_get_binding(store: Store) -> None:
    net = add_network(store, 1)
    h1 = add_host(store, "h1", "192.0.2.1")
    ghost = str(uuid.uuid4())
    with store.read() as tx:
        assert tx.get_binding(net.id, "h1") == (net, h1)
        assert tx.get_binding(net.id, "h9") == (net, None)
        assert tx.get_binding(ghost, "h1") == (None, h1)
        assert tx.get_binding(ghost, "h9") == (None, None)
        assert tx.get_binding(net.id, None) == (net, None)


def test_changes_with_rows_is_the_separate_reads(store: Store) -> None:
    """The hub's read answers what changes_since, get_network and list_ports would."""
    n1, n2 = add_network(store, 1), add_network(store, 2)
    add_host(store, "h1", "192.0.2.1")
    start = revision(store)
    with store.write() as tx:
        a = tx.insert_port(port(n1.id, "fa:16:3e:00:00:01", ("198.19.0.2", "2001:db8::1")))
        b = tx.insert_port(port(n1.id, "fa:16:3e:00:00:02"))
        c = tx.insert_port(port(n2.id, "fa:16:3e:00:00:03", ("198.19.0.1", "198.19.0.3")))
    with store.write() as tx:
        tx.update_port(replace(a, host="h1", status=PortStatus.BUILD, fixed_ips=("198.19.0.9",)))
        tx.delete_port(b.id)
        tx.delete_port(c.id)
        tx.delete_network(n2.id)
    add_host(store, "h2", "192.0.2.2")
    for since in range(start, revision(store) + 1):
        with store.read() as tx:
            rows = tx.changes_with_rows(since)
            log = tx.changes_since(since)
            touched = sorted({ch.network_id for ch in log if ch.network_id})
            assert rows.changes == log and rows.revision == tx.revision()
            assert rows.networks == {nid: tx.get_network(nid) for nid in touched}
            assert list(rows.networks) == touched
            assert rows.ports == tx.list_ports(port_ids=[ch.key for ch in log if ch.kind == "port"])
    store.prune_changes(revision(store))
    with store.read() as tx, pytest.raises(ChangeLogTruncated):
        tx.changes_with_rows(start)
