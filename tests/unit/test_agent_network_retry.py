"""Per-network isolation and retry in the agent: a datapath that fails on one network must not
stop the others, the failing one is retried on its own backoff and converges once the fault
clears, the digest the agent acknowledges stays honest meanwhile, and the failure is reported
(bounded) with the acks."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Sequence

import msgspec
import pytest
from test_agent_channel import TIMEOUT, FakeServer, Session
from test_agent_reconciler import M2, M3, M4, V2, V3, V4, delta, local, snapshot, tables

from l2pop.agent.backoff import Backoff
from l2pop.agent.channel import Agent
from l2pop.agent.reconciler import RETRY_BASE_S, RETRY_CAP_S, Reconciler
from l2pop.datapath.abc import DatapathError
from l2pop.datapath.memory import MemoryDatapath
from l2pop.model import ArpSuppression, NetworkDelta, NetworkTables, diff_state, digest
from l2pop.wire.channel import ACK_ERRORS_MAX, Ack, AckError, AgentMessage, agent_message, encode

M5 = "fa:16:3e:00:00:05"
ZERO = "0" * 32  # a digest


class FailingDatapath(MemoryDatapath):
    """The memory datapath, except that it refuses every change to a network whose VNI is in
    ``broken`` (as the kernel refuses an entry), and counts the attempts per VNI."""

    def __init__(self, *broken: int) -> None:
        super().__init__()
        self.broken = set(broken)
        self.attempts: dict[int, int] = {}

    def apply(self, deltas: Sequence[NetworkDelta]) -> None:
        for d in deltas:
            self.attempts[d.vni] = self.attempts.get(d.vni, 0) + 1
            if d.vni in self.broken:
                mac = next(iter(d.fdb_add), "00:00:00:00:00:00")
                raise DatapathError(
                    f"1 of 3 kernel changes failed: fdb {mac}: Invalid argument",
                    [(f"fdb {mac}", errno.EINVAL, "Invalid argument")],
                )
        super().apply(deltas)

    def wire(self, port_id: str, network_id: str, mac: str | None = None) -> None:
        held = self.tables.get(network_id)
        if held is None or held.vni in self.broken:
            raise DatapathError(f"network {network_id} is not programmed on this host")
        super().wire(port_id, network_id, mac)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def damaged(nid: str) -> NetworkTables:
    """How a failing network counts in the applied digest (module notes of the reconciler)."""
    return NetworkTables(nid, 0, ArpSuppression.OFF)


def two_networks(*extra_n2: tuple[str, str, str]) -> dict[str, NetworkTables]:
    return {
        "n1": tables("n1", 100, (M2, V2, "198.19.0.2")),
        "n2": tables("n2", 200, (M3, V3, "198.19.1.3"), *extra_n2),
    }


def test_one_failing_network_does_not_block_the_others_and_heals_with_backoff() -> None:
    dp, clock = FailingDatapath(200), Clock()
    rec = Reconciler(dp, clock=clock)
    s1 = two_networks()
    rec.on_snapshot(snapshot(1, s1, [local("p1", "n1"), local("p2", "n2")]))
    result = rec.sync()

    # n1 is programmed and its port wired in the same sync; n2 is failing
    assert dp.dump() == {"n1": s1["n1"]}
    assert dp.wired == {"p1": "n1"}
    assert result.failing == ("n2",) and result.retry_in == RETRY_BASE_S
    [err] = rec.errors()
    assert (err.network_id, err.vni, err.attempts) == ("n2", 200, 1)
    assert err.entry == f"fdb {M3} -> {V3}" and "Invalid argument" in err.message
    # the ack is honest: n2 counts as damaged, so it is not the digest of the desired state
    revision, acked = rec.applied() or (0, "")
    assert revision == 1 and acked != digest(s1)
    assert acked == digest({"n1": s1["n1"], "n2": damaged("n2")})

    # a later port in the healthy network is programmed at once; n2 is not tried again
    # before its retry is due (its delta waits in the desired state)
    s2 = with_port(s1, n1=(M4, V4, "198.19.0.4"), n2=(M5, V4, "198.19.1.5"))
    rec.on_delta(delta(1, 2, s2, diff_state(s1, s2)))
    result = rec.sync()
    assert dp.dump() == {"n1": s2["n1"]} and dp.attempts[200] == 1
    assert result.failing == ("n2",) and result.retry_in == RETRY_BASE_S
    assert rec.applied() == (2, digest({"n1": s2["n1"], "n2": damaged("n2")}))

    # retries: 0.5 s, then 1, 2, 4 ... doubling, capped at 30 s (quarter seconds: exact floats)
    delays = []
    for _ in range(9):
        assert result.retry_in is not None
        clock.now += result.retry_in - 0.25
        assert rec.sync().retry_in == 0.25  # not due yet: not retried
        clock.now += 0.25
        result = rec.sync()
        delays.append(result.retry_in)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, RETRY_CAP_S, RETRY_CAP_S, RETRY_CAP_S, 30.0]
    assert dp.attempts[200] == 10 and rec.errors()[0].attempts == 10
    assert dp.dump() == {"n1": s2["n1"]}

    # the fault clears: at the next retry n2 gets a full reconcile with everything it missed
    dp.broken.clear()
    assert result.retry_in is not None
    clock.now += result.retry_in
    result = rec.sync()
    assert dp.dump() == s2 and dp.wired == {"p1": "n1", "p2": "n2"}
    assert result.failing == () and result.retry_in is None and rec.errors() == []
    assert rec.applied() == (2, digest(s2))

    # healed: the next failure starts again from the base delay
    dp.broken.add(100)
    s3 = with_port(s2, n1=(M5, V2, "198.19.0.5"))
    rec.on_delta(delta(2, 3, s3, diff_state(s2, s3)))
    assert rec.sync().retry_in == RETRY_BASE_S


def with_port(
    state: dict[str, NetworkTables], **ports: tuple[str, str, str]
) -> dict[str, NetworkTables]:
    """``state`` with one more remote port (mac, vtep, ip) per named network."""
    out = dict(state)
    for nid, (mac, vtep, ip) in ports.items():
        t = out[nid]
        out[nid] = NetworkTables(
            nid,
            t.vni,
            t.arp_suppression,
            t.flood | {vtep},
            {**t.fdb, mac: vtep},
            {**t.neigh, ip: mac},
        )
    return out


def test_a_snapshot_keeps_the_backoff_and_programs_the_healthy_networks() -> None:
    """A FULL sync (resync, reconnect) does not retry a network before it is due: the
    rate limit holds whatever the server sends."""
    dp, clock = FailingDatapath(200), Clock()
    rec = Reconciler(dp, clock=clock)
    s1 = two_networks()
    rec.on_snapshot(snapshot(1, s1))
    rec.sync()
    dp.tables["n1"] = tables("n1", 100)  # the kernel lost n1's entries meanwhile
    rec.on_snapshot(snapshot(4, s1))
    result = rec.sync()
    assert result.full and dp.dump() == {"n1": s1["n1"]} and dp.attempts[200] == 1
    clock.now += RETRY_BASE_S
    dp.broken.clear()
    assert rec.sync().failing == () and dp.dump() == s1 and rec.applied() == (4, digest(s1))


def test_a_failed_leave_keeps_the_host_out_of_sync_until_it_is_done() -> None:
    dp, clock = FailingDatapath(), Clock()
    rec = Reconciler(dp, clock=clock)
    s1 = two_networks()
    rec.on_snapshot(snapshot(1, s1))
    rec.sync()
    dp.broken.add(200)
    s2 = {"n1": s1["n1"]}  # the host left n2
    rec.on_delta(delta(1, 2, s2, diff_state(s1, s2)))
    assert rec.sync().failing == ("n2",)
    # without the damaged header this would be digest(s2): "in sync" with n2 still there
    revision, acked = rec.applied() or (0, "")
    assert revision == 2 and acked != digest(s2) and rec.errors()[0].vni == 200
    dp.broken.clear()
    clock.now += RETRY_BASE_S
    assert rec.sync().failing == () and dp.dump() == s2 and rec.applied() == (2, digest(s2))


def test_errors_are_bounded_for_the_ack() -> None:
    dp = FailingDatapath(*range(1, 41))
    rec = Reconciler(dp)
    state = {f"n{i:02}": tables(f"n{i:02}", i, (M2, V2, "198.19.0.2")) for i in range(1, 41)}
    rec.on_snapshot(snapshot(1, state))
    assert len(rec.sync().failing) == 40  # all of them; only the ack's list is bounded
    errors = rec.errors()
    assert len(errors) == ACK_ERRORS_MAX and errors[0].network_id == "n01"
    # within the bounds the server checks
    agent_message.decode(encode(Ack(revision=1, digest=ZERO, errors=[e.wire() for e in errors])))

    class Verbose(MemoryDatapath):
        def apply(self, deltas: Sequence[NetworkDelta]) -> None:
            raise OSError(errno.EIO, "x" * 5000)

    rec = Reconciler(Verbose())
    rec.on_snapshot(snapshot(1, {"n1": state["n01"]}))
    rec.sync()
    [wire] = [e.wire() for e in rec.errors()]
    assert len(wire.message) == 200 and wire.entry is None


def test_the_server_refuses_unbounded_or_oversized_error_lists() -> None:
    ok = AckError(network_id="n1", vni=100, entry="device vxlan-100", message="File exists")
    parsed = agent_message.decode(encode(Ack(revision=3, digest=ZERO, errors=[ok])))
    assert isinstance(parsed, Ack) and parsed.errors == [ok]
    # an older agent's ack has no errors field: still valid, no errors
    old = agent_message.decode(f'{{"type": "ack", "revision": 3, "digest": "{ZERO}"}}')
    assert isinstance(old, Ack) and old.errors == []
    too_many = [msgspec.structs.asdict(ok)] * (ACK_ERRORS_MAX + 1)
    bad: list[dict[str, object]] = [
        {"errors": too_many},
        {"errors": [{**msgspec.structs.asdict(ok), "message": "x" * 201}]},
        {"errors": [{**msgspec.structs.asdict(ok), "entry": "x" * 201}]},
        {"errors": [{**msgspec.structs.asdict(ok), "network_id": "x" * 65}]},
        {"errors": [{**msgspec.structs.asdict(ok), "vni": -1}]},
        {"errors": [{**msgspec.structs.asdict(ok), "vni": 2**24}]},
        {"errors": [{"network_id": "n1", "vni": 1}]},  # no message
        {"errors": "n1 is broken"},
    ]
    for fields in bad:
        ack = {"type": "ack", "revision": 3, "digest": ZERO, **fields}
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(ack, AgentMessage)
        with pytest.raises(msgspec.ValidationError):
            agent_message.decode(msgspec.json.encode(ack))


def test_the_agent_acks_its_errors_until_the_network_heals() -> None:
    """Through a real WebSocket: the ack names the failing network and carries the honest
    digest; the worker retries on its own (no server message needed) and, once the fault
    clears, acks the desired digest with no errors."""
    s1 = two_networks()
    dp = FailingDatapath(200)

    async def main() -> None:
        async with FakeServer() as server:
            agent = Agent(
                server.url,
                "h1",
                "192.0.2.1",
                "tok-h1",
                dp,
                heartbeat_interval=0.2,
                reconnect_backoff=Backoff(0.01, 0.05),
            )
            task = asyncio.create_task(agent.run())
            try:
                s = await server.session()
                await s.send(snapshot(1, s1))
                failing = await s.expect(Ack, revision=1)
                assert failing.digest == digest({"n1": s1["n1"], "n2": damaged("n2")})
                assert [(e.network_id, e.vni, e.entry) for e in failing.errors] == [
                    ("n2", 200, f"fdb {M3} -> {V3}")
                ]
                status = agent.status()
                assert [e["network_id"] for e in status["errors"]] == ["n2"]
                assert dp.dump() == {"n1": s1["n1"]}
                dp.broken.clear()
                healed = await asyncio.wait_for(_ack_without_errors(s), TIMEOUT)
                assert healed.digest == digest(s1) and dp.dump() == s1
                assert agent.status()["errors"] == []
            finally:
                await agent.stop()
                await asyncio.wait_for(task, TIMEOUT)

    asyncio.run(main())


async def _ack_without_errors(s: Session) -> Ack:
    while True:
        msg = await s.expect(Ack)
        if not msg.errors:
            return msg
