"""``l2pop bench flood --datapath``'s pure parts: which hosts are of which kind, what the
baseline is called, what the result is saved as, and how an OVS host's activation is read from
``ovs-ofctl monitor`` lines (no switch, no root)."""

from __future__ import annotations

import pytest

from l2pop.bench import activation, flood, runs

VTEP = "192.0.2.1"
MAC = "fa:16:3e:23:12:c6"
FLOW = (
    f"table=40 cookie=0x6c32010003e90000 metadata=0x3e9,dl_dst={MAC} "
    f"actions=set_field:0x3e9->tun_id,set_field:{VTEP}->tun_dst,output:1"
)


@pytest.mark.parametrize("event", ["ADDED", "MODIFIED"])
def test_a_forward_flow_added_or_modified_is_the_entry(event: str) -> None:
    assert activation.forward_entry(f" event={event} {FLOW}\n") == (MAC, VTEP)


@pytest.mark.parametrize(
    "line",
    [
        f" event=INITIAL {FLOW}",  # there before the watch began
        f" event=DELETED reason=delete {FLOW}",
        f" event=ADDED {FLOW.replace('table=40', 'table=50')}",  # another table
        " event=ADDED table=40 cookie=0x6c32010003e90000 metadata=0x3e9,"
        "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=group:16778217,group:1001",
        " event=ADDED table=40 cookie=0x6c32020003e90003 metadata=0x3e9,"
        f"dl_dst={MAC} actions=output:3",  # a local VM: no tunnel
        "2026-12-01 16:00:40.204: OFPST_FLOW_MONITOR reply (OF1.5) (xid=0x0):",
        "",
    ],
)
def test_anything_else_is_no_entry(line: str) -> None:
    assert activation.forward_entry(line) is None


def test_host_kinds_per_datapath() -> None:
    assert flood.host_kinds("linux", 4) == {}
    assert flood.host_kinds("ovs", 4) == {"kind": "ovs"}
    assert flood.host_kinds("mixed", 5) == {"kinds": {"h2": "ovs", "h4": "ovs"}}
    assert [flood.kind_of("mixed", f"h{i}") for i in range(1, 5)] == ["linux", "ovs"] * 2
    assert flood.kind_of("ovs", "h3") == "ovs" and flood.kind_of("linux", "h3") == "linux"
    assert flood.hosts_by_kind("mixed", 3) == {"linux": ["h1", "h3"], "ovs": ["h2"]}
    assert flood.hosts_by_kind("ovs", 2) == {"ovs": ["h1", "h2"]}
    with pytest.raises(ValueError, match="unknown datapath"):
        flood.host_kinds("dpdk", 4)


def test_the_baseline_is_named_for_its_hosts() -> None:
    assert flood.baseline("linux") == {"label": "flood-and-learn"}  # as it always was
    assert "OVS learn()" in flood.baseline("ovs")["label"]
    assert "Linux VXLAN + OVS" in flood.baseline("mixed")["label"]


def test_a_linux_run_is_saved_as_it_always_was() -> None:
    assert [runs.flood_name(d) for d in flood.DATAPATHS] == ["flood", "flood-ovs", "flood-mixed"]


def test_the_cli_takes_a_datapath_linux_by_default() -> None:
    from l2pop.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["bench", "flood"]).datapath == "linux"
    args = parser.parse_args(["bench", "flood", "--hosts", "4", "--datapath", "mixed"])
    assert (args.datapath, args.hosts) == ("mixed", [4])
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "flood", "--datapath", "dpdk"])
