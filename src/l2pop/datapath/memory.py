"""The in-memory datapath: the reference behaviour of ``abc.Datapath``, with no kernel.

Used by tests and by the scale simulator. A port bound to the host counts as plugged unless
``unplug`` was called for it, so in memory mode ports go BUILD -> ACTIVE through the real
status call and tests can take them DOWN again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

from l2pop.model import NetworkDelta, NetworkTables, apply_delta


class MemoryDatapath:
    name = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tables: dict[str, NetworkTables] = {}
        self.unplugged: set[str] = set()
        self.wired: dict[str, str] = {}  # port id -> network id
        self.applied_deltas = 0
        self._listener: Callable[[], None] | None = None

    def dump(self) -> dict[str, NetworkTables]:
        with self._lock:
            return dict(self.tables)

    def apply(self, deltas: Sequence[NetworkDelta]) -> None:
        with self._lock:
            for delta in deltas:
                tables = apply_delta(self.tables.get(delta.network_id), delta)
                if tables is None:
                    self.tables.pop(delta.network_id, None)
                else:
                    self.tables[delta.network_id] = tables
                self.applied_deltas += 1

    def plugged(self, port_ids: Iterable[str]) -> set[str]:
        with self._lock:
            return {p for p in port_ids if p not in self.unplugged}

    def wire(self, port_id: str, network_id: str) -> None:
        with self._lock:
            self.wired[port_id] = network_id

    def set_port_listener(self, listener: Callable[[], None]) -> None:
        self._listener = listener

    def unplug(self, port_id: str) -> None:
        """Simulate the VM's device going away."""
        with self._lock:
            self.unplugged.add(port_id)
            self.wired.pop(port_id, None)
        if self._listener:
            self._listener()

    def plug(self, port_id: str) -> None:
        with self._lock:
            self.unplugged.discard(port_id)
        if self._listener:
            self._listener()

    def close(self) -> None:
        pass
