"""The counters of one agent, as the control endpoint serves them (``GET /agents/{host}/stats``).

``messages`` counts server messages by type; ``networks_seen`` holds every network id any
received message mentioned, which lets tests prove interest-based fan-out (a host never hears
of a network it is not a member of).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

#: events a ``Trace`` keeps (the oldest go first); about 130 bytes each
TRACE_KEEP = 512


class Trace:
    """A bounded ring of an agent's recent port and revision events, each
    ``(time.monotonic(), event, subject, detail)`` (the clock is system-wide, so another
    process on the machine can line them up with its own). One ``deque.append`` per event,
    from any thread. The reconciler records:

    * ``device``, port id: a sync found the port's device present, not yet wired;
    * ``wired``, port id: the datapath wired it (enslaved / added to the bridge);
    * ``report``, port id, status: the sync decided to report that status;
    * ``delta``, revision: a delta was accepted (received, not yet programmed);
    * ``port``, port id, revision: a delta brought the port's row (its status, say);
    * ``written``, revision: a sync's datapath writes, up to that revision, returned.
    """

    def __init__(self, keep: int = TRACE_KEEP) -> None:
        self.events: deque[tuple[float, str, str | int, str | int | None]] = deque(maxlen=keep)

    def add(self, event: str, subject: str | int, detail: str | int | None = None) -> None:
        self.events.append((time.monotonic(), event, subject, detail))

    def as_list(self) -> list[list[Any]]:
        return [list(e) for e in list(self.events)]


@dataclass
class AgentStats:
    """Counters of one agent (served by the control endpoint)."""

    messages: Counter[str] = field(default_factory=Counter)
    bytes_received: int = 0
    networks_seen: set[str] = field(default_factory=set)
    resyncs_requested: int = 0
    gaps_detected: int = 0
    duplicates_ignored: int = 0
    refused: int = 0
    syncs: int = 0
    full_syncs: int = 0
    sync_errors: int = 0
    sessions: int = 0
    connect_failures: int = 0
    acks_sent: int = 0
    #: moves to the next server URL after a session ended (only with several URLs)
    failovers: int = 0
    #: (revision, time.monotonic()) of each sync that applied a new revision; the clock is
    #: system-wide, so a benchmark in another process can time convergence against it
    applied_log: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=20_000))

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": dict(self.messages),
            "bytes_received": self.bytes_received,
            "networks_seen": sorted(self.networks_seen),
            "resyncs_requested": self.resyncs_requested,
            "gaps_detected": self.gaps_detected,
            "duplicates_ignored": self.duplicates_ignored,
            "refused": self.refused,
            "syncs": self.syncs,
            "full_syncs": self.full_syncs,
            "failovers": self.failovers,
            "sync_errors": self.sync_errors,
            "sessions": self.sessions,
            "connect_failures": self.connect_failures,
            "acks_sent": self.acks_sent,
        }
