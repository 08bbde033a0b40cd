"""The agent's Reconciler against the memory datapath: desired state, revisions, mark and sweep,
error recovery and port status (docs/design.md, "Agent channel" and "Linux datapath")."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pytest

from l2pop.agent.reconciler import NO_REVISION, Gap, Reconciler
from l2pop.datapath.memory import MemoryDatapath
from l2pop.model import (
    ArpSuppression,
    NetworkDelta,
    NetworkTables,
    PortStatus,
    apply_deltas,
    diff_state,
    digest,
)
from l2pop.wire.channel import (
    Delta,
    Heartbeat,
    LocalPort,
    NetworkDeltaMsg,
    NetworkTablesMsg,
    Snapshot,
)

NS = ArpSuppression.NEIGH_SUPPRESS
V2, V3, V4 = "192.0.2.2", "192.0.2.3", "192.0.2.4"
M2, M3, M4 = "fa:16:3e:00:00:02", "fa:16:3e:00:00:03", "fa:16:3e:00:00:04"


def tables(nid: str, vni: int, *ports: tuple[str, str, str]) -> NetworkTables:
    """A network's tables from remote ports (mac, vtep, ip)."""
    return NetworkTables(
        nid,
        vni,
        NS,
        frozenset(v for _, v, _ in ports),
        {m: v for m, v, _ in ports},
        {ip: m for m, _, ip in ports},
    )


def snapshot(
    revision: int, state: dict[str, NetworkTables], ports: Iterable[LocalPort] = ()
) -> Snapshot:
    return Snapshot(
        revision=revision,
        digest=digest(state),
        networks=[NetworkTablesMsg.of(t) for t in state.values()],
        ports=list(ports),
    )


def delta(
    prev: int,
    revision: int,
    after: dict[str, NetworkTables],
    deltas: Sequence[NetworkDelta],
    *,
    ports: Iterable[LocalPort] = (),
    ports_removed: Iterable[str] = (),
) -> Delta:
    return Delta(
        revision=revision,
        prev_revision=prev,
        digest=digest(after),
        networks=[NetworkDeltaMsg.of(d) for d in deltas],
        ports=list(ports),
        ports_removed=list(ports_removed),
    )


def local(pid: str, nid: str = "n1", status: PortStatus = PortStatus.BUILD) -> LocalPort:
    return LocalPort(id=pid, network_id=nid, vni=100, mac=M4, fixed_ips=[], status=status)


class CountingDatapath(MemoryDatapath):
    """Records every entry a delta adds or removes, to prove unchanged entries never blink."""

    def __init__(self) -> None:
        super().__init__()
        self.touched: list[tuple[str, str, str]] = []  # (op, network, key)
        self.fail_next_apply = 0
        self.fail_next_plugged = 0

    def plugged(self, port_ids: Iterable[str]) -> set[str]:
        if self.fail_next_plugged:
            self.fail_next_plugged -= 1
            raise OSError("netlink: simulated link dump failure")
        return super().plugged(port_ids)

    def apply(self, deltas: Sequence[NetworkDelta]) -> None:
        if self.fail_next_apply:
            self.fail_next_apply -= 1
            raise OSError("netlink: simulated failure")
        for d in deltas:
            n = d.network_id
            if d.leave:
                self.touched.append(("leave", n, ""))
            self.touched += [("add", n, k) for k in [*d.flood_add, *d.fdb_add, *d.neigh_add]]
            self.touched += [
                ("remove", n, k) for k in [*d.flood_remove, *d.fdb_remove, *d.neigh_remove]
            ]
        super().apply(deltas)


def test_snapshot_then_deltas_programs_exactly_the_desired_state() -> None:
    dp = MemoryDatapath()
    rec = Reconciler(dp)
    s1 = {"n1": tables("n1", 100, (M2, V2, "198.19.0.2"))}
    rec.on_snapshot(snapshot(5, s1))
    assert rec.sync().full
    assert dp.dump() == s1
    assert rec.applied() == (5, digest(s1))

    s2 = {
        "n1": tables("n1", 100, (M2, V2, "198.19.0.2"), (M3, V3, "198.19.0.3")),
        "n2": tables("n2", 200, (M4, V4, "203.0.113.4")),
    }
    d1 = diff_state(s1, s2)
    assert rec.on_delta(delta(5, 9, s2, d1))
    s3 = apply_deltas(s2, diff_state(s2, {"n2": s2["n2"]}))
    assert rec.on_delta(delta(9, 12, s3, diff_state(s2, s3)))
    result = rec.sync()
    assert not result.full and result.deltas_applied == 3
    assert dp.dump() == s3 == rec.desired
    assert rec.applied() == (12, digest(s3))


def test_duplicate_delta_is_ignored() -> None:
    rec = Reconciler(MemoryDatapath())
    s1 = {"n1": tables("n1", 100, (M2, V2, "198.19.0.2"))}
    rec.on_snapshot(snapshot(1, {}))
    msg = delta(1, 2, s1, diff_state({}, s1))
    assert rec.on_delta(msg) is True
    assert rec.on_delta(msg) is False  # same revision again
    assert rec.on_delta(delta(0, 1, {}, [])) is False  # older than what we hold
    assert rec.revision == 2 and rec.desired == s1


def test_gap_raises_and_leaves_state_alone() -> None:
    rec = Reconciler(MemoryDatapath())
    s1 = {"n1": tables("n1", 100, (M2, V2, "198.19.0.2"))}
    rec.on_snapshot(snapshot(3, s1))
    with pytest.raises(Gap):
        rec.on_delta(delta(4, 5, {}, diff_state(s1, {})))  # revision 4 was lost
    assert rec.revision == 3 and rec.desired == s1


def test_delta_before_the_sessions_snapshot_is_a_gap() -> None:
    rec = Reconciler(MemoryDatapath())
    with pytest.raises(Gap):
        rec.on_delta(delta(NO_REVISION, 1, {}, []))
    rec.on_snapshot(snapshot(1, {}))
    rec.new_session()  # reconnect: stale revisions from the last session prove nothing
    with pytest.raises(Gap):
        rec.on_delta(delta(1, 2, {}, []))


def test_delta_whose_result_does_not_match_the_digest_is_a_gap() -> None:
    rec = Reconciler(MemoryDatapath())
    rec.on_snapshot(snapshot(1, {}))
    s1 = {"n1": tables("n1", 100, (M2, V2, "198.19.0.2"))}
    bad = delta(1, 2, {}, diff_state({}, s1))  # digest of the wrong tables
    with pytest.raises(Gap, match="digest"):
        rec.on_delta(bad)


def test_full_reconcile_sweeps_stale_adds_missing_and_leaves_matching_entries_alone() -> None:
    dp = CountingDatapath()
    # What the kernel holds from before (agent restart): n1 partly right, n3 stale.
    before = {
        "n1": tables("n1", 100, (M2, V2, "198.19.0.2"), (M3, V3, "198.19.0.3")),
        "n3": tables("n3", 300, (M4, V4, "203.0.113.4")),
    }
    dp.apply(diff_state({}, before))
    dp.touched.clear()
    rec = Reconciler(dp)
    # No snapshot yet: the kernel is all we know, a sync must not sweep it.
    assert rec.sync().deltas_applied == 0
    assert dp.dump() == before and dp.touched == []

    want = {
        "n1": tables("n1", 100, (M2, V2, "198.19.0.2"), (M4, V4, "198.19.0.4")),
        "n2": tables("n2", 200, (M3, V3, "203.0.113.3")),
    }
    rec.on_snapshot(snapshot(7, want))
    assert rec.sync().full
    assert dp.dump() == want
    touched = {(op, n, k) for op, n, k in dp.touched}
    assert ("leave", "n3", "") in touched
    assert ("remove", "n1", M3) in touched and ("add", "n1", M4) in touched
    assert ("add", "n2", M3) in touched
    # M2 / V2 / 198.19.0.2 were right in n1: never removed, never re-added.
    for key in (M2, V2, "198.19.0.2"):
        assert not any(n == "n1" and k == key for _, n, k in dp.touched), key


def test_full_reconcile_of_an_in_sync_kernel_touches_nothing() -> None:
    dp = CountingDatapath()
    rec = Reconciler(dp)
    s1 = {"n1": tables("n1", 100, (M2, V2, "198.19.0.2"))}
    rec.on_snapshot(snapshot(1, s1))
    rec.sync()
    dp.touched.clear()
    rec.on_snapshot(snapshot(1, s1))  # resync after a reconnect
    result = rec.sync()
    assert result.full and result.deltas_applied == 0 and dp.touched == []


def test_a_datapath_wide_error_makes_the_next_sync_full() -> None:
    """An error outside any one network (here the link dump behind ``plugged``) fails the
    sync as a whole; one network's apply error does not (see the retry tests below)."""
    dp = CountingDatapath()
    rec = Reconciler(dp)
    rec.on_snapshot(snapshot(1, {}, [local("p1")]))
    rec.sync()
    s1 = {"n1": tables("n1", 100, (M2, V2, "198.19.0.2"))}
    rec.on_delta(delta(1, 2, s1, diff_state({}, s1)))
    dp.fail_next_plugged = 1
    with pytest.raises(OSError):
        rec.sync()
    assert rec.applied() == (1, digest({}))  # the failed revision is not acknowledged
    # Meanwhile the kernel drifted (a stale network appeared): FULL repairs that too.
    dp.tables["n0"] = tables("n0", 50, (M3, V3, "198.19.0.3"))
    result = rec.sync()
    assert result.full and dp.dump() == s1 and rec.applied() == (2, digest(s1))


def test_heartbeat_mismatch() -> None:
    rec = Reconciler(MemoryDatapath())
    s1 = {"n1": tables("n1", 100, (M2, V2, "198.19.0.2"))}
    rec.on_snapshot(snapshot(4, s1))
    assert rec.mismatch(Heartbeat(revision=4, digest=digest(s1))) is None
    assert rec.mismatch(Heartbeat(revision=6, digest=digest(s1))) is None
    assert rec.mismatch(Heartbeat(revision=3, digest="older")) is None
    assert rec.mismatch(Heartbeat(revision=4, digest=digest({}))) is not None


def test_port_status_follows_the_device() -> None:
    dp = MemoryDatapath()
    rec = Reconciler(dp)
    dp.set_port_listener(rec.mark_ports_dirty)  # as the agent does
    s1 = {"n1": tables("n1", 100, (M2, V2, "198.19.0.2"))}
    dp.unplug("p2")  # p2's VM has not started yet
    rec.on_snapshot(snapshot(1, s1, [local("p1"), local("p2"), local("p3", "n9")]))
    result = rec.sync()
    # plugged -> ACTIVE; BUILD and absent -> no report (stays BUILD, the host stays a member)
    assert sorted(result.reports) == [("p1", PortStatus.ACTIVE), ("p3", PortStatus.ACTIVE)]
    assert dp.wired == {"p1": "n1"}  # p3's network is not programmed (yet): nothing to wire
    assert rec.sync().reports == []  # not repeated while the server's answer is on its way

    # The server applies p1 ACTIVE and says so; then the VM goes away.
    s = rec.revision
    rec.on_delta(delta(s, s + 1, s1, [], ports=[local("p1", status=PortStatus.ACTIVE)]))
    assert rec.sync().reports == []
    dp.unplug("p1")
    assert rec.sync().reports == [("p1", PortStatus.DOWN)]
    assert "p1" not in dp.wired
    dp.plug("p1")
    assert rec.sync().reports == [("p1", PortStatus.ACTIVE)]
    assert dp.wired["p1"] == "n1"

    # A removed port (migrated away) is never reported again.
    s = rec.revision
    rec.on_delta(delta(s, s + 1, s1, [], ports_removed=["p2"]))
    dp.plug("p2")
    assert rec.sync().reports == []


def test_snapshot_forgets_reports_so_a_resync_repeats_them() -> None:
    dp = MemoryDatapath()
    rec = Reconciler(dp)
    rec.on_snapshot(snapshot(1, {}, [local("p1")]))
    assert rec.sync().reports == [("p1", PortStatus.ACTIVE)]
    rec.on_snapshot(snapshot(1, {}, [local("p1")]))  # the report may have been lost
    assert rec.sync().reports == [("p1", PortStatus.ACTIVE)]
