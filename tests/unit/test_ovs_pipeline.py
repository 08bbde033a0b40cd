"""The ovs datapath's flows as text: what it writes reads back as the same tables, only
l2pop's cookie is ever read, and a network missing any header flow or group is damaged."""

from __future__ import annotations

import pytest

from l2pop.datapath import _pipeline as pl
from l2pop.model import ArpSuppression, Encap

TUNNELS = {Encap.VXLAN: 1, Encap.GRE: 2}


def as_dumped(line: str) -> str:
    """A bundle ``flow add`` line as ``ovs-ofctl --no-stats dump-flows`` prints it (close
    enough for the parser: cookie first, then table, priority, match, actions)."""
    body = line.removeprefix("flow add ")
    fields = dict(part.split("=", 1) for part in body.split(",actions=")[0].split(",")[:3])
    match = ",".join(body.split(",actions=")[0].split(",")[3:])
    table = "" if fields["table"] == "0" else f"table={fields['table']}, "
    m = f",{match}" if match else ""
    actions = body.split(",actions=")[1]
    return f" cookie={fields['cookie']}, {table}priority={fields['priority']}{m} actions={actions}"


def dump_of(vni: int, mode: ArpSuppression, encap: Encap) -> list[str]:
    lines = pl.create_network(vni, TUNNELS[encap], mode)
    lines.append(pl.fdb_add(vni, "02:00:00:00:00:01", "192.0.2.2", TUNNELS[encap]))
    lines.append(pl.neigh_add(vni, "198.19.0.1", "02:00:00:00:00:01"))
    lines.append(pl.neigh_add(vni, "2001:db8::1", "02:00:00:00:00:01"))
    lines += ["flow add " + f for f in pl.base_flows()]
    return [as_dumped(x) for x in lines if x.startswith("flow add")]


@pytest.mark.parametrize("mode", list(ArpSuppression))
@pytest.mark.parametrize("encap", list(Encap))
def test_what_is_written_reads_back(mode: ArpSuppression, encap: Encap) -> None:
    found: dict[int, pl.Found] = {}
    assert pl.parse_flows("\n".join(dump_of(100, mode, encap)), found)
    groups = [
        " group_id=100,type=all,bucket=bucket_id:3221225986,"
        "actions=set_field:192.0.2.2->tun_dst,output:1",
        f" group_id={pl.LOCAL_GROUP | 100},type=all,bucket=bucket_id:7,actions=output:7",
    ]
    pl.parse_groups(groups, found)
    f = found[100]
    assert pl.mode_of(100, f, TUNNELS) == (mode, encap)
    assert f.fdb == {"02:00:00:00:00:01": "192.0.2.2"}
    assert f.neigh == {"198.19.0.1": "02:00:00:00:00:01", "2001:db8::1": "02:00:00:00:00:01"}
    assert f.flood == {"192.0.2.2"} and f.local == {7}


def test_a_missing_header_flow_or_group_is_damage() -> None:
    lines = dump_of(100, ArpSuppression.NEIGH_SUPPRESS, Encap.VXLAN)
    found: dict[int, pl.Found] = {}
    pl.parse_flows("\n".join(x for x in lines if "goto_table:20" not in x), found)
    pl.parse_groups([" group_id=100,type=all", f" group_id={pl.LOCAL_GROUP | 100},type=all"], found)
    assert pl.mode_of(100, found[100], TUNNELS) is None
    found = {}
    pl.parse_flows("\n".join(lines), found)
    pl.parse_groups([" group_id=100,type=all"], found)  # the local group is gone
    assert pl.mode_of(100, found[100], TUNNELS) is None


def test_only_our_cookie_is_read() -> None:
    foreign = (
        " cookie=0x1234, table=40, priority=100,metadata=0x64,dl_dst=02:00:00:00:00:09"
        " actions=set_field:192.0.2.9->tun_dst,output:1"
    )
    found: dict[int, pl.Found] = {}
    assert not pl.parse_flows(foreign, found)  # and no base flow of ours either
    assert found == {}
    assert pl.is_ours(pl.cookie(pl.KIND_PORT, 0xFFFFFF, 0xFFFF))
    assert not pl.is_ours(0x1234)


def test_cookies_scope_one_vni_and_one_port() -> None:
    a, b = pl.cookie(pl.KIND_NETWORK, 100), pl.cookie(pl.KIND_PORT, 100, 7)
    other = pl.cookie(pl.KIND_NETWORK, 101)
    assert a & pl.VNI_MASK == b & pl.VNI_MASK == pl.cookie(0, 100)
    assert other & pl.VNI_MASK != pl.cookie(0, 100)
