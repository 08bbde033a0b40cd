"""The linux datapath's devices: naming, reading them back, creating and deleting them.

Private to ``l2pop.datapath``; ``linux`` holds the design notes. A network is a bridge
``<bridge prefix>V`` and a VXLAN device ``<vxlan prefix>V`` (V = VNI), both carrying the
network id as their alias; ``scan`` reports the ones that are intact.
"""

from __future__ import annotations

import errno
import os
import socket
from collections import defaultdict
from dataclasses import dataclass

from l2pop.datapath import _links
from l2pop.datapath import _netlink as nl
from l2pop.datapath.abc import DatapathError, tap_name
from l2pop.model import ArpSuppression

IFNAMSIZ = 16
VNI_DIGITS = 8  # 16777215
NS, PROXY, OFF = ArpSuppression.NEIGH_SUPPRESS, ArpSuppression.PROXY, ArpSuppression.OFF


@dataclass(frozen=True, slots=True)
class Net:
    """One intact network as the kernel holds it."""

    network_id: str
    vni: int
    mode: ArpSuppression
    bridge: int  # ifindex
    vxlan: int  # ifindex

    @property
    def neigh_dev(self) -> int:
        """The device holding the neighbour table in this mode."""
        return self.vxlan if self.mode is PROXY else self.bridge


class Devices:
    """Link-level work on one rtnetlink socket (the caller serialises its use)."""

    def __init__(
        self,
        sock: nl.RtnlSocket,
        vtep_ip: str,
        prefixes: tuple[str, str, str],
        dstport: int,
    ) -> None:
        """``prefixes``: (bridge, vxlan, tap); raises ValueError when they overlap or leave
        no room for a VNI (or 11 characters of a port id) in a device name."""
        for prefix, room in zip(prefixes, (VNI_DIGITS, VNI_DIGITS, 11), strict=True):
            if not prefix or len(prefix) + room >= IFNAMSIZ:
                raise ValueError(f"device prefix {prefix!r} leaves no room in a device name")
        if len(set(prefixes)) < 3 or any(
            a != b and b.startswith(a) for a in prefixes for b in prefixes
        ):
            raise ValueError(f"device prefixes {prefixes} must not overlap")
        self.sock = sock
        self.vtep_raw = socket.inet_aton(vtep_ip)
        self.bridge_prefix, self.vxlan_prefix, self.tap_prefix = prefixes
        self.dstport = dstport.to_bytes(2, "big")

    def tap_name(self, port_id: str) -> str:
        return tap_name(port_id, self.tap_prefix)

    def bridge_name(self, vni: int) -> str:
        return f"{self.bridge_prefix}{vni}"

    def vxlan_name(self, vni: int) -> str:
        return f"{self.vxlan_prefix}{vni}"

    # -- reading -------------------------------------------------------------------------

    def links(self) -> list[nl.Link]:
        """Every link of the namespace (one dump, statistics left out)."""
        return _links.dump_links(self.sock)

    def link_by_name(self, name: str) -> nl.Link | None:
        return _links.link_by_name(self.sock, name)

    def vni_of(self, link: nl.Link) -> int | None:
        """The VNI in the name of one of our devices, or None for any other device."""
        for prefix, kind in ((self.bridge_prefix, "bridge"), (self.vxlan_prefix, "vxlan")):
            if link.name.startswith(prefix) and link.kind == kind:
                digits = link.name[len(prefix) :]
                if digits.isdigit() and str(int(digits)) == digits:
                    return int(digits)
        return None

    def scan(self, links: list[nl.Link]) -> tuple[dict[str, Net], dict[str, list[nl.Link]]]:
        """(intact networks by id, all our devices by alias) of a link dump. Devices without
        an alias belong to no network; they are ours by name all the same."""
        owned: dict[str, list[nl.Link]] = defaultdict(list)
        for link in links:
            if link.alias and self.vni_of(link) is not None:
                owned[link.alias].append(link)
        nets = {}
        for nid, devices in owned.items():
            net = self._intact(nid, devices)
            if net is not None:
                nets[nid] = net
        return nets, owned

    def _intact(self, nid: str, devices: list[nl.Link]) -> Net | None:
        """The network made of ``devices`` if they are exactly a healthy bridge + vxlan:
        enslaved, up, our VTEP and port, nolearning, port options matching one mode."""
        if len(devices) != 2:
            return None
        by_kind = {d.kind: d for d in devices}
        br, vx = by_kind.get("bridge"), by_kind.get("vxlan")
        if br is None or vx is None:
            return None
        vni = self.vni_of(br)
        data, port = vx.vxlan, vx.brport
        if (
            vni is None
            or vni != self.vni_of(vx)
            or vx.master != br.index
            or not (br.up and vx.up)
            or data.get(nl.IFLA_VXLAN_ID) != nl.U32.pack(vni)
            or data.get(nl.IFLA_VXLAN_LOCAL) != self.vtep_raw
            or data.get(nl.IFLA_VXLAN_PORT) != self.dstport
            or data.get(nl.IFLA_VXLAN_LEARNING) != b"\0"
        ):
            return None
        proxy = data.get(nl.IFLA_VXLAN_PROXY) == b"\1"
        suppress = port.get(nl.IFLA_BRPORT_NEIGH_SUPPRESS) == b"\1"
        mode: ArpSuppression | None
        if proxy:
            mode = None if suppress else PROXY
        elif suppress:
            mode = NS if port.get(nl.IFLA_BRPORT_LEARNING) == b"\0" else None
        else:
            mode = OFF
        return None if mode is None else Net(nid, vni, mode, br.index, vx.index)

    # -- changing ------------------------------------------------------------------------

    def create(self, nid: str, vni: int, mode: ArpSuppression) -> Net:
        """Make the network's bridge and VXLAN device (the names must be free)."""
        create = nl.NLM_F_CREATE | nl.NLM_F_EXCL
        alias = nl.nla_str(nl.IFLA_IFALIAS, nid)  # not honoured at creation: set after
        no_ll = nl.nla_nested(  # addrgenmode none: no link-local address, no RS/MLD noise
            nl.IFLA_AF_SPEC,
            nl.nla_nested(
                socket.AF_INET6,
                nl.nla_u8(nl.IFLA_INET6_ADDR_GEN_MODE, nl.IN6_ADDR_GEN_MODE_NONE),
            ),
        )
        br_name, vx_name = self.bridge_name(vni), self.vxlan_name(vni)
        kind = nl.nla_nested(nl.IFLA_LINKINFO, nl.nla_str(nl.IFLA_INFO_KIND, "bridge"))
        # A fixed address: a bridge that takes its ports' lowest MAC changes it when a tap
        # joins, and a changed address flushes every neighbour entry on it, permanent ones too.
        mac = bytes([(os.urandom(1)[0] & 0xFC) | 0x02]) + os.urandom(5)
        name = nl.nla_str(nl.IFLA_IFNAME, br_name)
        address = nl.nla(nl.IFLA_ADDRESS, mac)
        self._new_link(br_name, create, nl.link_request(0, 0, 0, name, address, kind))
        br = self._must_link(br_name)
        up = (nl.IFF_UP, nl.IFF_UP)
        self._new_link(br_name, 0, nl.link_request(br.index, *up, alias, no_ll))
        vxlan = nl.nla_nested(
            nl.IFLA_INFO_DATA,
            nl.nla_u32(nl.IFLA_VXLAN_ID, vni),
            nl.nla(nl.IFLA_VXLAN_LOCAL, self.vtep_raw),
            nl.nla(nl.IFLA_VXLAN_PORT, self.dstport),
            nl.nla_u8(nl.IFLA_VXLAN_LEARNING, 0),
            nl.nla_u8(nl.IFLA_VXLAN_PROXY, 1 if mode is PROXY else 0),
        )
        kind = nl.nla_nested(nl.IFLA_LINKINFO, nl.nla_str(nl.IFLA_INFO_KIND, "vxlan"), vxlan)
        master = nl.nla_u32(nl.IFLA_MASTER, br.index)
        name = nl.nla_str(nl.IFLA_IFNAME, vx_name)
        self._new_link(vx_name, create, nl.link_request(0, 0, 0, name, master, kind))
        vx = self._must_link(vx_name)
        options = self.port_options(mode is NS)
        self._new_link(vx_name, 0, nl.link_request(vx.index, *up, alias, no_ll, options))
        return Net(nid, vni, mode, br.index, vx.index)

    def _new_link(self, name: str, flags: int, payload: bytes) -> None:
        """One RTM_NEWLINK for device ``name``; a refusal raises ``DatapathError`` naming the
        device (e.g. EEXIST: another VXLAN device already uses this VNI and port)."""
        try:
            self.sock.request(nl.RTM_NEWLINK, flags, payload)
        except nl.NetlinkError as exc:
            code = exc.errno or 0
            text = exc.strerror or os.strerror(code)
            raise DatapathError(f"device {name}: {text}", [(f"device {name}", code, text)]) from exc

    def _must_link(self, name: str) -> nl.Link:
        link = self.link_by_name(name)
        if link is None:
            raise DatapathError(
                f"device {name} vanished while being created",
                [(f"device {name}", errno.ENODEV, "vanished while being created")],
            )
        return link

    @staticmethod
    def port_options(suppress: bool) -> bytes:
        """Bridge port options of vxlan-V: neigh_suppress on + learning off, or the reverse."""
        return nl.nla_nested(
            nl.IFLA_LINKINFO,
            nl.nla_nested(
                nl.IFLA_INFO_SLAVE_DATA,
                nl.nla_u8(nl.IFLA_BRPORT_LEARNING, 0 if suppress else 1),
                nl.nla_u8(nl.IFLA_BRPORT_NEIGH_SUPPRESS, 1 if suppress else 0),
            ),
        )

    def set_port(self, vxlan: int, suppress: bool) -> None:
        request = nl.link_request(vxlan, 0, 0, self.port_options(suppress))
        self.sock.request(nl.RTM_NEWLINK, 0, request)

    def enslave(self, index: int, bridge: int) -> None:
        """Make ``index`` a port of ``bridge`` and set it up."""
        master = nl.nla_u32(nl.IFLA_MASTER, bridge)
        request = nl.link_request(index, nl.IFF_UP, nl.IFF_UP, master)
        self.sock.request(nl.RTM_NEWLINK, 0, request)

    def delete(self, links: list[nl.Link]) -> None:
        """Delete ``links`` (VXLAN devices first); one already gone is no error."""
        for link in sorted(links, key=lambda d: d.kind != "vxlan"):
            try:
                self.sock.request(nl.RTM_DELLINK, 0, nl.link_request(link.index))
            except nl.NetlinkError as exc:
                if exc.errno != errno.ENODEV:
                    raise
