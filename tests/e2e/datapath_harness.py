"""Helpers for the datapath tests: a rig per implementation, namespaces, kernel monitors.

``IMPLEMENTATIONS`` is the one list of datapaths the contract suite runs
(``test_datapath_contract.py``): a new implementation joins with one ``pytest.param`` there,
naming its ``Rig`` subclass. A rig is the datapath plus what the contract needs beside the
``Datapath`` interface: a VM's device coming and going (``plug``/``unplug``: the datapath's
own ``PortPlugging`` when it has one, else what a hypervisor would do) and reading back
which network a port is wired to.

Every namespace is made with a per-run prefix and deleted by name at teardown (the
``throwaway`` context), whatever the test did. Addresses: VTEPs in 192.0.2.0/24, VM
addresses in 198.19.0.0/16 and 2001:db8::/32.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from l2pop.datapath.abc import Datapath, port_plugging
from l2pop.datapath.memory import MemoryDatapath
from l2pop.testbed import iproute
from l2pop.testbed.tables import KernelMonitor

RUN_PREFIX = "l2pt"
VTEP = "192.0.2.1"
ROOT_REASON = "needs root (network namespaces, bridge and vxlan devices); run the e2e tests as root"


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip(ROOT_REASON)


class Rig:
    """A datapath under test; ``netns`` is its namespace (None for one without)."""

    def __init__(self, datapath: Datapath, netns: str | None = None) -> None:
        self.datapath = datapath
        self.netns = netns

    def plug(self, port_id: str) -> None:
        """The port's device appears, as when its VM starts (idempotent)."""
        plugging = port_plugging(self.datapath)
        assert plugging is not None, f"{self.datapath.name}: the rig must make devices itself"
        plugging.plug(port_id)

    def unplug(self, port_id: str) -> None:
        """The port's device goes, as when its VM stops (idempotent)."""
        plugging = port_plugging(self.datapath)
        assert plugging is not None, f"{self.datapath.name}: the rig must remove devices itself"
        plugging.unplug(port_id)

    def wired_to(self, port_id: str) -> str | None:
        """The network whose bridge the port's device is attached to, up; None when it is
        on none, down, or absent."""
        raise NotImplementedError


class MemoryRig(Rig):
    def __init__(self, stack: ExitStack) -> None:
        # a device only between plug and unplug, as on a real host (abc: local ports)
        super().__init__(MemoryDatapath(autoplug=False))

    def wired_to(self, port_id: str) -> str | None:
        assert isinstance(self.datapath, MemoryDatapath)
        return self.datapath.wired.get(port_id)


class LinuxRig(Rig):
    """The linux datapath in a throwaway namespace; a port's device is a real ``tap`` made
    with iproute2 (the hypervisor's part: the datapath never makes taps)."""

    def __init__(self, stack: ExitStack) -> None:
        need_root()
        from l2pop.datapath.linux import LinuxDatapath

        netns = stack.enter_context(iproute.throwaway(RUN_PREFIX))
        datapath = LinuxDatapath(VTEP, netns=netns)
        stack.callback(datapath.close)
        super().__init__(datapath, netns)
        self.tap_name = datapath.tap_name
        self._macs: dict[str, str] = {}

    @property
    def ns(self) -> str:
        assert self.netns is not None
        return self.netns

    def plug(self, port_id: str) -> None:
        tap = self.tap_name(port_id)
        if self._link(tap) is not None:
            return
        ip(self.ns, "tuntap", "add", "dev", tap, "mode", "tap")
        # A MAC below any bridge's: a bridge that followed its ports' lowest MAC would change
        # address when the tap joins, and the kernel would flush its neighbour table. Not
        # ending in 01, so no remote MAC of ``mac()`` shares it (the bridge's own entry for a
        # port's MAC would replace the static one steering that MAC to vxlan-V).
        mac = self._macs.setdefault(port_id, f"02:00:00:00:00:{len(self._macs) + 0x10:02x}")
        ip(self.ns, "link", "set", "dev", tap, "address", mac)

    def unplug(self, port_id: str) -> None:
        tap = self.tap_name(port_id)
        if self._link(tap) is not None:
            ip(self.ns, "link", "del", "dev", tap)

    def wired_to(self, port_id: str) -> str | None:
        tap = self._link(self.tap_name(port_id))
        if tap is None or "master" not in tap or "UP" not in tap["flags"]:
            return None
        bridge = self._link(tap["master"])
        assert bridge is not None
        alias: str | None = bridge.get("ifalias")
        return alias

    def _link(self, name: str) -> dict[str, Any] | None:
        """``ip -j link show`` of one device, None when it does not exist."""
        out = ip(self.ns, "-j", "link", "show", "dev", name, check=False)
        found = json.loads(out or "[]")
        return found[0] if found else None


class OvsRig(Rig):
    """The ovs datapath on a private Open vSwitch (userspace datapath) in a throwaway
    namespace; a port's device is the host end ``tap...`` of a veth pair, as a hypervisor
    would make it (the datapath puts it on its bridge)."""

    def __init__(self, stack: ExitStack) -> None:
        need_root()
        from l2pop.testbed import ovs

        if not ovs.available():
            pytest.skip(f"Open vSwitch missing: {', '.join(ovs.missing())}")
        from l2pop.datapath.ovs import OvsDatapath

        netns = stack.enter_context(iproute.throwaway(RUN_PREFIX))
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="l2pt-ovs-")))
        self.ovs = stack.enter_context(ovs.OvsInstance(netns, workdir))
        datapath = OvsDatapath(
            VTEP,
            db=f"unix:{self.ovs.db_sock}",
            rundir=str(workdir),
            datapath_type="netdev",
            netns=netns,
        )
        stack.callback(datapath.close)
        super().__init__(datapath, netns)
        self.tap_name = datapath.tap_name
        self.bridge = datapath.bridge

    def plug(self, port_id: str) -> None:
        tap = self.tap_name(port_id)
        assert self.netns is not None
        if ip(self.netns, "link", "show", "dev", tap, check=False):
            return
        peer = "vp" + tap[3:]
        ip(self.netns, "link", "add", tap, "type", "veth", "peer", "name", peer)
        ip(self.netns, "link", "set", peer, "up")

    def unplug(self, port_id: str) -> None:
        tap = self.tap_name(port_id)
        assert self.netns is not None
        if ip(self.netns, "link", "show", "dev", tap, check=False):
            ip(self.netns, "link", "del", "dev", tap)

    def wired_to(self, port_id: str) -> str | None:
        """The network whose classify flow takes the port's traffic in, while its device is
        on the bridge with an ofport and exists."""
        tap = self.tap_name(port_id)
        assert self.netns is not None
        if not ip(self.netns, "link", "show", "dev", tap, check=False):
            return None
        ports = self.ovs.vsctl("list-ports", self.bridge).split()
        if tap not in ports:
            return None
        ofport = int(self.ovs.vsctl("get", "interface", tap, "ofport").strip())
        if ofport <= 0:
            return None
        flows = self.ovs.ofctl(self.bridge, "dump-flows", f"table=0,in_port={ofport}")
        found = re.search(r"set_field:0x([0-9a-f]+)->metadata", flows) or re.search(
            r"load:0x([0-9a-f]+)->OXM_OF_METADATA", flows
        )
        if found is None:
            return None
        vni = int(found.group(1), 16)
        ids = self.ovs.vsctl("get", "bridge", self.bridge, "external_ids")
        named = re.search(rf'"?l2pop-net-{vni}"?="?([^",}}]+)"?', ids)
        return named.group(1) if named else None


#: every ``Datapath`` implementation: the contract suite's fixture parameters, each a
#: ``Rig`` class called with the ExitStack that tears it down
IMPLEMENTATIONS = [
    pytest.param(MemoryRig, id="memory"),
    pytest.param(LinuxRig, id="linux", marks=pytest.mark.root),
    pytest.param(OvsRig, id="ovs", marks=pytest.mark.root),
]


def mac(i: int, prefix: int = 0x02) -> str:
    return ":".join(f"{b:02x}" for b in (prefix, 0, (i >> 16) & 255, (i >> 8) & 255, i & 255, 1))


def vm_ip(i: int) -> str:
    """Even i: IPv4 in 198.19.0.0/16; odd i: IPv6 in 2001:db8::/32."""
    return f"198.19.{(i // 250) % 250}.{i % 250 + 1}" if i % 2 == 0 else f"2001:db8::{i:x}"


def ip(netns: str, *args: str, check: bool = True) -> str:
    return iproute.ip(netns, *args, check=check)


def bridge(netns: str, *args: str) -> str:
    return iproute.bridge(netns, *args)


def foreign_devices(netns: str) -> None:
    """A bridge, a port and entries made by hand, without the datapath's prefixes."""
    ip(netns, "link", "add", "fbr0", "type", "bridge")
    ip(netns, "link", "add", "fv0", "type", "veth", "peer", "name", "fv1")
    ip(netns, "link", "set", "fv0", "master", "fbr0", "up")
    ip(netns, "link", "set", "fbr0", "up")
    bridge(netns, "fdb", "add", "02:ff:00:00:00:01", "dev", "fv0", "master", "static")
    ip(netns, "neigh", "add", "198.19.250.1", "lladdr", "02:ff:00:00:00:01", "dev", "fbr0",
       "nud", "permanent")  # fmt: skip


def kernel_monitor(netns: str) -> KernelMonitor:
    """The testbed's netlink monitor, with markers on the foreign port ``fv0`` (needs
    ``foreign_devices``)."""
    return KernelMonitor(netns, "fv0")


@contextmanager
def vm(netns_host: str, tap: str, address: str, address6: str) -> Iterator[str]:
    """A 'VM': a namespace whose eth0 is the peer of ``tap`` in ``netns_host``."""
    with iproute.throwaway(RUN_PREFIX + "vm") as netns:
        ip(netns_host, "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", netns)
        ip(netns, "link", "set", "eth0", "address", "02:00:00:00:00:aa", "up")
        ip(netns, "addr", "add", address, "dev", "eth0")
        ip(netns, "addr", "add", address6, "dev", "eth0", "nodad")
        yield netns


def resolves(vm_ns: str, address: str, timeout: float) -> str | None:
    """Send one UDP datagram from the VM to ``address``; the MAC it resolved, if any."""
    family = "AF_INET6" if ":" in address else "AF_INET"
    code = (
        f"import socket; s = socket.socket(socket.{family}, socket.SOCK_DGRAM); "
        f"s.sendto(b'x', ('{address}', 9))"
    )
    iproute.in_netns(vm_ns, "python3", "-c", code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = ip(vm_ns, "neigh", "show", address).split()
        if "lladdr" in out:
            return out[out.index("lladdr") + 1]
        time.sleep(0.02)
    return None
