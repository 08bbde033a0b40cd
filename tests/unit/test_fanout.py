"""``host_deltas`` (changed ports only) has the same effect as diffing whole tables."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from l2pop.model import ArpSuppression, Network, Port, PortStatus, apply_delta, tables_for
from l2pop.model.fanout import host_deltas, network_state

T0 = datetime(2026, 1, 1, tzinfo=UTC)
VTEPS = {"h1": "192.0.2.1", "h2": "192.0.2.2", "h3": "192.0.2.3", "h4": "192.0.2.4"}
MACS = [f"fa:16:3e:00:00:{i:02x}" for i in range(6)]
IPS = ["198.19.0.1", "198.19.0.2", "198.19.0.3", "2001:db8::4"]

port_st = st.builds(
    lambda mac, ips, host, status: (mac, tuple(sorted(ips)), host, status),
    st.integers(0, 5),
    st.frozensets(st.sampled_from(IPS), max_size=2),
    st.sampled_from([None, "h1", "h2", "h3", "h4", "gone"]),
    st.sampled_from(list(PortStatus)),
)


def build(spec: dict[int, tuple[int, tuple[str, ...], str | None, PortStatus]]) -> list[Port]:
    """Ports from a spec, keeping MACs and IPs unique in the network as the store does."""
    ports, macs, ips = [], set(), set()
    for pid, (mac_i, fixed, host, status) in sorted(spec.items()):
        mac = MACS[mac_i]
        if mac in macs or ips & set(fixed):
            continue
        macs.add(mac)
        ips |= set(fixed)
        ports.append(Port(f"p{pid}", "n1", "", mac, fixed, host, status, 0))
    return ports


@st.composite
def evolve(draw: st.DrawFn, before: dict[int, tuple]) -> dict[int, tuple]:  # type: ignore[type-arg]
    """A later state of ``before``: most ports kept, some moved, re-addressed, re-MACed,
    re-statused or deleted, a few added (as a batch of events would)."""
    after = {}
    for pid, spec in before.items():
        mac, ips, host, status = spec
        change = draw(st.sampled_from(["keep", "keep", "host", "ips", "mac", "status", "del"]))
        if change == "host":
            host = draw(st.sampled_from([None, "h1", "h2", "h3", "h4"]))
        elif change == "ips":
            ips = tuple(sorted(draw(st.frozensets(st.sampled_from(IPS), max_size=2))))
        elif change == "mac":
            mac = draw(st.integers(0, 5))
        elif change == "status":
            status = draw(st.sampled_from(list(PortStatus)))
        if change != "del":
            after[pid] = (mac, ips, host, status)
    after.update(draw(st.dictionaries(st.integers(7, 9), port_st, max_size=2)))
    return after


@settings(max_examples=600, deadline=None)
@given(
    st.dictionaries(st.integers(0, 6), port_st, min_size=2, max_size=7).flatmap(
        lambda before: st.tuples(st.just(before), evolve(before))
    ),
    st.sampled_from(list(ArpSuppression)),
    st.sampled_from(list(ArpSuppression)),
)
def test_host_deltas_equal_table_diff(states, mode_before, mode_after) -> None:  # type: ignore[no-untyped-def]
    before, after = states
    net_before = Network("n1", "n", 100, mode_before, T0, 1)
    net_after = replace(net_before, arp_suppression=mode_after)
    old = network_state(net_before, build(before), VTEPS)
    new = network_state(net_after, build(after), VTEPS)
    deltas = host_deltas(old, new)
    for host in VTEPS:
        was = tables_for(host, net_before, old.remote.values()) if host in old.members else None
        now = tables_for(host, net_after, new.remote.values()) if host in new.members else None
        if host not in deltas:
            assert was == now, host
            continue
        assert apply_delta(was, deltas[host]) == now, host
        delta = deltas[host]
        # nothing blinks: no entry is both removed and re-added in one delta
        assert not delta.fdb_add.keys() & delta.fdb_remove.keys()
        assert not delta.neigh_add.keys() & delta.neigh_remove.keys()
