"""Which acks ``Channel._on_ack`` times into ``l2pop_agent_apply_seconds``
(``Channel.apply_latency``): an ack that advances its session's revision without errors,
of a revision the hub heard of after the session began; nothing else."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from l2pop.server.channel import Channel
from l2pop.server.revtrace import RevisionTrace
from l2pop.server.sessions import ChannelStats, Session, SessionRegistry
from l2pop.wire.channel import Ack, AckError

DIGEST = "0" * 16


class Durations:
    """An ``Observer`` that keeps what it heard."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def observe(self, amount: float, /) -> None:
        self.seen.append(amount)


def channel_and_session() -> tuple[Channel, Session, RevisionTrace, Durations]:
    trace = RevisionTrace()
    hub: Any = SimpleNamespace(trace=trace)
    presence: Any = SimpleNamespace(replica="r1")
    store: Any = None
    tokens: Any = None
    channel = Channel(store, hub, SessionRegistry(), tokens, presence)
    durations = Durations()
    channel.apply_latency = durations
    sender: Any = None
    session = Session("h1", sender, hub, 8, ChannelStats())
    return channel, session, trace, durations


def ack(revision: int, *errors: AckError) -> Ack:
    return Ack(revision=revision, digest=DIGEST, errors=list(errors))


def test_an_advancing_ack_is_timed_from_the_first_hearing_of_its_revision() -> None:
    channel, session, trace, durations = channel_and_session()
    heard = time.monotonic()
    trace.heard(5, heard)
    trace.heard(5, heard + 100)  # heard again (a wait woke the hub): the first counts
    before = time.monotonic()
    channel._on_ack(session, ack(5))
    assert len(durations.seen) == 1
    assert 0 <= durations.seen[0] <= time.monotonic() - heard
    assert durations.seen[0] >= before - heard


def test_repeats_failures_unknown_and_older_revisions_are_not_timed() -> None:
    channel, session, trace, durations = channel_and_session()
    now = time.monotonic()
    for revision in (5, 6, 7):
        trace.heard(revision, now)
    trace.heard(4, session.started_at - 1.0)  # heard before the session began
    channel._on_ack(session, ack(4))
    assert durations.seen == []
    channel._on_ack(session, ack(5))
    channel._on_ack(session, ack(5))  # a heartbeat's ack repeats the revision
    assert len(durations.seen) == 1
    failed = AckError(network_id="n1", vni=7, message="refused")
    channel._on_ack(session, ack(6, failed))  # not applied: a network failed
    channel._on_ack(session, ack(9))  # a revision the hub never heard of (loaded, skipped)
    assert len(durations.seen) == 1
    channel._on_ack(session, ack(7))  # an older revision than the last ack: not an advance
    assert len(durations.seen) == 1


def test_without_an_observer_acks_are_only_recorded() -> None:
    channel, session, trace, _ = channel_and_session()
    channel.apply_latency = None
    trace.heard(5, time.monotonic())
    channel._on_ack(session, ack(5))
    assert session.acked_revision == 5
