"""Fault injection for agents under test: lose or repeat the next delta, on demand.

Nothing here is in a production agent's message path. ``DeltaFaults`` is an
``l2pop.agent.channel.InboundFilter`` that tests, and ``l2pop agent-swarm --test-hooks``,
give an ``Agent``; ``FaultControlServer`` is the swarm's control endpoint with the routes that
arm it:

    POST /agents/{host}/hooks/drop-next-delta       the next delta is lost on the wire
    POST /agents/{host}/hooks/duplicate-next-delta  the next delta arrives twice

and ``dropped_by_hook`` (deltas lost so far) added to ``GET /agents/{host}/stats``. The agent's
own counters show how it coped: ``gaps_detected`` and ``resyncs_requested`` for a loss,
``duplicates_ignored`` for a repeat (docs/design.md, "Agent channel", "Revisions and gaps").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

from l2pop.agent.channel import Agent
from l2pop.agent.control import ControlServer, Reply, error_reply, path_parts
from l2pop.wire.channel import Delta, ServerMessage

log = logging.getLogger("l2pop.testbed.faults")

DROP_NEXT_DELTA = "drop-next-delta"
DUPLICATE_NEXT_DELTA = "duplicate-next-delta"
HOOKS = (DROP_NEXT_DELTA, DUPLICATE_NEXT_DELTA)


class DeltaFaults:
    """Drops or repeats the next deltas of one agent, as armed; every other message passes.

    Arming is counted: two ``drop_next_delta`` calls lose the next two deltas. A drop armed
    together with a repeat wins (the delta is lost). Arming may happen from any thread.
    """

    def __init__(self, host: str = "") -> None:
        self.host = host  # for the log only
        self._lock = threading.Lock()
        self._drop = 0
        self._duplicate = 0
        #: deltas lost so far, and deltas delivered twice
        self.dropped = 0
        self.duplicated = 0

    def drop_next_delta(self) -> None:
        with self._lock:
            self._drop += 1

    def duplicate_next_delta(self) -> None:
        with self._lock:
            self._duplicate += 1

    def arm(self, hook: str) -> None:
        """Arm ``hook`` by its route name (one of ``HOOKS``); ValueError for another."""
        if hook == DROP_NEXT_DELTA:
            self.drop_next_delta()
        elif hook == DUPLICATE_NEXT_DELTA:
            self.duplicate_next_delta()
        else:
            raise ValueError(f"no hook {hook}")

    def __call__(self, msg: ServerMessage) -> Sequence[ServerMessage]:
        if not isinstance(msg, Delta):
            return (msg,)
        with self._lock:
            if self._drop:
                self._drop -= 1
                self.dropped += 1
                log.info("%s: fault injection: dropping delta %d", self.host, msg.revision)
                return ()
            if self._duplicate:
                self._duplicate -= 1
                self.duplicated += 1
                return (msg, msg)
        return (msg,)


class FaultControlServer(ControlServer):
    """The agents' control endpoint plus the routes that arm each agent's ``DeltaFaults``
    (``faults``: host -> its filter, the one that agent was constructed with)."""

    def __init__(
        self, agents: Mapping[str, Agent], listen: str, faults: Mapping[str, DeltaFaults]
    ) -> None:
        super().__init__(agents, listen)
        self.faults = faults

    async def handle(self, method: str, path: str) -> Reply:
        parts = path_parts(path)
        if len(parts) < 3 or parts[0] != "agents":
            return await super().handle(method, path)
        host, rest = parts[1], parts[2:]
        faults = self.faults.get(host)
        if rest[0] == "hooks" and host in self.agents:
            if method != "POST":
                return error_reply(405, "method", f"{method} is not allowed on {path}")
            if faults is None or len(rest) != 2 or rest[1] not in HOOKS:
                return error_reply(404, "not_found", f"no hook {'/'.join(rest[1:])}")
            faults.arm(rest[1])
            return 200, {"host": host, "hook": rest[1]}
        status, body = await super().handle(method, path)
        if status == 200 and rest == ["stats"] and faults is not None:
            body["dropped_by_hook"] = faults.dropped
        return status, body
