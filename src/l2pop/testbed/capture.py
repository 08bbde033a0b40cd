"""Counting what crosses the underlay: tcpdump on the underlay bridge, pcap parsed here.

``tcpdump`` runs inside the underlay namespace on its bridge (the bridge is put in
promiscuous mode, so every frame forwarded between two hosts is seen once) and writes
tunnelled packets to a pcap file: VXLAN (UDP 4789) and GRE carrying Ethernet (IP protocol
47, protocol type 0x6558, the key as the VNI: what Open vSwitch's ``gre`` ports send).
``parse_pcap`` reads that file with ``struct`` and classifies each packet by its *inner*
frame:

* ``arp_broadcast``: an ARP frame sent to ff:ff:ff:ff:ff:ff (what L2 population removes);
* ``nd_multicast``: an IPv6 neighbour discovery message (ICMPv6 133-137) sent to a
  multicast MAC (33:33:...);
* ``bum``: any frame whose inner destination is broadcast or multicast (head-end
  replication sends one copy per destination VTEP).

Counts are per destination VTEP (the outer IPv4 destination), so "the non-member host
received nothing of network N" is ``count(dst=vtep, vni=N) == 0``.
"""

from __future__ import annotations

import ipaddress
import signal
import struct
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

VXLAN_PORT = 4789
IPPROTO_UDP, IPPROTO_GRE = 17, 47
ETH_P_IP, ETH_P_ARP, ETH_P_IPV6, ETH_P_8021Q = 0x0800, 0x0806, 0x86DD, 0x8100
ETH_P_TEB = 0x6558  # transparent Ethernet bridging: a GRE packet carrying a whole frame
GRE_CSUM, GRE_KEY, GRE_SEQ = 0x8000, 0x2000, 0x1000
ND_TYPES = range(133, 138)  # RS, RA, NS, NA, redirect
_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
LINKTYPE_ETHERNET = 1
BROADCAST = "ff:ff:ff:ff:ff:ff"


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


@dataclass(frozen=True, slots=True)
class VxlanPacket:
    """One tunnelled packet seen on the underlay and what its inner frame is (``encap``:
    ``vxlan``, or ``gre`` with ``vni`` its key)."""

    time: float
    src_vtep: str
    dst_vtep: str
    vni: int
    inner_src: str
    inner_dst: str
    ethertype: int
    arp_op: int | None = None
    arp_target: str | None = None
    icmp6_type: int | None = None
    nd_target: str | None = None
    encap: str = "vxlan"

    @property
    def bum(self) -> bool:
        """Broadcast or multicast inner destination (I/G bit set)."""
        return int(self.inner_dst[:2], 16) & 1 == 1

    @property
    def arp_broadcast(self) -> bool:
        return self.ethertype == ETH_P_ARP and self.inner_dst == BROADCAST

    @property
    def nd_multicast(self) -> bool:
        return (
            self.ethertype == ETH_P_IPV6
            and self.inner_dst.startswith("33:33:")
            and self.icmp6_type in ND_TYPES
        )

    def kind(self) -> str:
        if self.arp_broadcast:
            return "arp_broadcast"
        if self.nd_multicast:
            return "nd_multicast"
        if self.bum:
            return "bum"
        return "unicast"


def _inner(data: bytes, off: int) -> dict[str, object]:
    """Fields of the inner Ethernet frame starting at ``off`` (as far as captured)."""
    if len(data) < off + 14:
        return {"inner_dst": "00:00:00:00:00:00", "inner_src": "", "ethertype": 0}
    fields: dict[str, object] = {
        "inner_dst": _mac(data[off : off + 6]),
        "inner_src": _mac(data[off + 6 : off + 12]),
    }
    (etype,) = struct.unpack_from("!H", data, off + 12)
    off += 14
    if etype == ETH_P_8021Q and len(data) >= off + 4:
        (etype,) = struct.unpack_from("!H", data, off + 2)
        off += 4
    fields["ethertype"] = etype
    if etype == ETH_P_ARP and len(data) >= off + 28:
        fields["arp_op"] = struct.unpack_from("!H", data, off + 6)[0]
        fields["arp_target"] = str(ipaddress.IPv4Address(data[off + 24 : off + 28]))
    elif etype == ETH_P_IPV6 and len(data) >= off + 41 and data[off + 6] == 58:
        fields["icmp6_type"] = data[off + 40]
        if fields["icmp6_type"] in (135, 136) and len(data) >= off + 64:
            fields["nd_target"] = str(ipaddress.IPv6Address(data[off + 48 : off + 64]))
    return fields


def parse_packet(ts: float, frame: bytes) -> VxlanPacket | None:
    """The VXLAN or GRE packet in one captured Ethernet frame, or None if it is not one."""
    if len(frame) < 14:
        return None
    (etype,) = struct.unpack_from("!H", frame, 12)
    off = 14
    if etype == ETH_P_8021Q and len(frame) >= 18:
        (etype,) = struct.unpack_from("!H", frame, 16)
        off = 18
    if etype != ETH_P_IP or len(frame) < off + 20:
        return None
    ihl = (frame[off] & 0x0F) * 4
    src = str(ipaddress.IPv4Address(frame[off + 12 : off + 16]))
    dst = str(ipaddress.IPv4Address(frame[off + 16 : off + 20]))
    if frame[off + 9] == IPPROTO_GRE:
        return _gre(ts, frame, off + ihl, src, dst)
    if frame[off + 9] != IPPROTO_UDP or len(frame) < off + ihl + 16:
        return None
    udp = off + ihl
    (dport,) = struct.unpack_from("!H", frame, udp + 2)
    if dport != VXLAN_PORT:
        return None
    vx = udp + 8
    flags = frame[vx]
    if not flags & 0x08:  # the I flag: a valid VNI
        return None
    vni = int.from_bytes(frame[vx + 4 : vx + 7], "big")
    return VxlanPacket(ts, src, dst, vni, **_inner(frame, vx + 8))  # type: ignore[arg-type]


def _gre(ts: float, frame: bytes, gre: int, src: str, dst: str) -> VxlanPacket | None:
    """A GRE packet with a key carrying an Ethernet frame (RFC 2890; the optional checksum
    and sequence number words are skipped); None for any other GRE."""
    if len(frame) < gre + 4:
        return None
    flags, proto = struct.unpack_from("!HH", frame, gre)
    if proto != ETH_P_TEB or not flags & GRE_KEY:
        return None
    key = gre + 4 + (4 if flags & GRE_CSUM else 0)
    if len(frame) < key + 4:
        return None
    (vni,) = struct.unpack_from("!I", frame, key)
    inner = key + 4 + (4 if flags & GRE_SEQ else 0)
    return VxlanPacket(ts, src, dst, vni, **_inner(frame, inner), encap="gre")  # type: ignore[arg-type]


def parse_pcap(data: bytes) -> list[VxlanPacket]:
    """Every VXLAN and GRE packet of a pcap file's contents (Ethernet link type)."""
    if len(data) < 24:
        return []
    try:
        endian, scale = _PCAP_MAGIC[data[:4]]
    except KeyError:
        raise ValueError("not a pcap file") from None
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    if linktype != LINKTYPE_ETHERNET:
        raise ValueError(f"pcap link type {linktype} is not Ethernet")
    rec = struct.Struct(endian + "IIII")
    packets = []
    off = 24
    while off + rec.size <= len(data):
        sec, frac, incl, _orig = rec.unpack_from(data, off)
        off += rec.size
        frame = data[off : off + incl]
        off += incl
        packet = parse_packet(sec + frac * scale, frame)
        if packet is not None:
            packets.append(packet)
    return packets


@dataclass
class CaptureResult:
    """The tunnelled packets one capture saw, with counting helpers."""

    packets: list[VxlanPacket]

    def select(
        self, kind: str | None = None, *, dst: str | None = None, vni: int | None = None
    ) -> list[VxlanPacket]:
        """Packets of ``kind`` (``arp_broadcast``, ``nd_multicast``, ``bum`` = any
        broadcast/multicast, ``unicast``, None = all), optionally to ``dst`` / of ``vni``."""
        out = []
        for p in self.packets:
            if dst is not None and p.dst_vtep != dst:
                continue
            if vni is not None and p.vni != vni:
                continue
            if kind == "bum" and not p.bum:
                continue
            if kind in ("arp_broadcast", "nd_multicast", "unicast") and p.kind() != kind:
                continue
            out.append(p)
        return out

    def count(
        self, kind: str | None = None, *, dst: str | None = None, vni: int | None = None
    ) -> int:
        return len(self.select(kind, dst=dst, vni=vni))

    def per_destination(self, kind: str | None = None, *, vni: int | None = None) -> Counter[str]:
        return Counter(p.dst_vtep for p in self.select(kind, vni=vni))

    def summary(self) -> dict[str, int]:
        return {
            "vxlan": len(self.packets),  # every tunnelled packet (GRE ones too: the key stays)
            "arp_broadcast": self.count("arp_broadcast"),
            "nd_multicast": self.count("nd_multicast"),
            "bum": self.count("bum"),
            "unicast": self.count("unicast"),
        }


class Capture:
    """tcpdump of VXLAN and GRE packets on ``iface`` inside ``netns``, into ``path``.

    ``start()`` returns once tcpdump is listening; ``stop()`` lets in-flight packets land,
    stops tcpdump (by its pid) and parses the file.
    """

    def __init__(self, netns: str, iface: str, path: Path) -> None:
        self.netns = netns
        self.iface = iface
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None
        self.result: CaptureResult | None = None
        self._stderr: list[str] = []

    def start(self, timeout: float = 10.0) -> Capture:
        self.path.unlink(missing_ok=True)
        cmd = ["ip", "netns", "exec", self.netns, "tcpdump", "-i", self.iface, "-w"]
        cmd += [str(self.path), "-U", "--immediate-mode", "-n", "-s", "262", "-Z", "root"]
        cmd += ["udp", "dst", "port", str(VXLAN_PORT), "or", "ip", "proto", str(IPPROTO_GRE)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        listening = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for raw in self.proc.stderr:
                line = raw.decode(errors="replace").strip()
                self._stderr.append(line)
                if "listening on" in line:
                    listening.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not listening.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"tcpdump did not start: {' | '.join(self._stderr)}")
        return self

    def stop(self, settle: float = 0.3) -> CaptureResult:
        if self.proc is None:
            raise RuntimeError("capture was not started")
        time.sleep(settle)  # packets still in flight or in tcpdump's ring
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        data = self.path.read_bytes() if self.path.exists() else b""
        self.result = CaptureResult(parse_pcap(data))
        return self.result

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.result is None and exc[0] is None:
            self.stop()
        else:
            self.kill()
