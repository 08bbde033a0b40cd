"""The OpenFlow pipeline of the ovs datapath: the flows and groups it writes, and their
read-back from ``ovs-ofctl`` dumps. Pure text in, text out: no OVS is needed to test it.

Tables (docs/adr/0018-ovs-pipeline.md has the why; docs/design.md the summary)::

    0  CLASSIFY   in_port=<local port> -> metadata=VNI, 10; in_port=<tunnel>,tun_id=VNI -> 50
    10 LOCAL_IN   from a VM: ARP requests -> 20, DAD -> 40, other NS -> 30 (suppressing modes);
                  everything else -> 40
    20 ARP        arp_tpa=IP: answer (IN_PORT); miss: flood (neigh_suppress) / local (proxy)
    30 ND         nd_target=IP: rewrite the NS into an NA, -> 31; miss: as ARP
    31 ND_OUT     icmpv6 NA: write the target link-layer option, IN_PORT
    40 FORWARD    from a VM: local MAC -> its port; remote MAC -> tunnel to the VTEP;
                  broadcast/multicast -> flood; unknown unicast: per mode
    50 DELIVER    from a tunnel: local MAC -> its port; broadcast -> local ports; unknown: per
                  mode; never back into a tunnel (no hairpin)

Nothing learns. Every flow carries ``cookie(kind, vni, ofport)`` with the l2pop tag in the
top 16 bits: that tag is the one ownership predicate (``is_ours``); flows without it are never
read into a table and never deleted. Per network with VNI V: group V (type all) is the flood
list, one bucket per remote VTEP (bucket id = the VTEP's IPv4 as an integer), so a VTEP
joining or leaving is one ``insert_bucket``/``remove_bucket``, never a rewrite; group
``LOCAL_GROUP | V`` holds the network's local ports.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from l2pop.model import ArpSuppression, Encap

NS, PROXY, OFF = ArpSuppression.NEIGH_SUPPRESS, ArpSuppression.PROXY, ArpSuppression.OFF

CLASSIFY, LOCAL_IN, ARP, ND, ND_OUT, FORWARD, DELIVER = 0, 10, 20, 30, 31, 40, 50
TABLES = (CLASSIFY, LOCAL_IN, ARP, ND, ND_OUT, FORWARD, DELIVER)

#: "l2" in the cookie's top 16 bits: l2pop's flows
TAG = 0x6C32
KIND_BASE, KIND_NETWORK, KIND_PORT = 0, 1, 2
#: every l2pop flow: ``cookie=OURS/OURS_MASK``
OURS = TAG << 48
OURS_MASK = 0xFFFF << 48
#: every flow of one VNI, network and port kinds alike: ``cookie=cookie(0, V)/VNI_MASK``
VNI_MASK = 0xFFFF00FFFFFF0000
#: the local-ports group of VNI V is ``LOCAL_GROUP | V`` (the flood list is group V)
LOCAL_GROUP = 0x1000000

BCAST = "01:00:00:00:00:00/01:00:00:00:00:00"
#: priorities
P_PORT, P_ENTRY, P_BCAST, P_MISS = 200, 100, 50, 10
P_DAD = 110

#: the bridge's external_ids key naming the network of a VNI
NET_KEY = "l2pop-net-"


def cookie(kind: int, vni: int = 0, ofport: int = 0) -> int:
    return OURS | (kind << 40) | (vni << 16) | (ofport & 0xFFFF)


def is_ours(value: int) -> bool:
    """The ownership predicate: a flow is l2pop's exactly when its cookie has the tag."""
    return value >> 48 == TAG


def vtep_bucket(vtep: str) -> int:
    return int(ipaddress.IPv4Address(vtep))


def _flow(table: int, priority: int, ck: int, match: str, actions: str) -> str:
    m = f",{match}" if match else ""
    return f"table={table},priority={priority},cookie={ck:#x}{m},actions={actions}"


#: a strict delete names tag, kind and VNI but not the low bits: with an exact cookie (mask
#: -1) ovs-vswitchd searches its cookie index, where every entry of a network shares one
#: cookie, and 20,000 deletes took 11.2 s; with this mask it uses the classifier (0.30 s)
STRICT_MASK = 0xFFFFFFFFFFFF0000


def _strict(table: int, priority: int, ck: int, match: str) -> str:
    m = f",{match}" if match else ""
    return f"table={table},priority={priority},cookie={ck:#x}/{STRICT_MASK:#x}{m}"


# -- the flows -------------------------------------------------------------------------------


def base_flows() -> list[str]:
    """The flows every l2pop bridge has, whatever its networks: explicit default drops, the
    LOCAL_IN fall-through and the ND reply's last step."""
    ck = cookie(KIND_BASE)
    out = [_flow(t, 0, ck, "", "drop") for t in TABLES if t != LOCAL_IN]
    out.append(_flow(LOCAL_IN, 0, ck, "", f"goto_table:{FORWARD}"))
    out.append(
        _flow(
            ND_OUT,
            P_ENTRY,
            ck,
            "icmp6,icmp_type=136",
            "move:NXM_OF_ETH_SRC[]->NXM_NX_ND_TLL[],IN_PORT",
        )
    )
    return out


def _flood(vni: int) -> str:
    return f"group:{LOCAL_GROUP | vni},set_field:{vni:#x}->tun_id,group:{vni}"


def _local(vni: int) -> str:
    return f"group:{LOCAL_GROUP | vni}"


def mode_flows(vni: int, mode: ArpSuppression) -> list[tuple[int, int, str, str]]:
    """(table, priority, match, actions) of the flows that depend on the mode: the responder
    dispatch and what happens to unknown unicast, unknown-IP ARP and unknown-target NS.
    ``neigh_suppress`` floods the unknown (a VIP that moves by gratuitous ARP keeps working);
    ``proxy`` keeps it off the underlay (local ports only); ``off`` answers nothing."""
    md = f"metadata={vni:#x}"
    flood, local = _flood(vni), _local(vni)
    out = [
        (FORWARD, P_MISS, md, local if mode is PROXY else flood),
        (DELIVER, P_MISS, md, "drop" if mode is PROXY else local),
    ]
    if mode is not OFF:
        miss = local if mode is PROXY else f"goto_table:{FORWARD}"
        out += [
            (LOCAL_IN, P_ENTRY, f"arp,{md},arp_op=1", f"goto_table:{ARP}"),
            (LOCAL_IN, P_DAD, f"icmp6,{md},icmp_type=135,ipv6_src=::", f"goto_table:{FORWARD}"),
            (LOCAL_IN, P_ENTRY, f"icmp6,{md},icmp_type=135", f"goto_table:{ND}"),
            (ARP, P_MISS, md, miss),
            (ND, P_MISS, md, miss),
        ]
    return out


def network_flows(vni: int, tunnel: int) -> list[tuple[int, int, str, str]]:
    """(table, priority, match, actions) of the mode-independent flows of a network whose
    tunnel port is ``tunnel``: classify its tunnel traffic, flood its broadcasts."""
    md = f"metadata={vni:#x}"
    return [
        (
            CLASSIFY,
            P_ENTRY,
            f"tun_id={vni:#x},in_port={tunnel}",
            f"set_field:{vni:#x}->metadata,goto_table:{DELIVER}",
        ),
        (FORWARD, P_BCAST, f"{md},dl_dst={BCAST}", _flood(vni)),
        (DELIVER, P_BCAST, f"{md},dl_dst={BCAST}", _local(vni)),
    ]


def add(table: int, priority: int, ck: int, match: str, actions: str) -> str:
    return "flow add " + _flow(table, priority, ck, match, actions)


def delete_strict(table: int, priority: int, ck: int, match: str) -> str:
    return "flow delete_strict " + _strict(table, priority, ck, match)


def create_network(vni: int, tunnel: int, mode: ArpSuppression) -> list[str]:
    """Bundle lines that create a network's groups and flows (no entries)."""
    ck = cookie(KIND_NETWORK, vni)
    lines = [
        f"group add group_id={vni},type=all",
        f"group add group_id={LOCAL_GROUP | vni},type=all",
    ]
    for t, p, m, a in network_flows(vni, tunnel) + mode_flows(vni, mode):
        lines.append(add(t, p, ck, m, a))
    return lines


def delete_network(vni: int) -> list[str]:
    """Bundle lines that delete every flow and group of VNI ``vni`` (ports' flows too)."""
    return [
        f"flow delete cookie={cookie(0, vni):#x}/{VNI_MASK:#x}",
        f"group delete group_id={vni}",
        f"group delete group_id={LOCAL_GROUP | vni}",
    ]


def switch_mode(vni: int, old: ArpSuppression, new: ArpSuppression) -> list[str]:
    """Bundle lines that replace the mode flows of ``old`` by those of ``new``; entries stay."""
    ck = cookie(KIND_NETWORK, vni)
    lines = [delete_strict(t, p, ck, m) for t, p, m, _a in mode_flows(vni, old)]
    lines += [add(t, p, ck, m, a) for t, p, m, a in mode_flows(vni, new)]
    return lines


def fdb_match(vni: int, mac: str) -> str:
    return f"metadata={vni:#x},dl_dst={mac}"


# Entry flows are written by the ten thousand: each kind has one template per VNI (and tunnel),
# filled with ``str.format``, the same text ``add`` would build, at a fraction of the calls.
@lru_cache(maxsize=1024)
def _fdb_template(vni: int, tunnel: int) -> str:
    actions = f"set_field:{vni:#x}->tun_id,set_field:{{1}}->tun_dst,output:{tunnel}"
    return add(FORWARD, P_ENTRY, cookie(KIND_NETWORK, vni), fdb_match(vni, "{0}"), actions)


def fdb_add(vni: int, mac: str, vtep: str, tunnel: int) -> str:
    return _fdb_template(vni, tunnel).format(mac, vtep)


def fdb_delete(vni: int, mac: str) -> str:
    return delete_strict(FORWARD, P_ENTRY, cookie(KIND_NETWORK, vni), fdb_match(vni, mac))


def _neigh_match(vni: int, ip: str) -> tuple[int, str]:
    if ":" in ip:
        return ND, f"icmp6,metadata={vni:#x},icmp_type=135,nd_target={ip}"
    return ARP, f"arp,metadata={vni:#x},arp_tpa={ip},arp_op=1"


@lru_cache(maxsize=1024)
def _neigh_template(vni: int, v6: bool) -> str:
    """``{0}``: the IP, ``{1}``: the MAC."""
    if not v6:
        table, match = ARP, f"arp,metadata={vni:#x},arp_tpa={{0}},arp_op=1"
        actions = (
            "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:{1}->eth_src,"
            "set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],"
            "move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:{1}->arp_sha,"
            "set_field:{0}->arp_spa,IN_PORT"
        )
    else:
        table, match = ND, f"icmp6,metadata={vni:#x},icmp_type=135,nd_target={{0}}"
        actions = (
            "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:{1}->eth_src,"
            "move:NXM_NX_IPV6_SRC[]->NXM_NX_IPV6_DST[],set_field:{0}->ipv6_src,"
            "set_field:2->nd_options_type,set_field:0x60000000->nd_reserved,"
            f"set_field:136->icmpv6_type,goto_table:{ND_OUT}"
        )
    return add(table, P_ENTRY, cookie(KIND_NETWORK, vni), match, actions)


def neigh_add(vni: int, ip: str, mac: str) -> str:
    """The responder flow answering for ``ip`` with ``mac`` (ARP reply or neighbour
    advertisement, solicited + override, sent back out of the asking port)."""
    return _neigh_template(vni, ":" in ip).format(ip, mac)


def neigh_delete(vni: int, ip: str) -> str:
    table, match = _neigh_match(vni, ip)
    return delete_strict(table, P_ENTRY, cookie(KIND_NETWORK, vni), match)


def flood_insert(vni: int, vtep: str, tunnel: int) -> str:
    return (
        f"group insert_bucket group_id={vni},command_bucket_id=last,"
        f"bucket=bucket_id:{vtep_bucket(vtep)},actions=set_field:{vtep}->tun_dst,output:{tunnel}"
    )


def flood_remove(vni: int, vtep: str) -> str:
    return f"group remove_bucket group_id={vni},command_bucket_id={vtep_bucket(vtep)}"


def port_flows(vni: int, ofport: int, mac: str | None) -> list[str]:
    """The flows of a local port on network ``vni``: its traffic enters the network, and
    (when its MAC is known) frames for its MAC reach it from local ports and tunnels."""
    ck = cookie(KIND_PORT, vni, ofport)
    lines = [
        add(
            CLASSIFY,
            P_ENTRY,
            ck,
            f"in_port={ofport}",
            f"set_field:{vni:#x}->metadata,goto_table:{LOCAL_IN}",
        )
    ]
    if mac is not None:
        for table in (FORWARD, DELIVER):
            lines.append(add(table, P_PORT, ck, fdb_match(vni, mac), f"output:{ofport}"))
    return lines


def delete_port(vni: int, ofport: int) -> str:
    return f"flow delete cookie={cookie(KIND_PORT, vni, ofport):#x}/-1"


def local_group(vni: int, ofports: Iterable[int]) -> str:
    """The whole local-ports group of ``vni`` (ports are few: rewritten when one changes)."""
    buckets = "".join(f",bucket=bucket_id:{p},actions=output:{p}" for p in sorted(ofports))
    return f"group modify group_id={LOCAL_GROUP | vni},type=all{buckets}"


# -- reading a dump back -------------------------------------------------------------------

# Entries are the bulk of a dump (20,000 lines at scale): each kind is picked out of the whole
# text by one ``findall`` in the exact form ovs-ofctl prints it (OpenFlow 1.5, ``--no-stats``),
# so no Python runs per line. An entry flow altered by hand no longer matches its pattern: it
# reads as missing, and the reconcile writes it again. Everything else of ours (base, header
# and port flows: a handful per network) goes through the general pattern.
_ENTRY_COOKIE = rf"cookie=0x{TAG:04x}{KIND_NETWORK:02x}([0-9a-f]{{6}})0000, "
_FDB_FLOWS = re.compile(
    _ENTRY_COOKIE + rf"table={FORWARD}, priority={P_ENTRY},metadata=0x[0-9a-f]+,"
    r"dl_dst=([0-9a-f:]{17}) actions=set_field:0x[0-9a-f]+->tun_id,"
    r"set_field:([0-9.]+)->tun_dst,output:(\d+)\n"
)
_ARP_FLOWS = re.compile(
    _ENTRY_COOKIE + rf"table={ARP}, priority={P_ENTRY},arp,metadata=0x[0-9a-f]+,"
    r"arp_tpa=([0-9.]+),arp_op=1 actions=move:NXM_OF_ETH_SRC\[\]->NXM_OF_ETH_DST\[\],"
    r"set_field:([0-9a-f:]{17})->eth_src,"
)
_ND_FLOWS = re.compile(
    _ENTRY_COOKIE + rf"table={ND}, priority={P_ENTRY},icmp6,metadata=0x[0-9a-f]+,"
    r"icmp_type=135,nd_target=([0-9a-f:]+) actions=move:NXM_OF_ETH_SRC\[\]->NXM_OF_ETH_DST\[\],"
    r"set_field:([0-9a-f:]{17})->eth_src,"
)
_OTHER_FLOWS = re.compile(
    rf"^ cookie=0x{TAG:04x}([0-9a-f]{{12}}), "
    rf"(?!table=(?:{ARP}|{ND}|{FORWARD}), priority={P_ENTRY},)"
    r"(?:table=(\d+), )?priority=(\d+),?(\S*) actions=(\S*)$",
    re.MULTILINE,
)
_GROUP = re.compile(r"group_id=(\d+),type=all(.*)")
_TUN_DST = re.compile(r"set_field:([0-9.]+)->tun_dst")
_OUTPUT = re.compile(r"output:(\d+)")


@dataclass
class Found:
    """What a dump holds for one VNI: its header flows (table, priority, match, actions) and
    entries, its groups' VTEP buckets, its port flows' ofports."""

    header: set[tuple[int, int, str, str]] = field(default_factory=set)
    fdb: dict[str, str] = field(default_factory=dict)
    fdb_port: dict[str, int] = field(default_factory=dict)
    neigh: dict[str, str] = field(default_factory=dict)
    flood: set[str] | None = None  # None: the flood group is missing
    local: set[int] | None = None  # None: the local group is missing
    ports: set[int] = field(default_factory=set)


def parse_flows(text: str, found: dict[int, Found]) -> bool:
    """Fold the l2pop flows of a ``-O OpenFlow15 --no-stats dump-flows`` output into
    ``found`` (VNI -> Found); returns whether every base flow is there. Lines of other
    cookies, and anything it does not recognise, are ignored."""
    if not text.endswith("\n"):
        text += "\n"

    def of(vni_hex: str) -> Found:
        return found.setdefault(int(vni_hex, 16), Found())

    last, f = "", Found()
    for vni_hex, mac, vtep, port in _FDB_FLOWS.findall(text):
        if vni_hex != last:
            last, f = vni_hex, of(vni_hex)
        f.fdb[mac] = vtep
        f.fdb_port[mac] = int(port)
    for pattern in (_ARP_FLOWS, _ND_FLOWS):
        last = ""
        for vni_hex, ip, lladdr in pattern.findall(text):
            if vni_hex != last:
                last, f = vni_hex, of(vni_hex)
            f.neigh[ip] = lladdr
    base: set[str] = set()
    for rest, table_text, priority_text, match, actions in _OTHER_FLOWS.findall(text):
        ck = (TAG << 48) | int(rest, 16)
        table, priority = int(table_text or 0), int(priority_text)
        kind, vni = (ck >> 40) & 0xFF, (ck >> 16) & 0xFFFFFF
        if kind == KIND_BASE:
            base.add(f"{table},{priority}")
        elif kind == KIND_PORT:
            found.setdefault(vni, Found()).ports.add(ck & 0xFFFF)
        elif kind == KIND_NETWORK:
            found.setdefault(vni, Found()).header.add((table, priority, _canonical(match), actions))
    want = {f"{t},0" for t in TABLES} | {f"{ND_OUT},{P_ENTRY}"}
    return want <= base


def parse_groups(lines: Iterable[str], found: dict[int, Found]) -> None:
    """Fold a ``dump-groups`` into ``found``: flood buckets (VTEPs) and local ports."""
    for line in lines:
        m = _GROUP.search(line)
        if m is None:
            continue
        gid, rest = int(m.group(1)), m.group(2)
        buckets = rest.split(",bucket=")[1:]
        if gid & LOCAL_GROUP and gid & ~(LOCAL_GROUP | 0xFFFFFF) == 0:
            found.setdefault(gid & 0xFFFFFF, Found()).local = {
                int(o.group(1)) for b in buckets if (o := _OUTPUT.search(b))
            }
        elif 0 < gid <= 0xFFFFFF:
            found.setdefault(gid, Found()).flood = {
                t.group(1) for b in buckets if (t := _TUN_DST.search(b))
            }


def _canonical(match: str) -> str:
    """A match as a set of fields, so the order ovs-ofctl prints them in does not matter."""
    return ",".join(sorted(match.split(","))) if match else ""


def mode_of(
    vni: int, found: Found, tunnels: Mapping[Encap, int]
) -> tuple[ArpSuppression, Encap] | None:
    """The mode and encap of an intact network (every header flow as ``create_network`` wrote
    it, both groups present, on a tunnel port that still exists); None when damaged."""
    if found.flood is None or found.local is None:
        return None
    for encap, ofport in tunnels.items():
        for mode in (NS, PROXY, OFF):
            want = {
                (t, p, _canonical(m), a)
                for t, p, m, a in network_flows(vni, ofport) + mode_flows(vni, mode)
            }
            if want == found.header:
                return mode, encap
    return None
