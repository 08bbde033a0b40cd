"""Input rules of l2pop.model.validation: every refusal names its field."""

from __future__ import annotations

import pytest

from l2pop.model import InvalidField
from l2pop.model import validation as v


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("FA:16:3E:00:00:01", "fa:16:3e:00:00:01"),
        ("fa-16-3e-0a-0b-0c", "fa:16:3e:0a:0b:0c"),
        ("fa163e0a0b0c", "fa:16:3e:0a:0b:0c"),
        (" 02:00:00:00:00:01 ", "02:00:00:00:00:01"),
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
        42,
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
    for bad in ("2001:db8::1", "239.1.1.1", "0.0.0.0", "x"):
        with pytest.raises(InvalidField) as err:
            v.parse_vtep_ip(bad)
        assert err.value.field == "vtep_ip"


def test_host_names() -> None:
    assert v.parse_host_name("compute-01.rack_2") == "compute-01.rack_2"
    for bad in ("", "-leading", "has space", "x" * 64, None):
        with pytest.raises(InvalidField):
            v.parse_host_name(bad)


def test_arp_suppression_modes() -> None:
    assert v.parse_arp_suppression("proxy").value == "proxy"
    with pytest.raises(InvalidField) as err:
        v.parse_arp_suppression("flood")
    assert "neigh_suppress" in err.value.message
