"""The agent's state machine: what the kernel must hold, and the one step that makes it so.

The channel feeds server messages in (``on_snapshot``, ``on_delta``), cheap and in memory, on
the event loop; ``sync()`` does the kernel work, in a worker thread, and is the only thing that
touches the datapath's tables (kubernetes sample-controller pattern: events only record work,
one idempotent step converges).

Contracts:

* ``revision`` is the revision of the last server message accepted; a delta at or below it is
  a duplicate and is ignored; a delta whose ``prev_revision`` is not ``revision`` means a lost
  message: ``on_delta`` raises ``Gap`` and the agent asks for a snapshot.
* A snapshot, the first sync, and the sync after any failed one are FULL: dump what the
  datapath holds, diff it against the desired state and apply only the difference (mark and
  sweep; never flush, so unchanged entries never blink). Otherwise ``sync`` applies the deltas
  queued since the last sync, as received (the fast path).
* ``applied()`` is the (revision, digest) of the desired state the last successful sync
  programmed: what the agent acknowledges.
* Port wiring: every sync asks the datapath which local ports' devices are present, wires those
  whose network is programmed, and returns the status reports the server still has to hear.

Thread safety: the message handlers and ``sync`` may run on different threads; a lock guards
the shared fields, and ``sync`` does its datapath calls outside it on a copy.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from l2pop.datapath.abc import Datapath
from l2pop.model import (
    NetworkDelta,
    NetworkTables,
    PortStatus,
    apply_delta,
    diff_state,
    network_sum,
)
from l2pop.model.diff import delta_sum_change
from l2pop.model.digest import as_hex
from l2pop.wire.channel import Delta, Heartbeat, LocalPort, Snapshot

log = logging.getLogger("l2pop.agent")

#: revision before any snapshot was accepted: every delta is a gap until one arrives.
NO_REVISION = -1


class Gap(Exception):
    """The agent lost track of the server's stream; it must ask for a snapshot (resync)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one ``sync`` did: whether it was FULL, how many deltas it applied, and the port
    status reports (port id, status) the agent must send."""

    full: bool
    deltas_applied: int
    reports: list[tuple[str, PortStatus]]


class Reconciler:
    """Desired state, local ports and revision of one agent, and the sync step."""

    def __init__(self, datapath: Datapath) -> None:
        self.datapath = datapath
        self._lock = threading.Lock()
        self.desired: dict[str, NetworkTables] = {}
        self._sum = 0  # additive digest of desired (model.digest), kept current per delta
        self.ports: dict[str, LocalPort] = {}
        self.revision = NO_REVISION
        self._full = True  # nothing is known of the datapath yet: the first sync is FULL
        self._plan: list[NetworkDelta] = []
        self._applied: tuple[int, str] | None = None
        # port id -> the status we last asked the server for, until it shows us another one;
        # guards against re-reporting on every sync while the answer is in flight.
        self._reported: dict[str, PortStatus] = {}
        self._wired: dict[str, str] = {}  # port id -> network id it was wired to
        self._session_started = False

    # -- messages (event loop side) ---------------------------------------------------

    def new_session(self) -> None:
        """A new channel session begins: its first message must be a snapshot; deltas before
        it raise ``Gap``. The desired state and the kernel are kept meanwhile (fail static)."""
        with self._lock:
            self._session_started = False

    def on_snapshot(self, msg: Snapshot) -> None:
        """Replace the desired state and the local ports; the next sync is FULL."""
        desired = {n.network_id: n.tables() for n in msg.networks}
        total = sum(network_sum(t) for t in desired.values())
        with self._lock:
            self.desired = desired
            self._sum = total
            self.ports = {p.id: p for p in msg.ports}
            self.revision = msg.revision
            self._full = True
            self._plan = []
            self._reported = {}
            self._session_started = True
            mine = as_hex(total)
        if mine != msg.digest:
            # The server computed a different hash of the very tables it sent: a server bug,
            # not a lost message. Asking for another snapshot would loop, so only say it.
            log.warning("snapshot at revision %d: digest differs from the server's", msg.revision)

    def on_delta(self, msg: Delta) -> bool:
        """Apply a delta to the desired state and queue it for the fast path.

        Returns False for a duplicate (already applied; ignored). Raises ``Gap`` when a
        message was lost, or when the tables after it do not hash to the server's digest.
        """
        with self._lock:
            if not self._session_started:
                raise Gap(f"delta at revision {msg.revision} before this session's snapshot")
            if msg.revision <= self.revision:
                return False
            if msg.prev_revision != self.revision:
                raise Gap(
                    f"delta {msg.prev_revision}->{msg.revision} after revision {self.revision}"
                )
            deltas = [n.delta() for n in msg.networks]
            for delta in deltas:
                before = self.desired.get(delta.network_id)
                # the digest moves by what the delta changes: O(delta), not O(network)
                self._sum += delta_sum_change(before, delta)
                tables = apply_delta(before, delta)
                if tables is None:
                    self.desired.pop(delta.network_id, None)
                else:
                    self.desired[delta.network_id] = tables
            self._plan.extend(deltas)
            for port in msg.ports:
                old = self.ports.get(port.id)
                if old is None or old.status != port.status:
                    self._reported.pop(port.id, None)  # the server has a new verdict
                self.ports[port.id] = port
            for port_id in msg.ports_removed:
                self.ports.pop(port_id, None)
                self._reported.pop(port_id, None)
                self._wired.pop(port_id, None)
            self.revision = msg.revision
            mine = as_hex(self._sum)
        if mine != msg.digest:
            raise Gap(f"tables after revision {msg.revision} do not match the server's digest")
        return True

    def digest(self) -> str:
        """The digest of the desired state (same hash as ``model.digest``)."""
        with self._lock:
            return as_hex(self._sum)

    def mismatch(self, hb: Heartbeat) -> str | None:
        """Why a server heartbeat shows we diverged, or None. An older heartbeat than our
        revision says nothing (a message we already hold was sent after it)."""
        with self._lock:
            if not self._session_started or hb.revision < self.revision:
                return None
            mine = as_hex(self._sum)
            if hb.digest != mine:
                return f"heartbeat at {hb.revision}: digest differs (mine at {self.revision})"
            return None

    def applied(self) -> tuple[int, str] | None:
        """(revision, digest) the last successful sync programmed; None before the first."""
        with self._lock:
            return self._applied

    def full_pending(self) -> bool:
        with self._lock:
            return self._full

    def mark_full(self) -> None:
        """Force the next sync to be FULL (after an error, or on demand)."""
        with self._lock:
            self._full = True

    # -- the sync step (worker side) --------------------------------------------------

    def sync(self) -> SyncResult:
        """Converge the datapath to the desired state, then wire local ports.

        Raises whatever the datapath raised; the next sync is then FULL, so a half-applied
        plan is repaired by mark and sweep. The caller retries with rate-limited backoff.
        """
        with self._lock:
            if self.revision == NO_REVISION:
                # No snapshot yet (agent restart): the kernel's tables are all we know, and
                # sweeping them against an empty desired state would cut every VM off.
                return SyncResult(False, 0, [])
            full = self._full
            plan = self._plan
            self._plan = []
            self._full = False
            desired = dict(self.desired)  # values are immutable: a shallow copy is a snapshot
            ports = dict(self.ports)
            revision = self.revision
            digest = as_hex(self._sum)
            if full:
                self._wired = {}  # devices may have been recreated: wire everything again
        try:
            if full:
                deltas: Sequence[NetworkDelta] = diff_state(self.datapath.dump(), desired)
            else:
                deltas = plan
            if deltas:
                self.datapath.apply(deltas)
            reports = self._ports_step(ports, desired)
        except BaseException:
            self.mark_full()
            raise
        with self._lock:
            self._applied = (revision, digest)
        if full or deltas:
            log.debug("sync %s: %d deltas", "FULL" if full else "fast", len(deltas))
        return SyncResult(full, len(deltas), reports)

    def _ports_step(
        self, ports: dict[str, LocalPort], desired: dict[str, NetworkTables]
    ) -> list[tuple[str, PortStatus]]:
        """Wire plugged ports whose bridge exists; return the status reports still due.

        A plugged device is ACTIVE. A missing one is DOWN only if the port was ACTIVE: a
        BUILD port whose VM has not started yet stays BUILD, or reporting DOWN would take the
        host out of the network that bind-time membership pre-populated.
        """
        plugged = self.datapath.plugged(ports) if ports else set()
        to_wire = []
        with self._lock:
            for port_id in plugged:
                port = ports[port_id]
                if port.network_id in desired and self._wired.get(port_id) != port.network_id:
                    to_wire.append(port)
        for port in to_wire:
            self.datapath.wire(port.id, port.network_id)
        reports: list[tuple[str, PortStatus]] = []
        with self._lock:
            for port in to_wire:
                self._wired[port.id] = port.network_id
            for port_id in list(self._wired):
                if port_id not in plugged:
                    del self._wired[port_id]
            for port_id, port in ports.items():
                if port_id not in self.ports:
                    continue  # removed while we were working
                believed = self._reported.get(port_id, port.status)
                if port_id in plugged:
                    want = PortStatus.ACTIVE
                elif believed is PortStatus.ACTIVE:
                    want = PortStatus.DOWN
                else:
                    continue
                if want != believed:
                    self._reported[port_id] = want
                    reports.append((port_id, want))
        return reports
