"""``l2pop demo``: l2pop's promise shown on real kernels and real Open vSwitch daemons.

A server and 4 host namespaces: h1, h2 Linux-bridge hosts (``l2pop agent --datapath
linux``), h3, h4 Open vSwitch hosts (a private ovsdb-server + ovs-vswitchd each, ``l2pop
agent --datapath ovs``), and the original system's three datapaths as networks side by side
(``story.datapaths_topology``): Linux bridge + VXLAN, OVS + VXLAN, OVS + GRE, and one VXLAN
network spanning a Linux and an OVS host. Every VM pair of a network pings (IPv4 and IPv6),
no VM reaches another network although all share one subnet, each host's tables are read
back (kernel or flows) and compared with the server's desired state; then the VMs resolve
each other from cold neighbour caches while tcpdump counts what crosses the underlay, per
network, with l2pop and with flood-and-learn on the same topology (learning Linux VXLAN
devices, OVS ``learn()`` flows; ``Testbed(control=FloodAndLearn())``).

Exit code: 0 when every promise holds, 1 when one fails, 2 when the machine cannot run it.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from l2pop.console import make_console
from l2pop.demo import story
from l2pop.demo.progress import Check, Progress, summary
from l2pop.testbed import ovs
from l2pop.testbed.bed import Testbed
from l2pop.testbed.capture import CaptureResult
from l2pop.testbed.controlplane import L2popControlPlane
from l2pop.testbed.floodlearn import FloodAndLearn
from l2pop.testbed.topology import Topology
from l2pop.testbed.underlay import REQUIRED_TOOLS


@dataclass
class Measurement:
    """One cold-cache run: pings and what crossed the underlay."""

    pings_ok: int
    pings: int
    capture: CaptureResult
    non_member_bum: dict[str, int]  # network -> BUM copies that reached non-members
    non_member_detail: list[str]


def measure_cold(bed: Testbed, topo: Topology) -> Measurement:
    """Flush every VM's neighbour cache, then ping every pair of each network (IPv4 and
    IPv6) while tcpdump counts tunnelled packets (VXLAN and GRE) on the underlay bridge."""
    vms = list(bed.vms.values())
    bed.flush_neigh()
    pairs = story.pairs_within(vms)
    with bed.capture("cold") as cap:
        results = bed.ping_many(pairs, timeout=2)
    assert cap.result is not None
    result = cap.result
    bum: dict[str, int] = {}
    detail = []
    for net in topo.networks:
        bum[net.name] = 0
        for host_name in sorted(set(bed.hosts) - topo.members(net.name)):
            host = bed.hosts[host_name]
            n = result.count("bum", dst=host.vtep_ip, vni=net.vni)
            bum[net.name] += n
            detail.append(f"{net.name} → {host_name}: {n}")
    return Measurement(sum(results), len(results), result, bum, detail)


def render_tables(console: Console, bed: Testbed) -> None:
    """Each host's tables, read back: the kernel's (``bridge -j fdb`` / ``ip -j neigh``) on
    Linux hosts, the flows and groups (``ovs-ofctl``) on OVS hosts."""
    by_vni = {n.vni: n.name for n in bed.networks.values()}
    table = Table(title="tables, read back from each host's kernel or switch", show_lines=True)
    for column in ("host", "network", "devices", "flood list", "FDB (MAC → VTEP)", "ARP/ND"):
        table.add_column(column)
    for name, host in bed.hosts.items():
        nets = bed.kernel_tables(name)
        where = f"{name} ({bed.kind_of(name).name})\n{host.vtep_ip}"
        if not nets:
            table.add_row(where, Text("(none)", "dim"), "", "", "", "")
        for vni, net in sorted(nets.items()):
            table.add_row(
                where,
                f"{by_vni.get(vni, '?')}\nvni {vni}\n{net.mode}",
                f"{net.bridge}\n{net.vxlan}\n" + "\n".join(net.ports),
                "\n".join(net.flood) or "-",
                "\n".join(f"{m} → {v}" for m, v in sorted(net.fdb.items())) or "-",
                "\n".join(f"{i} → {m}" for i, m in sorted(net.neigh.items())) or "-",
            )
    console.print(table)


def _cap_text(m: Measurement) -> str:
    s = m.capture.summary()
    return (
        f"{s['vxlan']} tunnelled packets: {s['arp_broadcast']} ARP broadcast, "
        f"{s['nd_multicast']} ND multicast, {s['bum']} BUM, {s['unicast']} unicast"
    )


def start_l2pop(p: Progress, topo: Topology, workdir: Path) -> Testbed:
    """The l2pop testbed, started as one step that says what runs where."""
    control = L2popControlPlane()
    with p.step(
        f"testbed: underlay bridge, {topo.hosts} hosts (Linux bridge and Open vSwitch), "
        "server, one agent per host"
    ) as notes:
        bed = Testbed(topo.hosts, control=control, kinds=topo.kinds, workdir=workdir / "l2pop")
        bed.start()
        notes.append(
            f"run prefix {bed.prefix}: namespaces {bed.prefix}-ul, {bed.prefix}-h1..h{topo.hosts}"
        )
        notes.append(f"server {control.server.url} (pid {control.server.pid}); agents reach "
                     f"it at {control.agent_url} over the underlay")  # fmt: skip
        for host in bed.hosts.values():
            assert host.agent is not None
            kind = bed.kind_of(host.name).name
            line = f"{host.name}: {kind}, VTEP {host.vtep_ip}, agent pid {host.agent.pid}"
            if kind == "ovs":
                ovs = bed.ovs(host.name)
                line += (f", ovsdb-server pid {ovs.pid('ovsdb-server')}, ovs-vswitchd pid "
                         f"{ovs.pid('ovs-vswitchd')} (userspace datapath)")  # fmt: skip
            notes.append(line)
    return bed


def run_l2pop(p: Progress, topo: Topology, workdir: Path) -> tuple[Measurement, dict[str, str]]:
    """The l2pop half; returns the measurement and the VMs' MACs (for the baseline)."""
    bed = start_l2pop(p, topo, workdir)
    with bed:
        story.build(p, bed, topo, "networks " + ", ".join(
            f"{n.name} ({n.label}, vni {n.vni}, {n.arp_suppression})" for n in topo.networks
        ) + "; VMs", "VMs")  # fmt: skip
        vms = list(bed.vms.values())
        with p.step("ping every VM pair of each network (IPv4 and IPv6)") as notes:
            pairs = story.pairs_within(vms)
            ok = sum(bed.ping_many(pairs, timeout=2))
            notes.append(f"{ok}/{len(pairs)} answered")
        p.check(Check("pings within each network", f"{ok}/{len(pairs)}", ok=ok == len(pairs)))
        with p.step(
            "ping across networks (same subnets: only the overlay separates them)"
        ) as notes:
            cross = story.pairs_across(vms)
            leaked = sum(bed.ping_many(cross, timeout=1))
            notes.append(f"{leaked}/{len(cross)} answered")
        p.check(Check("pings across networks answered", f"{leaked}/{len(cross)}", ok=leaked == 0))
        render_tables(p.console, bed)
        story.compare(p, list(bed.hosts), lambda h: story.table_differences(bed, h),
                      title="compare each host's tables with the server's desired state",
                      holders="hosts", check="host tables = desired state")  # fmt: skip
        with p.step("cold caches: flush the VMs' neighbour caches, ping all pairs, tcpdump on "
                    "the underlay") as notes:  # fmt: skip
            m = measure_cold(bed, topo)
            notes.append(f"{m.pings_ok}/{m.pings} answered; {_cap_text(m)}")
        macs = {vm.name: vm.mac for vm in vms}
    return m, macs


def run_baseline(p: Progress, topo: Topology, macs: dict[str, str], workdir: Path) -> Measurement:
    """The same topology, with the l2pop half's MACs, on flood-and-learn VXLAN."""
    for vm in topo.vms:
        vm.mac = macs.get(vm.name, vm.mac)
    with p.step("baseline: the same topology with flood-and-learn (no l2pop)") as notes:
        bed = Testbed(
            topo.hosts, control=FloodAndLearn(), kinds=topo.kinds, workdir=workdir / "baseline"
        )
        with bed:
            topo.build(bed)
            notes.append(f"run prefix {bed.prefix}; learning VXLAN devices on Linux hosts, "
                         "learn() flows on OVS hosts, every VTEP in every flood list")  # fmt: skip
            time.sleep(1.0)  # the VMs' own start-up chatter (MLD reports) goes first
            m = measure_cold(bed, topo)
            notes.append(f"{m.pings_ok}/{m.pings} answered; {_cap_text(m)}")
    return m


def report(p: Progress, topo: Topology, m: Measurement, b: Measurement) -> None:
    """The underlay checks per network (l2pop against the baseline), the details and the
    summary."""
    s, sb = m.capture.summary(), b.capture.summary()
    p.check(Check("pings during the cold-cache run", f"{m.pings_ok}/{m.pings}",
                  f"{b.pings_ok}/{b.pings}", ok=m.pings_ok == m.pings))  # fmt: skip
    for net in topo.networks:
        arp = m.capture.count("arp_broadcast", vni=net.vni)
        nd = m.capture.count("nd_multicast", vni=net.vni)
        p.check(Check(f"{net.label}: ARP broadcasts on the underlay", str(arp),
                      str(b.capture.count("arp_broadcast", vni=net.vni)), ok=arp == 0))  # fmt: skip
        p.check(Check(f"{net.label}: ND multicasts on the underlay", str(nd),
                      str(b.capture.count("nd_multicast", vni=net.vni)), ok=nd == 0))  # fmt: skip
        p.check(Check(f"{net.label}: BUM copies to non-member hosts",
                      str(m.non_member_bum[net.name]), str(b.non_member_bum[net.name]),
                      ok=m.non_member_bum[net.name] == 0))  # fmt: skip
    p.check(Check("all BUM copies on the underlay", str(s["bum"]), str(sb["bum"])))
    p.check(Check("all tunnelled packets on the underlay", str(s["vxlan"]), str(sb["vxlan"])))
    p.console.print()
    for label, meas in (("l2pop", m), ("flood-and-learn", b)):
        per = meas.capture.per_destination("arp_broadcast")
        where = ", ".join(f"{vtep}: {n}" for vtep, n in sorted(per.items())) or "none"
        p.console.print(f"ARP broadcasts per destination VTEP, {label}: {where}")
        p.console.print(f"BUM to non-members, {label}: {'; '.join(meas.non_member_detail)}")
    summary(p.console, p.checks)


def run_demo(console: Console | None = None, *, workdir: Path | None = None) -> int:
    """The real demo (root). Returns the exit code."""
    console = console or make_console()
    if os.geteuid() != 0:
        console.print("l2pop demo needs root (network namespaces, bridges, tunnels).")
        console.print("Run it with sudo, or `l2pop demo --simulate` for the memory datapath.")
        return 2
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None] + ovs.missing()
    if missing:
        console.print(f"missing tools: {', '.join(missing)} (scripts/bootstrap installs them)")
        return 2
    keep = workdir is not None
    work = workdir or Path(os.environ.get("TMPDIR", "/tmp")) / f"l2pop-demo-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    p = Progress(console)
    topo = story.datapaths_topology()
    try:
        m, macs = run_l2pop(p, topo, work)
        b = run_baseline(p, topo, macs, work)
    except Exception as exc:
        console.print(Text(f"demo failed: {exc}", style="bold red"))
        console.print(f"logs: {work}")
        return 1
    report(p, topo, m, b)
    failed = p.failed()
    if failed:
        console.print(Text(f"{len(failed)} promise(s) failed; logs: {work}", style="bold red"))
        return 1
    console.print(Text("every promise holds on all three datapaths: no ARP broadcast or ND "
                       "multicast crossed the underlay with l2pop",
                       style="bold green"))  # fmt: skip
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0
