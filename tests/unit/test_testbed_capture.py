"""The underlay capture's pcap parser and the testbed's naming and address rules (no root)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from l2pop.testbed import netns as nsx
from l2pop.testbed.capture import CaptureResult, parse_pcap
from l2pop.testbed.nodes import underlay_addresses

MAC_A = bytes.fromhex("fa163e000001")
MAC_B = bytes.fromhex("fa163e000002")
BCAST = b"\xff" * 6


def eth(dst: bytes, src: bytes, etype: int, payload: bytes) -> bytes:
    return dst + src + struct.pack("!H", etype) + payload


def arp_request(sender: str, target: str) -> bytes:
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + (
        MAC_A + ipaddress.IPv4Address(sender).packed + b"\0" * 6
    ) + ipaddress.IPv4Address(target).packed  # fmt: skip


def ipv6_icmp(src: str, dst: str, icmp_type: int, body: bytes = b"") -> bytes:
    icmp = bytes([icmp_type, 0, 0, 0]) + b"\0" * 4 + body
    head = struct.pack("!IHBB", 6 << 28, len(icmp), 58, 255)
    return head + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + icmp


def vxlan(src_vtep: str, dst_vtep: str, vni: int, inner: bytes, *, dport: int = 4789) -> bytes:
    vx = bytes([0x08, 0, 0, 0]) + vni.to_bytes(3, "big") + b"\0"
    udp = struct.pack("!HHHH", 54321, dport, 8 + len(vx) + len(inner), 0) + vx + inner
    ip4 = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        17,
        0,
        ipaddress.IPv4Address(src_vtep).packed,
        ipaddress.IPv4Address(dst_vtep).packed,
    )
    return eth(b"\x02" * 6, b"\x04" * 6, 0x0800, ip4 + udp)


def ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    head = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    )  # fmt: skip
    return eth(b"\x02" * 6, b"\x04" * 6, 0x0800, head + payload)


def gre(src_vtep: str, dst_vtep: str, key: int | None, inner: bytes, **kw: int) -> bytes:
    """GRE as Open vSwitch sends it (key, protocol 0x6558), with optional checksum and
    sequence words (``csum``/``seq``) or another protocol (``proto``)."""
    flags = (0x2000 if key is not None else 0) | (0x8000 if "csum" in kw else 0)
    flags |= 0x1000 if "seq" in kw else 0
    head = struct.pack("!HH", flags, kw.get("proto", 0x6558))
    head += struct.pack("!HH", kw["csum"], 0) if "csum" in kw else b""
    head += struct.pack("!I", key) if key is not None else b""
    head += struct.pack("!I", kw["seq"]) if "seq" in kw else b""
    return ipv4(src_vtep, dst_vtep, 47, head + inner)


def pcap(frames: list[bytes], *, big_endian: bool = False) -> bytes:
    e = ">" if big_endian else "<"
    out = struct.pack(e + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262, 1)
    for i, frame in enumerate(frames):
        out += struct.pack(e + "IIII", 1000 + i, 500, len(frame), len(frame)) + frame
    return out


def sample() -> list[bytes]:
    arp = eth(BCAST, MAC_A, 0x0806, arp_request("198.19.1.1", "198.19.1.2"))
    ns_target = ipaddress.IPv6Address("2001:db8::1:2").packed
    nd = eth(
        bytes.fromhex("3333ff010002"),
        MAC_A,
        0x86DD,
        ipv6_icmp("2001:db8::1:1", "ff02::1:ff01:2", 135, ns_target),
    )
    mld = eth(bytes.fromhex("333300000016"), MAC_A, 0x86DD, ipv6_icmp("::", "ff02::16", 143))
    unicast = eth(MAC_B, MAC_A, 0x0800, b"\x45" + b"\0" * 19)
    return [
        vxlan("192.0.2.1", "192.0.2.2", 1001, arp),
        vxlan("192.0.2.1", "192.0.2.3", 1001, arp),
        vxlan("192.0.2.1", "192.0.2.4", 1001, nd),
        vxlan("192.0.2.1", "192.0.2.2", 1002, mld),
        vxlan("192.0.2.1", "192.0.2.2", 1001, unicast),
        vxlan("192.0.2.1", "192.0.2.2", 1001, unicast, dport=53),  # not VXLAN
    ]


@pytest.mark.parametrize("big_endian", [False, True])
def test_parse_pcap_classifies_inner_frames(big_endian: bool) -> None:
    packets = parse_pcap(pcap(sample(), big_endian=big_endian))
    assert len(packets) == 5
    first = packets[0]
    assert (first.src_vtep, first.dst_vtep, first.vni) == ("192.0.2.1", "192.0.2.2", 1001)
    assert first.arp_target == "198.19.1.2"
    assert first.time == pytest.approx(1000.0005)
    assert [p.kind() for p in packets] == [
        "arp_broadcast",
        "arp_broadcast",
        "nd_multicast",
        "bum",
        "unicast",
    ]
    assert packets[2].nd_target == "2001:db8::1:2"


def test_capture_result_counts_per_destination() -> None:
    result = CaptureResult(parse_pcap(pcap(sample())))
    assert result.summary() == {
        "vxlan": 5,
        "arp_broadcast": 2,
        "nd_multicast": 1,
        "bum": 4,
        "unicast": 1,
    }
    assert result.per_destination("arp_broadcast") == {"192.0.2.2": 1, "192.0.2.3": 1}
    assert result.count("bum", dst="192.0.2.2") == 2
    assert result.count("bum", dst="192.0.2.2", vni=1001) == 1
    assert result.count(dst="192.0.2.4", vni=1002) == 0


def test_gre_packets_are_read_with_their_key_as_the_vni() -> None:
    arp = eth(BCAST, MAC_A, 0x0806, arp_request("198.19.1.1", "198.19.1.2"))
    unicast = eth(MAC_B, MAC_A, 0x0800, b"\x45" + b"\0" * 19)
    frames = [
        gre("192.0.2.1", "192.0.2.2", 2001, arp),
        gre("192.0.2.1", "192.0.2.3", 2001, unicast, csum=0xABCD, seq=7),
        gre("192.0.2.1", "192.0.2.3", None, unicast),  # no key: not an overlay packet
        gre("192.0.2.1", "192.0.2.3", 2001, unicast[14:], proto=0x0800),  # IP in GRE
        vxlan("192.0.2.1", "192.0.2.2", 1001, unicast),
    ]
    packets = parse_pcap(pcap(frames))
    assert [(p.encap, p.vni, p.kind()) for p in packets] == [
        ("gre", 2001, "arp_broadcast"),
        ("gre", 2001, "unicast"),
        ("vxlan", 1001, "unicast"),
    ]
    assert (packets[1].src_vtep, packets[1].dst_vtep) == ("192.0.2.1", "192.0.2.3")
    assert (packets[1].inner_src, packets[1].inner_dst) == (
        "fa:16:3e:00:00:01",
        "fa:16:3e:00:00:02",
    )
    assert CaptureResult(packets).count("arp_broadcast", vni=2001) == 1
    assert parse_pcap(pcap([f[:40] for f in frames[:2]])) == []  # cut inside the GRE header


def test_parse_pcap_rejects_other_files() -> None:
    assert parse_pcap(b"") == []
    with pytest.raises(ValueError, match="not a pcap"):
        parse_pcap(b"x" * 40)


def test_truncated_frames_are_tolerated() -> None:
    frames = [f[:60] for f in sample()]  # snaplen cut inside the inner frame
    packets = parse_pcap(pcap(frames))
    assert len(packets) == 5
    assert packets[0].arp_target is None


def test_addresses_stay_in_the_documentation_ranges() -> None:
    for ok in ("192.0.2.7", "198.18.3.4", "198.19.200.1", "203.0.113.9", "2001:db8::5"):
        nsx.check_address(ok)
    for bad in ("10.0.0.1", "192.0.3.1", "8.8.8.8", "fd00::1", "2001:db9::1"):
        with pytest.raises(ValueError):
            nsx.check_address(bad)
    assert nsx.prefixlen("198.19.1.1") == 16
    assert nsx.prefixlen("203.0.113.1") == 24
    assert nsx.prefixlen("2001:db8::1") == 64


def test_underlay_addresses() -> None:
    vteps, relay, plen = underlay_addresses(4)
    assert vteps == ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]
    assert (relay, plen) == ("192.0.2.254", 24)
    vteps, relay, plen = underlay_addresses(1000)
    assert len(set(vteps)) == 1000 and relay not in vteps and plen == 16
    net = ipaddress.ip_network("198.18.0.0/16")
    assert all(ipaddress.ip_address(v) in net for v in vteps)


def test_name_patterns() -> None:
    assert nsx.PREFIX_RE.match("l2pab12")
    assert nsx.TESTBED_NETNS_RE.match("l2pab12-h3")
    assert nsx.TESTBED_NETNS_RE.match("l2pab12-v10")
    assert nsx.TESTBED_NETNS_RE.match("l2pab12-ul")
    for other in ("l2pab12-x", "l2pxyzw-h1", "l2pab123-h1", "myns", "l2pop-h1"):
        assert not nsx.TESTBED_NETNS_RE.match(other)
    assert nsx.THROWAWAY_NETNS_RE.match("l2pt-1234-abcdef")
    assert nsx.THROWAWAY_NETNS_RE.match("l2ptvm-1234-abcdef")
    assert not nsx.THROWAWAY_NETNS_RE.match("l2pt-1234-abc")
    assert not nsx.THROWAWAY_NETNS_RE.match("other-1234-abcdef")
