"""The binary OpenFlow writer: every line shape ``_pipeline`` writes encodes to exactly the
bundle-add message ovs-ofctl 3.1 sends for it (captured in data/ofwire/mods.*, made by
``python tests/e2e/test_ovs_ofwire.py DIR``), entry lines through their templates as through
the general parser; lines outside the vocabulary are refused (and go to ovs-ofctl); the
bundle exchange commits, discards and names refused lines."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import pytest

from l2pop.datapath import _ofwire as w
from l2pop.datapath import _ofwire_mods as mods
from l2pop.datapath import _pipeline as pl
from l2pop.datapath._ofctl import OfCtl, OfctlError

DATA = Path(__file__).parent / "data" / "ofwire"
LINES = (DATA / "mods.txt").read_text().splitlines()
SENT = [bytes.fromhex(x) for x in (DATA / "mods.hex").read_text().split()]


def xid_of(message: bytes) -> int:
    return struct.unpack_from("!I", message, 4)[0]


@pytest.mark.parametrize(
    ("line", "sent"), list(zip(LINES, SENT, strict=True)), ids=range(len(LINES))
)
def test_each_line_encodes_as_ovs_ofctl_sends_it(line: str, sent: bytes) -> None:
    assert mods.bundle_add(line, xid_of(sent), 0) == sent
    assert mods.general(line, xid_of(sent)) == sent[16:]


def mac(i: int) -> str:
    return ":".join(f"{b:02x}" for b in (2, i >> 24 & 255, i >> 16 & 255, i >> 8 & 255, i & 255, 1))


@pytest.mark.parametrize("vni", [1, 100, 0x123456, 0xFFFFFF])
def test_entry_templates_encode_as_the_general_parser(vni: int) -> None:
    lines = []
    for i in range(0, 1 << 20, 4099):
        lines.append(pl.fdb_add(vni, mac(i), f"198.51.{i >> 8 & 255}.{i & 255}", i % 7 + 1))
        lines.append(pl.neigh_add(vni, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", mac(i)))
        lines.append(pl.neigh_add(vni, f"2001:db8::{i >> 16:x}:{i & 0xFFFF:x}", mac(i)))
        lines.append(pl.neigh_add(vni, f"fe80::{i & 0xFFFF:x}:1", mac(i + 1)))
    for xid, line in enumerate(lines):
        assert mods.bundle_add(line, xid, 0)[16:] == mods.general(line, xid), line
    assert all(t is not None for t in mods._templates.values())


@pytest.mark.parametrize(
    "line",
    [
        "flow add table=10,priority=5,cookie=0x1,tcp,tp_dst=80,actions=drop",
        "flow add table=10,priority=5,cookie=0x1,actions=strip_vlan",
        "flow add table=10,priority=5,cookie=0x1,metadata=0x1,"
        "actions=move:NXM_NX_REG0[0..3]->NXM_NX_REG1[0..3]",
        "flow add table=10,priority=5,cookie=0x1/0xff,actions=drop",
        "flow delete_strict table=10,priority=5,cookie=0x1/-1,actions=drop",
        "flow modify table=10,cookie=0x1,actions=drop",
        "group add group_id=7,type=select",
        "group add type=all",
        "group insert_bucket group_id=7,command_bucket_id=last,bucket=weight:3,actions=output:1",
        "flow add table=40,priority=100,cookie=0x6c32010000640000,metadata=0x64,"
        "dl_dst=02:00:00:00:00:01,actions=set_field:0x64->tun_id,set_field:300.0.0.1->tun_dst,"
        "output:1",
        "flow add table=20,priority=100,cookie=0x6c32010000640000,arp,metadata=0x64,"
        "arp_tpa=10.0.0.1,arp_op=1,actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],"
        "set_field:02:00:00:00:00:0g->eth_src,IN_PORT",
        "ovs-ofctl add-flow",
    ],
)
def test_lines_outside_the_vocabulary_are_refused(line: str) -> None:
    with pytest.raises((ValueError, struct.error, OverflowError)):
        mods.bundle_add(line, 2, 0)


def test_an_entry_line_of_another_shape_is_still_encoded_exactly() -> None:
    """A line that looks like an entry but is not ``_pipeline``'s template (a different
    action after the MAC) gets a template of its own shape, or the general parser."""
    line = pl.neigh_add(100, "10.0.0.1", "02:00:00:00:00:01").replace(",IN_PORT", ",output:3")
    assert mods.bundle_add(line, 9, 0)[16:] == mods.general(line, 9)


# -- the bundle exchange -------------------------------------------------------------------


def _messages(conn: socket.socket) -> Iterator[tuple[int, int, bytes]]:
    buf = b""
    while True:
        while len(buf) < 8 or len(buf) < struct.unpack_from("!H", buf, 2)[0]:
            try:
                data = conn.recv(65536)
            except OSError:  # the client closed with replies unread
                return
            if not data:
                return
            buf += data
        length = struct.unpack_from("!H", buf, 2)[0]
        yield buf[1], xid_of(buf), buf[:length]
        buf = buf[length:]


def _error(xid: int, kind: int, code: int) -> bytes:
    return w.HEADER.pack(w.OFP15, w.ERROR, 12, xid) + struct.pack("!HH", kind, code)


def _control_reply(xid: int, kind: int) -> bytes:
    return struct.pack("!BBHIIHH", w.OFP15, w.BUNDLE_CONTROL, 16, xid, 0, kind, 3)


Script = Callable[[int, int, bytes], list[bytes]]


@pytest.fixture
def switch(tmp_path: Path) -> Iterator[tuple[Callable[[Script], str], list[tuple[int, int]]]]:
    """A fake switch answering each message with ``script(kind, xid, message)``; records
    (kind, xid) of every message it got."""
    path = str(tmp_path / "br.mgmt")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    got: list[tuple[int, int]] = []
    threads = []

    def serve(script: Script) -> str:
        def run() -> None:
            conn, _ = server.accept()
            with conn:
                for kind, xid, message in _messages(conn):
                    got.append((kind, xid))
                    if kind == w.HELLO:
                        conn.sendall(w.HEADER.pack(w.OFP15, w.HELLO, 8, xid))
                    for reply in script(kind, xid, message):
                        conn.sendall(reply)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        threads.append(t)
        return path

    yield serve, got
    server.close()
    for t in threads:
        t.join(5)


def _well(kind: int, xid: int, message: bytes) -> list[bytes]:
    if kind == w.BUNDLE_CONTROL:
        reply = {w.OPEN_REQUEST: 1, w.COMMIT_REQUEST: 5, w.DISCARD_REQUEST: 7}
        return [_control_reply(xid, reply[struct.unpack_from("!H", message, 12)[0]])]
    if kind == w.BARRIER_REQUEST:
        return [w.HEADER.pack(w.OFP15, 21, 8, xid)]
    return []


def _controls(got: list[tuple[int, int]]) -> list[int]:
    return [xid for kind, xid in got if kind == w.BUNDLE_CONTROL]


def test_a_bundle_is_opened_added_fenced_and_committed(switch) -> None:
    serve, got = switch
    w.OfWire(f"unix:{serve(_well)}").bundle(LINES)
    adds = [xid for kind, xid in got if kind == w.BUNDLE_ADD_MESSAGE]
    assert adds == list(range(2, len(LINES) + 2))
    assert _controls(got) == [1, len(LINES) + 3]  # open, commit


def test_a_refused_add_discards_and_names_its_line(switch) -> None:
    serve, got = switch

    def script(kind: int, xid: int, message: bytes) -> list[bytes]:
        if kind == w.BUNDLE_ADD_MESSAGE and xid == 4:
            return [_error(xid, 6, 0)]
        return _well(kind, xid, message)

    with pytest.raises(OfctlError) as refused:
        w.OfWire(f"unix:{serve(script)}").bundle(LINES)
    assert refused.value.text == f"Error OFPGMFC_GROUP_EXISTS for: {LINES[2]}"
    assert _controls(got)[-1] == len(LINES) + 3  # the discard, no commit
    assert (w.BUNDLE_CONTROL, len(LINES) + 3) in got


def test_a_failed_commit_names_the_failing_line(switch) -> None:
    serve, _ = switch

    def script(kind: int, xid: int, message: bytes) -> list[bytes]:
        if kind == w.BUNDLE_CONTROL and struct.unpack_from("!H", message, 12)[0] == 4:
            return [_error(7, 2, 9), _error(xid, 17, 13)]
        return _well(kind, xid, message)

    with pytest.raises(OfctlError) as refused:
        w.OfWire(f"unix:{serve(script)}").bundle(LINES)
    assert refused.value.text.splitlines() == [
        f"Error OFPBAC_BAD_OUT_GROUP for: {LINES[5]}",
        "Error OFPBFC_MSG_FAILED for: bundle",
    ]


def test_outside_the_vocabulary_the_whole_batch_goes_to_ovs_ofctl(switch) -> None:
    serve, got = switch
    path = serve(_well)
    lines = [*LINES[:3], "flow add table=10,priority=5,cookie=0x1,tcp,tp_dst=80,actions=drop"]
    with mock.patch.object(OfCtl, "bundle") as ofctl:
        w.OfWire(f"unix:{path}").bundle(lines)
    ofctl.assert_called_once_with(lines)
    socket.socket(socket.AF_UNIX).connect(path)  # let the fake switch's accept return
    assert not [k for k, _ in got if k == w.BUNDLE_ADD_MESSAGE]
