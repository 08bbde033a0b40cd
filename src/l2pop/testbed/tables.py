"""Reading a host's overlay state back from its kernel, and watching it change.

``kernel_tables`` uses the iproute2 tools' JSON output (``ip -j -d link``, ``bridge -j fdb``,
``ip -j neigh``), independent of the datapath's own netlink code, and only looks at the
project's devices (a bridge and a VXLAN device per VNI with the given prefixes).

``KernelMonitor`` runs ``ip monitor neigh`` and ``bridge monitor fdb`` in a host's namespace.
It brackets the watched interval with marker entries on a hand-made bridge port, so no event
at either end is missed (the monitors subscribe asynchronously).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from l2pop.testbed.iproute import bridge, ip, ip_batch

ZERO_MAC = "00:00:00:00:00:00"
#: the hand-made devices of ``add_foreign`` (outside every project prefix)
FOREIGN_BRIDGE, FOREIGN_PORT, FOREIGN_PEER = "hand0", "handp0", "handp1"
FOREIGN_MAC, FOREIGN_IP = "02:ee:00:00:00:01", "198.19.254.1"


@dataclass
class KernelNetwork:
    """One network's devices and entries as the kernel holds them."""

    vni: int
    bridge: str
    vxlan: str
    local: str | None = None
    mode: str = "off"  # neigh_suppress | proxy | off | learning (flood-and-learn)
    flood: list[str] = field(default_factory=list)  # all-zeros entries: VTEPs
    fdb: dict[str, str] = field(default_factory=dict)  # permanent self entries: MAC -> VTEP
    learned: dict[str, str] = field(default_factory=dict)  # learned entries: MAC -> VTEP
    static: list[str] = field(default_factory=list)  # bridge `master static` MACs on vxlan
    neigh: dict[str, str] = field(default_factory=dict)  # permanent: IP -> MAC
    ports: list[str] = field(default_factory=list)  # other bridge ports (taps)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _vni(name: str, prefix: str) -> int | None:
    rest = name[len(prefix) :] if name.startswith(prefix) else ""
    return int(rest) if rest.isdigit() else None


def kernel_tables(
    netns: str, bridge_prefix: str = "brvx-", vxlan_prefix: str = "vxlan-"
) -> dict[int, KernelNetwork]:
    """VNI -> what ``netns``'s kernel holds for that network (devices with our prefixes)."""
    links = json.loads(ip(netns, "-j", "-d", "link", "show") or "[]")
    nets: dict[int, KernelNetwork] = {}
    by_name = {link["ifname"]: link for link in links}
    for link in links:
        vni = _vni(link["ifname"], vxlan_prefix)
        info = link.get("linkinfo", {})
        if vni is None or info.get("info_kind") != "vxlan":
            continue
        data, port = info.get("info_data", {}), info.get("info_slave_data", {})
        net = KernelNetwork(vni, link.get("master", ""), link["ifname"], data.get("local"))
        if data.get("learning"):
            net.mode = "learning"
        elif data.get("proxy"):
            net.mode = "proxy"
        elif port.get("neigh_suppress"):
            net.mode = "neigh_suppress"
        nets[vni] = net
    by_bridge = {n.bridge: n for n in nets.values() if n.bridge}
    for name, link in by_name.items():
        master = link.get("master")
        if master in by_bridge and name != by_bridge[master].vxlan:
            by_bridge[master].ports.append(name)
    by_vxlan = {n.vxlan: n for n in nets.values()}
    for entry in json.loads(bridge(netns, "-j", "fdb", "show") or "[]"):
        on = by_vxlan.get(entry.get("ifname", ""))
        if on is None:
            continue
        mac, dst = entry.get("mac", ""), entry.get("dst")
        if entry.get("master") and entry.get("state") == "static":
            on.static.append(mac)
        elif dst is not None and mac == ZERO_MAC:
            on.flood.append(dst)
        elif dst is not None and entry.get("state") == "permanent":
            on.fdb[mac] = dst
        elif dst is not None:
            on.learned[mac] = dst
    neigh_dev = {(n.vxlan if n.mode == "proxy" else n.bridge): n for n in nets.values()}
    for entry in json.loads(ip(netns, "-j", "neigh", "show") or "[]"):
        holder = neigh_dev.get(entry.get("dev", ""))
        if holder is not None and "PERMANENT" in entry.get("state", []) and "lladdr" in entry:
            holder.neigh[entry["dst"]] = entry["lladdr"]
    for net in nets.values():
        net.flood.sort()
        net.static.sort()
        net.ports.sort()
    return nets


def add_foreign(netns: str) -> None:
    """Hand-made devices and entries outside every project prefix: a bridge ``hand0`` with
    a veth port carrying a static FDB entry, and a permanent neighbour entry (idempotent)."""
    if FOREIGN_BRIDGE in ip(netns, "-br", "link", "show"):
        return
    ip_batch(
        netns,
        [
            f"link add {FOREIGN_BRIDGE} type bridge",
            f"link add {FOREIGN_PORT} type veth peer name {FOREIGN_PEER}",
            f"link set {FOREIGN_PORT} master {FOREIGN_BRIDGE} up",
            f"link set {FOREIGN_PEER} up",
            f"link set {FOREIGN_BRIDGE} up",
            f"neigh add {FOREIGN_IP} lladdr {FOREIGN_MAC} dev {FOREIGN_BRIDGE} nud permanent",
        ],
    )
    bridge(netns, "fdb", "add", FOREIGN_MAC, "dev", FOREIGN_PORT, "master", "static")


def foreign_state(netns: str) -> dict[str, bool]:
    """Whether each hand-made object of ``add_foreign`` is still there, unchanged."""
    links = ip(netns, "-br", "link", "show")
    fdb = bridge(netns, "fdb", "show", "dev", FOREIGN_PORT, check=False)
    neigh = ip(netns, "neigh", "show", "dev", FOREIGN_BRIDGE, check=False)
    return {
        "bridge": FOREIGN_BRIDGE in links,
        "port": FOREIGN_PORT in links,
        "fdb": FOREIGN_MAC in fdb and "static" in fdb,
        "neigh": FOREIGN_IP in neigh and FOREIGN_MAC in neigh,
    }


class KernelMonitor:
    """``ip monitor neigh`` + ``bridge monitor fdb`` in ``netns`` between ``__enter__`` and
    ``__exit__``. ``marker_port`` is a bridge port outside the project's prefixes (the
    testbed's hand-made ``hand0``) that carries the marker entries."""

    def __init__(self, netns: str, marker_port: str) -> None:
        self.netns = netns
        self.marker_port = marker_port
        self.lines: list[str] = []
        self._raw: list[list[str]] = [[], []]
        self._procs: list[subprocess.Popen[str]] = []
        self._n = 0
        self._start = [0, 0]

    def _marker(self, n: int, add: bool) -> str:
        mac = f"02:fe:00:00:{n >> 8:02x}:{n & 255:02x}"
        extra = ["master", "static"] if add else ["master"]
        bridge(self.netns, "fdb", "add" if add else "del", mac, "dev", self.marker_port, *extra)
        return mac

    def _seen(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(any(text in line for line in raw) for raw in self._raw):
                return True
            time.sleep(0.01)
        return False

    def __enter__(self) -> KernelMonitor:
        for i, tool in enumerate((["ip", "monitor", "neigh"], ["bridge", "monitor", "fdb"])):
            proc = subprocess.Popen(
                [tool[0], "-n", self.netns, *tool[1:]], stdout=subprocess.PIPE, text=True
            )
            self._procs.append(proc)
            threading.Thread(target=self._read, args=(proc, self._raw[i]), daemon=True).start()
        deadline = time.monotonic() + 10
        while True:
            self._n += 1
            marker = self._marker(self._n, True)
            self._marker(self._n, False)
            if self._seen(marker, 0.3):
                break
            if time.monotonic() > deadline:
                self._stop()
                raise RuntimeError(f"kernel monitors in {self.netns} never started")
        # everything after the first marker's deletion counts
        self._start = [len(raw) for raw in self._raw]
        return self

    @staticmethod
    def _read(proc: subprocess.Popen[str], sink: list[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.append(line.strip())

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self._n += 1
                marker = self._marker(self._n, True)
                self._marker(self._n, False)
                if not self._seen(marker, 10):
                    raise RuntimeError(f"kernel monitors in {self.netns} lost the end marker")
                for raw, start in zip(self._raw, self._start, strict=True):
                    end = next(i for i, line in enumerate(raw) if marker in line)
                    self.lines.extend(line for line in raw[start:end] if "02:fe:00:00" not in line)
        finally:
            self._stop()

    def _stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=5)

    def mentioning(self, *keys: str) -> list[str]:
        """Lines naming any of ``keys`` (a MAC, an IP, a VTEP) as a whole word."""
        return [line for line in self.lines if any(k in line.split() for k in keys)]

    def touched(self, *keys: str) -> list[str]:
        """Lines about the entries keyed by ``keys`` (an FDB entry's MAC, a neighbour
        entry's IP: the first word, or the word after ``Deleted``): added, changed or
        removed."""
        wanted = set(keys)
        out = []
        for line in self.lines:
            words = line.split()
            if not words:
                continue
            key = words[1] if len(words) > 1 and words[0] == "Deleted" else words[0]
            if key in wanted:
                out.append(line)
        return out

    def deleted(self, *keys: str) -> list[str]:
        """The ``Deleted`` lines among ``touched(keys)``."""
        return [line for line in self.touched(*keys) if line.startswith("Deleted")]
