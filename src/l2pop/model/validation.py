"""Parsing and normalising user input. Each function raises ``InvalidField`` naming the field.

These are the only rules for what a MAC, a VNI, an IP or a name may be; the wire layer
calls them, so the REST API, the CLI and the store all agree.
"""

from __future__ import annotations

import ipaddress
import re
import secrets

from l2pop.model.errors import InvalidField
from l2pop.model.types import VNI_MAX, VNI_MIN, ArpSuppression

_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
NEUTRON_MAC_PREFIX = (0xFA, 0x16, 0x3E)
MAX_FIXED_IPS = 16
MAX_PORT_NAME = 255


def parse_mac(value: object, field: str = "mac") -> str:
    """Return ``value`` as a lower-case colon-separated unicast MAC.

    Refuses multicast/broadcast (I/G bit set) and the all-zeros MAC, which the
    kernel uses for flood entries.
    """
    if not isinstance(value, str):
        raise InvalidField(field, "must be a string such as 'fa:16:3e:00:00:01'")
    text = value.strip().lower()
    if not _MAC_RE.match(text):
        raise InvalidField(field, f"{value!r} is not a MAC address")
    digits = text.replace(":", "").replace("-", "")
    octets = [int(digits[i : i + 2], 16) for i in range(0, 12, 2)]
    if octets[0] & 0x01:
        raise InvalidField(field, f"{value!r} is multicast or broadcast; a port needs unicast")
    if not any(octets):
        raise InvalidField(field, "the all-zeros MAC is reserved for flood entries")
    return ":".join(f"{o:02x}" for o in octets)


def generate_mac() -> str:
    """A random MAC with Neutron's ``fa:16:3e`` prefix (locally administered, unicast)."""
    tail = secrets.token_bytes(3)
    return ":".join(f"{o:02x}" for o in (*NEUTRON_MAC_PREFIX, *tail))


def parse_vni(value: object, field: str = "vni") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidField(field, "must be an integer")
    if not VNI_MIN <= value <= VNI_MAX:
        raise InvalidField(field, f"must be between {VNI_MIN} and {VNI_MAX}, got {value}")
    return value


def parse_ip(value: object, field: str = "fixed_ips") -> str:
    """Return the canonical text of an IPv4 or IPv6 host address.

    Refuses unspecified, multicast, loopback and link-local addresses: none of them
    can be a port's fixed IP in an overlay.
    """
    if not isinstance(value, str):
        raise InvalidField(field, "must be a string IP address")
    try:
        ip = ipaddress.ip_address(value.strip())
    except ValueError:
        raise InvalidField(field, f"{value!r} is not an IPv4 or IPv6 address") from None
    if ip.is_unspecified or ip.is_multicast or ip.is_loopback or ip.is_link_local:
        raise InvalidField(field, f"{value!r} cannot be a port address")
    if isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address("255.255.255.255"):
        raise InvalidField(field, f"{value!r} is the broadcast address")
    return ip.compressed


def parse_fixed_ips(values: object, field: str = "fixed_ips") -> tuple[str, ...]:
    """A sorted tuple of distinct canonical addresses (IPv4 first)."""
    if not isinstance(values, list | tuple):
        raise InvalidField(field, "must be a list of IP addresses")
    if len(values) > MAX_FIXED_IPS:
        raise InvalidField(field, f"at most {MAX_FIXED_IPS} addresses per port")
    parsed = [parse_ip(v, f"{field}[{i}]") for i, v in enumerate(values)]
    if len(set(parsed)) != len(parsed):
        raise InvalidField(field, "the same address is listed twice")
    return tuple(sorted(parsed, key=ip_sort_key))


def ip_sort_key(text: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(text)
    return (ip.version, int(ip))


def parse_vtep_ip(value: object, field: str = "vtep_ip") -> str:
    """A VTEP is a unicast IPv4 address (the kernel recipe is IPv4 underlay)."""
    if not isinstance(value, str):
        raise InvalidField(field, "must be a string IPv4 address")
    try:
        ip = ipaddress.IPv4Address(value.strip())
    except ValueError:
        raise InvalidField(field, f"{value!r} is not an IPv4 address") from None
    if ip.is_unspecified or ip.is_multicast or ip.is_loopback or ip.is_link_local:
        raise InvalidField(field, f"{value!r} cannot be a VTEP address")
    if ip == ipaddress.IPv4Address("255.255.255.255"):
        raise InvalidField(field, f"{value!r} is the broadcast address")
    return ip.compressed


def parse_host_name(value: object, field: str = "name") -> str:
    """Host names: 1-63 characters of letters, digits, ``.``, ``_`` and ``-``."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise InvalidField(
            field, "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def parse_name(value: object, field: str = "name") -> str:
    """Free-form display names of networks and ports."""
    if not isinstance(value, str):
        raise InvalidField(field, "must be a string")
    if len(value) > MAX_PORT_NAME:
        raise InvalidField(field, f"at most {MAX_PORT_NAME} characters")
    if any(ord(c) < 32 for c in value):
        raise InvalidField(field, "must not contain control characters")
    return value


def parse_arp_suppression(value: object, field: str = "arp_suppression") -> ArpSuppression:
    try:
        return ArpSuppression(str(value))
    except ValueError:
        allowed = ", ".join(m.value for m in ArpSuppression)
        raise InvalidField(field, f"must be one of {allowed}") from None
