"""The hub: the server's in-memory view of the desired state, and what each host must hear.

Design notes
------------
The store is the truth; the hub is a cache of it that follows the change log. It holds every
network and its ports (a few hundred bytes a port) plus, per host, the digest of each network
table the host must hold. It does **not** hold a copy of every host's tables: a host's table
of network N is derived on demand from N's ports (``model.tables_for``), so memory grows with
the number of ports, not with ports x members.

One batch, one pass (``read_batch`` then ``apply_batch``): read the changes since the hub's
revision together with the current rows of what they touched (networks, changed ports,
hosts), in one read transaction (a consistent snapshot). For each touched network take its
state before and after (``model.membership``: members, ACTIVE ports as remote entries) and
derive each member's delta from the ports that changed (``model.fanout.host_deltas``, held by
property tests to diffing whole tables). Only hosts that are or were members of a touched
network get a message: interest-based fan-out, never broadcast (docs/design.md, "Agent
channel"). Applying current rows, rather than patching from event payloads, makes a batch of
changes idempotent and order-proof: whatever happened in between, the delta moves the host
from what it was sent to what it must hold.

Per-host digests are additive (ADR 6, ``model.member_sums``): a host's sum for a network is
the network's total minus the host's own entries, and its digest is the sum over its
networks, so an event costs O(ports of the touched network) for all its members together.
Each ``HostUpdate`` carries the digest the host must have after it.

Events go out one way: the hub is built with its subscribers (``HubSubscriber``) and calls
them on the event loop after each batch. When the change log no longer reaches back to the
hub's revision (``ChangeLogTruncated``: pruned by another server on the same database, or by
hand) the hub reloads the whole store and tells its subscribers, which answer every session
with a snapshot, as a resync does.

The hub runs on the server's event loop; ``notify`` may be called from any thread (the
server's ``CommitFeed`` calls it: in the writer's thread after this process's commits, in
the feed's thread for other replicas' commits on PostgreSQL) and only wakes the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from l2pop.model import Host, Network, NetworkDelta, NetworkTables, Port, member_sums, tables_for
from l2pop.model.digests import as_hex, remote_entry_hash
from l2pop.model.fanout import NetworkState, host_deltas, network_state
from l2pop.model.membership import RemoteEntry
from l2pop.server.hubapi import (
    HostResume,
    HostSnapshot,
    HostUpdate,
    HubSubscriber,
    NetworkChanges,
    PortChanges,
)
from l2pop.server.revtrace import BatchTrace, RevisionTrace
from l2pop.store import ChangeLogTruncated, Store
from l2pop.wire.channel import LocalPort

log = logging.getLogger("l2pop.hub")

#: revisions of change log kept behind the hub (for debugging; the hub needs none of it)
CHANGE_LOG_KEEP = 10_000
#: batches the hub remembers the touched networks of, so that a reconnecting agent can
#: resume from its revision with the networks changed since (``resume_of``)
RESUME_WINDOW = 2_048
#: a resume touching more networks than this costs about what a snapshot does: send that
RESUME_MAX_NETWORKS = 4_096


@dataclass
class _Pending:
    """A ``HostUpdate`` being gathered during one batch (its digest comes at the end)."""

    deltas: list[NetworkDelta] = field(default_factory=list)
    ports: dict[str, LocalPort] = field(default_factory=dict)
    ports_removed: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Remembered:
    """What one batch did, as resumes and waits need it: the revision it reached, the
    networks it touched, host -> networks the host stopped being a member of, and the hosts
    it had something to tell."""

    revision: int
    touched: frozenset[str]
    departed: dict[str, set[str]]
    told: frozenset[str]
    #: read back from the change log at load: ``departed`` and ``told`` are unknown
    from_log: bool = False


@dataclass
class Batch:
    """Rows read in one transaction: everything needed to move the hub to ``revision``."""

    revision: int
    networks: dict[str, Network | None]  # touched network id -> current row (None: deleted)
    ports: list[Port]  # current rows of the ports that changed
    deleted_ports: dict[str, str]  # port id -> network id, for ports that are gone
    vteps: dict[str, str] | None  # every host's VTEP, when hosts changed


@dataclass
class Rows:
    """The whole store at ``revision`` (one read transaction): what the hub loads."""

    revision: int
    networks: list[Network]
    ports: list[Port]
    hosts: list[Host]
    #: the change log's last revisions up to ``revision`` (at most ``RESUME_WINDOW``):
    #: revision -> the networks its changes touched; ``history_from`` is the revision
    #: they follow (every change after it is in ``history``)
    history: dict[int, frozenset[str]] = field(default_factory=dict)
    history_from: int = -1


def local_port(network: Network, port: Port) -> LocalPort:
    return LocalPort(
        id=port.id,
        network_id=port.network_id,
        vni=network.vni,
        mac=port.mac,
        fixed_ips=list(port.fixed_ips),
        status=port.status,
    )


class Hub:
    """In-memory desired state that follows the store, and per-host fan-out of its changes.

    ``subscribers`` hear every batch, host change and reload (``HubSubscriber``); they are
    given at construction, or with ``subscribe`` before the hub follows the store.
    """

    def __init__(self, store: Store, subscribers: Sequence[HubSubscriber] = ()) -> None:
        self.store = store
        self._subscribers = tuple(subscribers)
        self.revision = 0
        self.networks: dict[str, Network] = {}
        self.ports: dict[str, dict[str, Port]] = defaultdict(dict)  # network id -> port id -> port
        self.vteps: dict[str, str] = {}
        self.member_of: dict[str, set[str]] = defaultdict(set)  # host -> network ids
        self.local: dict[str, set[tuple[str, str]]] = defaultdict(set)  # host -> {(net, port)}
        # additive digests (model.digests): host -> network -> sum, and host -> total
        self.net_sums: dict[str, dict[str, int]] = defaultdict(dict)
        self.host_sums: dict[str, int] = defaultdict(int)
        # port id -> ((network id, entry), hash): a port's hash is computed once per change
        self._entry_hashes: dict[str, tuple[tuple[str, RemoteEntry], int]] = {}
        self._states: dict[str, NetworkState] = {}  # see _state
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0
        self.reloads = 0
        self.trace = RevisionTrace()
        self._pruned_to = 0
        # what each recent batch did, oldest first; complete for every revision after
        # _recent_from (the change log read at load, or the oldest batch forgotten)
        self._recent: deque[_Remembered] = deque()
        self._recent_from = self._loaded_at = 0

    def subscribe(self, subscriber: HubSubscriber) -> None:
        """Add a subscriber that needs the hub to exist first (wiring, before ``follow``)."""
        self._subscribers = (*self._subscribers, subscriber)

    # -- loading and following the store ------------------------------------------------

    def read_all(self) -> Rows:
        """Every network, port and host, and the networks the last changes touched, in one
        read transaction (blocking)."""
        with self.store.read() as tx:
            revision = tx.revision()
            start = max(revision - RESUME_WINDOW, 0)
            try:
                changes = tx.changes_since(start)
            except ChangeLogTruncated as exc:
                start = exc.starts_at
                changes = tx.changes_since(start)
            history: dict[int, set[str]] = defaultdict(set)
            for change in changes:
                nids = history[change.revision]
                if change.network_id:
                    nids.add(change.network_id)
            return Rows(
                revision,
                tx.list_networks(),
                tx.list_ports(),
                tx.list_hosts(),
                {r: frozenset(n) for r, n in sorted(history.items())},
                start,
            )

    def load(self) -> None:
        """Read the whole store (blocking; call from a thread before serving agents).

        Every change after the loaded revision is then read from the change log.
        """
        self._reset(self.read_all())

    def reload(self, rows: Rows) -> None:
        """Replace the whole state with ``rows`` and tell the subscribers (on the loop).

        For a change log that no longer reaches back to the hub's revision: which hosts
        changed is unknown, so subscribers hear ``hosts_changed`` (with the hosts that are
        gone) and then ``reloaded``.
        """
        before = set(self.vteps)
        self._reset(rows)
        self.reloads += 1
        gone = frozenset(before - set(self.vteps))
        for subscriber in self._subscribers:
            subscriber.hosts_changed(gone)
        for subscriber in self._subscribers:
            subscriber.reloaded(self.revision)

    def _reset(self, rows: Rows) -> None:
        self.revision = rows.revision
        self._recent.clear()
        self._recent_from = self._loaded_at = rows.revision
        if rows.history_from >= 0:
            # What the last commits touched, from the change log: a restarted hub can still
            # resume agents that were a few revisions behind (ADR 22), not only those at
            # the loaded revision. Who left which network is not in the log: every network
            # touched counts as possibly left (``_Remembered.from_log``).
            self._recent.extend(
                _Remembered(r, nids, {}, frozenset(), from_log=True)
                for r, nids in rows.history.items()
            )
            self._recent_from = rows.history_from
        self.vteps = {h.name: h.vtep_ip for h in rows.hosts}
        self.networks = {n.id: n for n in rows.networks}
        self._states = {}
        self.ports = defaultdict(dict)
        self.member_of = defaultdict(set)
        self.local = defaultdict(set)
        self.net_sums = defaultdict(dict)
        self.host_sums = defaultdict(int)
        self._entry_hashes = {}
        for port in rows.ports:
            self.ports[port.network_id][port.id] = port
        for network in rows.networks:
            self._index(network.id, frozenset(), self._state(network.id))
        for port in rows.ports:
            if port.host is not None and port.network_id in self.networks:
                self.local[port.host].add((port.network_id, port.id))
        log.info(
            "hub loaded revision %d: %d networks, %d ports, %d hosts",
            rows.revision,
            len(rows.networks),
            len(rows.ports),
            len(rows.hosts),
        )

    def notify(self, revision: int) -> None:
        """A write committed, here or in a replica (any thread): wake the loop to read the
        change log. Revisions the hub already has are ignored."""
        self.trace.heard(revision, time.monotonic())
        if self._loop is not None and revision > self.revision:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def follow(self) -> None:
        """Forever: wait for a commit, read what changed, fan it out."""
        self._loop = asyncio.get_running_loop()
        self._wake.set()  # catch up with anything committed while loading
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.catch_up()
            except Exception:
                log.exception("hub: reading the store failed; retrying")
                await asyncio.sleep(0.5)
                self._wake.set()

    async def catch_up(self) -> None:
        """One step of ``follow``: read what changed since the hub's revision and fan it out.

        A truncated change log is not retried (it would stay truncated): the hub reloads the
        whole store instead (``reload``). Store errors propagate.
        """
        read_at, prev = time.monotonic(), self.revision
        try:
            batch = await asyncio.to_thread(self.read_batch)
        except ChangeLogTruncated as exc:
            log.warning("hub: %s; reloading the whole store", exc)
            self.reload(await asyncio.to_thread(self.read_all))
            return
        if batch is not None:
            told = len(self.apply_batch(batch))
            self.trace.batches.append(
                BatchTrace(batch.revision, prev, read_at, time.monotonic(), told)
            )
            await self._prune()

    async def _prune(self) -> None:
        """Keep the change log short: the hub is its only reader and reloads on restart."""
        if self.revision - self._pruned_to < 2 * CHANGE_LOG_KEEP:
            return
        keep_from = self.revision - CHANGE_LOG_KEEP
        try:
            await asyncio.to_thread(self.store.prune_changes, keep_from)
            self._pruned_to = keep_from
        except Exception:
            log.exception("hub: pruning the change log failed")

    def read_batch(self) -> Batch | None:
        """Changes since our revision plus the current rows of what changed (one snapshot).

        Only the changed ports are read, not whole networks: the hub already holds the rest.
        Raises ``ChangeLogTruncated`` when the log no longer reaches back to our revision.
        """
        with self.store.read() as tx:
            rows = tx.changes_with_rows(self.revision)  # the log with its networks, the ports
            if not rows.changes:
                return None
            port_keys = {c.key: c.network_id for c in rows.changes if c.kind == "port"}
            found = {p.id for p in rows.ports}
            deleted = {pid: nid for pid, nid in port_keys.items() if pid not in found and nid}
            hosts_changed = any(c.kind == "host" for c in rows.changes)
            vteps = {h.name: h.vtep_ip for h in tx.list_hosts()} if hosts_changed else None
            return Batch(rows.revision, rows.networks, rows.ports, deleted, vteps)

    def apply_batch(self, batch: Batch) -> dict[str, HostUpdate]:
        """Move the hub to ``batch.revision``; returns (and publishes) per-host updates."""
        pending: dict[str, _Pending] = defaultdict(_Pending)
        old_vteps = self.vteps
        new_vteps = batch.vteps if batch.vteps is not None else old_vteps
        touched = set(batch.networks)
        if batch.vteps is not None:
            # a host's VTEP appearing or going changes every network its ports are in
            changed = {
                h
                for h in old_vteps.keys() | new_vteps.keys()
                if old_vteps.get(h) != new_vteps.get(h)
            }
            touched |= {nid for h in changed for nid in self.member_of.get(h, ())}
        old_states = {nid: self._state(nid) for nid in touched}
        # the ports whose local view may change: those the batch brings or deletes, or all
        # of a deleted network's (a batch touches few ports of a network of thousands)
        moved: dict[str, set[str]] = defaultdict(set)
        for port_id, nid in batch.deleted_ports.items():
            moved[nid].add(port_id)
        for port in batch.ports:
            moved[port.network_id].add(port.id)
        old_ports: dict[str, dict[str, Port | None]] = {}
        for nid in touched:
            held = self.ports.get(nid, {})
            ids = held.keys() if batch.networks.get(nid, True) is None else moved[nid]
            old_ports[nid] = {pid: held.get(pid) for pid in ids}
        old_networks = {nid: self.networks.get(nid) for nid in batch.networks}
        self.vteps = dict(new_vteps)
        if batch.vteps is not None:
            self._states.clear()  # hosts came or went: recompute any network when next read
        else:
            for nid in touched:
                self._states.pop(nid, None)
        for nid, network in batch.networks.items():
            if network is None:
                self.networks.pop(nid, None)
                self.ports.pop(nid, None)
            else:
                self.networks[nid] = network
        for port_id, nid in batch.deleted_ports.items():
            self.ports.get(nid, {}).pop(port_id, None)
        for port in batch.ports:
            if port.network_id in self.networks:
                self.ports[port.network_id][port.id] = port
        departed: dict[str, set[str]] = defaultdict(set)
        for nid in sorted(touched):
            new_state = self._state(nid)
            for host in old_states[nid].members - new_state.members:
                departed[host].add(nid)
            for host, delta in host_deltas(old_states[nid], new_state).items():
                pending[host].deltas.append(delta)
            self._index(nid, old_states[nid].members, new_state)
            self._local_changes(nid, old_ports[nid], pending)
            if nid not in self.networks:
                self._states.pop(nid, None)
        gone = frozenset(set(old_vteps) - set(new_vteps))
        for host in gone:
            self.net_sums.pop(host, None)
            self.host_sums.pop(host, None)
            self.member_of.pop(host, None)
            self.local.pop(host, None)
        self.revision = batch.revision
        self.batches += 1
        updates = {
            host: HostUpdate(self.digest_of(host), p.deltas, p.ports, p.ports_removed)
            for host, p in pending.items()
            if p.deltas or p.ports or p.ports_removed
        }
        self._remember(
            _Remembered(batch.revision, frozenset(touched), dict(departed), frozenset(updates))
        )
        self._publish(batch, old_networks, old_ports, updates)
        if batch.vteps is not None:
            for subscriber in self._subscribers:
                subscriber.hosts_changed(gone)
        return updates

    def _publish(
        self,
        batch: Batch,
        old_networks: dict[str, Network | None],
        old_ports: dict[str, dict[str, Port | None]],
        updates: dict[str, HostUpdate],
    ) -> None:
        """Tell the subscribers what the batch changed, then what each host must hear."""
        if not self._subscribers:
            return
        networks: NetworkChanges = {
            nid: (old_networks[nid], row) for nid, row in batch.networks.items()
        }
        ports: PortChanges = [
            (before.get(pid), self.ports.get(nid, {}).get(pid))
            for nid, before in old_ports.items()
            if batch.networks.get(nid, True) is not None  # a deleted network's go unlisted
            for pid in sorted(before)
        ]
        for subscriber in self._subscribers:
            subscriber.changed(batch.revision, networks, ports)
        for subscriber in self._subscribers:
            subscriber.host_updates(batch.revision, updates)

    def _remember(self, batch: _Remembered) -> None:
        self._recent.append(batch)
        if len(self._recent) > RESUME_WINDOW:
            self._recent_from = self._recent.popleft().revision

    # -- derived state --------------------------------------------------------------------

    def _state(self, network_id: str) -> NetworkState:
        """The network's membership and remote entries, computed once per change of it: a
        snapshot or a resume of any member reads it, and a restart builds a thousand."""
        state = self._states.get(network_id)
        if state is None:
            ports = self.ports.get(network_id, {}).values()
            state = network_state(self.networks.get(network_id), ports, self.vteps)
            self._states[network_id] = state
        return state

    def _entry_hash(self, network_id: str, port_id: str, entry: RemoteEntry) -> int:
        key = (network_id, entry)
        cached = self._entry_hashes.get(port_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        value = remote_entry_hash(network_id, entry)
        self._entry_hashes[port_id] = (key, value)
        return value

    def _index(self, network_id: str, old_members: frozenset[str], state: NetworkState) -> None:
        """Refresh the membership and digests of one network."""
        sums: dict[str, int] = {}
        if state.network is not None:

            def entry_hash(port_id: str, entry: RemoteEntry) -> int:
                return self._entry_hash(network_id, port_id, entry)

            sums = member_sums(state.network, state.membership, entry_hash)
        for host in old_members - sums.keys():
            self.member_of[host].discard(network_id)
            self.host_sums[host] -= self.net_sums[host].pop(network_id, 0)
        for host, value in sums.items():
            self.member_of[host].add(network_id)
            self.host_sums[host] += value - self.net_sums[host].get(network_id, 0)
            self.net_sums[host][network_id] = value

    def _local_changes(
        self, network_id: str, before: dict[str, Port | None], pending: dict[str, _Pending]
    ) -> None:
        """Queue the local-port changes of the ports in ``before`` (their rows before the
        batch; None: new) for the hosts they are bound to, and keep ``local`` up to date."""
        after = self.ports.get(network_id, {})
        network = self.networks.get(network_id)
        for port_id, old in before.items():
            new = after.get(port_id)
            if old == new:
                continue
            if new is None:
                self._entry_hashes.pop(port_id, None)
            if old is not None and old.host is not None and (new is None or new.host != old.host):
                pending[old.host].ports_removed.add(port_id)
                self.local[old.host].discard((network_id, port_id))
            if new is not None and new.host is not None and network is not None:
                pending[new.host].ports[port_id] = local_port(network, new)
                self.local[new.host].add((network_id, port_id))

    # -- what a host must hold --------------------------------------------------------------

    def digest_of(self, host: str) -> str:
        return as_hex(self.host_sums.get(host, 0))

    def tables_of(self, host: str) -> dict[str, NetworkTables]:
        """Every network table ``host`` must hold now."""
        out: dict[str, NetworkTables] = {}
        for nid in sorted(self.member_of.get(host, ())):
            network = self.networks[nid]
            out[nid] = tables_for(host, network, self._state(nid).remote.values())
        return out

    def local_ports_of(self, host: str) -> list[LocalPort]:
        out = []
        for nid, port_id in sorted(self.local.get(host, ())):
            port = self.ports.get(nid, {}).get(port_id)
            network = self.networks.get(nid)
            if port is not None and network is not None and port.host == host:
                out.append(local_port(network, port))
        return out

    def snapshot_of(self, host: str) -> HostSnapshot:
        """Everything ``host`` must hold at the hub's revision, with its digest."""
        return HostSnapshot(
            self.revision, self.digest_of(host), self.tables_of(host), self.local_ports_of(host)
        )

    def resume_of(self, host: str, base: int) -> HostResume | None:
        """What moves ``host`` from revision ``base`` to the hub's, or None when the hub cannot
        say (``base`` is before what it remembers, e.g. it loaded after ``base``, or ahead of
        it, or too much changed since): the caller sends a snapshot instead.

        Over-inclusive by design: a batch that reached a revision after ``base`` counts whole,
        so a network may come although it changed only at or before ``base`` (another
        replica may have batched revisions differently); sending it whole is harmless.
        """
        if base < self._recent_from or base > self.revision:
            return None
        members = self.member_of.get(host, set())
        touched: set[str] = set()
        departed: set[str] = set()
        for batch in reversed(self._recent):
            if batch.revision <= base:
                break
            touched |= batch.touched & members
            departed |= batch.touched if batch.from_log else batch.departed.get(host, set())
            if len(touched) > RESUME_MAX_NETWORKS:
                return None
        tables = {
            nid: tables_for(host, self.networks[nid], self._state(nid).remote.values())
            for nid in sorted(touched)
        }
        left = sorted(departed - members)
        return HostResume(
            base, self.revision, self.digest_of(host), tables, left, self.local_ports_of(host)
        )

    def told_at(self, revision: int) -> tuple[int, frozenset[str]] | None:
        """The batch that carried ``revision`` to the hosts: (the revision it brought them
        to, the hosts it had something to tell). None when the hub does not remember it
        (before its load or its window) or has not reached it yet."""
        if revision <= max(self._recent_from, self._loaded_at) or revision > self.revision:
            return None
        for batch in self._recent:  # oldest first: the first batch that reached it
            if batch.revision >= revision:
                return batch.revision, batch.told
        return None

    def members(self, network_id: str) -> frozenset[str]:
        """The hosts that are members of the network now (none: no such network)."""
        return self._state(network_id).members if network_id in self.networks else frozenset()

    def hosts(self) -> Iterable[str]:
        return self.vteps.keys()
