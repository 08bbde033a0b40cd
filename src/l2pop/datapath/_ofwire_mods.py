"""``_pipeline``'s bundle lines (``flow add ...``, ``group insert_bucket ...``) encoded as
OpenFlow 1.5 flow and group mods, byte for byte what ``ovs-ofctl -O OpenFlow15 bundle``
sends for them: the write half of ``_ofwire``.

Contract: ``encode(line, xid)`` returns one OFPT_FLOW_MOD / OFPT_GROUP_MOD message with
``xid``, for the vocabulary ``_pipeline`` writes (the commands add, delete, delete_strict;
group add, delete, modify, insert_bucket, remove_bucket; the match fields and actions of its
flows and buckets); anything else raises ``ValueError`` (the caller then hands the whole
batch to ovs-ofctl, which knows everything). The entry lines, written by the ten thousand,
go through one pattern each and a template of their bytes; the rest through a general parser
of that vocabulary. A unit test checks both against ovs-ofctl's own encoding.
"""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Callable

from l2pop.datapath import _pipeline as pl

OFP15 = 6
FLOW_MOD, GROUP_MOD = 14, 15
OFPFC = {"add": 0, "delete": 3, "delete_strict": 4}
OFPGC = {"add": 0, "modify": 1, "delete": 2, "insert_bucket": 3, "remove_bucket": 5}
OFPTT_ALL, OFP_NO_BUFFER, OFPP_ANY, OFPG_ANY = 0xFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF
OFPP_IN_PORT = 0xFFFFFFF8
BUCKET_IDS = {"first": 0xFFFFFFFD, "last": 0xFFFFFFFE, "all": 0xFFFFFFFF}
DEFAULT_PRIORITY = 0x8000

_HEADER = struct.Struct("!BBHI")
_FLOW_MOD = struct.Struct("!BBHIQQBBHHHIIIHH")  # header .. importance (then the match)
_GROUP_MOD = struct.Struct("!BBHIHBxIH2xI")  # header .. command_bucket_id (then buckets)
_BUCKET = struct.Struct("!HHI")


def _int(text: str) -> bytes:
    return int(text, 0).to_bytes(8, "big")


def _num(width: int) -> Callable[[str], bytes]:
    return lambda text: int(text, 0).to_bytes(width, "big")


def _mac(text: str) -> bytes:
    value = bytes.fromhex(text.replace(":", ""))
    if len(value) != 6:
        raise ValueError(f"bad MAC {text!r}")
    return value


def _ip4(text: str) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET, text)
    except OSError as exc:
        raise ValueError(f"bad IPv4 address {text!r}") from exc


def _ip6(text: str) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET6, text)
    except OSError as exc:
        raise ValueError(f"bad IPv6 address {text!r}") from exc


# field name -> (OXM class, field, value parser); match names and set_field names alike
_OXM: dict[str, tuple[int, int, Callable[[str], bytes]]] = {
    "in_port": (0x8000, 0, _num(4)),
    "metadata": (0x8000, 2, _int),
    "eth_dst": (0x8000, 3, _mac),
    "dl_dst": (0x8000, 3, _mac),
    "eth_src": (0x8000, 4, _mac),
    "dl_src": (0x8000, 4, _mac),
    "eth_type": (0x8000, 5, _num(2)),
    "dl_type": (0x8000, 5, _num(2)),
    "nw_proto": (0x8000, 10, _num(1)),
    "arp_op": (0x8000, 21, _num(2)),
    "arp_spa": (0x8000, 22, _ip4),
    "arp_tpa": (0x8000, 23, _ip4),
    "arp_sha": (0x8000, 24, _mac),
    "arp_tha": (0x8000, 25, _mac),
    "ipv6_src": (0x8000, 26, _ip6),
    "ipv6_dst": (0x8000, 27, _ip6),
    "icmpv6_type": (0x8000, 29, _num(1)),
    "icmp_type": (0x8000, 29, _num(1)),  # under icmp6 (the only ICMP l2pop matches)
    "nd_target": (0x8000, 31, _ip6),
    "nd_sll": (0x8000, 32, _mac),
    "nd_tll": (0x8000, 33, _mac),
    "tun_id": (0x8000, 38, _int),
    "tun_dst": (0x0001, 32, _ip4),
    "nd_reserved": (0x1000, 1, _num(4)),
    "nd_options_type": (0x1000, 2, _num(1)),
}
# the order ovs-ofctl puts a match's OXMs in (prerequisites first)
_MATCH_ORDER = {
    name: i
    for i, names in enumerate(
        [
            ("in_port",),
            ("eth_src", "dl_src"),
            ("eth_dst", "dl_dst"),
            ("eth_type", "dl_type"),
            ("ipv6_src",),
            ("ipv6_dst",),
            ("nw_proto",),
            ("arp_op",),
            ("arp_spa",),
            ("arp_tpa",),
            ("arp_sha",),
            ("arp_tha",),
            ("icmp_type", "icmpv6_type"),
            ("nd_target",),
            ("nd_sll",),
            ("nd_tll",),
            ("tun_id",),
            ("tun_dst",),
            ("metadata",),
        ]
    )
    for name in names
}
_SHORTHAND = {
    "arp": (("eth_type", "0x0806"),),
    "icmp6": (("eth_type", "0x86dd"), ("nw_proto", "58")),
    "ip": (("eth_type", "0x0800"),),
    "ipv6": (("eth_type", "0x86dd"),),
}
#: ``move:`` names -> OXM field names
_NXM = {
    "NXM_OF_ETH_SRC": "eth_src",
    "NXM_OF_ETH_DST": "eth_dst",
    "NXM_NX_ARP_SHA": "arp_sha",
    "NXM_NX_ARP_THA": "arp_tha",
    "NXM_OF_ARP_SPA": "arp_spa",
    "NXM_OF_ARP_TPA": "arp_tpa",
    "NXM_NX_IPV6_SRC": "ipv6_src",
    "NXM_NX_IPV6_DST": "ipv6_dst",
    "NXM_NX_ND_TLL": "nd_tll",
    "NXM_NX_ND_SLL": "nd_sll",
}


def _oxm(name: str, value: str) -> bytes:
    spec = _OXM.get(name)
    if spec is None:
        raise ValueError(f"field {name!r} is not encoded here")
    cls, field, parse = spec
    if "/" in value:
        text, mask_text = value.split("/", 1)
        v, m = parse(text), parse(mask_text)
        return struct.pack("!HBB", cls, field << 1 | 1, 2 * len(v)) + v + m
    v = parse(value)
    return struct.pack("!HBB", cls, field << 1, len(v)) + v


def _pad8(data: bytes) -> bytes:
    return data + bytes(-len(data) % 8)


def match(fields: list[tuple[str, str]]) -> bytes:
    """An ``ofp_match`` (OXM) of ``(name, value)`` fields, in ovs-ofctl's order."""
    expanded: list[tuple[str, str]] = []
    for name, value in fields:
        expanded += _SHORTHAND.get(name, ((name, value),)) if not value else ((name, value),)
    for name, _ in expanded:
        if name not in _MATCH_ORDER:
            raise ValueError(f"match field {name!r} is not encoded here")
    expanded.sort(key=lambda f: _MATCH_ORDER[f[0]])
    oxms = b"".join(_oxm(n, v) for n, v in expanded)
    return _pad8(struct.pack("!HH", 1, 4 + len(oxms)) + oxms)


_WIDTH = {"eth_src": 6, "eth_dst": 6, "arp_sha": 6, "arp_tha": 6, "arp_spa": 4, "arp_tpa": 4}
_WIDTH |= {"ipv6_src": 16, "ipv6_dst": 16, "nd_tll": 6, "nd_sll": 6}


def _whole_field(name: str) -> tuple[bytes, int]:
    """The OXM header and bit width of ``NAME[]`` (whole fields only: all l2pop moves)."""
    field = _NXM.get(name.removesuffix("[]"))
    if field is None or not name.endswith("[]"):
        raise ValueError(f"move field {name!r} is not encoded here")
    cls, number, _parse = _OXM[field]
    width = _WIDTH[field]
    return struct.pack("!HBB", cls, number << 1, width), width * 8


def action(text: str) -> bytes:
    """One action of ``_pipeline``'s vocabulary."""
    if text.startswith("output:"):
        return struct.pack("!HHIH6x", 0, 16, int(text[7:]), 0)
    if text == "IN_PORT":
        return struct.pack("!HHIH6x", 0, 16, OFPP_IN_PORT, 0)
    if text.startswith("group:"):
        return struct.pack("!HHI", 22, 8, int(text[6:]))
    if text.startswith("set_field:"):
        value, _, name = text[10:].rpartition("->")
        oxm = _oxm(name, value)
        return _pad8(struct.pack("!HH", 25, _padded(4 + len(oxm))) + oxm)
    if text.startswith("move:"):
        src_name, _, dst_name = text[5:].partition("->")
        (src, n_bits), (dst, dst_bits) = _whole_field(src_name), _whole_field(dst_name)
        if n_bits != dst_bits:
            raise ValueError(f"move of unequal widths: {text!r}")
        return struct.pack("!HHHHH2x4s4s4x", 28, 24, n_bits, 0, 0, src, dst)
    raise ValueError(f"action {text!r} is not encoded here")


def _padded(n: int) -> int:
    return n + (-n % 8)


def instructions(actions: str) -> bytes:
    """``actions=`` text -> apply-actions (and goto-table) instructions."""
    if actions == "drop":
        return b""
    parts = actions.split(",")
    goto = b""
    if parts[-1].startswith("goto_table:"):
        goto = struct.pack("!HHB3x", 1, 8, int(parts.pop()[11:]))
    body = b"".join(action(a) for a in parts)
    apply = struct.pack("!HH4x", 4, 8 + len(body)) + body if body else b""
    return apply + goto


def _flow_mod(xid: int, command: int, spec: str) -> bytes:
    head, _, actions = spec.partition(",actions=")
    table, priority, ck, mask = OFPTT_ALL if command == 3 else 0, DEFAULT_PRIORITY, 0, 0
    fields: list[tuple[str, str]] = []
    for item in head.split(","):
        name, _, value = item.partition("=")
        if name == "table":
            table = int(value)
        elif name == "priority":
            priority = int(value)
        elif name == "cookie":
            text, _, mask_text = value.partition("/")
            ck = int(text, 0)
            mask = ((1 << 64) - 1 if mask_text == "-1" else int(mask_text, 0)) if mask_text else 0
        else:
            fields.append((name, value))
    if (command == OFPFC["add"]) != bool(actions) or (command == 0 and mask):
        raise ValueError(f"flow mod {spec!r} is not encoded here")
    body = match(fields) + (instructions(actions) if command == 0 else b"")
    return _FLOW_MOD.pack(
        OFP15, FLOW_MOD, _FLOW_MOD.size + len(body), xid, ck, mask, table, command,
        0, 0, priority, OFP_NO_BUFFER, OFPP_ANY, OFPG_ANY, 0, 0,
    ) + body  # fmt: skip


def _group_mod(xid: int, command: int, spec: str) -> bytes:
    head, *buckets = spec.split(",bucket=")
    gid, gtype, command_bucket = -1, 0, BUCKET_IDS["all"]
    for item in head.split(","):
        name, _, value = item.partition("=")
        if name == "group_id":
            gid = int(value)
        elif name == "type" and value == "all":
            gtype = 0
        elif name == "command_bucket_id":
            command_bucket = BUCKET_IDS.get(value) or int(value)
        else:
            raise ValueError(f"group mod {spec!r} is not encoded here")
    if gid < 0:
        raise ValueError(f"group mod {spec!r} names no group")
    body = b"".join(_bucket(b) for b in buckets)
    return (
        _GROUP_MOD.pack(
            OFP15,
            GROUP_MOD,
            _GROUP_MOD.size + len(body),
            xid,
            command,
            gtype,
            gid,
            len(body),
            command_bucket,
        )
        + body
    )


def _bucket(text: str) -> bytes:
    head, sep, actions = text.partition(",actions=")
    if not sep or not head.startswith("bucket_id:"):
        raise ValueError(f"bucket {text!r} is not encoded here")
    body = b"".join(action(a) for a in actions.split(","))
    return _BUCKET.pack(_BUCKET.size + len(body), len(body), int(head[10:])) + body


def general(line: str, xid: int) -> bytes:
    """``line`` parsed in full (every line shape of the vocabulary)."""
    kind, command, spec = [*line.split(" ", 2), "", ""][:3]
    if kind == "flow" and command in OFPFC:
        return _flow_mod(xid, OFPFC[command], spec)
    if kind == "group" and command in OFPGC:
        return _group_mod(xid, OFPGC[command], spec)
    raise ValueError(f"{line!r} is not encoded here")


# -- the entry lines: a byte template per line shape ---------------------------------------
#
# An entry line is its network's template with an IP and a MAC filled in (``_pipeline``'s
# ``_fdb_template``/``_neigh_template``). Its *shape* is the line with each occurrence of
# the IP and the MAC replaced by a placeholder; the message of a shape is encoded once, by
# ``general``, with sample values, and cut where the samples' bytes sit. A line of a known
# shape is then its pieces with the values' bytes between them. The template is used only
# when the samples' bytes occur exactly once per placeholder, so filling it is ``general``'s
# encoding of the line, whatever the line.

_FDB_PREFIX = f"flow add table={pl.FORWARD},priority={pl.P_ENTRY},"
_ARP_PREFIX = f"flow add table={pl.ARP},priority={pl.P_ENTRY},"
_ND_PREFIX = f"flow add table={pl.ND},priority={pl.P_ENTRY},"
_IP_MARK, _MAC_MARK = "\x00", "\x01"
_SAMPLE_MAC = "0e:77:77:77:77:77"
_SAMPLE_IP = {False: "203.0.113.77", True: "2001:db8:7777:7777:7777:7777:7777:7777"}
#: (length of the inner message, pieces, for each gap whether the IP goes there)
Template = tuple[int, tuple[bytes, ...], tuple[bool, ...]]
_templates: dict[str, Template | None] = {}
_MAX_TEMPLATES = 4096
#: a bundle-add message's header and the flow mod's header it carries, packed at once
_ADD_FLOW_MOD = struct.Struct("!BBHII2xHBBHI")
_ATOMIC_ORDERED = 3
_BUNDLE_ADD = 34


def _values(line: str) -> tuple[str, str] | None:
    """(IP, MAC) of an entry line, read at their places (None: not an entry line)."""
    if line.startswith(_FDB_PREFIX):
        at_mac, at_vtep = line.find(",dl_dst="), line.find("->tun_dst,")
        start = line.rfind(":", 0, at_vtep)
        if at_mac < 0 or start < 0:
            return None
        return line[start + 1 : at_vtep], line[at_mac + 8 : at_mac + 25]
    arp = line.startswith(_ARP_PREFIX)
    if arp or line.startswith(_ND_PREFIX):
        at_ip = line.find(",arp_tpa=") + 9 if arp else line.find(",nd_target=") + 11
        end_ip = line.find(",", at_ip)
        at_mac = line.find("->eth_src,")
        if at_ip < 10 or end_ip < 0 or at_mac < 17:
            return None
        return line[at_ip:end_ip], line[at_mac - 17 : at_mac]
    return None


def _template(shape: str) -> Template | None:
    if len(_templates) >= _MAX_TEMPLATES:
        _templates.clear()
    ip = _SAMPLE_IP[shape.startswith(_ND_PREFIX)]
    sample = shape.replace(_IP_MARK, ip).replace(_MAC_MARK, _SAMPLE_MAC)
    template: Template | None = None
    try:
        whole = general(sample, 0)[_HEADER.size :]
    except (ValueError, struct.error, OverflowError):
        whole = b""
    address, hw = _ip(ip), _mac(_SAMPLE_MAC)
    pieces, between, last = [], [], 0
    for found in re.finditer(re.escape(address) + b"|" + re.escape(hw), whole):
        pieces.append(whole[last : found.start()])
        between.append(found.group() == address)
        last = found.end()
    pieces.append(whole[last:])
    if whole and len(between) == shape.count(_IP_MARK) + shape.count(_MAC_MARK):
        template = _HEADER.size + len(whole), tuple(pieces), tuple(between)
    _templates[shape] = template
    return template


def _ip(text: str) -> bytes:
    return _ip6(text) if ":" in text else _ip4(text)


def encode(line: str, xid: int) -> bytes:
    """The OpenFlow 1.5 message of bundle line ``line`` with ``xid``; ``ValueError`` when
    ``line`` is not of ``_pipeline``'s vocabulary."""
    return bundle_add(line, xid, 0)[16:]


def bundle_add(line: str, xid: int, bundle_id: int) -> bytes:
    """The OFPT_BUNDLE_ADD_MESSAGE (atomic, ordered) carrying ``line``'s message, both with
    ``xid``; ``ValueError`` when ``line`` is not of ``_pipeline``'s vocabulary."""
    values = _values(line)
    if values is not None:
        ip, mac = values
        shape = line.replace(ip, _IP_MARK).replace(mac, _MAC_MARK)
        template = _templates[shape] if shape in _templates else _template(shape)
        if template is not None:
            length, pieces, between = template
            address, hw = _ip(ip), _mac(mac)
            out = [
                _ADD_FLOW_MOD.pack(
                    OFP15,
                    _BUNDLE_ADD,
                    16 + length,
                    xid,
                    bundle_id,
                    _ATOMIC_ORDERED,
                    OFP15,
                    FLOW_MOD,
                    length,
                    xid,
                ),
                pieces[0],
            ]
            for is_ip, piece in zip(between, pieces[1:], strict=True):
                out.append(address if is_ip else hw)
                out.append(piece)
            return b"".join(out)
    message = general(line, xid)
    head = struct.pack(
        "!BBHII2xH", OFP15, _BUNDLE_ADD, 16 + len(message), xid, bundle_id, _ATOMIC_ORDERED
    )
    return head + message
