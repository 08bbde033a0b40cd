"""OpenFlow 1.5 flow and group records rendered as ``ovs-ofctl -O OpenFlow15 --no-stats``
prints them: the slow, general half of ``_ofwire``'s reader.

Contract: ``flow_line(record)`` and ``group_line(record)`` take one ``ofp_flow_desc`` /
``ofp_group_desc`` record (its own length first) and return one line, byte for byte what
ovs-ofctl (Open vSwitch 3.x) prints for every flow and group shape ``_pipeline`` writes, so
``_pipeline.parse_flows``/``parse_groups`` read it exactly as they read ovs-ofctl's text.
Whatever is not recognised (an OXM field, an action, an instruction, a flag, a group type
outside that set) is rendered as a ``?``-marker (``?oxm:0x80001c02``, ``?action:27``...):
never equal to anything l2pop writes, never matching an entry pattern, so such a flow reads
as damaged or missing, never as intact. A record too short for its own fields raises
``ValueError`` (the framing is broken: the reader gives up on the whole reply).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

#: OXM classes
NXM0, NXM1, BASIC, ERICSSON, EXPERIMENTER = 0x0000, 0x0001, 0x8000, 0x1000, 0xFFFF

Fmt = Callable[[bytes], str]


def _hex(value: bytes) -> str:
    n = int.from_bytes(value, "big")
    return f"{n:#x}" if n else "0"


def _dec(value: bytes) -> str:
    return str(int.from_bytes(value, "big"))


def _mac(value: bytes) -> str:
    return value.hex(":")


def _ip4(value: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, value)


def _ip6(value: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, value)


#: port numbers ovs-ofctl prints by name (OpenFlow 1.1+ 32-bit form)
PORT_NAMES = {
    0xFFFFFFF8: "IN_PORT",
    0xFFFFFFF9: "TABLE",
    0xFFFFFFFA: "NORMAL",
    0xFFFFFFFB: "FLOOD",
    0xFFFFFFFC: "ALL",
    0xFFFFFFFD: "CONTROLLER",
    0xFFFFFFFE: "LOCAL",
}
OFPP_MAX = 0xFF00


def _port(value: bytes) -> str:
    n = int.from_bytes(value, "big")
    if n < OFPP_MAX:
        return str(n)
    return PORT_NAMES.get(n, f"?port:{n:#x}")


class Field:
    """One OXM/NXM field: its names in a match, in ``set_field`` and in ``move``, its value
    format and, for matches, the position ovs-ofctl prints it in."""

    __slots__ = ("fmt", "match", "move", "order", "set")

    def __init__(self, match: str, set_: str, move: str, fmt: Fmt, order: int) -> None:
        self.match, self.set, self.move, self.fmt, self.order = match, set_, move, fmt, order


# (class, field) -> Field; ``order``: ovs-ofctl's match_format order (tunnel, metadata,
# in_port, Ethernet, L3 addresses, L3/L4 others, ARP, ICMP, ND)
FIELDS: dict[tuple[int, int], Field] = {
    (BASIC, 38): Field("tun_id", "tun_id", "NXM_NX_TUN_ID", _hex, 10),
    (NXM1, 16): Field("tun_id", "tun_id", "NXM_NX_TUN_ID", _hex, 10),
    (NXM1, 31): Field("tun_src", "tun_src", "NXM_NX_TUN_IPV4_SRC", _ip4, 11),
    (NXM1, 32): Field("tun_dst", "tun_dst", "NXM_NX_TUN_IPV4_DST", _ip4, 12),
    (BASIC, 2): Field("metadata", "metadata", "OXM_OF_METADATA", _hex, 20),
    (BASIC, 0): Field("in_port", "in_port", "NXM_OF_IN_PORT", _port, 30),
    (BASIC, 4): Field("dl_src", "eth_src", "NXM_OF_ETH_SRC", _mac, 40),
    (BASIC, 3): Field("dl_dst", "eth_dst", "NXM_OF_ETH_DST", _mac, 41),
    (BASIC, 5): Field("dl_type", "eth_type", "NXM_OF_ETH_TYPE", _hex, 42),
    (BASIC, 22): Field("arp_spa", "arp_spa", "NXM_OF_ARP_SPA", _ip4, 50),
    (BASIC, 23): Field("arp_tpa", "arp_tpa", "NXM_OF_ARP_TPA", _ip4, 51),
    (BASIC, 26): Field("ipv6_src", "ipv6_src", "NXM_NX_IPV6_SRC", _ip6, 52),
    (BASIC, 27): Field("ipv6_dst", "ipv6_dst", "NXM_NX_IPV6_DST", _ip6, 53),
    (BASIC, 11): Field("nw_src", "ip_src", "NXM_OF_IP_SRC", _ip4, 50),
    (BASIC, 12): Field("nw_dst", "ip_dst", "NXM_OF_IP_DST", _ip4, 51),
    (BASIC, 10): Field("nw_proto", "nw_proto", "NXM_OF_IP_PROTO", _dec, 60),
    (BASIC, 13): Field("tp_src", "tcp_src", "NXM_OF_TCP_SRC", _dec, 65),
    (BASIC, 14): Field("tp_dst", "tcp_dst", "NXM_OF_TCP_DST", _dec, 66),
    (BASIC, 15): Field("tp_src", "udp_src", "NXM_OF_UDP_SRC", _dec, 65),
    (BASIC, 16): Field("tp_dst", "udp_dst", "NXM_OF_UDP_DST", _dec, 66),
    (BASIC, 21): Field("arp_op", "arp_op", "NXM_OF_ARP_OP", _dec, 70),
    (BASIC, 24): Field("arp_sha", "arp_sha", "NXM_NX_ARP_SHA", _mac, 71),
    (BASIC, 25): Field("arp_tha", "arp_tha", "NXM_NX_ARP_THA", _mac, 72),
    (BASIC, 29): Field("icmp_type", "icmpv6_type", "NXM_NX_ICMPV6_TYPE", _dec, 80),
    (BASIC, 30): Field("icmp_code", "icmpv6_code", "NXM_NX_ICMPV6_CODE", _dec, 81),
    (BASIC, 31): Field("nd_target", "nd_target", "NXM_NX_ND_TARGET", _ip6, 90),
    (BASIC, 32): Field("nd_sll", "nd_sll", "NXM_NX_ND_SLL", _mac, 91),
    (BASIC, 33): Field("nd_tll", "nd_tll", "NXM_NX_ND_TLL", _mac, 92),
    (ERICSSON, 1): Field("nd_reserved", "nd_reserved", "ERICSSONOXM_ND_RESERVED", _dec, 93),
    (ERICSSON, 2): Field(
        "nd_options_type", "nd_options_type", "ERICSSONOXM_ND_OPTIONS_TYPE", _dec, 94
    ),
}
# the NXM_OF/NXM_NX spellings of the same fields (moves and loads written in NXM)
for _nxm, _basic in (
    ((NXM0, 0), (BASIC, 0)),
    ((NXM0, 1), (BASIC, 3)),
    ((NXM0, 2), (BASIC, 4)),
    ((NXM0, 3), (BASIC, 5)),
    ((NXM0, 6), (BASIC, 10)),
    ((NXM0, 7), (BASIC, 11)),
    ((NXM0, 8), (BASIC, 12)),
    ((NXM0, 15), (BASIC, 21)),
    ((NXM0, 16), (BASIC, 22)),
    ((NXM0, 17), (BASIC, 23)),
    ((NXM1, 17), (BASIC, 24)),
    ((NXM1, 18), (BASIC, 25)),
    ((NXM1, 19), (BASIC, 26)),
    ((NXM1, 20), (BASIC, 27)),
    ((NXM1, 21), (BASIC, 29)),
    ((NXM1, 22), (BASIC, 30)),
    ((NXM1, 23), (BASIC, 31)),
    ((NXM1, 24), (BASIC, 32)),
    ((NXM1, 25), (BASIC, 33)),
):
    FIELDS[_nxm] = FIELDS[_basic]
for _r in range(16):  # NXM_NX_REG0..15
    FIELDS[(NXM1, _r)] = Field(f"reg{_r}", f"reg{_r}", f"NXM_NX_REG{_r}", _hex, 25)

#: eth_type (+ ip_proto) -> the protocol shorthand ovs-ofctl prints first
_SHORT_L4 = {
    0x0800: {1: "icmp", 6: "tcp", 17: "udp", 132: "sctp"},
    0x86DD: {58: "icmp6", 6: "tcp6", 17: "udp6", 132: "sctp6"},
}
_SHORT_L3 = {0x0800: "ip", 0x86DD: "ipv6", 0x0806: "arp", 0x8035: "rarp", 0x8847: "mpls"}
_ETH_TYPE, _IP_PROTO = (BASIC, 5), (BASIC, 10)


def _oxm(buf: bytes, off: int) -> tuple[int, int, bool, bytes, bytes | None, int]:
    """(class, field, hasmask, value, mask, next offset) of the OXM at ``off``."""
    (header,) = struct.unpack_from("!I", buf, off)
    cls, fld, length = header >> 16, (header >> 9) & 0x7F, header & 0xFF
    masked = bool(header & 0x100)
    end = off + 4 + length
    if end > len(buf):
        raise ValueError("OXM overruns its record")
    body = buf[off + 4 : end]
    if cls == EXPERIMENTER:  # the experimenter id is part of the payload
        body = body[4:]
    if masked:
        half = len(body) // 2
        return cls, fld, True, body[:half], body[half:], end
    return cls, fld, False, body, None, end


def _masked(field: Field, value: bytes, mask: bytes) -> str:
    if field.fmt is _ip4 or field.fmt is _ip6:
        n = int.from_bytes(mask, "big")
        bits = len(mask) * 8
        ones = bin(n).count("1")
        if n == ((1 << ones) - 1) << (bits - ones):  # a CIDR mask
            return f"{field.fmt(value)}/{ones}"
    if field.fmt is _dec:
        return f"{field.fmt(value)}/{_hex(mask)}"
    return f"{field.fmt(value)}/{field.fmt(mask)}"


def match_text(buf: bytes) -> str:
    """The fields of an ``ofp_match`` OXM list (without the priority) as ovs-ofctl prints
    them, comma-separated."""
    fields: list[tuple[int, str]] = []
    exact: dict[tuple[int, int], int] = {}
    off = 0
    while off < len(buf):
        cls, fld, _masked_bit, value, mask, off = _oxm(buf, off)
        key = (cls, fld)
        spec = FIELDS.get(key)
        if spec is None or (cls == EXPERIMENTER):
            fields.append((1000, f"?oxm:{cls:#06x}:{fld}"))
            continue
        if mask is None and key in (_ETH_TYPE, _IP_PROTO):
            exact[key] = int.from_bytes(value, "big")
            continue
        text = spec.fmt(value) if mask is None else _masked(spec, value, mask)
        fields.append((spec.order, f"{spec.match}={text}"))
    out: list[str] = []
    eth_type, proto = exact.get(_ETH_TYPE), exact.get(_IP_PROTO)
    if eth_type is not None:
        l4 = _SHORT_L4.get(eth_type, {}).get(proto) if proto is not None else None
        if l4 is not None:
            out.append(l4)
            proto = None
        elif eth_type in _SHORT_L3:
            out.append(_SHORT_L3[eth_type])
        else:
            fields.append((42, f"dl_type={eth_type:#06x}"))
    if proto is not None:
        fields.append((60, f"nw_proto={proto}"))
    fields.sort(key=lambda f: f[0])  # stable: fields of one order keep the wire's order
    out += [text for _, text in fields]
    return ",".join(out)


def _subfield(header: int, ofs: int, n_bits: int) -> str:
    cls, fld, length = header >> 16, (header >> 9) & 0x7F, header & 0xFF
    spec = FIELDS.get((cls, fld))
    name = spec.move if spec is not None and cls != EXPERIMENTER else f"?field:{header:#010x}"
    if ofs == 0 and n_bits == length * 8:
        return f"{name}[]"
    if n_bits == 1:
        return f"{name}[{ofs}]"
    return f"{name}[{ofs}..{ofs + n_bits - 1}]"


def _move(n_bits: int, src_ofs: int, dst_ofs: int, src: int, dst: int) -> str:
    return f"move:{_subfield(src, src_ofs, n_bits)}->{_subfield(dst, dst_ofs, n_bits)}"


_NX_VENDOR, _ONF_VENDOR = 0x00002320, 0x4F4E4600
_NXAST_REG_MOVE, _ONFACT_COPY_FIELD = 6, 3200
_OUTPUT, _GROUP, _SET_FIELD, _COPY_FIELD, _ACT_EXPERIMENTER = 0, 22, 25, 28, 0xFFFF
#: actions without arguments
_BARE = {18: "pop_vlan", 24: "dec_ttl"}


def _action(buf: bytes, off: int, end: int) -> str:
    kind = struct.unpack_from("!H", buf, off)[0]
    if kind == _OUTPUT:
        port, max_len = struct.unpack_from("!IH", buf, off + 4)
        if port < OFPP_MAX:
            return f"output:{port}"
        name = PORT_NAMES.get(port, f"?port:{port:#x}")
        return f"{name}:{max_len}" if name == "CONTROLLER" else name
    if kind == _GROUP:
        return f"group:{struct.unpack_from('!I', buf, off + 4)[0]}"
    if kind == _SET_FIELD:
        cls, fld, _m, value, mask, _ = _oxm(buf[:end], off + 4)
        spec = FIELDS.get((cls, fld))
        if spec is None or cls == EXPERIMENTER:
            return f"?set_field:{cls:#06x}:{fld}"
        text = spec.fmt(value) if mask is None else f"{spec.fmt(value)}/{spec.fmt(mask)}"
        return f"set_field:{text}->{spec.set}"
    if kind == _COPY_FIELD:
        n_bits, src_ofs, dst_ofs = struct.unpack_from("!HHH", buf, off + 4)
        src, dst = struct.unpack_from("!II", buf, off + 12)
        return _move(n_bits, src_ofs, dst_ofs, src, dst)
    if kind == _ACT_EXPERIMENTER:
        vendor = struct.unpack_from("!I", buf, off + 4)[0]
        sub = struct.unpack_from("!H", buf, off + 8)[0]
        if vendor == _NX_VENDOR and sub == _NXAST_REG_MOVE:
            n_bits, src_ofs, dst_ofs, src, dst = struct.unpack_from("!HHHII", buf, off + 10)
            return _move(n_bits, src_ofs, dst_ofs, src, dst)
        if vendor == _ONF_VENDOR and sub == _ONFACT_COPY_FIELD:
            n_bits, src_ofs, dst_ofs = struct.unpack_from("!HHH", buf, off + 12)
            src, dst = struct.unpack_from("!II", buf, off + 20)
            return _move(n_bits, src_ofs, dst_ofs, src, dst)
        return f"?action:{vendor:#x}:{sub}"
    return _BARE.get(kind, f"?action:{kind}")


def actions_text(buf: bytes, off: int, end: int) -> list[str]:
    """The actions in ``buf[off:end]``, each as ovs-ofctl prints it."""
    out: list[str] = []
    while off < end:
        length = struct.unpack_from("!H", buf, off + 2)[0]
        if length < 8 or off + length > end:
            raise ValueError("action overruns its list")
        out.append(_action(buf, off, off + length))
        off += length
    return out


# instruction type -> the position ovs-ofctl prints it in
_GOTO, _WRITE_METADATA, _WRITE_ACTIONS, _APPLY, _CLEAR, _METER = 1, 2, 3, 4, 5, 6
_INSTRUCTION_ORDER = {_METER: 0, _APPLY: 1, _CLEAR: 2, _WRITE_ACTIONS: 3, _WRITE_METADATA: 4}


def instructions_text(buf: bytes, off: int, end: int) -> str:
    parts: list[tuple[int, str]] = []
    while off < end:
        kind, length = struct.unpack_from("!HH", buf, off)
        if length < 8 or off + length > end:
            raise ValueError("instruction overruns its record")
        if kind == _APPLY:
            parts += [(1, a) for a in actions_text(buf, off + 8, off + length)]
        elif kind == _GOTO:
            parts.append((5, f"goto_table:{buf[off + 4]}"))
        elif kind == _CLEAR:
            parts.append((2, "clear_actions"))
        elif kind == _WRITE_ACTIONS:
            inner = ",".join(actions_text(buf, off + 8, off + length))
            parts.append((3, f"write_actions({inner})"))
        elif kind == _WRITE_METADATA:
            value, mask = struct.unpack_from("!QQ", buf, off + 8)
            parts.append((4, f"write_metadata:{value:#x}/{mask:#x}"))
        else:
            parts.append((6, f"?instruction:{kind}"))
        off += length
    parts.sort(key=lambda p: p[0])
    return ",".join(p for _, p in parts) or "drop"


_FLOW_HEAD = struct.Struct("!HxxBxHHHHHQHH")  # length .. cookie, match type, match length
OFPMT_OXM = 1
DEFAULT_PRIORITY = 0x8000


def flow_line(rec: bytes) -> str:
    """One ``ofp_flow_desc`` as an ``ovs-ofctl -O OpenFlow15 --no-stats dump-flows`` line."""
    length, table, priority, idle, hard, flags, importance, ck, mtype, mlen = (
        _FLOW_HEAD.unpack_from(rec)
    )
    match_end = 24 + (mlen + 7) // 8 * 8
    if match_end + 4 > length or mlen < 4:
        raise ValueError("match overruns its record")
    stats_len = struct.unpack_from("!H", rec, match_end + 2)[0]
    body = match_end + (stats_len + 7) // 8 * 8
    if body > length:
        raise ValueError("stats overrun their record")
    head = [f" cookie={ck:#x}, "]
    if table:
        head.append(f"table={table}, ")
    if idle:
        head.append(f"idle_timeout={idle}, ")
    if hard:
        head.append(f"hard_timeout={hard}, ")
    if flags:
        head.append(f"?flags:{flags:#x}, ")
    if importance:
        head.append(f"importance={importance}, ")
    fields = match_text(rec[28 : 24 + mlen]) if mtype == OFPMT_OXM else f"?match_type:{mtype}"
    match = [f"priority={priority}"] if priority != DEFAULT_PRIORITY else []
    if fields:
        match.append(fields)
    return f"{''.join(head)}{','.join(match)} actions={instructions_text(rec, body, length)}"


_GROUP_HEAD = struct.Struct("!HBxIH6x")
_WEIGHT, _WATCH_PORT, _WATCH_GROUP = 0, 1, 2


def _bucket_props(rec: bytes, off: int, end: int) -> str:
    """A bucket's weight and watches, as ovs-ofctl prints them (weight 1, watching nothing:
    not printed)."""
    out = []
    while off + 4 <= end:
        kind, length = struct.unpack_from("!HH", rec, off)
        if length < 4 or off + length > end:
            raise ValueError("bucket property overruns its bucket")
        if kind == _WEIGHT and length >= 6:
            weight = struct.unpack_from("!H", rec, off + 4)[0]
            if weight != 1:
                out.append(f",weight:{weight}")
        elif kind in (_WATCH_PORT, _WATCH_GROUP) and length >= 8:
            watched = struct.unpack_from("!I", rec, off + 4)[0]
            if watched != 0xFFFFFFFF:
                name = "watch_port" if kind == _WATCH_PORT else "watch_group"
                out.append(f",{name}:{watched}")
        else:
            out.append(f",?bucket_property:{kind}")
        off += (length + 7) // 8 * 8
    return "".join(out)


_BUCKET = struct.Struct("!HHI")
_GROUP_TYPES = {0: "all", 1: "select", 2: "indirect", 3: "fast_failover"}


def group_line(rec: bytes) -> str:
    """One ``ofp_group_desc`` (OpenFlow 1.5) as an ``ovs-ofctl dump-groups`` line (group
    properties are not shown)."""
    length, gtype, gid, buckets_len = _GROUP_HEAD.unpack_from(rec)
    out = [f" group_id={gid},type={_GROUP_TYPES.get(gtype, f'?{gtype}')}"]
    off, end = _GROUP_HEAD.size, _GROUP_HEAD.size + buckets_len
    if end > length:
        raise ValueError("buckets overrun their group")
    while off < end:
        blen, alen, bucket_id = _BUCKET.unpack_from(rec, off)
        if blen < _BUCKET.size + alen or off + blen > end:
            raise ValueError("bucket overruns its group")
        actions = actions_text(rec, off + _BUCKET.size, off + _BUCKET.size + alen)
        props = _bucket_props(rec, off + _BUCKET.size + alen, off + blen)
        out.append(f",bucket=bucket_id:{bucket_id}{props},actions={','.join(actions) or 'drop'}")
        off += blen
    return "".join(out)
