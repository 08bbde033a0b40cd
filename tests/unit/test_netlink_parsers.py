"""The linux datapath's netlink parsers on hand-made messages (no kernel, no root).

The kernel writes FDB and neighbour entries in a fixed attribute order, which the parsers
read at fixed offsets; any other layout must give the same result through the generic
attribute walk.
"""

from __future__ import annotations

import errno
import socket

import pytest

from l2pop.datapath import _netlink as nl

MAC = bytes.fromhex("020000000a01")


def message(mtype: int, payload: bytes, flags: int = nl.NLM_F_MULTI) -> bytes:
    return nl.HDR.pack(16 + len(payload), mtype, flags, 1, 0) + payload


def done(code: int = 0) -> bytes:
    return message(nl.NLMSG_DONE, nl.ERR.pack(code))


def fdb_entry(ifindex: int, mac: bytes, dst: bytes | None, *, self_: bool = True) -> bytes:
    state = nl.NUD_PERMANENT | nl.NUD_NOARP if self_ else nl.NUD_NOARP
    flags = nl.NTF_SELF if self_ else 0
    return message(nl.RTM_NEWNEIGH, nl.fdb_payload(ifindex, state, flags, mac, dst))


def test_fdb_parser_reads_kernel_layout_and_other_layouts() -> None:
    v4 = socket.inet_aton("192.0.2.7")
    # another layout: NDA_DST before NDA_LLADDR, with an extra attribute in front
    body = nl.NDMSG.pack(nl.AF_BRIDGE, 5, nl.NUD_PERMANENT, nl.NTF_SELF, 0)
    odd = message(
        nl.RTM_NEWNEIGH,
        body + nl.nla_u32(10, 0) + nl.nla(nl.NDA_DST, v4) + nl.nla(nl.NDA_LLADDR, MAC[::-1]),
    )
    buf = b"".join(
        [
            fdb_entry(5, MAC, v4),
            fdb_entry(5, nl.ZERO_MAC, v4),
            fdb_entry(5, MAC, None, self_=False),  # bridge "static" entry
            fdb_entry(9, MAC, v4),  # another device: skipped
            odd,
        ]
    )
    tables = {5: nl.FdbTable()}
    parser = nl.FdbParser(tables)
    assert parser(buf) is False
    assert parser(done()) is True
    table = tables[5]
    assert table.unicast == {"02:00:00:00:0a:01": "192.0.2.7", "01:0a:00:00:00:02": "192.0.2.7"}
    assert table.flood == {"192.0.2.7"}
    assert table.static == {"02:00:00:00:0a:01"}


def test_neigh_parser_reads_both_families_and_skips_what_is_not_permanent() -> None:
    v4 = socket.inet_aton("198.19.0.9")
    v6 = socket.inet_pton(socket.AF_INET6, "2001:db8::9")
    mapped = socket.inet_pton(socket.AF_INET6, "::ffff:198.19.0.1")
    reachable = nl.NDMSG.pack(socket.AF_INET, 3, 0x02, 0, 0) + nl.nla(nl.NDA_DST, v4)
    buf = b"".join(
        [
            message(nl.RTM_NEWNEIGH, nl.neigh_payload(socket.AF_INET, 3, v4, MAC)),
            message(nl.RTM_NEWNEIGH, nl.neigh_payload(socket.AF_INET6, 3, v6, MAC)),
            message(nl.RTM_NEWNEIGH, nl.neigh_payload(socket.AF_INET6, 3, mapped, MAC)),
            message(nl.RTM_NEWNEIGH, reachable + nl.nla(nl.NDA_LLADDR, MAC)),
            message(nl.RTM_NEWNEIGH, nl.neigh_payload(socket.AF_INET, 4, v4, MAC)),
            done(),
        ]
    )
    tables: dict[int, dict[str, str]] = {3: {}}
    assert nl.NeighParser(tables)(buf) is True
    assert tables[3] == {
        "198.19.0.9": "02:00:00:00:0a:01",
        "2001:db8::9": "02:00:00:00:0a:01",
        "::ffff:c613:1": "02:00:00:00:0a:01",  # ipaddress's form, as the model writes it
    }


def test_a_failed_dump_raises_with_its_errno() -> None:
    with pytest.raises(nl.NetlinkError) as caught:
        nl.NeighParser({})(done(-errno.EINVAL))
    assert caught.value.errno == errno.EINVAL


def test_link_parser_reads_names_alias_and_nested_options() -> None:
    vxlan = nl.nla_nested(
        nl.IFLA_INFO_DATA, nl.nla_u32(nl.IFLA_VXLAN_ID, 42), nl.nla_u8(nl.IFLA_VXLAN_PROXY, 1)
    )
    port = nl.nla_nested(nl.IFLA_INFO_SLAVE_DATA, nl.nla_u8(nl.IFLA_BRPORT_NEIGH_SUPPRESS, 1))
    payload = nl.link_request(
        7,
        nl.IFF_UP,
        0,
        nl.nla_str(nl.IFLA_IFNAME, "vxlan-42"),
        nl.nla_str(nl.IFLA_IFALIAS, "net-x"),
        nl.nla_u32(nl.IFLA_MASTER, 6),
        nl.nla_nested(nl.IFLA_LINKINFO, nl.nla_str(nl.IFLA_INFO_KIND, "vxlan"), vxlan, port),
    )
    parser = nl.LinkParser()
    assert parser(message(nl.RTM_NEWLINK, payload) + done()) is True
    (link,) = parser.links
    assert (link.index, link.name, link.up, link.alias, link.master, link.kind) == (
        7,
        "vxlan-42",
        True,
        "net-x",
        6,
        "vxlan",
    )
    assert link.vxlan[nl.IFLA_VXLAN_ID] == nl.U32.pack(42)
    assert link.brport[nl.IFLA_BRPORT_NEIGH_SUPPRESS] == b"\1"
