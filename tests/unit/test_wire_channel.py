"""The channel's messages on the wire (``l2pop.wire.channel``, msgspec Structs).

Compatibility: the JSON text ``encode`` writes is byte for byte what the pydantic models it
replaced wrote (the expected texts below were produced by them), and frames from older or
newer peers (fields absent, unknown fields, unknown encaps) decode as they did.

Hostile input: every bound on an agent -> server message is enforced when decoding, the
frame's own bound and one step beyond it (a table, ``BOUNDS``).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from l2pop.model import ArpSuppression, Encap, NetworkDelta, NetworkTables, PortStatus
from l2pop.wire.channel import (
    Ack,
    AckError,
    Delta,
    ErrorCode,
    ErrorMsg,
    Heartbeat,
    Hello,
    LocalPort,
    NetworkDeltaMsg,
    NetworkTablesMsg,
    Resume,
    Resync,
    Snapshot,
    agent_message,
    encode,
    encode_bytes,
    hello_message,
    server_message,
)

D = "d" * 32
P1 = LocalPort(
    id="p1",
    network_id="n1",
    vni=100,
    mac="fa:16:3e:00:00:01",
    fixed_ips=["10.0.0.1", "fe80::1"],
    status=PortStatus.ACTIVE,
)
P2 = LocalPort(id="p2", network_id="n1", vni=100, mac="fa:16:3e:00:00:02", status=PortStatus.BUILD)
DELTA = NetworkDelta(
    "n1",
    100,
    ArpSuppression.PROXY,
    flood_add=frozenset({"192.0.2.2", "192.0.2.1"}),
    fdb_add={"fa:16:3e:00:00:02": "192.0.2.2"},
    fdb_remove={"fa:16:3e:00:00:09": "192.0.2.9"},
    neigh_add={"10.0.0.2": "fa:16:3e:00:00:02", "fe80::1": "fa:16:3e:00:00:01"},
    encap=Encap.GRE,
)
TABLES = NetworkTables(
    "n2-é",
    2**24 - 1,
    ArpSuppression.OFF,
    frozenset({"192.0.2.3"}),
    {"fa:16:3e:00:00:03": "192.0.2.3"},
    {},
    Encap.VXLAN,
)
_NET_T = (
    '{"network_id":"n2-é","vni":16777215,"arp_suppression":"off","flood":["192.0.2.3"],'
    '"fdb":[["fa:16:3e:00:00:03","192.0.2.3"]],"neigh":[],"encap":"vxlan"}'
)
_P1 = (
    '{"id":"p1","network_id":"n1","vni":100,"mac":"fa:16:3e:00:00:01",'
    '"fixed_ips":["10.0.0.1","fe80::1"],"status":"ACTIVE"}'
)
_P2 = (
    '{"id":"p2","network_id":"n1","vni":100,"mac":"fa:16:3e:00:00:02",'
    '"fixed_ips":[],"status":"BUILD"}'
)
_ERR1 = '{"network_id":"n1","vni":100,"entry":null,"message":"File exists","attempts":1}'
_ERR2 = '{"network_id":"n2","vni":5,"entry":"device vxlan-5","message":"x","attempts":4}'

#: (message, the text pydantic's ``model_dump_json`` wrote for it, with the agent's
#: exclusions: a hello without its None fields, an ack without empty errors)
GOLDEN: list[tuple[Any, str]] = [
    (
        Delta(
            revision=5,
            prev_revision=4,
            digest="a" * 32,
            networks=[NetworkDeltaMsg.of(DELTA)],
            ports=[P1, P2],
            ports_removed=["p3"],
        ),
        '{"type":"delta","revision":5,"prev_revision":4,"digest":"' + "a" * 32 + '",'
        '"networks":[{"network_id":"n1","vni":100,"arp_suppression":"proxy","leave":false,'
        '"flood_add":["192.0.2.1","192.0.2.2"],"flood_remove":[],'
        '"fdb_add":[["fa:16:3e:00:00:02","192.0.2.2"]],'
        '"fdb_remove":[["fa:16:3e:00:00:09","192.0.2.9"]],'
        '"neigh_add":[["10.0.0.2","fa:16:3e:00:00:02"],["fe80::1","fa:16:3e:00:00:01"]],'
        '"neigh_remove":[],"encap":"gre"}],"ports":['
        + _P1
        + ","
        + _P2
        + '],"ports_removed":["p3"]}',
    ),
    (
        Snapshot(revision=5, digest="b" * 32, networks=[NetworkTablesMsg.of(TABLES)], ports=[P1]),
        '{"type":"snapshot","revision":5,"digest":"' + "b" * 32 + '","networks":[' + _NET_T + "],"
        '"ports":[' + _P1 + "]}",
    ),
    (
        Snapshot(revision=0, digest="b" * 32),
        '{"type":"snapshot","revision":0,"digest":"' + "b" * 32 + '","networks":[],"ports":[]}',
    ),
    (
        Resume(
            revision=9,
            prev_revision=5,
            digest="c" * 32,
            networks=[NetworkTablesMsg.of(TABLES)],
            networks_left=["n9"],
            ports=[P2],
        ),
        '{"type":"resume","revision":9,"prev_revision":5,"digest":"' + "c" * 32 + '",'
        '"networks":[' + _NET_T + '],"networks_left":["n9"],"ports":[' + _P2 + "]}",
    ),
    (
        Heartbeat(revision=9, digest="c" * 32),
        '{"type":"heartbeat","revision":9,"digest":"' + "c" * 32 + '"}',
    ),
    (
        ErrorMsg(code=ErrorCode.CLOSED, message='bye "quoted" \\ \n\t\x01 é 😀'),
        '{"type":"error","code":"closed","message":"bye \\"quoted\\" \\\\ \\n\\t\\u0001 é 😀"}',
    ),
    (
        Hello(host="h1", vtep_ip="192.0.2.1", datapath="linux", encaps=[Encap.GRE, Encap.VXLAN]),
        '{"type":"hello","host":"h1","vtep_ip":"192.0.2.1","version":1,"datapath":"linux",'
        '"encaps":["gre","vxlan"]}',
    ),
    (
        Hello(host="h1", vtep_ip="192.0.2.1", resume_revision=12),
        '{"type":"hello","host":"h1","vtep_ip":"192.0.2.1","version":1,"encaps":["vxlan"],'
        '"resume_revision":12}',
    ),
    (Ack(revision=3, digest=D), '{"type":"ack","revision":3,"digest":"' + D + '"}'),
    (
        Ack(
            revision=3,
            digest=D,
            errors=[
                AckError(network_id="n1", vni=100, message="File exists"),
                AckError(network_id="n2", vni=5, entry="device vxlan-5", message="x", attempts=4),
            ],
        ),
        '{"type":"ack","revision":3,"digest":"' + D + '","errors":[' + _ERR1 + "," + _ERR2 + "]}",
    ),
    (Resync(reason="gap 4 -> 6"), '{"type":"resync","reason":"gap 4 -> 6"}'),
    (Resync(), '{"type":"resync","reason":""}'),
]


@pytest.mark.parametrize(("message", "text"), GOLDEN, ids=lambda v: getattr(v, "type", None))
def test_encode_writes_what_the_pydantic_models_wrote(message: Any, text: str) -> None:
    assert encode(message) == text
    assert encode_bytes(message) == text.encode()
    decoder = agent_message if isinstance(message, Hello | Ack | Resync) else server_message
    assert decoder.decode(text) == message  # and it reads back as it was
    assert decoder.decode(text.encode()) == message  # from bytes as well


def test_an_old_agents_frames_decode_with_the_defaults() -> None:
    # an agent older than datapath, encaps, resume_revision and ack errors
    hello = agent_message.decode('{"type":"hello","host":"h1","vtep_ip":"192.0.2.1","version":1}')
    assert hello == Hello(host="h1", vtep_ip="192.0.2.1")
    assert isinstance(hello, Hello) and hello.encaps == [Encap.VXLAN]
    assert (hello.datapath, hello.resume_revision, hello.version) == (None, None, 1)
    # as the server reads a first frame: the tag may even be absent
    assert hello_message.decode('{"host":"h1","vtep_ip":"192.0.2.1"}') == hello
    ack = agent_message.decode(f'{{"type":"ack","revision":3,"digest":"{D}"}}')
    assert ack == Ack(revision=3, digest=D, errors=[])
    assert agent_message.decode('{"type":"resync"}') == Resync(reason="")


def test_an_old_servers_frames_decode_with_the_defaults() -> None:
    snap = server_message.decode(
        '{"type":"snapshot","revision":1,"digest":"' + D + '","networks":'
        '[{"network_id":"n1","vni":7,"arp_suppression":"proxy"}]}'
    )
    assert isinstance(snap, Snapshot) and snap.ports == []
    [net] = snap.networks
    assert (net.flood, net.fdb, net.neigh, net.encap) == ([], [], [], Encap.VXLAN)
    delta = server_message.decode(
        '{"type":"delta","revision":2,"prev_revision":1,"digest":"' + D + '","networks":'
        '[{"network_id":"n1","vni":7,"arp_suppression":"proxy","leave":true}]}'
    )
    assert isinstance(delta, Delta) and delta.networks[0].delta() == NetworkDelta(
        "n1", 7, ArpSuppression.PROXY, leave=True
    )


def test_unknown_fields_are_ignored_and_unknown_encaps_dropped() -> None:
    hello = agent_message.decode(
        '{"type":"hello","host":"h1","vtep_ip":"192.0.2.1","version":1,"datapath":"ovs",'
        '"encaps":["geneve","gre","vxlan","srv6"],"colour":"blue","nested":{"a":[1,2]}}'
    )
    assert isinstance(hello, Hello) and hello.encaps == [Encap.GRE, Encap.VXLAN]
    assert all(type(e) is Encap for e in hello.encaps)
    # the bound counts the encaps this side knows, as the pydantic validator did
    many = ["vxlan"] * 8 + ["geneve"] * 20
    assert len(msgspec.convert({"host": "h", "vtep_ip": "v", "encaps": many}, Hello).encaps) == 8
    ack = agent_message.decode(
        f'{{"type":"ack","revision":3,"digest":"{D}","future":1,'
        '"errors":[{"network_id":"n1","vni":1,"message":"m","why":"?"}]}'
    )
    assert isinstance(ack, Ack) and ack.errors == [AckError(network_id="n1", vni=1, message="m")]
    beat = server_message.decode(f'{{"type":"heartbeat","revision":1,"digest":"{D}","x":[]}}')
    assert beat == Heartbeat(revision=1, digest=D)


def test_building_a_hello_keeps_only_known_encaps() -> None:
    hello = Hello(host="h1", vtep_ip="192.0.2.1", encaps=[Encap.VXLAN, "geneve", "gre"])  # type: ignore[list-item]
    assert hello.encaps == [Encap.VXLAN, Encap.GRE]
    assert json.loads(encode(hello))["encaps"] == ["vxlan", "gre"]


def test_tables_and_deltas_round_trip_through_their_helpers() -> None:
    msg = msgspec.json.decode(encode(NetworkTablesMsg.of(TABLES)), type=NetworkTablesMsg)
    assert msg.tables() == TABLES
    assert msg.fdb == [("fa:16:3e:00:00:03", "192.0.2.3")]  # pairs: 2-element arrays
    assert NetworkDeltaMsg.of(DELTA).delta() == DELTA


# -- bounds of agent -> server messages ----------------------------------------------------

HELLO: dict[str, Any] = {"type": "hello", "host": "h1", "vtep_ip": "192.0.2.1"}
ACK: dict[str, Any] = {"type": "ack", "revision": 3, "digest": D}
ERR: dict[str, Any] = {"network_id": "n1", "vni": 100, "message": "File exists"}


def _err(**fields: Any) -> dict[str, Any]:
    return {**ACK, "errors": [{**ERR, **fields}]}


#: (what, a frame at the bound: accepted, one beyond it: refused)
BOUNDS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("hello host length", {**HELLO, "host": "h" * 63}, {**HELLO, "host": "h" * 64}),
    ("hello vtep_ip length", {**HELLO, "vtep_ip": "1" * 45}, {**HELLO, "vtep_ip": "1" * 46}),
    ("hello version >= 0", {**HELLO, "version": 0}, {**HELLO, "version": -1}),
    ("hello version int32", {**HELLO, "version": 2**31 - 1}, {**HELLO, "version": 2**31}),
    ("hello version type", {**HELLO, "version": 1}, {**HELLO, "version": "1"}),
    ("hello datapath length", {**HELLO, "datapath": "d" * 32}, {**HELLO, "datapath": "d" * 33}),
    ("hello encaps count", {**HELLO, "encaps": ["vxlan"] * 8}, {**HELLO, "encaps": ["gre"] * 9}),
    ("hello encaps items", {**HELLO, "encaps": ["gre"]}, {**HELLO, "encaps": [1]}),
    ("hello encaps list", {**HELLO, "encaps": []}, {**HELLO, "encaps": "vxlan"}),
    ("hello resume >= 0", {**HELLO, "resume_revision": 0}, {**HELLO, "resume_revision": -1}),
    (
        "hello resume bigint",
        {**HELLO, "resume_revision": 2**63 - 1},
        {**HELLO, "resume_revision": 2**63},
    ),
    ("hello host required", HELLO, {"type": "hello", "vtep_ip": "192.0.2.1"}),
    ("ack revision >= 0", {**ACK, "revision": 0}, {**ACK, "revision": -1}),
    ("ack revision bigint", {**ACK, "revision": 2**63 - 1}, {**ACK, "revision": 2**63}),
    ("ack revision type", ACK, {**ACK, "revision": "3"}),
    ("ack digest short", ACK, {**ACK, "digest": "d" * 31}),
    ("ack digest long", ACK, {**ACK, "digest": "d" * 33}),
    ("ack digest newline", ACK, {**ACK, "digest": D + "\n"}),
    ("ack digest case", {**ACK, "digest": "0123456789abcdef" * 2}, {**ACK, "digest": "D" * 32}),
    ("ack digest hex", ACK, {**ACK, "digest": "g" * 32}),
    ("ack digest huge", ACK, {**ACK, "digest": "0" * 1_000_000}),
    ("ack digest required", ACK, {"type": "ack", "revision": 3}),
    ("ack errors count", {**ACK, "errors": [ERR] * 32}, {**ACK, "errors": [ERR] * 33}),
    ("ack errors list", ACK, {**ACK, "errors": "n1 is broken"}),
    ("error network_id empty", _err(network_id="n"), _err(network_id="")),
    ("error network_id length", _err(network_id="n" * 64), _err(network_id="n" * 65)),
    ("error vni >= 0", _err(vni=0), _err(vni=-1)),
    ("error vni 24 bits", _err(vni=2**24 - 1), _err(vni=2**24)),
    ("error entry length", _err(entry="e" * 200), _err(entry="e" * 201)),
    ("error message length", _err(message="m" * 200), _err(message="m" * 201)),
    ("error message required", _err(), {**ACK, "errors": [{"network_id": "n1", "vni": 1}]}),
    ("error attempts >= 1", _err(attempts=1), _err(attempts=0)),
    ("error attempts int32", _err(attempts=2**31 - 1), _err(attempts=2**31)),
    (
        "resync reason length",
        {"type": "resync", "reason": "r" * 200},
        {"type": "resync", "reason": "r" * 201},
    ),
    ("message type", {"type": "resync"}, {"type": "snapshot", "revision": 1, "digest": D}),
]


@pytest.mark.parametrize(("what", "ok", "bad"), BOUNDS, ids=[b[0] for b in BOUNDS])
def test_each_bound_of_an_agent_message_is_enforced(
    what: str, ok: dict[str, Any], bad: dict[str, Any]
) -> None:
    agent_message.decode(json.dumps(ok))
    with pytest.raises(msgspec.ValidationError) as refused:
        agent_message.decode(json.dumps(bad))
    assert str(refused.value), what
    if bad.get("type") == "hello":  # a session's first frame, as the server reads it
        hello_message.decode(json.dumps(ok))
        with pytest.raises(msgspec.ValidationError):
            hello_message.decode(json.dumps(bad))


def test_the_refusal_names_the_field_and_bad_json_is_a_decode_error() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"at `\$\.revision`"):
        agent_message.decode(json.dumps({**ACK, "revision": "3"}))
    with pytest.raises(msgspec.ValidationError, match=r"at `\$\.errors\[0\]\.vni`"):
        agent_message.decode(json.dumps(_err(vni=-1)))
    with pytest.raises(msgspec.DecodeError):
        agent_message.decode('{"type":"ack",')
    with pytest.raises(msgspec.ValidationError):
        hello_message.decode(json.dumps(ACK))  # the first frame must be a hello


def test_json_nested_too_deeply_is_malformed_not_a_runtime_error() -> None:
    deep = "[" * 50_000 + "]" * 50_000
    for decoder in (agent_message, hello_message, server_message):
        with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
            decoder.decode(f'{{"x": {deep}}}')
