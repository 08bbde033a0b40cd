"""Worked examples of the desired-state rules (docs/design.md, "Desired state")."""

from __future__ import annotations

from datetime import UTC, datetime

from l2pop.model import (
    ArpSuppression,
    Host,
    Network,
    NetworkTables,
    Port,
    PortStatus,
    apply_deltas,
    desired_state,
    diff_state,
    digest,
)

A, B, C = PortStatus.ACTIVE, PortStatus.BUILD, PortStatus.DOWN
T0 = datetime(2026, 1, 1, tzinfo=UTC)
NET = Network("n1", "blue", 100, ArpSuppression.NEIGH_SUPPRESS, T0, 1)
HOSTS = [Host("h1", "192.0.2.1"), Host("h2", "192.0.2.2"), Host("h3", "192.0.2.3")]


def port(pid: str, host: str | None, status: PortStatus, *ips: str) -> Port:
    return Port(pid, "n1", pid, f"fa:16:3e:00:00:0{pid[-1]}", tuple(ips), host, status, 1)


def test_members_get_remote_active_ports_only() -> None:
    ports = [
        port("p1", "h1", A, "198.19.0.1"),
        port("p2", "h2", A, "198.19.0.2", "2001:db8::2"),
        port("p3", "h2", B, "198.19.0.3"),  # not ACTIVE: no entries anywhere
    ]
    state = desired_state([NET], ports, HOSTS)
    assert state["h3"] == {}  # no port of n1 on h3: not a member, holds nothing
    h1 = state["h1"]["n1"]
    assert h1.flood == {"192.0.2.2"}
    assert dict(h1.fdb) == {"fa:16:3e:00:00:02": "192.0.2.2"}
    assert dict(h1.neigh) == {"198.19.0.2": "fa:16:3e:00:00:02", "2001:db8::2": "fa:16:3e:00:00:02"}
    h2 = state["h2"]["n1"]  # its own ports never appear
    assert h2.flood == {"192.0.2.1"}
    assert dict(h2.fdb) == {"fa:16:3e:00:00:01": "192.0.2.1"}


def test_membership_starts_at_bind_time() -> None:
    ports = [port("p1", "h1", A, "198.19.0.1"), port("p2", "h3", B)]
    state = desired_state([NET], ports, HOSTS)
    assert state["h3"]["n1"].fdb == {"fa:16:3e:00:00:01": "192.0.2.1"}  # pre-populated
    # h1 is a member but nobody else is ACTIVE yet: an empty, present table
    assert state["h1"]["n1"] == NetworkTables("n1", 100, ArpSuppression.NEIGH_SUPPRESS)


def test_down_ports_and_unbound_ports_do_not_make_members() -> None:
    ports = [port("p1", "h1", A), port("p2", "h2", C), port("p3", None, C)]
    state = desired_state([NET], ports, HOSTS)
    assert set(state["h1"]) == {"n1"}
    assert state["h2"] == {}


def test_migration_leaves_remote_tables_at_once() -> None:
    before = desired_state([NET], [port("p1", "h1", A), port("p2", "h2", A)], HOSTS)
    after = desired_state([NET], [port("p1", "h3", B), port("p2", "h2", A)], HOSTS)
    deltas = diff_state(before["h2"], after["h2"])
    assert len(deltas) == 1
    assert dict(deltas[0].fdb_remove) == {"fa:16:3e:00:00:01": "192.0.2.1"}
    assert deltas[0].flood_remove == {"192.0.2.1"}
    assert apply_deltas(before["h2"], deltas) == after["h2"]


def test_digest_is_order_independent_and_content_sensitive() -> None:
    ports = [port("p1", "h1", A, "198.19.0.1"), port("p2", "h2", A), port("p4", "h3", A)]
    one = desired_state([NET], ports, HOSTS)["h1"]
    two = desired_state([NET], list(reversed(ports)), HOSTS)["h1"]
    assert digest(one) == digest(two)
    moved = desired_state([NET], [*ports[:2], port("p4", "h2", A)], HOSTS)["h1"]
    assert digest(moved) != digest(one)
    assert digest({}) != digest(one)
