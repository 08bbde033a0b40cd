"""Parsing and normalising user input. Each function raises ``InvalidField`` naming the field.

These are the only rules for what a MAC, a VNI, an IP, an id or a name may be; the wire layer
calls them and builds the OpenAPI schema from the constants below, so the REST API, its
published contract, the CLI and the store all agree (docs/adr/0013-input-contract.md).

Every parser checks the type and the length of its input before anything else: a 15 MB
string costs one ``len``, never a regex or an address parse. Patterns are matched whole
(``re.fullmatch``): ``$`` alone would let a trailing newline through. The ``*_PATTERN``
strings are written in the common subset of Python and ECMA-262 regular expressions (no
``\\d``, ``\\w`` or ``\\s``, whose meaning differs) so the schema means what the server does.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import secrets
from typing import Final, TypeVar

from l2pop.model.errors import InvalidField
from l2pop.model.types import VNI_MAX, VNI_MIN, ArpSuppression, Encap

Choice = TypeVar("Choice", bound=enum.StrEnum)

__all__ = [
    "ARP_SUPPRESSION_MAX_LENGTH",
    "HOST_NAME_MAX_LENGTH",
    "HOST_NAME_PATTERN",
    "IPV4_MAX_LENGTH",
    "IP_MAX_LENGTH",
    "IP_PATTERN",
    "MAC_MAX_LENGTH",
    "MAC_PATTERN",
    "MAX_FIXED_IPS",
    "MAX_PORT_NAME",
    "NAME_MAX_LENGTH",
    "NAME_PATTERN",
    "NEUTRON_MAC_PREFIX",
    "UUID_LENGTH",
    "UUID_PATTERN",
    "VNI_MAX",
    "VNI_MIN",
    "VTEP_IP_PATTERN",
    "generate_mac",
    "ip_sort_key",
    "parse_arp_suppression",
    "parse_fixed_ips",
    "parse_host_name",
    "parse_ip",
    "parse_mac",
    "parse_name",
    "parse_uuid",
    "parse_vni",
    "parse_vtep_ip",
]

_HEX = "[0-9A-Fa-f]"

# -- names ------------------------------------------------------------------------------

NAME_MAX_LENGTH: Final = 255
MAX_PORT_NAME: Final = NAME_MAX_LENGTH  # the former name of the constant
_CONTROL = r"\x00-\x1f\x7f-\x9f"  # C0, DEL and C1: Unicode category Cc
NAME_PATTERN: Final = rf"^[^{_CONTROL}]*$"
# Lone surrogates (U+D800-U+DFFF) are not Unicode scalar values, so no JSON Schema string can
# hold one and the schema cannot name them; JSON's "\ud800" escape still produces one here.
_NAME_FORBIDDEN = re.compile(rf"[{_CONTROL}]")
_SURROGATE = re.compile("[\ud800-\udfff]")

HOST_NAME_MAX_LENGTH: Final = 63
HOST_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_HOST_NAME_RE = re.compile(HOST_NAME_PATTERN)

# -- MAC --------------------------------------------------------------------------------


def _mac_pattern(first_octet: str) -> str:
    """The three accepted spellings, any case: ``aa:bb:..``, ``aa-bb-..``, ``aabbcc..``."""
    return (
        rf"^(?:{first_octet}(?::{_HEX}{{2}}){{5}}"
        rf"|{first_octet}(?:-{_HEX}{{2}}){{5}}"
        rf"|{first_octet}{_HEX}{{10}})$"
    )


MAC_MAX_LENGTH: Final = 17
_MAC_SYNTAX = re.compile(_mac_pattern(f"{_HEX}{{2}}"))
# what a port may have: unicast (I/G bit of the first octet clear) and not all zeros
MAC_PATTERN: Final = "^(?!(?:00[:-]?){5}00$)" + _mac_pattern(f"{_HEX}[02468AaCcEe]")[1:]
NEUTRON_MAC_PREFIX = (0xFA, 0x16, 0x3E)

# -- addresses --------------------------------------------------------------------------

# INET6_ADDRSTRLEN - 1: "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
IP_MAX_LENGTH: Final = 45
IP_PATTERN: Final = r"^[0-9A-Fa-f:.]+$"  # no zone id ("%eth0"), no blanks, ASCII only
_IP_CHARS = re.compile(IP_PATTERN)
IPV4_MAX_LENGTH: Final = 15
_IPV4_SYNTAX = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
# A VTEP is an underlay destination: a unicast address in 1.0.0.0-223.255.255.255 that is
# not loopback (127/8) or link-local (169.254/16). That leaves out 0/8 ("this network"),
# multicast (224/4), reserved (240/4) and broadcast.
_VTEP_FIRST_OCTET = "(?:22[0-3]|2[01][0-9]|1[3-9][0-9]|12[0-689]|1[01][0-9]|[1-9][0-9]|[1-9])"
VTEP_IP_PATTERN: Final = rf"^(?!169\.254\.){_VTEP_FIRST_OCTET}(?:\.{_OCTET}){{3}}$"
_VTEP_RE = re.compile(VTEP_IP_PATTERN)
MAX_FIXED_IPS: Final = 16

# -- ids --------------------------------------------------------------------------------

UUID_LENGTH: Final = 36
UUID_PATTERN: Final = rf"^{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}$"
_UUID_RE = re.compile(UUID_PATTERN)

ARP_SUPPRESSION_MAX_LENGTH: Final = max(len(m.value) for m in ArpSuppression)
ENCAP_MAX_LENGTH: Final = max(len(m.value) for m in Encap)


def _string(value: object, field: str, max_length: int, what: str) -> str:
    """``value`` if it is a string of at most ``max_length`` characters (checked first)."""
    if not isinstance(value, str):
        raise InvalidField(field, f"must be a string ({what})")
    if len(value) > max_length:
        raise InvalidField(field, f"at most {max_length} characters ({what})")
    return value


def parse_mac(value: object, field: str = "mac") -> str:
    """Return ``value`` as a lower-case colon-separated unicast MAC.

    Accepts ``fa:16:3e:00:00:01``, ``fa-16-3e-00-00-01`` and ``fa163e000001`` in any case,
    nothing else (no blanks, no mixed separators). Refuses multicast/broadcast (I/G bit
    set) and the all-zeros MAC, which the kernel uses for flood entries.
    """
    text = _string(value, field, MAC_MAX_LENGTH, "a MAC such as 'fa:16:3e:00:00:01'")
    if not _MAC_SYNTAX.fullmatch(text):
        raise InvalidField(field, f"{value!r} is not a MAC address")
    digits = text.lower().replace(":", "").replace("-", "")
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
    """A VNI, 1..16777215. JSON has one number type: ``100.0`` is the integer 100."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidField(field, "must be an integer")
    if not VNI_MIN <= value <= VNI_MAX:
        raise InvalidField(field, f"must be between {VNI_MIN} and {VNI_MAX}, got {value}")
    return value


def parse_ip(value: object, field: str = "fixed_ips") -> str:
    """Return the canonical text of an IPv4 or IPv6 host address.

    Only a plain address a datapath can program: no zone id (``%eth0``), no IPv4-mapped
    IPv6 (``::ffff:198.19.0.1`` is the IPv4 address, which the port should list as such),
    and not unspecified, multicast, loopback, link-local or broadcast.
    """
    text = _string(value, field, IP_MAX_LENGTH, "an IPv4 or IPv6 address")
    if "%" in text:
        raise InvalidField(field, f"{value!r} has a zone id; give the plain address")
    if not _IP_CHARS.fullmatch(text):
        raise InvalidField(field, f"{value!r} is not an IPv4 or IPv6 address")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidField(field, f"{value!r} is not an IPv4 or IPv6 address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        raise InvalidField(
            field, f"{value!r} is IPv4-mapped; give the IPv4 address {ip.ipv4_mapped} itself"
        )
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
    """A VTEP is a unicast IPv4 address (the kernel recipe is IPv4 underlay) that can be a
    destination on the underlay: ``VTEP_IP_PATTERN`` says which."""
    text = _string(value, field, IPV4_MAX_LENGTH, "an IPv4 address")
    if not _IPV4_SYNTAX.fullmatch(text):
        raise InvalidField(field, f"{value!r} is not an IPv4 address")
    try:
        ip = ipaddress.IPv4Address(text)
    except ValueError:
        raise InvalidField(field, f"{value!r} is not an IPv4 address") from None
    if not _VTEP_RE.fullmatch(ip.compressed):
        raise InvalidField(
            field,
            f"{value!r} cannot be a VTEP address (unspecified, 0/8, loopback, link-local, "
            "multicast, reserved or broadcast)",
        )
    return ip.compressed


def parse_host_name(value: object, field: str = "name") -> str:
    """Host names: 1-63 characters of letters, digits, ``.``, ``_`` and ``-``."""
    rule = "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
    if (
        not isinstance(value, str)
        or len(value) > HOST_NAME_MAX_LENGTH
        or not _HOST_NAME_RE.fullmatch(value)
    ):
        raise InvalidField(field, rule)
    return value


def parse_name(value: object, field: str = "name") -> str:
    """Free-form display names of networks and ports: any Unicode text of at most 255
    characters without control characters (C0, DEL, C1) or lone surrogates."""
    text = _string(value, field, NAME_MAX_LENGTH, "a display name")
    if _NAME_FORBIDDEN.search(text):
        raise InvalidField(field, "must not contain control characters")
    if _SURROGATE.search(text):
        raise InvalidField(field, "must be valid Unicode (it holds a lone surrogate)")
    return text


def parse_uuid(value: object, field: str) -> str:
    """An id: a UUID in its canonical 8-4-4-4-12 form (either case), returned lower-case.
    Braces, ``urn:uuid:`` and the bare 32-digit form are refused."""
    text = _string(value, field, UUID_LENGTH, "a UUID such as '0b3f...-...'")
    if not _UUID_RE.fullmatch(text):
        raise InvalidField(field, f"{value!r} is not a UUID in 8-4-4-4-12 form")
    return text.lower()


def _choice(kind: type[Choice], value: object, field: str, max_length: int) -> Choice:
    """One member of the string enum ``kind``, spelt exactly as its value."""
    allowed = ", ".join(m.value for m in kind)
    if not isinstance(value, str) or len(value) > max_length:
        raise InvalidField(field, f"must be one of {allowed}")
    try:
        return kind(value)
    except ValueError:
        raise InvalidField(field, f"must be one of {allowed}") from None


def parse_arp_suppression(value: object, field: str = "arp_suppression") -> ArpSuppression:
    return _choice(ArpSuppression, value, field, ARP_SUPPRESSION_MAX_LENGTH)


def parse_encap(value: object, field: str = "encap") -> Encap:
    """A network's encapsulation: ``vxlan`` or ``gre`` (lower case, nothing else)."""
    return _choice(Encap, value, field, ENCAP_MAX_LENGTH)
