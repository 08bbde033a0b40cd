"""The agent's state machine: what the kernel must hold, and the one step that makes it so.

The channel feeds server messages in (``on_snapshot``, ``on_delta``), cheap and in memory, on
the event loop; ``sync()`` does the kernel work, in a worker thread, and is the only thing that
touches the datapath's tables (kubernetes sample-controller pattern: events only record work,
one idempotent step converges each key, and a key that fails is retried on its own,
rate-limited, so one bad key never blocks the others). The key is the network.

Contracts:

* ``revision`` is the revision of the last server message accepted; a delta at or below it is
  a duplicate and is ignored; a delta whose ``prev_revision`` is not ``revision`` means a lost
  message: ``on_delta`` raises ``Gap`` and the agent asks for a snapshot.
* A snapshot, the first sync, and the sync after a failed one (an error outside any single
  network, e.g. ``dump``) are FULL: dump what the datapath holds, diff it against the desired
  state and apply only the difference (mark and sweep; never flush, so unchanged entries never
  blink). Otherwise ``sync`` applies the deltas queued since the last sync, as received (the
  fast path).
* Per-network isolation. ``sync`` hands the datapath one network at a time. When the datapath
  raises for network N (the kernel refused an entry, a device cannot be created, a local port
  of N cannot be wired), N becomes *failing*; every other network is programmed in the same
  sync and in later ones as if nothing happened. A failing network is left alone (its queued
  deltas are dropped: the desired state holds them) until its retry is due, then it gets a
  FULL reconcile of its own (dump, diff that network, apply, wire its ports). Retry delays per
  network: ``RETRY_BASE_S`` (0.5 s) doubling with each failure in a row up to ``RETRY_CAP_S``
  (30 s), no jitter (the kernel is local: nothing to spread); a success forgets the count.
  ``SyncResult.retry_in`` tells the worker when to come back without any new message.
* A network whose ``encap`` the datapath does not carry (``Datapath.encaps``) is never handed
  to it: it is failing from its first sync, with the entry ``"encap E"``, and is retried on the
  same backoff (cheap: nothing reaches the datapath; at most one attempt per 30 s once capped),
  so it shows in the acks' errors and keeps the host out of sync until it is unbound from this
  host or the agent runs a datapath that carries it (docs/adr/0017-network-encap.md).
* ``applied()`` is the (revision, digest) of what the last sync left programmed, which the
  agent acknowledges: the desired state at ``revision`` for every healthy network, and for each
  failing network the header of a damaged network (VNI 0, no entries; what ``Datapath.dump``
  reports for one) instead of its tables. The digest is additive (``model.digests``) and the
  desired sum is kept per network, so this costs O(failing networks). No desired state has
  VNI 0, so while any network fails the digest differs from the server's (the host is not in
  sync), including a failed ``leave``; once it heals the digest is the desired one again.
* ``errors()`` describes the failing networks (network, VNI, the entry the datapath named,
  its message, attempts in a row), bounded as ``wire.channel.AckError`` allows; the agent
  sends them with its acks and shows them on its control endpoint.
* Port wiring: a sync asks the datapath which local ports' devices are present, wires those
  whose network is programmed and not failing, and returns the status reports the server still
  has to hear. It does so only when something it depends on may have changed (FULL, local ports
  in a message, a network joined or left, a device event from the datapath's listener, a
  network failing or retried); a sync that only moved entries of networks already programmed
  skips it, so a delta costs O(delta), not O(local ports).

Thread safety: the message handlers and ``sync`` may run on different threads; a lock guards
the shared fields, and ``sync`` does its datapath calls outside it on a copy. Only one ``sync``
runs at a time (the agent's one worker).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from l2pop.agent.failures import DAMAGED_VNI, Failing, NetworkError, describe
from l2pop.agent.stats import Trace
from l2pop.datapath.abc import Datapath, refuse_encap
from l2pop.model import (
    ArpSuppression,
    NetworkDelta,
    NetworkTables,
    PortStatus,
    apply_delta,
    diff_network,
    diff_state,
    network_sum,
)
from l2pop.model.diff import delta_sum_change
from l2pop.model.digests import as_hex, header_hash
from l2pop.wire.channel import (
    ACK_ERRORS_MAX,
    Delta,
    Heartbeat,
    LocalPort,
    Resume,
    Snapshot,
)

log = logging.getLogger("l2pop.agent")

#: revision before any snapshot was accepted: every delta is a gap until one arrives.
NO_REVISION = -1
#: first retry of a failing network after this many seconds, doubling per failure in a row
RETRY_BASE_S = 0.5
#: ... up to this many
RETRY_CAP_S = 30.0


class Gap(Exception):
    """The agent lost track of the server's stream; it must ask for a snapshot (resync)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one ``sync`` did: whether it was FULL, how many deltas it applied, the port
    status reports (port id, status) the agent must send, the networks failing after it,
    and in how many seconds the next failing network's retry is due (None: none is)."""

    full: bool
    deltas_applied: int
    reports: list[tuple[str, PortStatus]]
    failing: tuple[str, ...] = ()
    retry_in: float | None = None


class Reconciler:
    """Desired state, local ports and revision of one agent, and the sync step."""

    def __init__(
        self,
        datapath: Datapath,
        *,
        clock: Callable[[], float] = time.monotonic,
        retry_base: float = RETRY_BASE_S,
        retry_cap: float = RETRY_CAP_S,
    ) -> None:
        if retry_base <= 0 or retry_cap < retry_base:
            raise ValueError("retries need 0 < retry_base <= retry_cap")
        self.datapath = datapath
        self._clock = clock
        self._retry_base, self._retry_cap = retry_base, retry_cap
        self._lock = threading.Lock()
        self.desired: dict[str, NetworkTables] = {}
        self._sum = 0  # additive digest of desired (model.digests), kept current per delta
        self._sums: dict[str, int] = {}  # the same, per network (sum over them: _sum)
        self._failing: dict[str, Failing] = {}  # network id -> its last error, next retry
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
        # something the ports step depends on may have changed since it last ran: the local
        # ports, their devices (the datapath's listener), the networks programmed or failing
        self._ports_dirty = True
        # the desired state is the server's at ``revision`` (the last message's digest
        # matched): a new session may offer to resume from it
        self._trusted = False
        #: recent port and revision events with their monotonic times (telemetry only)
        self.trace = Trace()

    # -- messages (event loop side) ---------------------------------------------------

    def new_session(self) -> None:
        """A new channel session begins: its first message must be a snapshot; deltas before
        it raise ``Gap``. The desired state and the kernel are kept meanwhile (fail static)."""
        with self._lock:
            self._session_started = False

    def resume_point(self) -> int | None:
        """The revision a new session may resume from (``Hello.resume_revision``): the last
        accepted one, if the tables held then hashed to the server's digest and nothing has
        shown a divergence since; None otherwise (the session then starts with a snapshot)."""
        with self._lock:
            return self.revision if self._trusted and self.revision != NO_REVISION else None

    def on_snapshot(self, msg: Snapshot) -> None:
        """Replace the desired state and the local ports; the next sync is FULL."""
        desired = {n.network_id: n.tables() for n in msg.networks}
        sums = {nid: network_sum(t) for nid, t in desired.items()}
        total = sum(sums.values())
        with self._lock:
            self.desired = desired
            self._sum = total
            self._sums = sums
            self.ports = {p.id: p for p in msg.ports}
            self._ports_dirty = True
            self.revision = msg.revision
            self._full = True
            self._plan = []
            self._reported = {}
            self._session_started = True
            mine = as_hex(total)
            self._trusted = mine == msg.digest
        if mine != msg.digest:
            # The server computed a different hash of the very tables it sent: a server bug,
            # not a lost message. Asking for another snapshot would loop, so only say it.
            log.warning(
                "snapshot at revision %d: digest differs from the server's",
                msg.revision,
                extra={"revision": msg.revision},
            )

    def on_delta(self, msg: Delta) -> bool:
        """Apply a delta to the desired state and queue it for the fast path.

        Returns False for a duplicate (already applied; ignored). Raises ``Gap`` when a
        message was lost, or when the tables after it do not hash to the server's digest.
        """
        with self._lock:
            if not self._session_started:
                self._trusted = False
                raise Gap(f"delta at revision {msg.revision} before this session's snapshot")
            if msg.revision <= self.revision:
                return False
            if msg.prev_revision != self.revision:
                self._trusted = False
                raise Gap(
                    f"delta {msg.prev_revision}->{msg.revision} after revision {self.revision}"
                )
            self.trace.add("delta", msg.revision)
            for port in msg.ports:
                self.trace.add("port", port.id, msg.revision)
            deltas = [n.delta() for n in msg.networks]
            for delta in deltas:
                before = self.desired.get(delta.network_id)
                # the digest moves by what the delta changes: O(delta), not O(network)
                change = delta_sum_change(before, delta)
                self._sum += change
                tables = apply_delta(before, delta)
                if before is None or tables is None or before.vni != tables.vni:
                    self._ports_dirty = True  # joined, left or remade: its ports need wiring
                if tables is None:
                    self.desired.pop(delta.network_id, None)
                    self._sums.pop(delta.network_id, None)
                else:
                    self.desired[delta.network_id] = tables
                    self._sums[delta.network_id] = self._sums.get(delta.network_id, 0) + change
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
            if msg.ports or msg.ports_removed:
                self._ports_dirty = True
            self.revision = msg.revision
            mine = as_hex(self._sum)
            self._trusted = mine == msg.digest
        if mine != msg.digest:
            raise Gap(f"tables after revision {msg.revision} do not match the server's digest")
        return True

    def on_resume(self, msg: Resume) -> None:
        """Take a session's resume (``wire.channel.Resume``): replace the networks it brings,
        drop those it says the host left, replace the local ports, and queue for the fast path
        only what differs from what is held (no FULL sync, no dump).

        Raises ``Gap`` when it does not start from our revision or when the tables after it do
        not hash to the server's digest (the agent then asks for a snapshot).
        """
        with self._lock:
            if self.revision == NO_REVISION or msg.prev_revision != self.revision:
                self._trusted = False
                raise Gap(f"resume from {msg.prev_revision}, but the agent is at {self.revision}")
            changed: list[tuple[str, NetworkTables | None]]
            changed = [(n.network_id, n.tables()) for n in msg.networks]
            changed += [(nid, None) for nid in msg.networks_left if nid in self.desired]
            for nid, tables in changed:
                delta = diff_network(self.desired.get(nid), tables)
                if delta is not None:
                    self._plan.append(delta)
                self._sum -= self._sums.pop(nid, 0)
                if tables is None:
                    self.desired.pop(nid, None)
                else:
                    self.desired[nid] = tables
                    self._sums[nid] = network_sum(tables)
                    self._sum += self._sums[nid]
            ports = {p.id: p for p in msg.ports}
            for port_id, old in self.ports.items():
                new = ports.get(port_id)
                if new is None or new.status != old.status:
                    self._reported.pop(port_id, None)  # the server has a new verdict
                if new is None:
                    self._wired.pop(port_id, None)
            self.ports = ports
            self._ports_dirty = True
            self.revision = msg.revision
            self._session_started = True
            mine = as_hex(self._sum)
            self._trusted = mine == msg.digest
        if mine != msg.digest:
            raise Gap(f"tables after the resume to {msg.revision} do not match the server's")

    def mismatch(self, hb: Heartbeat) -> str | None:
        """Why a server heartbeat shows we diverged, or None. An older heartbeat than our
        revision says nothing (a message we already hold was sent after it)."""
        with self._lock:
            if not self._session_started or hb.revision < self.revision:
                return None
            mine = as_hex(self._sum)
            if hb.digest != mine:
                self._trusted = False
                return f"heartbeat at {hb.revision}: digest differs (mine at {self.revision})"
            return None

    def applied(self) -> tuple[int, str] | None:
        """(revision, digest) of what the last sync left programmed (failing networks count
        as damaged: see the module notes); None before the first sync."""
        with self._lock:
            return self._applied

    def errors(self) -> list[NetworkError]:
        """The failing networks, by network id, at most ``ACK_ERRORS_MAX``."""
        with self._lock:
            failing = sorted(self._failing.items())
        return [f.error for _, f in failing[:ACK_ERRORS_MAX]]

    def mark_ports_dirty(self) -> None:
        """A device came or went (the datapath's port listener, any thread): the next sync
        looks at the local ports again."""
        with self._lock:
            self._ports_dirty = True

    def mark_full(self) -> None:
        """Force the next sync to be FULL (after an error, or on demand)."""
        with self._lock:
            self._full = True

    # -- the sync step (worker side) --------------------------------------------------

    def sync(self) -> SyncResult:
        """Converge the datapath to the desired state network by network, then wire ports.

        A datapath error on one network makes that network failing (see the module notes);
        the others go on. An error outside any one network (``dump``, ``plugged``) is raised;
        the next sync is then FULL, so a half-applied plan is repaired by mark and sweep, and
        the caller retries with rate-limited backoff.
        """
        lost = self.datapath.state_lost()
        with self._lock:
            if lost:
                self._full = True  # the datapath lost what it held: reconcile everything
            if self.revision == NO_REVISION:
                # No snapshot yet (agent restart): the kernel's tables are all we know, and
                # sweeping them against an empty desired state would cut every VM off.
                return SyncResult(False, 0, [])
            full = self._full
            plan = self._plan
            self._plan = []
            self._full = False
            ports_dirty = self._ports_dirty
            self._ports_dirty = False
            desired = dict(self.desired)  # values are immutable: a shallow copy is a snapshot
            sums = dict(self._sums)
            total = self._sum
            ports = dict(self.ports)
            revision = self.revision
            now = self._clock()
            waiting = {n for n, f in self._failing.items() if f.due > now}  # not retried yet
            due = {n for n, f in self._failing.items() if f.due <= now}
            if full:
                self._wired = {}  # devices may have been recreated: wire everything again
            else:
                self._wired = {p: n for p, n in self._wired.items() if n not in due}
        try:
            work = self._work(full, plan, desired, waiting, due)
            failed, applied = self._apply(work, desired, revision)
            if full:  # mark and sweep for ports too: unbound while we were away
                self.datapath.sweep_ports(ports)
            skip = waiting | set(failed)
            wiring = ports_dirty or full or bool(due) or bool(failed)
            reports, unwired = self._ports_step(ports, desired, skip) if wiring else ([], {})
            for nid, what in unwired.items():
                failed[nid] = (desired[nid].vni, what)
        except BaseException:
            self.mark_full()
            raise
        with self._lock:
            failing, retry_in = self._settle(revision, total, sums, set(work) - set(failed), failed)
        if full or applied or failed:
            log.debug(
                "sync %s: %d deltas, %d networks failing",
                "FULL" if full else "fast",
                applied,
                len(failing),
            )
        return SyncResult(full, applied, reports, failing, retry_in)

    def _apply(
        self, work: dict[str, list[NetworkDelta]], desired: dict[str, NetworkTables], revision: int
    ) -> tuple[dict[str, tuple[int, tuple[str | None, str]]], int]:
        """Hand each network's deltas to the datapath; returns the networks that failed (VNI,
        what failed) and how many deltas were applied."""
        failed: dict[str, tuple[int, tuple[str | None, str]]] = {}
        applied = 0
        for nid, deltas in work.items():
            try:
                self._refuse_uncarried(desired.get(nid), deltas)
                if deltas:
                    self.datapath.apply(deltas)
            except Exception as exc:  # one network's trouble: isolate it, go on
                vni = desired[nid].vni if nid in desired else deltas[0].vni
                failed[nid] = (vni, describe(exc, deltas))
            else:
                applied += len(deltas)
        if applied:
            self.trace.add("written", revision)
        return failed, applied

    def _refuse_uncarried(self, tables: NetworkTables | None, deltas: list[NetworkDelta]) -> None:
        """Raise ``DatapathError`` (entry ``"encap E"``) before the datapath is called when the
        network, as desired or as a delta brings it, has an encap the datapath cannot carry:
        such a network is left alone and failing, like one the datapath refused."""
        if tables is not None:
            header = NetworkDelta(
                tables.network_id, tables.vni, tables.arp_suppression, encap=tables.encap
            )
            refuse_encap(self.datapath, header)
        for delta in deltas:
            refuse_encap(self.datapath, delta)

    def _work(
        self,
        full: bool,
        plan: list[NetworkDelta],
        desired: dict[str, NetworkTables],
        waiting: set[str],
        due: set[str],
    ) -> dict[str, list[NetworkDelta]]:
        """network id -> the deltas this sync applies to it, in order. FULL: the difference
        between a dump and the desired state, networks still waiting for their retry left
        out. Fast path: the queued deltas of healthy networks, plus a reconcile of each
        failing network whose retry is due (from one dump)."""
        work: dict[str, list[NetworkDelta]] = {}
        if full:
            held = self.datapath.dump()
            keys = (set(held) | set(desired)) - waiting
            for delta in diff_state(held, desired, keys):
                work[delta.network_id] = [delta]
            for nid in due:  # retried, even when nothing differs: it heals then
                work.setdefault(nid, [])
            return work
        for delta in plan:
            if delta.network_id not in waiting and delta.network_id not in due:
                work.setdefault(delta.network_id, []).append(delta)
        if due:
            held = self.datapath.dump()
            for nid in sorted(due):
                one = diff_network(held.get(nid), desired.get(nid))
                work[nid] = [] if one is None else [one]
        return work

    def _settle(
        self,
        revision: int,
        total: int,
        sums: dict[str, int],
        healthy: set[str],
        failed: dict[str, tuple[int, tuple[str | None, str]]],
    ) -> tuple[tuple[str, ...], float | None]:
        """Record this sync's outcome per network (lock held): forget the failures of the
        networks that converged, schedule the retries of those that failed, and set the
        applied (revision, digest) with every failing network counted as damaged. Returns
        the failing networks and the seconds until the next retry is due."""
        now = self._clock()
        for nid in healthy:
            gone = self._failing.pop(nid, None)
            if gone is not None:
                log.info(
                    "network %s converged after %d failed attempts",
                    nid,
                    gone.error.attempts,
                    extra={"network": nid, "revision": revision},
                )
        for nid, (vni, (entry, message)) in failed.items():
            before = self._failing.get(nid)
            attempts = before.error.attempts + 1 if before is not None else 1
            delay = min(self._retry_cap, self._retry_base * 2.0 ** min(attempts - 1, 62))
            self._failing[nid] = Failing(
                NetworkError(nid, vni, entry, message, attempts), now + delay
            )
            log.warning(
                "network %s (vni %d) failed (attempt %d, retry in %.1fs): %s%s",
                nid,
                vni,
                attempts,
                delay,
                f"{entry}: " if entry else "",
                message,
                extra={"network": nid, "revision": revision},
            )
        mine = total
        for nid in self._failing:
            mine += header_hash(nid, DAMAGED_VNI, ArpSuppression.OFF) - sums.get(nid, 0)
        self._applied = (revision, as_hex(mine))
        retry_in = None
        if self._failing:
            retry_in = max(0.0, min(f.due for f in self._failing.values()) - now)
        return tuple(sorted(self._failing)), retry_in

    def _ports_step(
        self, ports: dict[str, LocalPort], desired: dict[str, NetworkTables], skip: set[str]
    ) -> tuple[list[tuple[str, PortStatus]], dict[str, tuple[str | None, str]]]:
        """Wire plugged ports whose network is programmed and not failing (``skip``); return
        the status reports still due, and per network the port that could not be wired.

        A plugged device is ACTIVE. A missing one is DOWN only if the port was ACTIVE: a
        BUILD port whose VM has not started yet stays BUILD, or reporting DOWN would take the
        host out of the network that bind-time membership pre-populated.
        """
        plugged = self.datapath.plugged(ports) if ports else set()
        to_wire = []
        with self._lock:
            for port_id in plugged:
                port = ports[port_id]
                nid = port.network_id
                if nid in desired and nid not in skip and self._wired.get(port_id) != nid:
                    to_wire.append(port)
                    self.trace.add("device", port_id)
        wired: list[LocalPort] = []
        unwired: dict[str, tuple[str | None, str]] = {}
        for port in sorted(to_wire, key=lambda p: p.id):
            if port.network_id in unwired:
                continue  # that network failed already: it is retried as a whole
            try:
                self.datapath.wire(port.id, port.network_id, port.mac)
            except Exception as exc:
                unwired[port.network_id] = (f"port {port.id}", describe(exc, ())[1])
            else:
                self.trace.add("wired", port.id)
                wired.append(port)
        reports: list[tuple[str, PortStatus]] = []
        gone: list[str] = []
        with self._lock:
            for port in wired:
                self._wired[port.id] = port.network_id
            for port_id in list(self._wired):
                if port_id not in plugged:  # device gone, or port unbound from this host
                    del self._wired[port_id]
                    gone.append(port_id)
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
                    self.trace.add("report", port_id, want.value)
        for port_id in gone:
            self.datapath.unwire(port_id)  # its flows go (ovs); its tap leaves the bridge
        return reports, unwired
