"""OVSDB for the ovs datapath: the bridge, its tunnel and VM ports, through the OVS project's
own Python IDL (``ovs.db.idl``; docs/adr/0019-ovsdb-through-the-ovs-idl.md).

The IDL keeps a replica of the columns registered here, kept current by the server's monitor
updates: reads are local, and a change to an interface (a VM's port added by Nova, removed,
given an ofport) arrives as an update, which calls ``on_change`` (no polling). One thread runs
the IDL; every use of it holds ``_lock`` (the IDL is not thread-safe), and a transaction
(``commit_block``) runs it too, under the same lock.

Ownership: only the bridge named at construction is touched, and on it only the rows l2pop
made (``external_ids:l2pop=1``: its tunnel ports, the VM ports it added) are ever deleted;
ports others put there (a hand-made port, a VM port plugged by os-vif) are read, never removed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ovs.db.idl
import ovs.jsonrpc
import ovs.poller
import ovs.stream

from l2pop.datapath._pipeline import NET_KEY

log = logging.getLogger("l2pop.datapath.ovs")

DB = "Open_vSwitch"
OWNED = "l2pop"  # external_ids key marking the rows l2pop made
COLUMNS = {
    "Open_vSwitch": ["bridges"],
    "Bridge": [
        "name", "ports", "fail_mode", "datapath_type", "protocols", "external_ids", "other_config",
    ],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": ["name", "type", "options", "ofport", "external_ids", "error"],
}  # fmt: skip
PROTOCOLS = ["OpenFlow10", "OpenFlow13", "OpenFlow14", "OpenFlow15"]


class OvsdbError(OSError):
    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)


@dataclass(frozen=True, slots=True)
class Iface:
    """An interface on our bridge: its ofport (None while it has none: absent device, not
    yet assigned), its ``external_ids:iface-id`` and whether l2pop added it."""

    name: str
    ofport: int | None
    iface_id: str | None
    owned: bool
    type: str
    mac: str | None = None  # external_ids:attached-mac (the VM's MAC, as os-vif records it)


def _schema(remote: str, timeout: float) -> Any:
    """The server's schema (``get_schema``), so no schema file has to match the server's."""
    err, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(remote), int(timeout * 1000))
    if err:
        raise OvsdbError(f"cannot connect to OVSDB at {remote}: {os.strerror(err)}")
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        err, reply = rpc.transact_block(ovs.jsonrpc.Message.create_request("get_schema", [DB]))
    finally:
        rpc.close()
    if err or reply is None or reply.error:
        raise OvsdbError(f"OVSDB at {remote} gave no {DB} schema")
    return reply.result


class _Idl(ovs.db.idl.Idl):  # type: ignore[misc]
    changed = False

    def notify(self, event: Any, row: Any, updates: Any = None) -> None:
        if row._table.name == "Interface":
            self.changed = True


class Ovsdb:
    """The IDL of one OVSDB server, scoped to ``bridge``; ``on_change()`` (IDL thread) after
    interfaces appear, change or go."""

    def __init__(
        self,
        remote: str,
        bridge: str,
        on_change: Callable[[], None],
        *,
        timeout: float = 10.0,
    ) -> None:
        self.remote, self.bridge, self.timeout = remote, bridge, timeout
        self._on_change = on_change
        helper = ovs.db.idl.SchemaHelper(None, _schema(remote, timeout))
        for table, columns in COLUMNS.items():
            helper.register_columns(table, columns)
        self._lock = threading.RLock()
        self._idl = _Idl(remote, helper)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._closing = False
        self._wait(self._idl.has_ever_connected, "connect")
        self._thread = threading.Thread(target=self._run, name="l2pop-ovsdb", daemon=True)
        self._thread.start()

    # -- the IDL thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closing:
            with self._lock:
                self._idl.run()
                changed, self._idl.changed = self._idl.changed, False
                poller = ovs.poller.Poller()
                self._idl.wait(poller)
                poller.fd_wait(self._wake_r, ovs.poller.POLLIN)
            if changed:
                try:
                    self._on_change()
                except Exception:
                    log.exception("interface listener failed")
            poller.block()
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)

    def _kick(self) -> None:
        """Wake the IDL thread (after a transaction ran the IDL here: its updates may need
        reporting)."""
        os.write(self._wake_w, b"x")

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        """Run the IDL (lock held) until ``ready()``; OvsdbError after ``timeout``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._lock:
            while True:
                self._idl.run()
                if ready():
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OvsdbError(f"OVSDB at {self.remote}: no {what} in {self.timeout:.0f}s")
                poller = ovs.poller.Poller()
                self._idl.wait(poller)
                poller.timer_wait(int(min(left, 0.5) * 1000))
                poller.block()

    def close(self) -> None:
        if self._wake_w < 0:
            return
        self._closing = True
        self._kick()
        self._thread.join(timeout=5)
        with self._lock:
            self._idl.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._wake_w = -1

    # -- reads (replica) ----------------------------------------------------------------------

    def _rows(self, table: str) -> list[Any]:
        return list(self._idl.tables[table].rows.values())

    def _bridge(self) -> Any | None:
        for row in self._rows("Bridge"):
            if row.name == self.bridge:
                return row
        return None

    def networks(self) -> dict[int, str]:
        """VNI -> network id, as the bridge's ``external_ids`` record them."""
        with self._lock:
            br = self._bridge()
            if br is None:
                return {}
            out = {}
            for key, value in br.external_ids.items():
                if key.startswith(NET_KEY) and key[len(NET_KEY) :].isdigit():
                    out[int(key[len(NET_KEY) :])] = value
            return out

    def interfaces(self) -> list[Iface]:
        """Every interface on our bridge."""
        with self._lock:
            br = self._bridge()
            if br is None:
                return []
            out = []
            for port in br.ports:
                for iface in port.interfaces:
                    ofport = iface.ofport[0] if iface.ofport else None
                    ids = iface.external_ids
                    out.append(
                        Iface(
                            iface.name,
                            ofport if ofport is not None and ofport > 0 else None,
                            ids.get("iface-id"),
                            ids.get(OWNED) == "1",
                            iface.type,
                            ids.get("attached-mac"),
                        )
                    )
            return out

    def ofport(self, name: str, timeout: float | None = None) -> int:
        """The ofport of interface ``name`` on our bridge, waiting for ovs-vswitchd to assign
        it; OvsdbError when it does not (the device is missing, the port refused)."""
        found: list[int] = []

        def ready() -> bool:
            for iface in self.interfaces():
                if iface.name == name and iface.ofport is not None:
                    found.append(iface.ofport)
                    return True
            return False

        self._wait(ready, f"ofport for {name}", timeout)
        return found[0]

    # -- writes -------------------------------------------------------------------------------

    def _commit(self, build: Callable[[Any], None], what: str) -> None:
        with self._lock:
            for _attempt in range(5):
                txn = ovs.db.idl.Transaction(self._idl)
                build(txn)
                status = txn.commit_block()
                if status in (txn.SUCCESS, txn.UNCHANGED):
                    break
                if status != txn.TRY_AGAIN:
                    raise OvsdbError(f"OVSDB {what}: {txn.get_error() or status}")
            else:
                raise OvsdbError(f"OVSDB {what}: kept conflicting")
        self._kick()

    def ensure_bridge(self, datapath_type: str) -> None:
        """Create our bridge (``fail_mode=secure``: nothing forwards but our flows; no
        controller, ever) or put its settings right; idempotent."""

        def build(txn: Any) -> None:
            br = self._bridge()
            if br is None:
                br = txn.insert(self._idl.tables["Bridge"])
                br.name = self.bridge
                port = txn.insert(self._idl.tables["Port"])
                port.name = self.bridge
                iface = txn.insert(self._idl.tables["Interface"])
                iface.name, iface.type = self.bridge, "internal"
                port.interfaces = [iface]
                br.ports = [port]
                br.fail_mode, br.datapath_type, br.protocols = "secure", datapath_type, PROTOCOLS
                br.other_config = {"disable-in-band": "true"}
                br.external_ids = {OWNED: "1"}
                self._rows("Open_vSwitch")[0].addvalue("bridges", br.uuid)
                return
            if br.fail_mode != ["secure"]:
                br.fail_mode = "secure"
            if br.datapath_type != datapath_type:
                br.datapath_type = datapath_type
            if sorted(br.protocols) != PROTOCOLS:
                br.protocols = PROTOCOLS
            if br.other_config.get("disable-in-band") != "true":
                br.setkey("other_config", "disable-in-band", "true")
            if br.external_ids.get(OWNED) != "1":
                br.setkey("external_ids", OWNED, "1")

        self._wait(lambda: bool(self._rows("Open_vSwitch")), "Open_vSwitch row")
        self._commit(build, f"bridge {self.bridge}")

    def ensure_tunnel(self, name: str, kind: str) -> int:
        """A flow-based tunnel port (``remote_ip=flow``, ``key=flow``: one port for every
        VTEP, the VTEP and VNI set per packet) of ``kind`` (vxlan, gre); its ofport."""
        options = {"remote_ip": "flow", "key": "flow"}

        def build(txn: Any) -> None:
            br = self._bridge()
            if br is None:
                raise OvsdbError(f"bridge {self.bridge} is gone")
            for port in br.ports:
                for iface in port.interfaces:
                    if iface.name == name and iface.type == kind and iface.options == options:
                        return
            self._add_port(txn, br, name, {OWNED: "1"}, kind, options)

        self._commit(build, f"tunnel port {name}")
        return self.ofport(name)

    def _add_port(  # noqa: PLR0917 (one row's columns)
        self, txn: Any, br: Any, name: str, ids: dict[str, str], kind: str, options: dict[str, str]
    ) -> None:
        for port in br.ports:  # a port of that name in the way: replace it
            if port.name == name:
                br.delvalue("ports", port.uuid)
                port.delete()
        port = txn.insert(self._idl.tables["Port"])
        port.name = name
        iface = txn.insert(self._idl.tables["Interface"])
        iface.name, iface.type, iface.options, iface.external_ids = name, kind, options, ids
        port.interfaces = [iface]
        br.addvalue("ports", port.uuid)

    def add_vm_port(self, name: str, iface_id: str, mac: str | None) -> None:
        """Add the VM's device ``name`` to our bridge the way os-vif does (``iface-id``,
        ``attached-mac``), marked as ours; nothing when an interface of that name is there."""

        def build(txn: Any) -> None:
            br = self._bridge()
            if br is None:
                raise OvsdbError(f"bridge {self.bridge} is gone")
            if any(i.name == name for p in br.ports for i in p.interfaces):
                return
            ids = {"iface-id": iface_id, "iface-status": "active", OWNED: "1"}
            if mac is not None:
                ids["attached-mac"] = mac
            self._add_port(txn, br, name, ids, "", {})

        self._commit(build, f"port {name}")

    def del_port(self, name: str) -> None:
        """Remove port ``name`` from our bridge if l2pop added it (others' stay)."""

        def build(txn: Any) -> None:
            br = self._bridge()
            if br is None:
                return
            for port in br.ports:
                ours = any(i.external_ids.get(OWNED) == "1" for i in port.interfaces)
                if port.name == name and ours:
                    br.delvalue("ports", port.uuid)
                    port.delete()

        self._commit(build, f"port {name}")

    def set_network(self, vni: int, network_id: str | None) -> None:
        """Record (or with None forget) which network VNI ``vni`` is."""

        def build(txn: Any) -> None:
            br = self._bridge()
            if br is None:
                raise OvsdbError(f"bridge {self.bridge} is gone")
            key = f"{NET_KEY}{vni}"
            if network_id is None:
                if key in br.external_ids:
                    br.delkey("external_ids", key)
            elif br.external_ids.get(key) != network_id:
                br.setkey("external_ids", key, network_id)

        self._commit(build, f"network of vni {vni}")
