"""The OVS read-back's parsers: ovs-ofctl flow, group and monitor output, OVSDB JSON (no root).

The sample text is what ovs-ofctl 3.1 prints for flows written as the ovs datapath's notes
lay them out, kept verbatim (hence the long lines).
"""

# ruff: noqa: E501

from __future__ import annotations

import json

from l2pop.testbed.ovstables import (
    OvsFlowMonitor,
    build_tables,
    ovsdb_rows,
    parse_flow,
    parse_flows,
    parse_groups,
    split_top,
)

V = 1001
MAC2, MAC3 = "fa:16:3e:00:00:02", "fa:16:3e:00:00:03"

FLOWS = """\
 cookie=0x6c32000003e90000, priority=100,tun_id=0x3e9,in_port=1 actions=set_field:0x3e9->metadata,goto_table:50
 cookie=0x6c32010003e90000, table=10, priority=100,arp,metadata=0x3e9,arp_op=1 actions=goto_table:20
 cookie=0x6c32010003e90000, table=20, priority=100,arp,metadata=0x3e9,arp_tpa=198.19.1.2,arp_op=1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:fa:16:3e:00:00:02->eth_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:fa:16:3e:00:00:02->arp_sha,set_field:198.19.1.2->arp_spa,IN_PORT
 cookie=0x6c32010003e90000, table=20, priority=10,metadata=0x3e9 actions=goto_table:40
 cookie=0x6c32010003e90000, table=30, priority=100,icmp6,metadata=0x3e9,icmp_type=135,icmp_code=0,nd_target=2001:db8::1:2 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:fa:16:3e:00:00:02->eth_src,set_field:136->icmpv6_type,goto_table:31
 cookie=0x6c32010003e90000, table=40, priority=100,metadata=0x3e9,dl_dst=fa:16:3e:00:00:02 actions=set_field:0x3e9->tun_id,set_field:192.0.2.2->tun_dst,output:1
 cookie=0x6c32010003e90000, table=40, priority=100,metadata=0x3e9,dl_dst=fa:16:3e:00:00:03 actions=set_field:0x3e9->tun_id,set_field:192.0.2.3->tun_dst,output:1
 cookie=0x1234, table=40, priority=1,metadata=0x3e9,dl_dst=fa:16:3e:00:00:09 actions=set_field:192.0.2.9->tun_dst,output:1
"""
GROUPS = """\
OFPST_GROUP_DESC reply (OF1.5) (xid=0x2):
 group_id=1001,type=all,bucket=bucket_id:3221225986,actions=set_field:192.0.2.3->tun_dst,output:1,bucket=bucket_id:3221225987,actions=set_field:192.0.2.2->tun_dst,output:1
 group_id=16778217,type=all,bucket=bucket_id:2,actions=output:2
"""
INTERFACES = json.dumps(
    {
        "data": [
            ["l2pop-vxlan", 1, "vxlan", ["map", [["key", "flow"], ["remote_ip", "flow"]]]],
            ["br-l2pop", 65534, "internal", ["map", []]],
            ["tapabc", 2, "", ["map", []]],
            ["unplugged", ["set", []], "", ["map", []]],
        ],
        "headings": ["name", "ofport", "type", "options"],
    }
)


def test_split_top_keeps_nested_commas() -> None:
    assert split_top("learn(table=1,NXM_OF_VLAN_TCI[0..11]),output:1") == [
        "learn(table=1,NXM_OF_VLAN_TCI[0..11])",
        "output:1",
    ]
    assert split_top("") == []


def test_a_flow_line_parses_with_its_defaults() -> None:
    flow = parse_flow(FLOWS.splitlines()[0])
    assert flow is not None
    assert (flow.cookie, flow.table, flow.priority) == (0x6C32000003E90000, 0, 100)
    assert flow.ours and flow.vni == V and flow.key is None
    assert flow.match == {"tun_id": "0x3e9", "in_port": "1"}
    assert flow.actions == ["set_field:0x3e9->metadata", "goto_table:50"]
    fdb = parse_flows(FLOWS)[5]
    assert fdb.key == MAC2 and fdb.outputs() == [1]
    assert fdb.set_fields() == {"tun_id": "0x3e9", "tun_dst": "192.0.2.2"}
    assert parse_flow("OFPST_FLOW reply (OF1.5) (xid=0x2):") is None
    assert not parse_flows(FLOWS)[-1].ours


def test_groups_parse_bucket_by_bucket() -> None:
    flood, local = parse_groups(GROUPS)
    assert (flood.group_id, flood.type, len(flood.buckets)) == (V, "all", 2)
    assert flood.buckets[0] == ["set_field:192.0.2.3->tun_dst", "output:1"]
    assert local.group_id == 0x1000000 | V and local.buckets == [["output:2"]]


def test_ovsdb_json_values() -> None:
    rows = ovsdb_rows(INTERFACES)
    assert rows[0] == {
        "name": "l2pop-vxlan",
        "ofport": 1,
        "type": "vxlan",
        "options": {"key": "flow", "remote_ip": "flow"},
    }
    assert rows[3]["ofport"] is None


def test_tables_in_the_linux_shape() -> None:
    nets = build_tables(
        parse_flows(FLOWS),
        parse_groups(GROUPS),
        ovsdb_rows(INTERFACES),
        {"l2pop-net-1001": "net-a", "l2pop-net-1002": "net-b", "other": "x"},
    )
    assert set(nets) == {1001, 1002}
    a = nets[V]
    assert (a.bridge, a.vxlan, a.local, a.mode) == (
        "br-l2pop",
        "l2pop-vxlan",
        None,
        "neigh_suppress",
    )
    assert a.fdb == {MAC2: "192.0.2.2", MAC3: "192.0.2.3"}  # not the hand-made flow's MAC
    assert a.neigh == {"198.19.1.2": MAC2, "2001:db8::1:2": MAC2}
    assert a.flood == ["192.0.2.2", "192.0.2.3"]
    assert a.ports == ["tapabc"]
    empty = nets[1002]  # named on the bridge, nothing programmed yet
    assert (empty.mode, empty.fdb, empty.flood, empty.vxlan) == ("off", {}, [], "")


def test_modes_from_the_dispatch_and_the_responder_miss() -> None:
    def mode(lines: list[str]) -> str:
        flows = parse_flows("\n".join(lines))
        return build_tables(flows, [], ovsdb_rows(INTERFACES), {"l2pop-net-1001": "n"})[V].mode

    ck = "cookie=0x6c32010003e90000"
    dispatch = f"{ck}, table=10, priority=100,arp,metadata=0x3e9,arp_op=1 actions=goto_table:20"
    flood = f"{ck}, table=20, priority=10,metadata=0x3e9 actions=goto_table:40"
    local = f"{ck}, table=20, priority=10,metadata=0x3e9 actions=group:16778217"
    assert mode([dispatch, flood]) == "neigh_suppress"
    assert mode([dispatch, local]) == "proxy"
    assert mode([]) == "off"
    assert mode([dispatch]) == "inconsistent"
    assert mode([local]) == "inconsistent"


def _monitor(lines: list[str]) -> OvsFlowMonitor:
    mon = OvsFlowMonitor.__new__(OvsFlowMonitor)
    mon.lines = lines
    return mon


def test_monitor_events_by_entry_key() -> None:
    added = (
        "event=ADDED table=40 cookie=0x6c32010003e90000 metadata=0x3e9,dl_dst=fa:16:3e:00:00:02 "
        "actions=set_field:0x3e9->tun_id,set_field:192.0.2.2->tun_dst,output:1"
    )
    deleted = (
        "event=DELETED reason=delete table=20 cookie=0x6c32010003e90000 "
        "arp,metadata=0x3e9,arp_tpa=198.19.1.22,arp_op=1 actions=set_field:fa:16:3e:00:00:03->eth_src,IN_PORT"
    )
    mon = _monitor([added, deleted])
    assert mon.touched(MAC2) == [added]
    assert mon.touched(MAC3) == []  # named in the actions only: not its entry
    assert mon.deleted("198.19.1.22") == [deleted] and mon.deleted(MAC2) == []
    assert mon.mentioning(MAC3) == [deleted]
    assert mon.mentioning("192.0.2.2") == [added]
    assert mon.mentioning("198.19.1.2") == []  # not a prefix of a longer address
    assert mon.mentioning("2001:db8::1") == []
