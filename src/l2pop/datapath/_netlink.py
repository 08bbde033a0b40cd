"""Raw rtnetlink for the linux datapath: struct-packed messages, batched sends, fast dumps.

Private to ``l2pop.datapath``. Everything that touches many entries goes through here:

* ``RtnlSocket.batch`` sends prepacked requests, ``CHUNK`` messages per ``send``, and asks
  for one ACK per chunk (on its last message). rtnetlink handles a datagram's messages one
  after the other inside ``send`` and answers every failure with an error carrying the
  failed message's sequence number, so each error maps back to the entry that caused it.
* ``RtnlSocket.dump`` hands each received buffer to a parser; ``FdbParser`` and
  ``NeighParser`` read the kernel's entries with ``struct`` at the offsets the kernel writes
  them (checked per message), and walk the attributes generically when the layout differs.
* Link messages (few) are parsed generically into ``Link``.

No pyroute2 objects: per message they cost ~75 us to build or parse, 25x what this costs.
"""

from __future__ import annotations

import errno
import os
import random
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
RTMGRP_LINK = 0x1

NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLM_F_CAPPED = 0x100  # in an error message: the request is not echoed
NLM_F_ACK_TLVS = 0x200  # in an error message: extended ack attributes follow
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000

AF_BRIDGE = 7
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
NTF_MASTER = 0x04
NDA_DST, NDA_LLADDR, NDA_IFINDEX = 1, 2, 8
IFF_UP = 0x1

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS = 1, 3, 10, 18, 20
IFLA_AF_SPEC, IFLA_EXT_MASK = 26, 29
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_DATA = 1, 2, 5
IFLA_INET6_ADDR_GEN_MODE = 8
IN6_ADDR_GEN_MODE_NONE = 1
IFLA_VXLAN_ID, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING = 1, 4, 7
IFLA_VXLAN_PROXY, IFLA_VXLAN_PORT = 11, 15
IFLA_BRPORT_LEARNING, IFLA_BRPORT_NEIGH_SUPPRESS = 8, 32
RTEXT_FILTER_SKIP_STATS = 1 << 3

#: messages per ``send``: ~50 KB of FDB requests, well inside the socket buffers below.
CHUNK = 1000
SOCKET_BUFFER = 16 << 20
RECV_SIZE = 1 << 17

HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
HDR3 = struct.Struct("=IHH")  # len, type, flags
NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
NDMSG4 = struct.Struct("=BxxxiHB")  # the same without the type (parsers)
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
NLA = struct.Struct("=HH")
ERR = struct.Struct("=i")
U32 = struct.Struct("=I")
ZERO_MAC = bytes(6)

#: attribute headers as the kernel writes them (len, type), for the fast parse paths
_LLADDR_HDR = NLA.pack(10, NDA_LLADDR)
_DST4_HDR = NLA.pack(8, NDA_DST)
_DST6_HDR = NLA.pack(20, NDA_DST)


class NetlinkError(OSError):
    """The kernel refused a request: ``errno`` as usual, ``strerror`` with its extended ack."""


def nla(atype: int, data: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = 4 + len(data)
    return NLA.pack(length, atype) + data + b"\0" * (-length % 4)


def nla_u8(atype: int, value: int) -> bytes:
    return nla(atype, bytes((value,)))


def nla_u32(atype: int, value: int) -> bytes:
    return nla(atype, U32.pack(value))


def nla_str(atype: int, value: str) -> bytes:
    return nla(atype, value.encode() + b"\0")


def nla_nested(atype: int, *parts: bytes) -> bytes:
    return nla(atype | NLA_F_NESTED, b"".join(parts))


def attrs(buf: bytes, off: int, end: int) -> dict[int, bytes]:
    """The attributes in ``buf[off:end]`` by type (flags masked off; the last one wins)."""
    out: dict[int, bytes] = {}
    while off + 4 <= end:
        length, atype = NLA.unpack_from(buf, off)
        if length < 4:
            break
        out[atype & 0x3FFF] = buf[off + 4 : off + length]
        off += (length + 3) & ~3
    return out


def ip_text(raw: bytes) -> str:
    """An address as the model writes it (``ipaddress``'s ``compressed`` form)."""
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    text = socket.inet_ntop(socket.AF_INET6, raw)
    if "." in text:  # inet_ntop writes v4-mapped tails dotted; ipaddress does not
        import ipaddress

        text = ipaddress.IPv6Address(raw).compressed
    return text


def ip_bytes(text: str) -> tuple[int, bytes]:
    """(address family, packed address) of an IPv4 or IPv6 address text."""
    if ":" in text:
        return socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text)
    return socket.AF_INET, socket.inet_pton(socket.AF_INET, text)


def mac_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _error_text(buf: bytes, off: int, end: int, flags: int) -> str:
    """The extended-ack message of an NLMSG_ERROR at ``off``, or ''."""
    if not flags & NLM_F_ACK_TLVS:
        return ""
    inner = off + 20
    tlv = inner + 16 if flags & NLM_F_CAPPED else inner + HDR.unpack_from(buf, inner)[0]
    msg = attrs(buf, tlv, end).get(NLMSGERR_ATTR_MSG, b"")
    return msg.rstrip(b"\0").decode(errors="replace")


def check_done(buf: bytes, off: int, end: int, mtype: int, flags: int) -> None:
    """Raise for an NLMSG_ERROR, or an NLMSG_DONE that reports a failed dump."""
    code = ERR.unpack_from(buf, off + 16)[0] if end - off >= 20 else 0
    if code < 0:
        text = _error_text(buf, off, end, flags) if mtype == NLMSG_ERROR else ""
        raise NetlinkError(-code, f"{os.strerror(-code)}{': ' + text if text else ''}")


#: a request for ``batch``: (message type, flags other than REQUEST/ACK, payload)
Request = tuple[int, int, bytes]


class RtnlSocket:
    """One NETLINK_ROUTE socket. Not thread-safe: the datapath serialises its use."""

    def __init__(self, groups: int = 0) -> None:
        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE
        )
        try:
            for force, plain in (
                (SO_SNDBUFFORCE, socket.SO_SNDBUF),
                (SO_RCVBUFFORCE, socket.SO_RCVBUF),
            ):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
                except PermissionError:
                    sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)
            sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            sock.bind((0, groups))
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._seq = random.randrange(1, 1 << 30)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def recv(self) -> bytes:
        return self.sock.recv(RECV_SIZE)

    def _take_seq(self, count: int) -> int:
        if self._seq + count >= 1 << 32:
            self._seq = 1
        first = self._seq
        self._seq += count
        return first

    def batch(self, requests: Sequence[Request]) -> list[tuple[int, int, str]]:
        """Send ``requests``; return the failures as (index into requests, errno, text).

        Every request is handled even when an earlier one fails. Raises ``OSError`` only when
        the socket itself fails (then the outcome of the chunk in flight is unknown).
        """
        failures: list[tuple[int, int, str]] = []
        pack = HDR.pack
        for start in range(0, len(requests), CHUNK):
            part = requests[start : start + CHUNK]
            first = self._take_seq(len(part))
            last = first + len(part) - 1
            out: list[bytes] = []
            for seq, (mtype, flags, payload) in enumerate(part, first):
                more = NLM_F_REQUEST | (NLM_F_ACK if seq == last else 0)
                out.append(pack(16 + len(payload), mtype, flags | more, seq, 0))
                out.append(payload)
            try:
                self.sock.send(b"".join(out))
                for seq, code, text in self._acks(first, last):
                    failures.append((start + seq - first, code, text))
            except BaseException:
                self.drain()
                raise
        return failures

    def _acks(self, first: int, last: int) -> Iterable[tuple[int, int, str]]:
        """Errors for sequence numbers first..last, until the ACK of ``last`` arrives."""
        while True:
            buf = self.recv()
            off, size = 0, len(buf)
            while off + 16 <= size:
                length, mtype, flags, seq, _ = HDR.unpack_from(buf, off)
                if mtype == NLMSG_ERROR and first <= seq <= last:
                    code = -ERR.unpack_from(buf, off + 16)[0]
                    if code:
                        yield seq, code, _error_text(buf, off, off + length, flags)
                    if seq == last:
                        return
                off += (length + 3) & ~3

    def request(self, mtype: int, flags: int, payload: bytes) -> list[bytes]:
        """One request, acknowledged; returns the reply messages (whole, with headers).

        Raises ``NetlinkError`` when the kernel refuses it.
        """
        seq = self._take_seq(1)
        msg = HDR.pack(16 + len(payload), mtype, flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0)
        replies: list[bytes] = []
        try:
            self.sock.send(msg + payload)
            while True:
                buf = self.recv()
                off, size = 0, len(buf)
                while off + 16 <= size:
                    length, rtype, rflags, rseq, _ = HDR.unpack_from(buf, off)
                    if rseq == seq:
                        if rtype == NLMSG_ERROR:
                            check_done(buf, off, off + length, rtype, rflags)
                            return replies
                        replies.append(buf[off : off + length])
                    off += (length + 3) & ~3
        except NetlinkError:
            raise
        except BaseException:
            self.drain()
            raise

    def dump(self, mtype: int, payload: bytes, parse: Callable[[bytes], bool]) -> None:
        """A dump request; ``parse(buffer)`` is given each received buffer (whole messages)
        and returns True once it has seen NLMSG_DONE (it raises on NLMSG_ERROR)."""
        seq = self._take_seq(1)
        msg = HDR.pack(16 + len(payload), mtype, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
        try:
            self.sock.send(msg + payload)
            while not parse(self.recv()):
                pass
        except BaseException:
            self.drain()
            raise

    def drain(self) -> None:
        """Read and drop whatever is pending (after an interrupted exchange)."""
        try:
            while self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ENOBUFS):
                raise


# -- entries: requests ------------------------------------------------------------------


def fdb_payload(ifindex: int, state: int, flags: int, mac: bytes, dst: bytes | None) -> bytes:
    """An AF_BRIDGE ndmsg + NDA_LLADDR (+ NDA_DST): an FDB entry of device ``ifindex``."""
    body = NDMSG.pack(AF_BRIDGE, ifindex, state, flags, 0) + _LLADDR_HDR + mac + b"\0\0"
    if dst is not None:
        body += nla(NDA_DST, dst)
    return body


def neigh_payload(family: int, ifindex: int, dst: bytes, mac: bytes | None) -> bytes:
    """A permanent neighbour entry (or, without ``mac``, the key of one)."""
    body = NDMSG.pack(family, ifindex, NUD_PERMANENT, 0, 0) + nla(NDA_DST, dst)
    if mac is not None:
        body += _LLADDR_HDR + mac + b"\0\0"
    return body


# -- entries: dump parsers -----------------------------------------------------------------


@dataclass(slots=True)
class FdbTable:
    """What one vxlan device holds: its own (``self``) entries and the bridge's on it."""

    unicast: dict[str, str] = field(default_factory=dict)  # mac -> first dst
    flood: set[str] = field(default_factory=set)  # dsts of the all-zeros entry
    static: set[str] = field(default_factory=set)  # macs of bridge ``master static`` entries


class FdbParser:
    """Parses an AF_BRIDGE neighbour dump into ``tables`` (ifindex -> FdbTable); entries of
    other devices are skipped after reading their header. Only permanent ``self`` entries
    and ``static`` bridge entries (state NOARP alone; the bridge dumps its entries without
    NTF_MASTER, naming the bridge in NDA_MASTER) are recorded."""

    def __init__(self, tables: dict[int, FdbTable]) -> None:
        self.tables = tables
        self.interrupted = False
        self._ips: dict[bytes, str] = {}

    def __call__(self, buf: bytes) -> bool:
        tables, ips = self.tables, self._ips
        off, size = 0, len(buf)
        while off + 16 <= size:
            length, mtype, flags = HDR3.unpack_from(buf, off)
            end = off + length
            if mtype == RTM_NEWNEIGH:
                _, ifindex, state, nflags = NDMSG4.unpack_from(buf, off + 16)
                table = tables.get(ifindex)
                if table is not None:
                    if flags & NLM_F_DUMP_INTR:
                        self.interrupted = True
                    if nflags & NTF_SELF and state & NUD_PERMANENT:
                        if (
                            buf[off + 28 : off + 32] == _LLADDR_HDR
                            and buf[off + 40 : off + 44] == _DST4_HDR
                        ):
                            mac, raw = buf[off + 32 : off + 38], buf[off + 44 : off + 48]
                        else:
                            found = attrs(buf, off + 28, end)
                            mac, raw = found.get(NDA_LLADDR, b""), found.get(NDA_DST, b"")
                        if len(mac) == 6 and raw:
                            ip = ips.get(raw)
                            if ip is None:
                                ip = ips[raw] = ip_text(raw)
                            if mac == ZERO_MAC:
                                table.flood.add(ip)
                            else:
                                table.unicast.setdefault(mac.hex(":"), ip)
                    elif state == NUD_NOARP and not nflags & NTF_SELF:  # bridge "static"
                        if buf[off + 28 : off + 32] == _LLADDR_HDR:
                            mac = buf[off + 32 : off + 38]
                        else:
                            mac = attrs(buf, off + 28, end).get(NDA_LLADDR, b"")
                        if len(mac) == 6:
                            table.static.add(mac.hex(":"))
            elif mtype in (NLMSG_DONE, NLMSG_ERROR):
                check_done(buf, off, end, mtype, flags)
                return True
            off += (length + 3) & ~3
        return False


class NeighParser:
    """Parses a neighbour dump into ``tables`` (ifindex -> {ip: mac}); only permanent
    entries with a link-layer address of the devices in ``tables`` are recorded."""

    def __init__(self, tables: dict[int, dict[str, str]]) -> None:
        self.tables = tables
        self.interrupted = False

    def __call__(self, buf: bytes) -> bool:
        tables = self.tables
        inet4, inet6 = socket.AF_INET, socket.AF_INET6
        ntop = socket.inet_ntop
        off, size = 0, len(buf)
        while off + 16 <= size:
            length, mtype, flags = HDR3.unpack_from(buf, off)
            end = off + length
            if mtype == RTM_NEWNEIGH:
                family, ifindex, state, _ = NDMSG4.unpack_from(buf, off + 16)
                table = tables.get(ifindex)
                if table is not None and state & NUD_PERMANENT:
                    if flags & NLM_F_DUMP_INTR:
                        self.interrupted = True
                    head = buf[off + 28 : off + 32]
                    if (
                        family == inet4
                        and head == _DST4_HDR
                        and buf[off + 36 : off + 40] == _LLADDR_HDR
                    ):
                        table[ntop(inet4, buf[off + 32 : off + 36])] = buf[off + 40 : off + 46].hex(
                            ":"
                        )
                    elif (
                        family == inet6
                        and head == _DST6_HDR
                        and buf[off + 48 : off + 52] == _LLADDR_HDR
                    ):
                        text = ntop(inet6, buf[off + 32 : off + 48])
                        if "." in text:
                            text = ip_text(buf[off + 32 : off + 48])
                        table[text] = buf[off + 52 : off + 58].hex(":")
                    else:
                        found = attrs(buf, off + 28, end)
                        mac, raw = found.get(NDA_LLADDR, b""), found.get(NDA_DST, b"")
                        if len(mac) == 6 and raw:
                            table[ip_text(raw)] = mac.hex(":")
            elif mtype in (NLMSG_DONE, NLMSG_ERROR):
                check_done(buf, off, end, mtype, flags)
                return True
            off += (length + 3) & ~3
        return False


def fdb_dump_request(port: int = 0) -> bytes:
    """An AF_BRIDGE FDB dump, of one bridge port (or vxlan device) or of every device.

    The ifinfomsg form: the kernel reads ``ifi_index`` as the port to filter on.
    """
    return IFINFOMSG.pack(AF_BRIDGE, 0, port, 0, 0)


def neigh_dump_request(ifindex: int = 0) -> bytes:
    """An IPv4+IPv6 neighbour dump, of one device (NDA_IFINDEX filter) or of all."""
    body = NDMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    return body + nla_u32(NDA_IFINDEX, ifindex) if ifindex else body


# -- links ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Link:
    """What the datapath reads of a network device."""

    index: int
    name: str
    up: bool
    alias: str | None = None
    master: int = 0
    kind: str = ""
    vxlan: dict[int, bytes] = field(default_factory=dict)  # IFLA_VXLAN_* -> raw value
    brport: dict[int, bytes] = field(default_factory=dict)  # IFLA_BRPORT_* -> raw value


def parse_link(buf: bytes, off: int, end: int) -> Link:
    """An RTM_NEWLINK message at ``off`` (the whole message, header included)."""
    _, _, index, ifflags, _ = IFINFOMSG.unpack_from(buf, off + 16)
    top = attrs(buf, off + 32, end)
    alias = top.get(IFLA_IFALIAS)
    link = Link(
        index=index,
        name=top.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(errors="replace"),
        up=bool(ifflags & IFF_UP),
        alias=alias.rstrip(b"\0").decode(errors="replace") if alias else None,
        master=U32.unpack(top[IFLA_MASTER])[0] if IFLA_MASTER in top else 0,
    )
    info = top.get(IFLA_LINKINFO)
    if info:
        nested = attrs(info, 0, len(info))
        link.kind = nested.get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode(errors="replace")
        if link.kind == "vxlan" and IFLA_INFO_DATA in nested:
            data = nested[IFLA_INFO_DATA]
            link.vxlan = attrs(data, 0, len(data))
        if IFLA_INFO_SLAVE_DATA in nested:
            data = nested[IFLA_INFO_SLAVE_DATA]
            link.brport = attrs(data, 0, len(data))
    return link


class LinkParser:
    """Collects every link of an RTM_GETLINK dump into ``links``."""

    def __init__(self) -> None:
        self.links: list[Link] = []

    def __call__(self, buf: bytes) -> bool:
        off, size = 0, len(buf)
        while off + 16 <= size:
            length, mtype, flags = HDR3.unpack_from(buf, off)
            if mtype == RTM_NEWLINK:
                self.links.append(parse_link(buf, off, off + length))
            elif mtype in (NLMSG_DONE, NLMSG_ERROR):
                check_done(buf, off, off + length, mtype, flags)
                return True
            off += (length + 3) & ~3
        return False


def link_request(index: int = 0, flags: int = 0, change: int = 0, *parts: bytes) -> bytes:
    """An ifinfomsg + attributes (for RTM_NEWLINK/DELLINK/GETLINK)."""
    return IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change) + b"".join(parts)


def link_dump_request() -> bytes:
    return link_request(0, 0, 0, nla_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS))


def fdb_get_request(ifindex: int, mac: bytes) -> bytes:
    """A single-entry get of a vxlan device's own FDB entry for ``mac``."""
    return NDMSG.pack(AF_BRIDGE, ifindex, 0, NTF_SELF, 0) + _LLADDR_HDR + mac + b"\0\0"


def neigh_get_request(family: int, ifindex: int, dst: bytes) -> bytes:
    """A single-entry get of the neighbour ``dst`` on device ``ifindex``."""
    return NDMSG.pack(family, ifindex, 0, 0, 0) + nla(NDA_DST, dst)
