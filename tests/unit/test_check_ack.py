"""Which acks a session takes: what it was sent, or what the agent said it holds.

After a server restart every agent connects at once and most sessions wait for a
first-message slot (server/channel.py, ``FIRST_MESSAGE_SLOTS``) for longer than a heartbeat
interval. Meanwhile each agent's heartbeat acks what it holds from its previous session:
refusing those closed every waiting session and kept a fleet of 3,000 reconnecting behind
the queue (``bench curve``, found there)."""

from __future__ import annotations

import pytest

from l2pop.server.channel import ProtocolViolation, check_ack
from l2pop.server.sessions import ChannelStats, Session
from l2pop.wire.channel import Ack

DIGEST = "0" * 32


class NoSender:
    async def send_text(self, data: str, /) -> None:
        raise AssertionError("nothing is sent in this test")

    async def close(self, code: int, reason: str, /) -> None:
        pass


class NoSnapshots:
    def snapshot_of(self, host: str) -> object:
        raise AssertionError("no snapshot is built in this test")

    def resume_of(self, host: str, base: int) -> object:
        raise AssertionError("no resume is built in this test")


def session(resume_from: int | None) -> Session:
    return Session(
        "h1",
        NoSender(),
        NoSnapshots(),
        16,
        ChannelStats(),
        resume_from=resume_from,  # type: ignore[arg-type]
    )


def test_an_ack_of_the_offered_revision_is_taken_before_the_first_message() -> None:
    waiting = session(resume_from=40)
    check_ack(waiting, Ack(revision=40, digest=DIGEST))
    check_ack(waiting, Ack(revision=12, digest=DIGEST))


def test_an_ack_ahead_of_both_sent_and_offered_is_refused() -> None:
    waiting = session(resume_from=40)
    with pytest.raises(ProtocolViolation, match="ack of revision 41"):
        check_ack(waiting, Ack(revision=41, digest=DIGEST))
    fresh = session(resume_from=None)
    with pytest.raises(ProtocolViolation, match="offered 0"):
        check_ack(fresh, Ack(revision=1, digest=DIGEST))


def test_once_sent_the_sent_revision_bounds_the_ack() -> None:
    sent = session(resume_from=5)
    sent.prev_revision = 90
    check_ack(sent, Ack(revision=90, digest=DIGEST))
    with pytest.raises(ProtocolViolation):
        check_ack(sent, Ack(revision=91, digest=DIGEST))
