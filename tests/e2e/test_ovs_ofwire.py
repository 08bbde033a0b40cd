"""The binary OpenFlow client (``_ofwire``) against ovs-ofctl (``_ofctl``), both on the same
private Open vSwitch bridge.

Reading: the same ``Found`` and base-flow verdict in every ARP suppression mode and encap,
after wiring a port, after a mode switch, and with odd flows and groups under l2pop's cookie
that l2pop never writes; every flow and group line the renderer knows is the very line
ovs-ofctl prints. Writing: every line shape ``_pipeline`` writes leaves the same tables as
ovs-ofctl's bundle, a refused mod is named and leaves nothing applied, a line outside the
vocabulary still goes through (ovs-ofctl).

``python tests/e2e/test_ovs_ofwire.py DIR`` (root, OVS installed) writes the replies the
unit tests decode and the mods ovs-ofctl sends (tests/unit/data/ofwire/).
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from datapath_harness import OvsRig, mac, vm_ip

from l2pop.datapath import _ofwire as w
from l2pop.datapath import _pipeline as pl
from l2pop.datapath._ofctl import OfCtl, OfctlError
from l2pop.datapath.ovs import OvsDatapath
from l2pop.model import ArpSuppression, Encap, NetworkTables, diff_state

pytestmark = pytest.mark.root

V2, V3 = "192.0.2.2", "192.0.2.3"
VM_PORT = "vm000001"
ODD_VNI = 900


@pytest.fixture
def rig() -> Iterator[OvsRig]:
    with ExitStack() as stack:
        yield OvsRig(stack)


def datapath(rig: OvsRig) -> OvsDatapath:
    assert isinstance(rig.datapath, OvsDatapath)
    return rig.datapath


def network(
    mode: ArpSuppression, encap: Encap, vni: int = 100, nid: str = "net-a"
) -> NetworkTables:
    fdb = {mac(i): (V2 if i % 2 else V3) for i in range(6)}
    neigh = {vm_ip(i): mac(i) for i in range(6)}  # three IPv4, three IPv6
    return NetworkTables(nid, vni, mode, frozenset({V2, V3}), fdb, neigh, encap)


def replies(rig: OvsRig) -> dict[int, bytes]:
    path = rig.ovs.mgmt(rig.bridge).removeprefix("unix:")
    with w.Connection(path) as conn:
        return conn.multipart(
            {1: w.flow_desc_request(1, pl.OURS, pl.OURS_MASK), 2: w.group_desc_request(2)}
        )


def texts(rig: OvsRig) -> tuple[list[str], list[str]]:
    of = OfCtl(rig.ovs.mgmt(rig.bridge))
    flows = [x for x in of.dump_flows(f"cookie={pl.OURS:#x}/{pl.OURS_MASK:#x}").splitlines()]
    groups = [x for x in of.dump_groups() if "group_id=" in x]
    return [x for x in flows if x.startswith(" cookie=")], groups


def known(found: dict[int, pl.Found]) -> dict[int, pl.Found]:
    """``found`` without the header flows the renderer marked unknown (``?``), and without
    those ovs-ofctl prints some other way (what the marks stand for)."""
    out = {}
    for vni, f in found.items():
        marked = any("?" in h[2] or "?" in h[3] for h in f.header)
        header = {h for h in f.header if "?" not in h[2] + h[3]} if marked else f.header
        out[vni] = pl.Found(header, f.fdb, f.fdb_port, f.neigh, f.flood, f.local, f.ports)
    return out


def same_readers(rig: OvsRig, exact: bool = True) -> tuple[dict[int, pl.Found], bool]:
    """Both readers agree on the whole result (apart from the header flows the renderer
    does not know: marked, so never intact), and every line the renderer knows is ovs-ofctl's
    own; returns the binary reader's result."""
    target = rig.ovs.mgmt(rig.bridge)
    text, wire = OfCtl(target).dump(), w.OfWire(target).dump()
    assert wire[1] == text[1]
    if exact:
        assert wire == text
    elif wire[0] != text[0]:
        mine = known(wire[0])
        assert set(mine) == set(text[0])
        for vni, f in mine.items():
            theirs = text[0][vni]
            assert f.header <= theirs.header
            assert len(wire[0][vni].header) == len(theirs.header)
            assert (f.fdb, f.fdb_port, f.neigh, f.flood, f.local, f.ports) == (
                theirs.fdb, theirs.fdb_port, theirs.neigh, theirs.flood, theirs.local,
                theirs.ports,
            )  # fmt: skip
    bodies = replies(rig)
    flow_text, group_text = texts(rig)
    mine = [w.flow_line(r) for r in w.records(bodies[1])]
    assert len(mine) == len(flow_text)
    assert {x for x in mine if "?" not in x} <= set(flow_text)
    groups = [w.group_line(r) for r in w.records(bodies[2])]
    assert {x for x in groups if "?" not in x} <= set(group_text)
    # and the fast path agrees with the general one on the same reply
    general: dict[int, pl.Found] = {}
    base = pl.parse_flows("".join(x + "\n" for x in mine), general)
    fast: dict[int, pl.Found] = {}
    assert w.decode_flows(bodies[1], fast) == base
    assert fast == general
    return wire


@pytest.mark.parametrize("encap", list(Encap))
@pytest.mark.parametrize("mode", list(ArpSuppression))
def test_both_readers_agree_in_every_mode(rig: OvsRig, mode: ArpSuppression, encap: Encap) -> None:
    dp = datapath(rig)
    other = ArpSuppression.OFF if mode is not ArpSuppression.OFF else ArpSuppression.PROXY
    desired = {"net-a": network(mode, encap), "net-b": network(other, encap, 0x123456, "net-b")}
    dp.apply(diff_state(dp.dump(), desired))
    assert dp.dump() == desired
    found, base = same_readers(rig)
    assert base
    tunnel = dp._tunnels[encap]
    assert pl.mode_of(100, found[100], dp._tunnels) == (mode, encap)
    assert found[100].fdb_port == dict.fromkeys(desired["net-a"].fdb, tunnel)
    rig.plug(VM_PORT)
    dp.wire(VM_PORT, "net-a", "02:00:00:00:00:aa")
    found, _ = same_readers(rig)
    assert found[100].ports and found[100].local == found[100].ports
    switched = {**desired, "net-a": network(other, encap)}
    dp.apply(diff_state(dp.dump(), switched))
    assert dp.dump() == switched
    same_readers(rig)


ODD_FLOWS = [
    # entry-shaped, but not quite: output to LOCAL, a timeout, an IPv4-mapped target
    "table=40,priority=100,metadata=0x384,dl_dst=02:00:00:00:09:01,"
    "actions=set_field:0x384->tun_id,set_field:192.0.2.9->tun_dst,LOCAL",
    "table=40,priority=100,idle_timeout=60,metadata=0x384,dl_dst=02:00:00:00:09:03,"
    "actions=set_field:0x384->tun_id,set_field:192.0.2.9->tun_dst,output:1",
    # entry-shaped with values the text reader does not compare (it reads them as entries)
    "table=40,priority=100,metadata=0x385,dl_dst=02:00:00:00:09:02,"
    "actions=set_field:0x386->tun_id,set_field:192.0.2.9->tun_dst,output:1",
    "table=20,priority=100,arp,metadata=0x384,arp_tpa=10.9.0.1,arp_op=1,"
    "actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:02:00:00:00:09:04->eth_src,"
    "output:2",
    "table=30,priority=100,icmp6,metadata=0x384,icmp_type=135,nd_target=::ffff:10.1.2.3,"
    "actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:02:00:00:00:09:05->eth_src,"
    "goto_table:31",
    # header-kind flows of shapes l2pop never writes
    "table=10,priority=100,tcp,metadata=0x384/0xffff,nw_src=10.0.0.0/8,tp_dst=80,"
    "actions=write_metadata:0x1/0xff,goto_table:40",
    "table=10,priority=101,ipv6,ipv6_dst=2001:db8::/32,reg0=0x5,"
    "actions=load:0x3->NXM_NX_REG1[0..7],move:NXM_NX_REG0[0..7]->NXM_NX_REG1[8..15],"
    "clear_actions,write_actions(output:2),goto_table:40",
    "table=10,priority=102,udp6,actions=CONTROLLER:100,NORMAL",
    "table=10,dl_type=0x88cc,actions=drop",
    "table=10,priority=103,in_port=LOCAL,dl_src=02:00:00:00:00:00/ff:ff:ff:00:00:00,"
    "vlan_tci=0x1000/0x1000,actions=strip_vlan,output:1",
    "table=10,priority=104,arp,arp_spa=10.0.0.0/255.0.255.0,arp_sha=02:00:00:00:00:01,"
    "actions=IN_PORT",
    "table=10,priority=105,icmp6,icmp_type=136,nd_tll=02:00:00:00:00:01,"
    "actions=set_field:0x1/0x1->metadata,goto_table:40",
    "table=50,priority=105,tun_id=0x5/0xff,tun_dst=192.0.2.7,actions=group:900",
    "table=50,priority=106,ip,nw_dst=10.1.0.0/16,actions=dec_ttl,output:1",
]
ODD_GROUPS = [
    f"group add group_id={ODD_VNI},type=select,bucket=weight:10,actions=output:1",
    f"group add group_id={pl.LOCAL_GROUP | ODD_VNI},type=all,"
    "bucket=bucket_id:9,actions=set_field:192.0.2.9->tun_dst,output:LOCAL,"
    "bucket=bucket_id:10,actions=output:4",
]


def add_odd(rig: OvsRig) -> None:
    ck = pl.cookie(pl.KIND_NETWORK, ODD_VNI)
    lines = [f"flow add cookie={ck:#x},{f}" for f in ODD_FLOWS]
    OfCtl(rig.ovs.mgmt(rig.bridge)).bundle(ODD_GROUPS + lines)


def test_both_readers_agree_on_odd_flows_and_groups(rig: OvsRig) -> None:
    dp = datapath(rig)
    desired = {"net-a": network(ArpSuppression.NEIGH_SUPPRESS, Encap.VXLAN)}
    dp.apply(diff_state(dp.dump(), desired))
    add_odd(rig)
    found, base = same_readers(rig, exact=False)
    assert base
    assert pl.mode_of(100, found[100], dp._tunnels) is not None  # others' shapes stay apart
    odd = found[ODD_VNI]
    assert pl.mode_of(ODD_VNI, odd, dp._tunnels) is None
    assert any("?" in h[2] for h in odd.header)  # vlan_tci, reg0: unknown, never intact
    assert odd.flood is None  # a select group is not a flood list
    assert odd.local == {4}


def test_a_missing_base_flow_is_seen_by_both(rig: OvsRig) -> None:
    datapath(rig)
    OfCtl(rig.ovs.mgmt(rig.bridge)).bundle(
        [f"flow delete_strict table=31,priority=0,cookie={pl.cookie(pl.KIND_BASE):#x}/-1"]
    )
    _, base = same_readers(rig)
    assert not base


def every_line_shape() -> list[str]:
    """One bundle of every line shape ``_pipeline`` writes (applicable in this order)."""
    ns, proxy, off = ArpSuppression.NEIGH_SUPPRESS, ArpSuppression.PROXY, ArpSuppression.OFF
    m1, m2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
    lines = ["flow add " + x for x in pl.base_flows()]
    lines += pl.create_network(100, 1, ns) + pl.switch_mode(100, ns, proxy)
    lines += [pl.fdb_add(100, m1, V2, 1), pl.fdb_delete(100, m1), pl.fdb_add(100, m2, V2, 1)]
    for ip, lladdr in (("10.0.0.1", m1), ("2001:db8::1", m1)):
        lines += [pl.neigh_add(100, ip, lladdr), pl.neigh_delete(100, ip)]
    lines += [pl.neigh_add(100, "10.0.0.2", m2), pl.neigh_add(100, "2001:db8::2", m2)]
    lines += [pl.flood_insert(100, V2, 1), pl.flood_insert(100, V3, 1), pl.flood_remove(100, V3)]
    lines += pl.port_flows(100, 3, "02:00:00:00:00:aa") + pl.port_flows(100, 4, None)
    lines += [pl.local_group(100, [3, 4]), pl.delete_port(100, 4), pl.local_group(100, [3])]
    return lines + pl.create_network(200, 2, off) + pl.delete_network(200)


def tables(rig: OvsRig) -> tuple[set[str], set[str]]:
    flows, groups = texts(rig)
    return set(flows), set(groups)


def clear(rig: OvsRig) -> None:
    of = OfCtl(rig.ovs.mgmt(rig.bridge))
    of._run("del-flows", f"cookie={pl.OURS:#x}/{pl.OURS_MASK:#x}")
    of._run("del-groups")


def test_every_line_shape_leaves_what_ovs_ofctl_leaves(rig: OvsRig) -> None:
    datapath(rig)
    target = rig.ovs.mgmt(rig.bridge)
    clear(rig)
    OfCtl(target).bundle(every_line_shape())
    by_ofctl = tables(rig)
    clear(rig)
    w.OfWire(target).bundle(every_line_shape())
    assert tables(rig) == by_ofctl
    assert any("nd_target=2001:db8::2" in x for x in by_ofctl[0])


def test_a_refused_mod_is_named_and_nothing_is_applied(rig: OvsRig) -> None:
    datapath(rig)
    target = rig.ovs.mgmt(rig.bridge)
    before = tables(rig)
    ck = pl.cookie(pl.KIND_NETWORK, 100)
    bad = f"flow add table=50,priority=5,cookie={ck:#x},metadata=0x64,actions=group:5"
    lines = [pl.fdb_add(100, mac(1), V2, 1), bad, "group add group_id=100,type=all"]
    with pytest.raises(OfctlError) as refused:
        w.OfWire(target).bundle(lines)
    assert f"OFPBAC_BAD_OUT_GROUP for: {bad}" in refused.value.text
    assert tables(rig) == before
    # refused when added (a duplicate group in one bundle): named too, nothing applied
    twice = ["group add group_id=100,type=all", "group add group_id=100,type=all"]
    with pytest.raises(OfctlError, match="GROUP_EXISTS"):
        w.OfWire(target).bundle(twice)
    assert tables(rig) == before


def test_a_line_outside_the_vocabulary_goes_through_ovs_ofctl(rig: OvsRig) -> None:
    datapath(rig)
    ck = pl.cookie(pl.KIND_NETWORK, ODD_VNI)
    w.OfWire(rig.ovs.mgmt(rig.bridge)).bundle(
        [f"flow add table=10,priority=5,cookie={ck:#x},tcp,tp_dst=80,actions=drop"]
    )
    assert any("tcp,tp_dst=80" in x for x in tables(rig)[0])


def sent_by_ovs_ofctl(rig: OvsRig, lines: list[str]) -> list[bytes]:
    """The OFPT_BUNDLE_ADD_MESSAGEs ``ovs-ofctl -O OpenFlow15 bundle`` sends for ``lines``,
    read on a relay socket in front of the bridge's (ovs-ofctl opens several connections)."""
    path = str(rig.ovs.dir / "relay.mgmt")
    relay = socket.socket(socket.AF_UNIX)
    relay.bind(path)
    relay.listen(4)
    relay.settimeout(2.0)
    sent: list[bytes] = []
    bridge = rig.ovs.mgmt(rig.bridge).removeprefix("unix:")

    def pump(a: socket.socket, b: socket.socket, log: list[bytes] | None) -> None:
        while data := a.recv(65536):
            if log is not None:
                log.append(data)
            b.sendall(data)
        b.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while True:
            try:
                client, _ = relay.accept()
            except TimeoutError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(bridge)
            back = threading.Thread(target=pump, args=(upstream, client, None))
            back.start()
            pump(client, upstream, sent)
            back.join()
            client.close()
            upstream.close()

    thread = threading.Thread(target=serve)
    thread.start()
    subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow15", "bundle", f"unix:{path}", "-"],
        input="".join(x + "\n" for x in lines),
        text=True,
        check=True,
    )
    thread.join()
    relay.close()
    stream, adds, off = b"".join(sent), [], 0
    while off < len(stream):
        _v, kind, length, _xid = struct.unpack_from("!BBHI", stream, off)
        if kind == w.BUNDLE_ADD_MESSAGE:
            adds.append(stream[off : off + length])
        off += length
    return adds


def capture(directory: Path) -> None:
    """Write the replies (one record per line, hex) and ovs-ofctl's text of a bridge with a
    network in each mode and encap, a wired port and the odd flows: the unit tests' data."""
    with ExitStack() as stack:
        rig = OvsRig(stack)
        dp = datapath(rig)
        modes = list(ArpSuppression)
        desired = {
            f"net-{i}": network(modes[i % 3], list(Encap)[i // 3], 100 + i, f"net-{i}")
            for i in range(6)
        }
        dp.apply(diff_state(dp.dump(), desired))
        rig.plug(VM_PORT)
        dp.wire(VM_PORT, "net-0", "02:00:00:00:00:aa")
        add_odd(rig)
        bodies = replies(rig)
        flow_text, group_text = texts(rig)
        directory.mkdir(parents=True, exist_ok=True)
        for name, body in (("flows", bodies[1]), ("groups", bodies[2])):
            (directory / f"{name}.hex").write_text("".join(r.hex() + "\n" for r in w.records(body)))
        (directory / "flows.txt").write_text("".join(x + "\n" for x in flow_text))
        (directory / "groups.txt").write_text("".join(x + "\n" for x in group_text))
        assert dp._tunnels == {Encap.VXLAN: 1, Encap.GRE: 2}  # as the unit tests assume
        clear(rig)
        lines = every_line_shape()
        adds = sent_by_ovs_ofctl(rig, lines)
        assert len(adds) == len(lines)
        (directory / "mods.txt").write_text("".join(x + "\n" for x in lines))
        (directory / "mods.hex").write_text("".join(a.hex() + "\n" for a in adds))


if __name__ == "__main__":
    capture(Path(sys.argv[1]))
