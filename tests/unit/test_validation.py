"""Input rules of l2pop.model.validation: every refusal names its field."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l2pop.model import InvalidField
from l2pop.model import validation as v


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("FA:16:3E:00:00:01", "fa:16:3e:00:00:01"),
        ("fa-16-3e-0a-0b-0c", "fa:16:3e:0a:0b:0c"),
        ("fa163e0a0b0c", "fa:16:3e:0a:0b:0c"),
        ("FA163E0A0B0C", "fa:16:3e:0a:0b:0c"),
        ("02:00:00:00:00:01", "02:00:00:00:00:01"),
    ],
)
def test_mac_is_normalised(raw: str, normalised: str) -> None:
    assert v.parse_mac(raw) == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "01:00:5e:00:00:01",  # multicast
        "ff:ff:ff:ff:ff:ff",  # broadcast
        "00:00:00:00:00:00",  # reserved for flood entries
        "fa:16:3e:00:00",  # too short
        "fa:16:3e:00-00:01",  # mixed separators
        "zz:16:3e:00:00:01",
        " 02:00:00:00:00:01",  # no silent stripping
        "02:00:00:00:00:01 ",
        "02:00:00:00:00:01\n",
        "fa16.3e00.0001",  # Cisco dotted form: not one of the three accepted spellings
        "fa:16:3e:00:00:01:02",
        "\uff10\uff12:00:00:00:00:01",  # fullwidth digits
        42,
        None,
    ],
)
def test_bad_macs_are_refused_naming_the_field(raw: object) -> None:
    with pytest.raises(InvalidField) as err:
        v.parse_mac(raw)
    assert err.value.field == "mac"


def test_generated_macs_are_neutron_style_unicast() -> None:
    macs = {v.generate_mac() for _ in range(200)}
    assert len(macs) > 190
    for mac in macs:
        assert mac.startswith("fa:16:3e:")
        assert v.parse_mac(mac) == mac


@pytest.mark.parametrize("vni", [1, 4096, 16_777_215])
def test_vni_range_accepted(vni: int) -> None:
    assert v.parse_vni(vni) == vni


@pytest.mark.parametrize("vni", [0, -1, 16_777_216, True, "100", 1.5])
def test_vni_out_of_range_or_wrong_type(vni: object) -> None:
    with pytest.raises(InvalidField) as err:
        v.parse_vni(vni)
    assert err.value.field == "vni"


def test_fixed_ips_are_canonical_sorted_and_distinct() -> None:
    ips = v.parse_fixed_ips(["2001:DB8::0001", "198.19.0.10", "198.19.0.9"])
    assert ips == ("198.19.0.9", "198.19.0.10", "2001:db8::1")


@pytest.mark.parametrize(
    "ips",
    [
        ["198.19.0.1", "198.19.0.1"],
        ["2001:db8::1", "2001:DB8:0::1"],
        ["not-an-ip"],
        ["224.0.0.1"],
        ["0.0.0.0"],
        ["127.0.0.1"],
        ["fe80::1"],
        "198.19.0.1",
    ],
)
def test_bad_fixed_ips(ips: object) -> None:
    with pytest.raises(InvalidField) as err:
        v.parse_fixed_ips(ips)
    assert err.value.field.startswith("fixed_ips")


def test_vtep_must_be_unicast_ipv4() -> None:
    assert v.parse_vtep_ip("192.0.2.1") == "192.0.2.1"
    for bad in ("2001:db8::1", "239.1.1.1", "0.0.0.0", "x", "192.0.2.1%eth0", " 192.0.2.1"):
        with pytest.raises(InvalidField) as err:
            v.parse_vtep_ip(bad)
        assert err.value.field == "vtep_ip"


def test_host_names() -> None:
    assert v.parse_host_name("compute-01.rack_2") == "compute-01.rack_2"
    for bad in ("", "-leading", "has space", "x" * 64, None, "h\n", "h\r", "h\x00", "bad\ud800"):
        with pytest.raises(InvalidField):
            v.parse_host_name(bad)


def test_arp_suppression_modes() -> None:
    assert v.parse_arp_suppression("proxy").value == "proxy"
    with pytest.raises(InvalidField) as err:
        v.parse_arp_suppression("flood")
    assert "neigh_suppress" in err.value.message


# -- plain addresses only (docs/adr/0013-input-contract.md) --------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "2001:db8::8%eth0",  # zone id: Python's ipaddress keeps it as a scope id
        "2001:db8::8%" + "e" * 200,
        "fe80::1%1",
        "::ffff:198.19.0.1",  # IPv4-mapped: the port lists the IPv4 address itself
        "::ffff:c613:1",
        "0:0:0:0:0:ffff:198.19.0.1",
        " 198.19.0.1",
        "198.19.0.1\n",
        "198.019.0.1",
        "\uff11\uff19\uff18.19.0.1",  # fullwidth digits
        "255.255.255.255",
        "ff02::1",
        "::1",
        "::",
        "",
        None,
        ["198.19.0.1"],
    ],
)
def test_only_plain_addresses_are_port_addresses(raw: object) -> None:
    with pytest.raises(InvalidField) as err:
        v.parse_ip(raw, "fixed_ips[0]")
    assert err.value.field == "fixed_ips[0]"


def test_ipv6_with_an_ipv4_tail_is_canonicalised() -> None:
    assert v.parse_ip("2001:db8::198.19.0.1") == "2001:db8::c613:1"
    assert v.parse_ip("2001:DB8:0:0:0:0:0:1") == "2001:db8::1"


HUGE = "1" * 15_000_000


@pytest.mark.parametrize(
    ("parse", "field"),
    [
        (v.parse_ip, "fixed_ips[0]"),
        (v.parse_vtep_ip, "vtep_ip"),
        (v.parse_mac, "mac"),
        (v.parse_name, "name"),
        (v.parse_host_name, "name"),
        (v.parse_uuid, "network_id"),
        (v.parse_arp_suppression, "arp_suppression"),
        (v.parse_encap, "encap"),
    ],
)
def test_a_15_mb_string_is_refused_before_it_is_parsed(parse: Any, field: str) -> None:
    started = time.perf_counter()
    for _ in range(100):
        with pytest.raises(InvalidField) as err:
            parse(HUGE, field)
    assert err.value.field == field
    assert len(err.value.message) < 200  # the value is not echoed back
    assert time.perf_counter() - started < 0.05  # 100 refusals: no regex, no parse


def test_names_refuse_control_characters_and_lone_surrogates() -> None:
    assert v.parse_name("blue net é ✓ 日本") == "blue net é ✓ 日本"
    assert v.parse_name("x" * v.NAME_MAX_LENGTH) == "x" * v.NAME_MAX_LENGTH
    for bad in ("bad\ud800", "\udfff", "a\x00b", "tab\t", "del\x7f", "c1\x85", "x" * 256, None):
        with pytest.raises(InvalidField) as err:
            v.parse_name(bad)
        assert err.value.field == "name"


@pytest.mark.parametrize(
    "raw",
    [
        "1b4e28ba2fa111d2883f0016d3cca427",  # no hyphens
        "{1b4e28ba-2fa1-11d2-883f-0016d3cca427}",
        "urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "1b4e28ba-2fa1-11d2-883f-0016d3cca42",
        "1b4e28ba-2fa1-11d2-883f-0016d3cca427\n",
        "1b4e28ba2-fa1-11d2-883f-0016d3cca427",
        "\x00",
        "",
        None,
    ],
)
def test_only_canonical_uuids(raw: object) -> None:
    with pytest.raises(InvalidField) as err:
        v.parse_uuid(raw, "network_id")
    assert err.value.field == "network_id"


def test_canonical_uuids_are_lower_cased() -> None:
    text = "1B4E28BA-2FA1-11D2-883F-0016D3CCA427"
    assert v.parse_uuid(text, "port_id") == text.lower()


def test_vni_accepts_integral_json_numbers() -> None:
    assert v.parse_vni(100.0) == 100
    for bad in (100.5, float("inf"), float("nan")):
        with pytest.raises(InvalidField):
            v.parse_vni(bad)


# -- the published patterns say exactly what the parsers accept ------------------------------


def accepted(parse: Any, value: str) -> bool:
    try:
        parse(value)
    except InvalidField:
        return False
    return True


def matches(pattern: str, value: str) -> bool:
    # ECMA-262 (JSON Schema) reads `$` as the end of input; Python's fullmatch does the same
    return re.fullmatch(pattern, value) is not None


MAC_LIKE = st.from_regex(r"\A[0-9A-Fa-f:\- \n]{0,18}\Z") | st.from_regex(
    r"\A[0-9A-Fa-f]{2}([:-]?)[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}\Z"
)
HOST_LIKE = st.text(alphabet="aZ09._- \n\x00é", max_size=70)
IPV4_LIKE = st.ip_addresses(v=4).map(str) | st.from_regex(r"\A[0-9.]{0,16}\Z")


@settings(max_examples=400)
@given(MAC_LIKE)
def test_mac_pattern_is_the_mac_rule(value: str) -> None:
    assert matches(v.MAC_PATTERN, value) == accepted(v.parse_mac, value)


@settings(max_examples=300)
@given(HOST_LIKE)
def test_host_name_pattern_is_the_host_name_rule(value: str) -> None:
    assert matches(v.HOST_NAME_PATTERN, value) == accepted(v.parse_host_name, value)


@settings(max_examples=300)
@given(st.text(max_size=40))
def test_name_pattern_is_the_name_rule(value: str) -> None:
    # the one difference the schema cannot state: lone surrogates, which no JSON Schema
    # string holds; hypothesis does not draw them either
    assert matches(v.NAME_PATTERN, value) == accepted(v.parse_name, value)


@settings(max_examples=500)
@given(IPV4_LIKE)
def test_vtep_pattern_is_the_vtep_rule(value: str) -> None:
    assert matches(v.VTEP_IP_PATTERN, value) == accepted(v.parse_vtep_ip, value)


@settings(max_examples=200)
@given(st.uuids().map(str) | st.text(alphabet="0123456789abcdefABCDEF-{}", max_size=40))
def test_uuid_pattern_is_the_uuid_rule(value: str) -> None:
    assert matches(v.UUID_PATTERN, value) == accepted(lambda x: v.parse_uuid(x, "id"), value)


@given(st.ip_addresses().map(str))
def test_every_address_the_parser_accepts_matches_the_published_pattern(value: str) -> None:
    if accepted(v.parse_ip, value):
        assert matches(v.IP_PATTERN, value)
        assert len(value) <= v.IP_MAX_LENGTH
