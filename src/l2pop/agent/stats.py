"""The counters of one agent, as the control endpoint serves them (``GET /agents/{host}/stats``).

``messages`` counts server messages by type; ``networks_seen`` holds every network id any
received message mentioned, which lets tests prove interest-based fan-out (a host never hears
of a network it is not a member of).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any


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
