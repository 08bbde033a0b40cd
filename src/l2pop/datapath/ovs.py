"""The ovs datapath: Open vSwitch + VXLAN or GRE, every table an OpenFlow flow l2pop owns.

Design notes
------------
* One integration bridge (``br-l2pop``), created and owned by the agent: ``fail_mode=secure``
  (nothing forwards but our flows, even while the agent is away), no controller ever (adding
  or removing one makes ovs-vswitchd flush every flow), OpenFlow 1.0-1.5. The underlay (the
  VTEP address on an OVS bridge such as ``br-phy``, its uplink) is the operator's.
* Two flow-based tunnel ports, ``l2pop-vxlan`` and ``l2pop-gre`` (``remote_ip=flow``,
  ``key=flow``): the VTEP and the VNI (the GRE key) are set per packet, so a new VTEP costs
  no port (Neutron makes one port per remote VTEP, lazily, and learns through them).
* The pipeline is ``_pipeline``'s: classify by in_port into a network (metadata = VNI), ARP
  and ND answered by flows (ND in two tables; DAD probes flooded, never answered), unicast
  MAC -> tunnel to its VTEP, a per-network flood group holding exactly the member VTEPs, local
  delivery by the VMs' own MACs. Nothing learns anywhere; every table ends in a drop.
  docs/adr/0018-ovs-pipeline.md explains the choices.
* Ownership: every flow carries the l2pop cookie tag (``_pipeline.is_ours``); dumps ask for
  that cookie only, deletes name it; the bridge's ``external_ids:l2pop-net-<vni>`` say which
  network a VNI is (the linux datapath keeps that in the device alias). Other bridges, ports
  and flows are never touched.
* Reconcile, never flush. ``dump`` is one flow dump (our cookie, no counters) and one group
  dump, read back into tables; ``apply`` turns a delta into the flow and group mods of the
  difference only and sends each delta as one atomic OpenFlow bundle. Both go through
  ``_ofwire`` (binary OpenFlow on the bridge's socket; ovs-ofctl's text was the cost at
  scale), with ``_ofctl``'s ovs-ofctl as its reference and fallback. Unchanged flows are
  never rewritten, so their counters survive resyncs and agent restarts. A flood-list change
  is one bucket inserted or removed, never a rewritten flood flow. Conditional removals are
  checked against the tables read back (``_nets``: what the last dump found, kept current by
  every apply; re-read when it may be stale).
* Damage. A network whose flows or groups are incomplete (a hand deletion, ovs-vswitchd
  restarted: its flows live in memory only) is reported with VNI 0 and no entries, so the
  agent's reconcile rebuilds it. A restart is noticed at once: ``_ofctl.SwitchWatch`` holds an
  OpenFlow connection open on the bridge, which closes when ovs-vswitchd exits; the datapath
  then says ``state_lost()`` and calls the port listener, and the agent's next sync is FULL
  (base flows, networks, ports all re-programmed; nothing is polled).
* OVSDB through the OVS project's IDL (``_ovsdb``): a replica kept current by monitor updates,
  so plugging is event-driven. Local ports: a VM's device ``tap`` + port id[:11] that appears
  in the namespace (netlink link event) is added to the bridge with ``external_ids:iface-id``
  as os-vif would; an interface already there with ``iface-id=<port id>`` (plugged by Nova /
  os-vif) is that port. Wiring installs the port's flows (in_port -> network, its MAC ->
  it) and its bucket in the network's local group; ``unwire`` removes them (and the port, if
  l2pop added it).

Thread safety: one lock serialises every use of ovs-ofctl and of the tables read back.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from l2pop.datapath import _links, _netns
from l2pop.datapath import _netlink as nl
from l2pop.datapath import _pipeline as pl
from l2pop.datapath._ofctl import OfctlError, SwitchWatch
from l2pop.datapath._ofwire import OfWire
from l2pop.datapath._ovsdb import Iface, Ovsdb, OvsdbError
from l2pop.datapath.abc import TAP_PREFIX, DatapathError, refuse_encap, tap_name
from l2pop.model import ArpSuppression, Encap, NetworkDelta, NetworkTables

log = logging.getLogger("l2pop.datapath.ovs")

DEFAULT_RUNDIR = "/var/run/openvswitch"
DEFAULT_DB = f"unix:{DEFAULT_RUNDIR}/db.sock"
DEFAULT_BRIDGE = "br-l2pop"
DATAPATH_TYPES = ("system", "netdev")
#: the VNI ``dump`` reports for a damaged network (valid VNIs start at 1)
DAMAGED_VNI = 0
#: encap -> (tunnel port name, OVS interface type)
TUNNELS = {Encap.VXLAN: ("l2pop-vxlan", "vxlan"), Encap.GRE: ("l2pop-gre", "gre")}
#: how long wiring waits for ovs-vswitchd to give a new port its ofport
OFPORT_WAIT_S = 5.0

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

__all__ = ["DatapathError", "OvsDatapath"]


@dataclass
class _Net:
    """A network as programmed: its VNI, encap, mode and entries (mutable working copy)."""

    vni: int
    encap: Encap
    mode: ArpSuppression
    flood: set[str] = field(default_factory=set)
    fdb: dict[str, str] = field(default_factory=dict)
    neigh: dict[str, str] = field(default_factory=dict)

    def tables(self, network_id: str) -> NetworkTables:
        return NetworkTables(
            network_id,
            self.vni,
            self.mode,
            frozenset(self.flood),
            dict(self.fdb),
            dict(self.neigh),
            self.encap,
        )


@dataclass(frozen=True, slots=True)
class _Wired:
    network_id: str
    vni: int
    ofport: int
    mac: str | None


class OvsDatapath:
    """``abc.Datapath`` on an Open vSwitch bridge (see the design notes)."""

    name = "ovs"
    blocking = True  # ovs-ofctl processes and OVSDB round trips
    encaps = frozenset(TUNNELS)

    def __init__(
        self,
        vtep_ip: str,
        *,
        db: str = DEFAULT_DB,
        rundir: str = DEFAULT_RUNDIR,
        bridge: str = DEFAULT_BRIDGE,
        datapath_type: str = "system",
        netns: str | None = None,
        tap_prefix: str = TAP_PREFIX,
    ) -> None:
        """Connect to OVSDB at ``db``, create or repair ``bridge`` (``datapath_type``: system
        for the kernel module, netdev for userspace) and its tunnel ports, and install the base
        flows. ``rundir`` holds ``<bridge>.mgmt``; ``netns``: a namespace under /run/netns
        whose devices are the VMs' (tests; default the caller's). Raises OSError when OVS is
        not reachable, ValueError for a bad argument."""
        if datapath_type not in DATAPATH_TYPES:
            raise ValueError(
                f"datapath type {datapath_type!r}: choose {' or '.join(DATAPATH_TYPES)}"
            )
        if not bridge or len(bridge) > 15:
            raise ValueError(f"bridge name {bridge!r}: 1 to 15 characters")
        self.vtep_ip = vtep_ip
        self.bridge = bridge
        self.tap_prefix = tap_prefix
        self._lock = threading.RLock()
        self._listener: Callable[[], None] | None = None
        self._nets: dict[str, _Net] = {}
        self._stale = True  # _nets and _wired must be read back before they are trusted
        self._unbased = True  # tunnel ofports and base flows must be (re)made first
        self._lost = False
        self._wired: dict[str, _Wired] = {}
        self._tunnels: dict[Encap, int] = {}
        self._links: _links.LinkWatcher | None = None
        self._netns_fd = _netns.open_netns(netns)
        self._closers: list[Callable[[], None]] = [lambda: os.close(self._netns_fd)]
        try:
            with _netns.entered(self._netns_fd):
                self._sock = nl.RtnlSocket()
            self._closers.append(self._sock.close)
            self._db = Ovsdb(db, bridge, self._fire)
            self._closers.append(self._db.close)
            self._db.ensure_bridge(datapath_type)
            mgmt = os.path.join(rundir, f"{bridge}.mgmt")
            self._of = OfWire(f"unix:{mgmt}")
            self._refresh()
            self._watch = SwitchWatch(mgmt, self._switch_changed)
            self._closers.append(self._watch.close)
            # VM devices going must take their flows along even before anyone listens
            self._links = _links.LinkWatcher(self._netns_fd, self._on_links)
            self._closers.append(self._links.close)
        except BaseException:
            self.close()
            raise

    # -- Datapath ------------------------------------------------------------------------

    def dump(self) -> dict[str, NetworkTables]:
        """network id -> tables of every network recorded on the bridge; a damaged one (a
        flow or group missing or altered) with VNI 0 and no entries."""
        with self._lock:
            return self._read()

    def apply(self, deltas: Sequence[NetworkDelta]) -> None:
        """Program ``deltas`` in order, one atomic bundle each (abc.Datapath semantics).
        Raises ``DatapathError`` (entries refused) or OSError (OVS in trouble) after
        programming what it could."""
        with self._lock:
            try:
                if self._stale:
                    self._read()
                for delta in deltas:
                    refuse_encap(self, delta)
                    if delta.leave:
                        self._leave(delta.network_id)
                    else:
                        self._program(delta)
            except BaseException:
                self._stale = True
                raise

    def plugged(self, port_ids: Iterable[str]) -> set[str]:
        """Ports whose device is here: an interface on the bridge with its ``iface-id`` and
        an ofport, or a ``tap`` device of its name in the namespace."""
        wanted = list(port_ids)
        if not wanted:
            return set()
        with self._lock:
            ifaces = self._db.interfaces()
            names = {link.name for link in _links.dump_links(self._sock)}
        # OVS keeps a port whose device went (userspace: with its ofport), so the device
        # itself is what counts
        by_id = {i.iface_id for i in ifaces if i.iface_id and i.name in names}
        return {p for p in wanted if p in by_id or self.tap_name(p) in names}

    def wire(self, port_id: str, network_id: str, mac: str | None = None) -> None:
        """Put the port's device on the bridge if it is not (as os-vif would), and install its
        flows on the network: traffic from it enters the network, frames for ``mac`` (the VM's
        MAC; without it the port gets broadcasts only) reach it. Idempotent; absent device:
        nothing; network not programmed here: ``DatapathError`` naming the port."""
        with self._lock:
            if self._stale:
                self._read()
            iface = self._iface_of(port_id)
            name = iface.name if iface is not None else self.tap_name(port_id)
            link = _links.link_by_name(self._sock, name)
            if link is None:
                # no device (OVS may still list its port, even with an ofport): the listener
                # reports it when it comes
                return
            net = self._nets.get(network_id)
            if net is None:
                message = f"network {network_id} is not programmed on this host"
                raise DatapathError(message, [(f"port {port_id}", errno.ENOENT, message)])
            self._check_mac(port_id, mac)
            if iface is None:
                self._db.add_vm_port(name, port_id, mac)
                _links.set_up(self._sock, link.index)
            try:
                ofport = self._db.ofport(name, OFPORT_WAIT_S)
            except OvsdbError as exc:
                raise DatapathError(
                    str(exc), [(f"port {port_id}", errno.ENODEV, str(exc))]
                ) from exc
            want = _Wired(network_id, net.vni, ofport, mac)
            if self._wired.get(port_id) == want:
                return
            self._rewire(port_id, want)

    def unwire(self, port_id: str) -> None:
        """Remove the port's flows and its local-group bucket, and the port itself if l2pop
        put it on the bridge (idempotent; a port never wired: nothing)."""
        with self._lock:
            if self._stale:
                self._read()
            if port_id in self._wired:
                self._rewire(port_id, None)
            iface = self._iface_of(port_id)
            if iface is not None and iface.owned:
                self._db.del_port(iface.name)

    def sweep_ports(self, keep: Iterable[str]) -> None:
        """Unwire every port with flows here (read back by ``dump``) not in ``keep``."""
        kept = set(keep)
        with self._lock:
            if self._stale:
                self._read()
            for port_id in [p for p in self._wired if p not in kept]:
                self.unwire(port_id)

    def state_lost(self) -> bool:
        """Whether programmed state may have been lost behind the agent's back since the last
        call (ovs-vswitchd restarted: its flows are gone); asking clears it."""
        with self._lock:
            lost, self._lost = self._lost, False
            return lost

    def set_port_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (background threads) when a VM device appears, changes or goes
        (netlink or OVSDB), and when ovs-vswitchd went away or came back."""
        self._listener = listener

    def close(self) -> None:
        """Stop the threads and close the connections (idempotent); flows stay (fail static:
        ``fail_mode=secure`` keeps forwarding by them while no agent runs)."""
        with self._lock:
            closers, self._closers = self._closers, []
        for closer in reversed(closers):
            try:
                closer()
            except Exception:
                log.exception("closing the ovs datapath")

    def __enter__(self) -> OvsDatapath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tap_name(self, port_id: str) -> str:
        return tap_name(port_id, self.tap_prefix)

    # -- events (background threads) ------------------------------------------------------

    def _fire(self) -> None:
        """A VM device or interface changed: drop the wiring of ports whose device went (a
        device that comes back is a new plug, unwired, as on a kernel bridge), then tell the
        agent."""
        try:
            self._sweep()
        except Exception:
            log.exception("removing the flows of gone ports")
        listener = self._listener
        if listener is not None:
            listener()

    def _sweep(self) -> None:
        with self._lock:
            if not self._wired or self._stale:
                return  # nothing wired, or a FULL sync will redo all of it
            ifaces = {i.iface_id: i for i in self._db.interfaces() if i.iface_id}
            for port_id in list(self._wired):
                iface = ifaces.get(port_id)
                gone = iface is None or iface.ofport is None
                if iface is not None and not gone:
                    gone = _links.link_by_name(self._sock, iface.name) is None
                if gone:
                    self._rewire(port_id, None)
                    if iface is not None and iface.owned:
                        self._db.del_port(iface.name)

    def _on_links(self, names: set[str] | None) -> None:
        """Link events: a tap, or any device that is a port of our bridge (os-vif's)."""
        ports = names is None or {i.name for i in self._db.interfaces()} & names
        if ports or any(n.startswith(self.tap_prefix) for n in names or ()):
            self._fire()

    def _switch_changed(self) -> None:
        """ovs-vswitchd went away or is back: its flows and groups are gone."""
        log.warning("ovs-vswitchd connection for %s changed: re-programming", self.bridge)
        self._stale = self._unbased = True
        self._lost = True
        self._fire()

    # -- reading back -----------------------------------------------------------------------

    def _refresh(self) -> None:
        """Tunnel ports (their ofports may change with ovs-vswitchd) and base flows."""
        for encap, (port, kind) in TUNNELS.items():
            self._tunnels[encap] = self._db.ensure_tunnel(port, kind)
        self._of.bundle(["flow add " + line for line in pl.base_flows()])
        self._unbased = False

    def _read(self) -> dict[str, NetworkTables]:
        if self._unbased:
            self._refresh()
        found, base = self._of.dump()
        if not base:
            self._refresh()
        ifaces = {i.ofport: i for i in self._db.interfaces() if i.ofport is not None}
        out: dict[str, NetworkTables] = {}
        nets: dict[str, _Net] = {}
        wired: dict[str, _Wired] = {}
        for vni, nid in sorted(self._db.networks().items()):
            f = found.get(vni, pl.Found())
            state = pl.mode_of(vni, f, self._tunnels)
            if state is None or nid in nets:
                out.setdefault(nid, NetworkTables(nid, DAMAGED_VNI, ArpSuppression.OFF))
                continue
            mode, encap = state
            tunnel = self._tunnels[encap]
            fdb = {m: v for m, v in f.fdb.items() if f.fdb_port.get(m) == tunnel}
            net = _Net(vni, encap, mode, set(f.flood or ()), fdb, dict(f.neigh))
            nets[nid] = net
            out[nid] = net.tables(nid)
            for ofport in f.ports:
                iface = ifaces.get(ofport)
                if iface is not None and iface.iface_id:
                    wired[iface.iface_id] = _Wired(nid, vni, ofport, iface.mac)
        self._nets, self._wired, self._stale = nets, wired, False
        return out

    def _iface_of(self, port_id: str) -> Iface | None:
        """The port's interface on the bridge: by ``iface-id``, else by its tap name."""
        by_name = None
        for iface in self._db.interfaces():
            if iface.iface_id == port_id:
                return iface
            if iface.name == self.tap_name(port_id):
                by_name = iface
        return by_name

    # -- programming ------------------------------------------------------------------------

    def _bundle(self, lines: list[str], network: str) -> None:
        try:
            self._of.bundle(lines)
        except OfctlError as exc:
            raise DatapathError(str(exc), [(f"network {network}", errno.EIO, exc.text)]) from exc

    def _leave(self, nid: str) -> None:
        vnis = [v for v, n in self._db.networks().items() if n == nid]
        lines = [line for v in vnis for line in pl.delete_network(v)]
        self._bundle(lines, nid)
        for v in vnis:
            self._db.set_network(v, None)
        self._nets.pop(nid, None)
        self._wired = {p: w for p, w in self._wired.items() if w.network_id != nid}

    def _program(self, delta: NetworkDelta) -> None:
        nid, vni, encap = delta.network_id, delta.vni, delta.encap
        mode = ArpSuppression(delta.arp_suppression)
        failures = _bad_entries(delta)
        net = self._nets.get(nid)
        lines: list[str] = []
        old: list[int] = []
        rebuilt = net is None or net.vni != vni or net.encap != encap
        if net is None or rebuilt:
            old = [v for v, n in self._db.networks().items() if n == nid and v != vni]
            # whatever holds the VNI (an orphan, a damaged copy) goes first: we rebuild it
            for v in {vni, *old}:
                lines += pl.delete_network(v)
            self._db.set_network(vni, nid)
            lines += pl.create_network(vni, self._tunnels[encap], mode)
            carried = net or _Net(vni, encap, mode)  # a VNI change keeps the entries
            net = _Net(vni, encap, mode)
            lines += self._entry_lines(
                net, carried.flood, carried.fdb, carried.neigh, {}, {}, set()
            )
        elif net.mode != mode:
            lines += pl.switch_mode(vni, net.mode, mode)
            net.mode = mode
        bad = {e for e, _, _ in failures}
        lines += self._entry_lines(
            net,
            {v for v in delta.flood_add if f"flood {v}" not in bad},
            {m: v for m, v in delta.fdb_add.items() if f"fdb {m}" not in bad},
            {i: m for i, m in delta.neigh_add.items() if f"neigh {i}" not in bad},
            dict(delta.fdb_remove),
            dict(delta.neigh_remove),
            set(delta.flood_remove),
        )
        if rebuilt:
            lines += self._port_lines(nid, vni)
        self._bundle(lines, nid)
        self._nets[nid] = net
        for v in old:
            self._db.set_network(v, None)
        if failures:
            raise DatapathError(f"{len(failures)} entries refused in network {nid}", failures)

    def _entry_lines(  # noqa: PLR0917 (the delta's six parts)
        self,
        net: _Net,
        flood_add: set[str],
        fdb_add: dict[str, str],
        neigh_add: dict[str, str],
        fdb_remove: dict[str, str],
        neigh_remove: dict[str, str],
        flood_remove: set[str],
    ) -> list[str]:
        """The mods that take ``net`` (updated in place) through removals then additions; a
        removal only while the entry still holds the value named, an addition only when the
        entry differs (so nothing that is right is ever rewritten)."""
        vni, tunnel = net.vni, self._tunnels[net.encap]
        lines = []
        for vtep in sorted(flood_remove & net.flood):
            lines.append(pl.flood_remove(vni, vtep))
            net.flood.discard(vtep)
        for mac, vtep in fdb_remove.items():
            if net.fdb.get(mac) == vtep:
                lines.append(pl.fdb_delete(vni, mac))
                del net.fdb[mac]
        for ip, mac in neigh_remove.items():
            if net.neigh.get(ip) == mac:
                lines.append(pl.neigh_delete(vni, ip))
                del net.neigh[ip]
        for vtep in sorted(flood_add - net.flood):
            lines.append(pl.flood_insert(vni, vtep, tunnel))
            net.flood.add(vtep)
        for mac, vtep in fdb_add.items():
            if net.fdb.get(mac) != vtep:
                lines.append(pl.fdb_add(vni, mac, vtep, tunnel))
                net.fdb[mac] = vtep
        for ip, mac in neigh_add.items():
            if net.neigh.get(ip) != mac:
                lines.append(pl.neigh_add(vni, ip, mac))
                net.neigh[ip] = mac
        return lines

    def _port_lines(self, nid: str, vni: int) -> list[str]:
        """Re-install the flows of the ports wired to ``nid`` (under VNI ``vni`` now)."""
        lines = []
        for port_id, w in list(self._wired.items()):
            if w.network_id == nid:
                self._wired[port_id] = _Wired(nid, vni, w.ofport, w.mac)
                lines += pl.port_flows(vni, w.ofport, w.mac)
        lines.append(pl.local_group(vni, self._local_ports(vni)))
        return lines

    def _local_ports(self, vni: int) -> list[int]:
        return [w.ofport for w in self._wired.values() if w.vni == vni]

    def _rewire(self, port_id: str, want: _Wired | None) -> None:
        """Move the port's flows from where they are to ``want`` (None: nowhere)."""
        before = self._wired.pop(port_id, None)
        lines = []
        if before is not None:
            lines.append(pl.delete_port(before.vni, before.ofport))
        if want is not None:
            self._wired[port_id] = want
            lines += pl.port_flows(want.vni, want.ofport, want.mac)
        for vni in {w.vni for w in (before, want) if w is not None}:
            if any(n.vni == vni for n in self._nets.values()):
                lines.append(pl.local_group(vni, self._local_ports(vni)))
        try:
            self._of.bundle(lines)
        except OfctlError as exc:
            self._stale = True
            raise DatapathError(str(exc), [(f"port {port_id}", errno.EIO, exc.text)]) from exc

    @staticmethod
    def _check_mac(port_id: str, mac: str | None) -> None:
        if mac is not None and not _MAC.match(mac):
            message = f"port {port_id}: bad MAC {mac!r}"
            raise DatapathError(message, [(f"port {port_id}", errno.EINVAL, message)])


def _bad_entries(delta: NetworkDelta) -> list[tuple[str, int, str]]:
    """Entries no flow can be written for (never trust the wire): (entry, errno, why)."""
    out = []
    for vtep in delta.flood_add:
        if not _ipv4(vtep):
            out.append((f"flood {vtep}", errno.EINVAL, "VTEP must be IPv4"))
    for mac, vtep in delta.fdb_add.items():
        if not _MAC.match(mac) or not _ipv4(vtep):
            out.append((f"fdb {mac}", errno.EINVAL, f"bad fdb entry {mac} -> {vtep}"))
    for ip, mac in delta.neigh_add.items():
        if not _MAC.match(mac) or not _ip(ip):
            out.append((f"neigh {ip}", errno.EINVAL, f"bad neighbour {ip} -> {mac}"))
    return out


def _ipv4(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET, text)
    except OSError:
        return False
    return True


def _ip(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
    except OSError:
        return False
    return True
