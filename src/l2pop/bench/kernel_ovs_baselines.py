"""The baselines of ``l2pop bench kernel --datapath ovs``: ``ovs-ofctl`` doing the OVS
datapath's work by itself, on bridges of its own in the same ``OvsInstance``.

* ``entry_flows(tables, tunnel_ofport)``: one OpenFlow flow per FDB entry and one per
  neighbour entry of a network, in the shapes ``OvsDatapath`` writes (tables 40, 20 and
  30; ``docs``: the OVS datapath's module notes), as ``ovs-ofctl add-flows`` lines.
* ``fresh_bridge(ovs, name, tunnel_ofport)``: an empty bridge set up as the datapath sets up
  its own (userspace datapath, ``fail_mode=secure``, OpenFlow 1.0-1.5) with a VXLAN port on
  ``tunnel_ofport``, so the same flows are valid on it.
* ``bundle_install``: every flow through one ``ovs-ofctl --bundle add-flows FILE`` (one
  transaction; the file is written before the clock starts).
* ``per_process_install``: one ``ovs-ofctl add-flow`` process per flow, Neutron's old way, on
  a sample (the rate is extrapolated by the caller).
* ``dump_flows``: one ``ovs-ofctl dump-flows`` of a whole bridge, its output read by us.
* ``entry_flow_lines``: the flows of a dump that ``entry_flows`` makes, normalised, to check
  that a baseline installed exactly what the datapath did.

Every command talks to the instance's own sockets (``OvsInstance.mgmt``, ``vsctl``) and
raises ``TestbedError`` with ``ovs-ofctl``'s message when it fails.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from l2pop.model import NetworkTables
from l2pop.testbed.iproute import TestbedError
from l2pop.testbed.ovs import OvsInstance

#: what every ``ovs-ofctl`` here speaks: bundles need OpenFlow 1.4+, metadata and
#: ``goto_table`` 1.1+; the datapath reads its flows the same way
OFCTL_OPTIONS = ("-O", "OpenFlow15")
PROTOCOLS = "OpenFlow10,OpenFlow13,OpenFlow14,OpenFlow15"
#: cookie of every l2pop flow: 0x6c32 << 48 | kind << 40 | vni << 16 | ofport
COOKIE_MAGIC = 0x6C32
KIND_NETWORK = 1
FDB_TABLE, ARP_TABLE, ND_TABLE = 40, 20, 30
ND_OUT_TABLE = 31
ENTRY_PRIORITY = 100
#: UDP ports of the baseline bridges' VXLAN ports: two tunnel ports of one ovs-vswitchd may
#: not share a configuration, and the datapath's own uses 4789
BASELINE_DST_PORTS = (4790, 4791, 4792)


def cookie(vni: int, kind: int = KIND_NETWORK, ofport: int = 0) -> int:
    """The cookie the datapath gives a flow of ``kind`` for network ``vni``."""
    return COOKIE_MAGIC << 48 | kind << 40 | vni << 16 | ofport


def fdb_flow(vni: int, mac: str, vtep: str, tunnel_ofport: int) -> str:
    """Table 40: frames to ``mac`` go to ``vtep`` with the VNI as tunnel key."""
    return (
        f"cookie={cookie(vni):#x},table={FDB_TABLE},priority={ENTRY_PRIORITY},"
        f"metadata={vni:#x},dl_dst={mac},"
        f"actions=set_field:{vni:#x}->tun_id,set_field:{vtep}->tun_dst,output:{tunnel_ofport}"
    )


def arp_flow(vni: int, ip: str, mac: str) -> str:
    """Table 20: an ARP request for ``ip`` is answered with ``mac`` on its own port."""
    return (
        f"cookie={cookie(vni):#x},table={ARP_TABLE},priority={ENTRY_PRIORITY},"
        f"arp,metadata={vni:#x},arp_tpa={ip},arp_op=1,"
        "actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],"
        f"set_field:{mac}->eth_src,set_field:2->arp_op,"
        "move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],"
        f"set_field:{mac}->arp_sha,set_field:{ip}->arp_spa,IN_PORT"
    )


def nd_flow(vni: int, ip: str, mac: str) -> str:
    """Table 30: a neighbour solicitation for ``ip`` becomes an advertisement from ``mac``
    (solicited + override), finished in table 31 (the target link-layer address)."""
    return (
        f"cookie={cookie(vni):#x},table={ND_TABLE},priority={ENTRY_PRIORITY},"
        f"icmp6,metadata={vni:#x},icmp_type=135,nd_target={ip},"
        "actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],"
        f"set_field:{mac}->eth_src,move:NXM_NX_IPV6_SRC[]->NXM_NX_IPV6_DST[],"
        f"set_field:{ip}->ipv6_src,set_field:2->nd_options_type,"
        "set_field:0x60000000->nd_reserved,"  # solicited + override
        f"set_field:136->icmpv6_type,goto_table:{ND_OUT_TABLE}"
    )


def entry_flows(tables: NetworkTables, tunnel_ofport: int) -> list[str]:
    """One flow per FDB entry of ``tables`` (first) and per neighbour entry (IPv4: ARP
    responder, IPv6: ND responder)."""
    vni = tables.vni
    flows = [fdb_flow(vni, mac, vtep, tunnel_ofport) for mac, vtep in tables.fdb.items()]
    for ip, mac in tables.neigh.items():
        flows.append(nd_flow(vni, ip, mac) if ":" in ip else arp_flow(vni, ip, mac))
    return flows


def sample(flows: list[str], fdb_count: int, size: int) -> list[str]:
    """At most ``size`` of ``flows`` (``fdb_count`` FDB flows first, as ``entry_flows``
    makes them), half FDB and half neighbour when both are there."""
    fdb, neigh = flows[:fdb_count], flows[fdb_count:]
    half = min(size // 2, len(fdb), len(neigh))
    if not half:
        return flows[:size]
    return fdb[:half] + neigh[:half]


# -- bridges and ovs-ofctl --------------------------------------------------------------------


def fresh_bridge(ovs: OvsInstance, name: str, tunnel_ofport: int, dst_port: int) -> None:
    """An empty bridge ``name`` set up as the datapath's, with a VXLAN port (``remote_ip``
    and ``key`` from the flow, UDP port ``dst_port``) on ``tunnel_ofport``."""
    port = f"{name}-vx"
    ovs.vsctl(
        "add-br", name,
        "--", "set", "bridge", name, "datapath_type=netdev", "fail_mode=secure",
        f"protocols={PROTOCOLS}",
        "--", "add-port", name, port,
        "--", "set", "interface", port, "type=vxlan", "options:remote_ip=flow",
        "options:key=flow", f"options:dst_port={dst_port}", f"ofport_request={tunnel_ofport}",
    )  # fmt: skip
    got = ovs.vsctl("get", "interface", port, "ofport").strip()
    if got != str(tunnel_ofport):
        raise TestbedError(f"{port} got ofport {got}, not {tunnel_ofport}")


def ofctl_args(ovs: OvsInstance, command: str, bridge: str, *args: str) -> list[str]:
    """``ovs-ofctl -O OpenFlow15 COMMAND unix:<dir>/<bridge>.mgmt ARGS``."""
    return ["ovs-ofctl", *OFCTL_OPTIONS, command, ovs.mgmt(bridge), *args]


def _ofctl(ovs: OvsInstance, args: list[str], timeout: float = 300) -> str:
    proc = subprocess.run(
        args, capture_output=True, text=True, check=False, timeout=timeout, env=ovs.env
    )
    if proc.returncode != 0:
        raise TestbedError(f"{' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def bundle_install(ovs: OvsInstance, bridge: str, flows: list[str], workdir: Path) -> float:
    """Seconds for one ``ovs-ofctl --bundle add-flows FILE`` of ``flows`` (the file is
    written first, outside the clock)."""
    path = workdir / f"{bridge}-flows.txt"
    path.write_text("\n".join(flows) + "\n")
    args = ofctl_args(ovs, "add-flows", bridge, "--bundle", str(path))
    started = time.perf_counter()
    _ofctl(ovs, args)
    return time.perf_counter() - started


def per_process_install(ovs: OvsInstance, bridge: str, flows: list[str]) -> float:
    """Seconds for one ``ovs-ofctl add-flow`` process per flow of ``flows``."""
    started = time.perf_counter()
    for flow in flows:
        _ofctl(ovs, ofctl_args(ovs, "add-flow", bridge, flow), timeout=30)
    return time.perf_counter() - started


def clear_flows(ovs: OvsInstance, bridge: str) -> None:
    """``ovs-ofctl del-flows``: every flow of ``bridge`` gone (an empty table again)."""
    _ofctl(ovs, ofctl_args(ovs, "del-flows", bridge))


def dump_flows(ovs: OvsInstance, bridge: str) -> tuple[float, str]:
    """(seconds, output) of one ``ovs-ofctl --no-stats dump-flows`` of the whole bridge."""
    args = ofctl_args(ovs, "dump-flows", bridge, "--no-stats")
    started = time.perf_counter()
    out = _ofctl(ovs, args)
    return time.perf_counter() - started, out


def entry_flow_lines(dump: str) -> set[str]:
    """The FDB and neighbour-entry flows of a ``dump_flows`` output (tables 40, 20, 30 at the
    entries' priority), each with its whitespace normalised."""
    wanted = {f"table={t}" for t in (FDB_TABLE, ARP_TABLE, ND_TABLE)}
    out = set()
    for line in dump.splitlines():
        fields = line.strip().replace(", ", ",").split(",")
        if f"priority={ENTRY_PRIORITY}" in fields and wanted.intersection(fields):
            out.add(" ".join(line.replace(", ", ",").split()))
    return out


def version() -> str:
    """``ovs-vswitchd --version``'s first line, e.g. ``ovs-vswitchd (Open vSwitch) 3.1.0``."""
    out = subprocess.run(
        ["ovs-vswitchd", "--version"], capture_output=True, text=True, check=False
    ).stdout
    return out.splitlines()[0].strip() if out else "unknown"
