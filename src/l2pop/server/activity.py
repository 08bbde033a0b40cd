"""What operators watch: every host's session at a glance, every network's membership and
ports, and a bounded feed of events, each with the time its member hosts took to apply it
(the web page at ``/ui``, ``l2pop status``, ``GET /v1/events``, docs/adr/0028).

Design notes
------------
*Events come from two places.* Row changes come from the hub (``HubSubscriber.changed``),
named by ``model.events``: a batch's port and network changes, with the revision that made
them. Session changes (connected, lost, out of sync, back in sync) have no row change: a
``tick`` every ``TICK_S`` re-reads the hosts' rows, judges each one as ``GET /v1/hosts``
does (``Channel.host_status``, so a session held by another replica counts) and turns every
difference from the previous tick into events. The first tick only learns the baseline.

*Apply time.* An event that the member hosts must apply (``REMOTE_PORT_EVENTS``, and the
network events) waits for the hosts the hub's batch told that are members of the network,
or the port's own host, until each acknowledged the batch's revision, like a wait does
(server/waits.py); its ``applied_ms`` counts from the batch. Hosts whose sessions are held
here are judged every ``APPLY_POLL_S`` from memory (a look-up per pending host, not per
event); the others at each tick. A disconnected host keeps its events waiting: the point is
that the hosts *hold* the change. After ``APPLY_GIVE_UP_S`` an event stops waiting and
names the hosts that never applied it.

*Bounded.* The feed keeps the last ``EVENTS_KEEP`` events and each waits on at most the
hosts of its network. Watchers (the page's live stream) get the tick's changes as one
message encoded once, whatever their number; a watcher whose queue is full is dropped (it
reconnects and reloads), so a slow browser never holds the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping

from l2pop.model import Host, Network, Port
from l2pop.model.events import (
    REMOTE_PORT_EVENTS,
    EventKind,
    host_session_events,
    network_events,
    port_events,
)
from l2pop.server.channel import Channel
from l2pop.server.hub import Hub
from l2pop.server.hubapi import HostUpdate, NetworkChanges, PortChanges
from l2pop.server.watch import NAMED_BEHIND, Event, HostView, Watcher, network_view
from l2pop.store import Store

log = logging.getLogger("l2pop.activity")

#: events the feed keeps (the oldest go first)
EVENTS_KEEP = 2_000
#: seconds between ticks (host rows re-read, watchers told)
TICK_S = 1.0
#: seconds between looks at the pending hosts whose sessions are held here
APPLY_POLL_S = 0.02
#: an event still not applied by every member after this long stops waiting
APPLY_GIVE_UP_S = 300.0
#: seconds between full re-reads of the hosts' rows when nothing else asks for one (for
#: ``last_seen``); other replicas alive, or hosts created or deleted, ask at every tick
FULL_READ_S = 30.0

NETWORK_EVENTS_APPLIED = frozenset({EventKind.NETWORK_UPDATED, EventKind.NETWORK_DELETED})


class Activity:
    """The hub subscriber behind the operators' views (module docstring)."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        channel: Channel,
        *,
        replica: str,
        others_alive: Callable[[], bool] = lambda: False,
        encode: Callable[[dict[str, object]], str],
        on_applied: Callable[[Event, float], None] = lambda event, seconds: None,
    ) -> None:
        self.store, self.hub, self.channel = store, hub, channel
        self.encode = encode
        self.replica = replica
        self.others_alive = others_alive
        self._rows: dict[str, Host] = {}  # the hosts' rows as last read
        self._read_at = -FULL_READ_S
        # host -> its session's acks (``Session.acked``), for the sessions held here
        self._sessions: dict[str, tuple[int | None, str | None, int, bool]] = {}
        self._told: set[str] = set()  # hosts the hub told something since the last tick
        self._topology: tuple[int, list[dict[str, object]]] | None = None
        self.on_applied = on_applied
        self.events: deque[Event] = deque(maxlen=EVENTS_KEEP)
        self.seq = 0
        self.hosts: dict[str, HostView] = {}
        self.watchers: set[Watcher] = set()
        self._baseline = False
        self._gone: list[str] = []  # hosts deleted since the last tick
        self._waiting: dict[str, dict[int, Event]] = defaultdict(dict)  # host -> seq -> event
        self._pending_revision: dict[int, list[Event]] = {}  # batch revision -> its events
        self._touched: set[str] = set()  # networks changed since the last tick
        self._new: list[Event] = []  # events since the last tick
        self._settled: list[Event] = []  # events applied (or given up) since the last tick
        self._wake = asyncio.Event()

    # -- HubSubscriber ----------------------------------------------------------------------

    def changed(self, revision: int, networks: NetworkChanges, ports: PortChanges) -> None:
        now, wall = time.monotonic(), time.time()
        events: list[Event] = []
        for nid, (old, new) in networks.items():
            self._touched.add(nid)
            row = new or old
            for kind in network_events(old, new):
                rev = row.revision if row is not None else revision
                events.append(self._event(kind, now, wall, rev, network=row))
        for old_port, new_port in ports:
            port = new_port or old_port
            if port is None:
                continue
            self._touched.add(port.network_id)
            network = self.hub.networks.get(port.network_id)
            local = tuple(sorted({p.host for p in (old_port, new_port) if p and p.host}))
            # from when the hub heard of the port's commit (else of the batch's)
            heard = self.hub.trace.heard_at(port.revision) or self.hub.trace.heard_at(revision)
            started = min(heard, now) if heard is not None else now
            for kind in port_events(old_port, new_port):
                detail = _port_detail(kind, old_port, new_port)
                event = self._event(
                    kind, started, wall, port.revision, network=network, port=port, detail=detail
                )
                event.local_hosts = local
                events.append(event)
        for event in events:
            event.batch_revision = revision
        self._pending_revision[revision] = events

    def host_updates(self, revision: int, updates: Mapping[str, HostUpdate]) -> None:
        events = self._pending_revision.pop(revision, [])
        told = updates.keys()
        self._told |= told
        for event in events:
            hosts = set(event.local_hosts)
            if event.network_id is not None and _remote(event.kind):
                hosts |= self.hub.members(event.network_id)
            hosts &= told
            event.hosts = len(hosts)
            event.waiting = hosts
            for host in hosts:
                self._waiting[host][event.seq] = event
        if self._waiting:
            self._wake.set()

    def hosts_changed(self, gone: frozenset[str]) -> None:
        for host in gone:  # a deleted host will apply nothing
            for event in self._waiting.pop(host, {}).values():
                self._done(event, host, time.monotonic())

    def reloaded(self, revision: int) -> None:
        self._pending_revision.clear()

    # -- reading ----------------------------------------------------------------------------

    def events_after(self, seq: int, limit: int) -> list[Event]:
        """Events with a sequence number after ``seq``, oldest first, at most ``limit``."""
        out = [e for e in self.events if e.seq > seq]
        return out[:limit]

    def last_events(self, limit: int) -> list[Event]:
        return list(self.events)[-limit:] if limit > 0 else []

    def topology(self) -> tuple[int, list[dict[str, object]]]:
        """(the hub's revision, every network's view sorted by name), computed once per
        revision (call on the event loop: the hub changes there)."""
        cached = self._topology
        if cached is None or cached[0] != self.hub.revision:
            networks = sorted(self.hub.networks.values(), key=_key)
            cached = self._topology = (
                self.hub.revision,
                [network_view(self.hub, n) for n in networks],
            )
        return cached

    # -- running ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Forever: a tick every ``TICK_S``, and the local pending hosts every
        ``APPLY_POLL_S`` while there are any."""
        next_tick = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_tick:
                try:
                    await self.tick()
                except Exception:
                    log.exception("activity: a tick failed; trying again at the next")
                next_tick = time.monotonic() + TICK_S
            self._judge_local(time.monotonic())
            wait = next_tick - time.monotonic()
            if self._waiting:
                wait = min(wait, APPLY_POLL_S)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wait, 0.0))

    async def tick(self) -> None:
        """Re-read the hosts, turn what changed into events, settle what was applied, and
        tell the watchers."""
        dirty = await self._refresh_rows()
        now = time.monotonic()
        changed = self._judge_hosts(dirty, now)
        self._judge_rows(now)
        self._give_up(now)
        self._broadcast(changed)

    async def _refresh_rows(self) -> set[str]:
        """Bring the hosts' rows up to date; return the hosts whose view may have changed.

        Rows are re-read only when needed: a full read costs ~12 ms per 1,000 hosts
        (SQLite), too much for every second at 10,000. Other replicas' sessions are in the
        store, so with any alive it is read every tick; alone, the rows are read fully when
        hosts came or went (the hub's view differs) or every ``FULL_READ_S``, and a host
        whose session opened here since the last tick is read alone (its hello changed its
        datapath and encaps). Judging every host costs ~12 µs each, so only those that may
        have changed are judged: rows that changed, hosts the hub told something (their
        digest and membership moved), sessions held here whose acks moved or that opened
        or closed, and every host that was not connected, in sync and current (its lag
        moves with the revision)."""
        now = time.monotonic()
        sessions = {s.host: s.acked for s in self.channel.registry.live()}
        dirty = {h for h, acked in sessions.items() if self._sessions.get(h) != acked}
        dirty |= self._sessions.keys() - sessions.keys()
        self._sessions = sessions
        dirty |= self._told
        self._told = set()
        dirty |= {
            n for n, v in self.hosts.items() if not (v.connected and v.in_sync and v.lag == 0)
        }
        full = (
            self.others_alive()
            or now - self._read_at >= FULL_READ_S
            or self.hub.vteps.keys() != self._rows.keys()
        )
        if full:
            rows = {row.name: row for row in await asyncio.to_thread(self._read_all)}
            dirty |= {n for n, row in rows.items() if self._rows.get(n) != row}
            dirty |= self._rows.keys() - rows.keys()
            self._rows = rows
            self._read_at = now
        else:
            opened = [h for h in sessions if h in dirty and not self._was_connected(h)]
            if opened:
                self._rows.update(await asyncio.to_thread(self._read_some, sorted(opened)))
        return dirty

    def _was_connected(self, host: str) -> bool:
        view = self.hosts.get(host)
        return view is not None and view.connected

    def _read_all(self) -> list[Host]:
        with self.store.read() as tx:
            return tx.list_hosts()

    def _read_some(self, names: list[str]) -> dict[str, Host]:
        with self.store.read() as tx:
            rows = {name: tx.get_host(name) for name in names}
        return {name: row for name, row in rows.items() if row is not None}

    def _judge_hosts(self, dirty: set[str], now: float) -> list[HostView]:
        """Judge the ``dirty`` hosts again; the views that differ from the last tick's
        (and their session events)."""
        wall = time.time()
        changed: list[HostView] = []
        gone: list[str] = []
        for name in sorted(dirty):
            row = self._rows.get(name)
            was, new = self.hosts.get(name), self.view(row) if row is not None else None
            if was == new:
                continue
            if new is None:
                del self.hosts[name]
                gone.append(name)
            else:
                self.hosts[name] = new
                changed.append(new)
            if not self._baseline:
                continue
            before = (was.connected, was.in_sync) if was is not None else None
            after = (new.connected, new.in_sync) if new is not None else None
            for kind in host_session_events(before, after):
                revision = new.applied_revision if new is not None else None
                detail = new.replica if kind is EventKind.HOST_CONNECTED and new else None
                self._event(kind, now, wall, revision, host=name, detail=detail)
        self._baseline = True
        self._gone = gone
        return changed

    def view(self, row: Host) -> HostView:
        """``row``'s host as the page shows it, judged now (on the event loop)."""
        status = self.channel.host_status(row)
        applied = status.applied_revision
        lag = None
        if status.connected and applied is not None:
            lag = max(self.hub.revision - applied, 0)
        return HostView(
            name=row.name,
            vtep_ip=row.vtep_ip,
            datapath=row.datapath,
            encaps=tuple(sorted(row.encaps)) if row.encaps is not None else None,
            connected=status.connected,
            replica=status.replica,
            applied_revision=applied,
            lag=lag,
            in_sync=status.in_sync,
            last_seen=row.last_seen.isoformat(timespec="seconds") if row.last_seen else None,
            networks=len(self.hub.member_of.get(row.name, ())),
            errors=len(self.channel.host_errors(row.name)),
        )

    def _judge_local(self, now: float) -> None:
        for host in list(self._waiting):
            status = self.channel.local_status(host)
            if status is not None:
                self._settle(host, status.applied_revision, now)

    def _judge_rows(self, now: float) -> None:
        """Settle the pending hosts whose sessions other replicas hold (from their rows)."""
        for name in list(self._waiting):
            row = self._rows.get(name)
            if row is not None and self.channel.local_status(name) is None:
                status = self.channel.host_status(row)
                if status.connected:
                    self._settle(name, status.applied_revision, now)

    def _settle(self, host: str, applied: int | None, now: float) -> None:
        if applied is None:
            return
        waiting = self._waiting[host]
        for seq, event in list(waiting.items()):
            if applied >= event.batch_revision:
                del waiting[seq]
                self._done(event, host, now)
        if not waiting:
            del self._waiting[host]

    def _done(self, event: Event, host: str, now: float) -> None:
        event.waiting.discard(host)
        if not event.waiting and event.applied_ms is None and event.behind is None:
            seconds = now - event.started
            event.applied_ms = round(seconds * 1000)
            self._settled.append(event)
            self.on_applied(event, seconds)

    def _give_up(self, now: float) -> None:
        for host in list(self._waiting):
            waiting = self._waiting[host]
            for seq, event in list(waiting.items()):
                if now - event.started >= APPLY_GIVE_UP_S:
                    del waiting[seq]
                    if event.behind is None:
                        event.behind = sorted(event.waiting)[:NAMED_BEHIND]
                        self._settled.append(event)
            if not waiting:
                del self._waiting[host]

    # -- watchers ---------------------------------------------------------------------------

    def watch(self) -> Watcher:
        watcher = Watcher()
        self.watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)

    def _broadcast(self, hosts: list[HostView]) -> None:
        touched, self._touched = self._touched, set()
        new, self._new = self._new, []
        settled, self._settled = self._settled, []
        if not self.watchers:
            return
        networks = [
            network_view(self.hub, self.hub.networks[n])
            for n in sorted(touched)
            if n in self.hub.networks
        ]
        removed = sorted(n for n in touched if n not in self.hub.networks)
        fresh = {e.seq for e in new}
        message: dict[str, object] = {
            "type": "tick",
            "revision": self.hub.revision,
            "hosts": [h.as_json() for h in hosts],
            "hosts_removed": self._gone,
            "networks": networks,
            "networks_removed": removed,
            "events": [e.as_json() for e in new],
            "settled": [e.as_json() for e in settled if e.seq not in fresh],
        }
        encoded = self.encode(message)
        for watcher in list(self.watchers):
            watcher.put(encoded)
            if watcher.dropped:
                self.watchers.discard(watcher)

    def close(self) -> None:
        """End every live stream (the server is stopping)."""
        for watcher in self.watchers:
            watcher.end()
        self.watchers.clear()

    # -- helpers ----------------------------------------------------------------------------

    def _event(
        self,
        kind: EventKind,
        now: float,
        wall: float,
        revision: int | None,
        *,
        network: Network | None = None,
        port: Port | None = None,
        host: str | None = None,
        detail: str | None = None,
    ) -> Event:
        self.seq += 1
        event = Event(
            self.seq,
            wall,
            now,
            kind,
            revision,
            network_id=network.id if network is not None else (port.network_id if port else None),
            network=network.name if network is not None else None,
            port_id=port.id if port is not None else None,
            mac=port.mac if port is not None else None,
            host=host if host is not None else (port.host if port is not None else None),
            detail=detail,
        )
        self.events.append(event)
        self._new.append(event)
        return event


def _remote(kind: EventKind) -> bool:
    """Whether the network's member hosts must apply an event of this kind (else only the
    port's own hosts, if any)."""
    return kind in REMOTE_PORT_EVENTS or kind in NETWORK_EVENTS_APPLIED


def _port_detail(kind: EventKind, old: Port | None, new: Port | None) -> str | None:
    """The words after the kind: where a port moved, what its addresses became."""
    if kind is EventKind.PORT_MIGRATED and old is not None and new is not None:
        return f"{old.host} -> {new.host}"
    if kind is EventKind.PORT_UNBOUND and old is not None:
        return f"from {old.host}"
    if kind is EventKind.PORT_UPDATED and new is not None:
        return ", ".join((new.mac, *new.fixed_ips))
    if kind is EventKind.PORT_DELETED and old is not None and old.host is not None:
        return f"was on {old.host}"
    return None


def _key(network: Network) -> tuple[str, str]:
    return network.name, network.id
