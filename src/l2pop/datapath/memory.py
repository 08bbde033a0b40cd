"""The in-memory datapath: the reference behaviour of ``abc.Datapath``, with no kernel.

Used by tests and by the agent swarm. It implements ``abc.PortPlugging``: ``plug`` and
``unplug`` stand for a VM's device coming and going. With ``autoplug`` (the default) a port
nobody plugged or unplugged counts as plugged, so a swarm's ports go BUILD -> ACTIVE through
the real status call as soon as they are bound, and tests take them DOWN with ``unplug``.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable, Iterable, Sequence

from l2pop.datapath.abc import DatapathError, refuse_encap
from l2pop.model import Encap, NetworkDelta, NetworkTables, apply_delta

#: what the memory datapath carries unless told otherwise: everything there is
ALL_ENCAPS = frozenset(Encap)


class MemoryDatapath:
    """``abc.Datapath`` and ``abc.PortPlugging`` in memory; ``tables`` and ``wired`` (port id
    -> network id) are what a test reads back."""

    name = "memory"
    blocking = False

    def __init__(self, *, autoplug: bool = True, encaps: frozenset[Encap] = ALL_ENCAPS) -> None:
        """``autoplug=False``: a port's device exists only between ``plug`` and ``unplug``, as
        on a real host (the contract suite runs it so). ``encaps``: what it carries (fewer
        stand for a datapath such as linux, which carries VXLAN only)."""
        self.encaps = frozenset(encaps)
        self._lock = threading.Lock()
        self._autoplug = autoplug
        self.tables: dict[str, NetworkTables] = {}
        self.wired: dict[str, str] = {}
        self._plugged: set[str] = set()
        self._unplugged: set[str] = set()
        self._listener: Callable[[], None] | None = None

    def dump(self) -> dict[str, NetworkTables]:
        with self._lock:
            return dict(self.tables)

    def apply(self, deltas: Sequence[NetworkDelta]) -> None:
        with self._lock:
            for delta in deltas:
                refuse_encap(self, delta)
                tables = apply_delta(self.tables.get(delta.network_id), delta)
                if tables is None:
                    self.tables.pop(delta.network_id, None)
                    # as the kernel does when a bridge goes: its ports stay, unwired
                    self.wired = {p: n for p, n in self.wired.items() if n != delta.network_id}
                else:
                    self.tables[delta.network_id] = tables

    def plugged(self, port_ids: Iterable[str]) -> set[str]:
        with self._lock:
            return {p for p in port_ids if self._present(p)}

    def wire(self, port_id: str, network_id: str, mac: str | None = None) -> None:
        with self._lock:
            if not self._present(port_id):
                return
            if network_id not in self.tables:
                message = f"network {network_id} is not programmed on this host"
                raise DatapathError(message, [(f"port {port_id}", errno.ENOENT, message)])
            self.wired[port_id] = network_id

    def unwire(self, port_id: str) -> None:
        with self._lock:
            self.wired.pop(port_id, None)

    def sweep_ports(self, keep: Iterable[str]) -> None:
        kept = set(keep)
        with self._lock:
            self.wired = {p: n for p, n in self.wired.items() if p in kept}

    def state_lost(self) -> bool:
        return False  # memory loses nothing behind anyone's back

    def set_port_listener(self, listener: Callable[[], None]) -> None:
        self._listener = listener

    def plug(self, port_id: str) -> None:
        """The VM's device appears (unwired)."""
        with self._lock:
            self._unplugged.discard(port_id)
            self._plugged.add(port_id)
        self._fire()

    def unplug(self, port_id: str) -> None:
        """The VM's device goes, and its wiring with it."""
        with self._lock:
            self._plugged.discard(port_id)
            self._unplugged.add(port_id)
            self.wired.pop(port_id, None)
        self._fire()

    def close(self) -> None:
        pass

    def _present(self, port_id: str) -> bool:
        if port_id in self._plugged:
            return True
        return self._autoplug and port_id not in self._unplugged

    def _fire(self) -> None:
        listener = self._listener
        if listener is not None:
            listener()
