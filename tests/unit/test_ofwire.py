"""The binary OpenFlow reader on replies captured from Open vSwitch 3.1 (data/ofwire/, made
by ``python tests/e2e/test_ovs_ofwire.py DIR``): six networks (every ARP suppression mode on
VXLAN and on GRE), a wired port and odd flows/groups under l2pop's cookie; next to each
reply, ovs-ofctl's text of the same tables. The decoder must read exactly what
``_pipeline``'s text parser reads, render every line it knows as ovs-ofctl does, take every
entry by its fast path, and turn what it does not know into damage, never into a crash."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from l2pop.datapath import _ofwire as w
from l2pop.datapath import _pipeline as pl
from l2pop.datapath._ofctl import OfctlError
from l2pop.model import ArpSuppression, Encap

DATA = Path(__file__).parent / "data" / "ofwire"
TUNNELS = {Encap.VXLAN: 1, Encap.GRE: 2}
ODD_VNI = 900
#: net-i: VNI 100 + i, mode i % 3, encap i // 3 (as the capture made them)
NETWORKS = {100 + i: (list(ArpSuppression)[i % 3], list(Encap)[i // 3]) for i in range(6)}


def hex_records(name: str) -> list[bytes]:
    return [bytes.fromhex(x) for x in (DATA / f"{name}.hex").read_text().split()]


FLOWS, GROUPS = hex_records("flows"), hex_records("groups")
FLOW_TEXT = (DATA / "flows.txt").read_text()
GROUP_TEXT = (DATA / "groups.txt").read_text().splitlines()


def by_text() -> tuple[dict[int, pl.Found], bool]:
    found: dict[int, pl.Found] = {}
    base = pl.parse_flows(FLOW_TEXT, found)
    pl.parse_groups(GROUP_TEXT, found)
    return found, base


def by_wire(flows: list[bytes] = FLOWS, groups: list[bytes] = GROUPS) -> tuple[dict, bool]:
    found: dict[int, pl.Found] = {}
    base = w.decode_flows(b"".join(flows), found)
    w.decode_groups(b"".join(groups), found)
    return found, base


def test_the_capture_reads_as_the_text_does() -> None:
    (wire, wire_base), (text, text_base) = by_wire(), by_text()
    assert wire_base and text_base
    assert set(wire) == set(text)
    for vni in wire:
        if vni != ODD_VNI:
            assert wire[vni] == text[vni], vni
    for vni, (mode, encap) in NETWORKS.items():
        assert pl.mode_of(vni, wire[vni], TUNNELS) == (mode, encap)
        assert len(wire[vni].fdb) == 6 and len(wire[vni].neigh) == 6
    assert wire[100].ports == {3} and wire[100].local == {3}


def test_odd_flows_differ_only_where_marked_and_are_never_intact() -> None:
    wire, text = by_wire()[0][ODD_VNI], by_text()[0][ODD_VNI]
    assert (wire.fdb, wire.fdb_port, wire.neigh, wire.flood, wire.local) == (
        text.fdb, text.fdb_port, text.neigh, text.flood, text.local,
    )  # fmt: skip
    marked = {h for h in wire.header if "?" in h[2] + h[3]}
    assert marked and wire.header - marked <= text.header
    assert len(wire.header) == len(text.header)
    assert pl.mode_of(ODD_VNI, wire, TUNNELS) is None
    # entry-shaped flows the text reader accepts with odd values are read the same way
    assert wire.fdb == {"02:00:00:00:09:02": "192.0.2.9"}
    assert wire.neigh == {"10.9.0.1": "02:00:00:00:09:04"}


def test_every_known_line_is_ovs_ofctls() -> None:
    lines = [w.flow_line(r) for r in FLOWS]
    theirs = FLOW_TEXT.splitlines()
    assert len(lines) == len(theirs)
    known = [x for x in lines if "?" not in x]
    assert len(known) >= len(lines) - 2  # vlan_tci and reg0 (OXM packet registers)
    assert set(known) <= set(theirs)
    groups = [w.group_line(r) for r in GROUPS]
    assert sorted(groups) == sorted(GROUP_TEXT)


def test_every_entry_takes_the_fast_path() -> None:
    body = b"".join(FLOWS)
    matched = len(w.ENTRIES.split(body)) // (w._GROUPS + 1)
    assert matched == 6 * 12 + 1  # the six networks' entries and the odd fdb flow
    fast: dict[int, pl.Found] = {}
    general: dict[int, pl.Found] = {}
    assert w.decode_flows(body, fast) == pl.parse_flows(
        "".join(w.flow_line(r) + "\n" for r in FLOWS), general
    )
    assert fast == general


def _is(record: bytes, table: int, priority: int, vni: int) -> bool:
    ck = struct.unpack_from("!Q", record, 16)[0]
    return (
        record[4] == table
        and record[6:8] == priority.to_bytes(2, "big")
        and (ck == pl.cookie(pl.KIND_NETWORK, vni))
    )


def replaced(index: int, record: bytes) -> list[bytes]:
    return [*FLOWS[:index], record, *FLOWS[index + 1 :]]


def find(table: int, priority: int, vni: int = 100) -> int:
    return next(i for i, r in enumerate(FLOWS) if _is(r, table, priority, vni))


def swap(old: str, new: str) -> Callable[[bytes], bytes]:
    return lambda r: r.replace(bytes.fromhex(old), bytes.fromhex(new), 1)


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("another group", lambda r: r[:-4] + b"\x29" + r[-3:]),
        ("an unknown action", swap("00160008", "00630008")),  # group -> type 99
        ("an unknown match field", swap("80000408", "80007e08")),  # metadata -> field 63
        ("an idle timeout", lambda r: r[:8] + b"\x00\x05" + r[10:]),
        ("flags", lambda r: r[:12] + b"\x00\x01" + r[14:]),
    ],
)
def test_an_altered_header_flow_is_damage(what: str, change: Callable[[bytes], bytes]) -> None:
    i = find(pl.FORWARD, pl.P_BCAST)  # group:LOCAL, set_field tun_id, group:VNI
    altered = change(FLOWS[i])
    assert altered != FLOWS[i], what
    found, _ = by_wire(replaced(i, altered))
    assert pl.mode_of(100, found[100], TUNNELS) is None
    assert pl.mode_of(101, found[101], TUNNELS) == NETWORKS[101]  # the others stay intact


def test_an_altered_entry_leaves_the_fast_path_and_reads_as_the_text_would() -> None:
    i = next(i for i, r in enumerate(FLOWS) if _is(r, pl.FORWARD, pl.P_ENTRY, 100))
    record = FLOWS[i]
    # output to LOCAL instead of the tunnel: not an entry to either reader
    local = record[:-12] + b"\xff\xff\xff\xfe" + record[-8:]
    found, _ = by_wire(replaced(i, local))
    assert len(found[100].fdb) == 5
    # a different stats block (no counters): the general path still reads the entry
    stats_at = 24 + 32
    assert record[stats_at : stats_at + 4] == bytes.fromhex("00000034")
    short = record[:stats_at] + bytes.fromhex("00000004 00000000") + record[stats_at + 56 :]
    short = struct.pack("!H", len(short)) + short[2:]
    assert not w.ENTRIES.search(short)
    found, _ = by_wire(replaced(i, short))
    assert found[100] == by_wire()[0][100]


def test_an_entry_hidden_inside_another_record_is_not_taken() -> None:
    """A false match of an entry pattern inside some other record breaks the record walk of
    the gap before it; the reply is then read the general way."""
    entry = FLOWS[find(pl.FORWARD, pl.P_ENTRY)]
    host_i = find(pl.FORWARD, pl.P_MISS)
    host = FLOWS[host_i]
    # an experimenter action carrying the entry's bytes, appended to the apply-actions
    pad = (-(10 + len(entry))) % 8
    action = struct.pack("!HHIH", 0xFFFF, 10 + len(entry) + pad, 0xDEAD, 0) + entry + bytes(pad)
    apply_at = host.index(bytes.fromhex("0004"), 24 + 56)
    apply_len = struct.unpack_from("!H", host, apply_at + 2)[0]
    new = bytearray(host + action)
    struct.pack_into("!H", new, 0, len(new))
    struct.pack_into("!H", new, apply_at + 2, apply_len + len(action))
    assert apply_at + apply_len == len(host)  # the apply-actions are the last instruction
    flows = replaced(host_i, bytes(new))
    flows.remove(entry)
    found, _ = by_wire(flows)
    assert len(found[100].fdb) == 5  # the hidden one is not read
    assert pl.mode_of(100, found[100], TUNNELS) is None  # the host flow is unknown: damage


@pytest.mark.parametrize("cut", [1, 3, 9, 40])
def test_broken_framing_raises(cut: int) -> None:
    body = b"".join(FLOWS)
    with pytest.raises(ValueError):
        w.decode_flows(body[:-cut], {})
    bad = bytearray(body)
    struct.pack_into("!H", bad, 0, 4)
    with pytest.raises(ValueError):
        w.decode_flows(bytes(bad), {})


def test_an_unknown_group_type_or_action_is_no_flood_list() -> None:
    i = next(i for i, r in enumerate(GROUPS) if struct.unpack_from("!I", r, 4)[0] == 100)
    select = GROUPS[i][:2] + b"\x01" + GROUPS[i][3:]
    found, _ = by_wire(groups=[*GROUPS[:i], select, *GROUPS[i + 1 :]])
    assert found[100].flood is None and pl.mode_of(100, found[100], TUNNELS) is None


# -- the requests and the connection --------------------------------------------------------


def test_requests_are_what_ovs_ofctl_sends() -> None:
    assert w.flow_desc_request(6, pl.OURS, pl.OURS_MASK) == bytes.fromhex(
        "0612003800000006 0001000000000000 ff000000ffffffff ffffffff00000000"
        "6c32000000000000 ffff000000000000 0001000400000000"
    )
    assert w.group_desc_request(2) == bytes.fromhex(
        "0612001800000002 0007000000000000 fffffffc00000000"
    )
    assert w.hello(1) == bytes.fromhex("0600001000000001 0001000800000040")


def _reply(xid: int, kind: int, records: list[bytes], more: bool) -> bytes:
    body = b"".join(records)
    head = w.MULTIPART.pack(w.OFP15, w.MULTIPART_REPLY, 16 + len(body), xid, kind, int(more))
    return head + body


@pytest.fixture
def switch(tmp_path: Path) -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    """A fake switch on a unix socket: ``serve(script)`` runs ``script(conn)`` after the
    HELLO exchange for one connection; returns the socket path."""
    path = str(tmp_path / "br.mgmt")
    threads: list[threading.Thread] = []
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def serve(script: Callable[[socket.socket], None]) -> str:
        def run() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(16)
                conn.sendall(w.HEADER.pack(w.OFP15, w.HELLO, 8, 1))
                script(conn)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        threads.append(t)
        return path

    yield serve
    server.close()
    for t in threads:
        t.join(5)


def _read_requests(conn: socket.socket) -> None:
    want = len(w.flow_desc_request(1, 0, 0)) + len(w.group_desc_request(2))
    got = b""
    while len(got) < want:
        got += conn.recv(want - len(got))


def test_replies_in_several_messages_with_an_echo_between(switch) -> None:
    half = len(FLOWS) // 2

    def script(conn: socket.socket) -> None:
        _read_requests(conn)
        conn.sendall(_reply(1, w.OFPMP_FLOW_DESC, FLOWS[:half], True))
        conn.sendall(w.HEADER.pack(w.OFP15, w.ECHO_REQUEST, 12, 77) + b"ping")
        conn.sendall(_reply(2, w.OFPMP_GROUP_DESC, GROUPS, False))
        conn.sendall(_reply(1, w.OFPMP_FLOW_DESC, FLOWS[half:], False))
        echo = conn.recv(64)
        assert echo == w.HEADER.pack(w.OFP15, w.ECHO_REPLY, 12, 77) + b"ping"

    found, base = w.OfWire(f"unix:{switch(script)}").dump()
    assert (found, base) == by_wire()


def test_an_error_reply_raises(switch) -> None:
    def script(conn: socket.socket) -> None:
        _read_requests(conn)
        conn.sendall(w.HEADER.pack(w.OFP15, w.ERROR, 12, 1) + struct.pack("!HH", 1, 2))

    with pytest.raises(OfctlError, match="OFPET_BAD_REQUEST code 2"):
        w.OfWire(f"unix:{switch(script)}").dump()


def test_a_closed_connection_or_no_socket_raises(switch, tmp_path: Path) -> None:
    def script(conn: socket.socket) -> None:
        _read_requests(conn)
        conn.sendall(_reply(1, w.OFPMP_FLOW_DESC, FLOWS[:3], True))

    with pytest.raises(OfctlError, match="closed"):
        w.OfWire(f"unix:{switch(script)}").dump()
    with pytest.raises(OfctlError):
        w.OfWire(f"unix:{tmp_path / 'nothing.mgmt'}").dump()
