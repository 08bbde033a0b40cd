"""``l2pop demo``: l2pop's promise shown on real kernels in network namespaces.

Story: a server, 4 hosts with real agents (linux datapath), 2 networks (``blue`` with
``neigh_suppress``, ``red`` with ``proxy``), VMs spread so that each network has a host that
is not a member. Every VM pair of a network pings (IPv4 and IPv6), no VM reaches the other
network although both share one subnet, each host's kernel tables are read back and compared
with the server's desired state; then the VMs resolve each other from cold neighbour caches
while tcpdump counts what crosses the underlay, with l2pop and with a flood-and-learn VXLAN
baseline on the same topology. ``--simulate`` (``demo_simulate``) tells the story without
root on the memory datapath.

Exit code: 0 when every promise holds, 1 when one fails, 2 when the machine cannot run it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from l2pop.testbed.bed import NetworkSpec, Testbed, Topology, Vm, VmSpec
from l2pop.testbed.capture import CaptureResult
from l2pop.testbed.tables import KernelNetwork

HOSTS = 4


def demo_topology() -> Topology:
    """blue (neigh_suppress) on h1-h3, red (proxy) on h1, h2, h4: h4 never hears of blue,
    h3 never of red. Both networks use one IPv4 /16 and one IPv6 /64, so a VM of one
    network would reach the other if the overlay leaked (isolation is not just routing)."""
    vms = [
        VmSpec(f"blue-{i}", "blue", f"h{h}", [f"198.19.1.{i}", f"2001:db8::1:{i}"])
        for i, h in ((1, 1), (2, 2), (3, 3))
    ]
    vms += [
        VmSpec(f"red-{i}", "red", f"h{h}", [f"198.19.2.{i}", f"2001:db8::2:{i}"])
        for i, h in ((1, 1), (2, 2), (3, 4))
    ]
    return Topology(
        HOSTS,
        [NetworkSpec("blue", 1001, "neigh_suppress"), NetworkSpec("red", 1002, "proxy")],
        vms,
    )


@dataclass
class Check:
    """One promise of the summary: what l2pop showed, what the baseline showed, verdict."""

    name: str
    l2pop: str
    baseline: str = "-"
    ok: bool | None = None  # None: information only


@dataclass
class Progress:
    """Progress lines: ``▸ step`` then ``✓ result (time)``."""

    console: Console
    checks: list[Check] = field(default_factory=list)

    @contextmanager
    def step(self, text: str) -> Iterator[list[str]]:
        self.console.print(Text.assemble(("▸ ", "bold cyan"), text))
        started = time.monotonic()
        notes: list[str] = []
        try:
            yield notes
        except Exception as exc:
            self.console.print(Text(f"  ✗ {exc}", style="bold red"))
            raise
        took = Text(f"({time.monotonic() - started:.1f}s)", "dim")
        notes = notes or ["done"]
        for note in notes[:-1]:
            self.console.print(Text(f"  ✓ {note}", style="green"))
        self.console.print(Text(f"  ✓ {notes[-1]}", style="green"), took)

    def check(self, check: Check) -> None:
        self.checks.append(check)
        if check.ok is False:
            self.console.print(Text(f"  ✗ {check.name}: {check.l2pop}", style="bold red"))

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]


def pairs_within(vms: list[Vm]) -> list[tuple[Vm, str]]:
    """Every ordered pair of VMs of the same network, IPv4 and IPv6."""
    out = []
    for a in vms:
        for b in vms:
            if a is not b and a.network.name == b.network.name:
                out += [(a, ip) for ip in b.ips]
    return out


def pairs_across(vms: list[Vm]) -> list[tuple[Vm, str]]:
    out = []
    for a in vms:
        for b in vms:
            if a.network.name != b.network.name:
                out += [(a, ip) for ip in b.ips]
    return out


def render_tables(console: Console, bed: Testbed) -> None:
    """Each host's kernel tables, read back with ``bridge -j fdb`` / ``ip -j neigh``."""
    by_vni = {n.vni: n.name for n in bed.networks.values()}
    table = Table(title="kernel tables, read back from each host's kernel", show_lines=True)
    for column in ("host", "network", "devices", "flood list", "FDB (MAC → VTEP)", "ARP/ND"):
        table.add_column(column)
    for name, host in bed.hosts.items():
        nets = bed.kernel_tables(name)
        if not nets:
            table.add_row(f"{name}\n{host.vtep_ip}", Text("(none)", "dim"), "", "", "", "")
        for vni, net in sorted(nets.items()):
            table.add_row(
                f"{name}\n{host.vtep_ip}",
                f"{by_vni.get(vni, '?')}\nvni {vni}\n{net.mode}",
                f"{net.bridge}\n{net.vxlan}\n" + "\n".join(net.ports),
                "\n".join(net.flood) or "-",
                "\n".join(f"{m} → {v}" for m, v in sorted(net.fdb.items())) or "-",
                "\n".join(f"{i} → {m}" for i, m in sorted(net.neigh.items())) or "-",
            )
    console.print(table)


def tables_match(bed: Testbed, host: str) -> list[str]:
    """Differences between ``host``'s kernel and the server's desired state (empty: equal)."""
    desired = {n["vni"]: n for n in bed.host_fdb(host)["networks"]}
    held: dict[int, KernelNetwork] = bed.kernel_tables(host)
    problems = []
    for vni in sorted(set(desired) | set(held)):
        want, got = desired.get(vni), held.get(vni)
        if want is None or got is None:
            problems.append(f"vni {vni}: {'not desired' if want is None else 'missing'}")
            continue
        if sorted(want["flood"]) != got.flood:
            problems.append(f"vni {vni}: flood {got.flood} != {want['flood']}")
        if {e["mac"]: e["vtep"] for e in want["fdb"]} != got.fdb:
            problems.append(f"vni {vni}: fdb differs")
        if {e["ip"]: e["mac"] for e in want["neigh"]} != got.neigh:
            problems.append(f"vni {vni}: neigh differs")
    return problems


@dataclass
class Measurement:
    """One cold-cache run: pings and what crossed the underlay."""

    pings_ok: int
    pings: int
    capture: CaptureResult
    non_member_bum: int
    non_member_detail: list[str]


def measure_cold(bed: Testbed, topo: Topology) -> Measurement:
    """Flush every VM's neighbour cache, then ping every pair of each network (IPv4 and
    IPv6) while tcpdump counts VXLAN packets on the underlay bridge."""
    vms = list(bed.vms.values())
    bed.flush_neigh()
    pairs = pairs_within(vms)
    with bed.capture("cold") as cap:
        results = bed.ping_many(pairs, timeout=2)
    assert cap.result is not None
    result = cap.result
    bum, detail = 0, []
    for net in topo.networks:
        for host_name in sorted(set(bed.hosts) - topo.members(net.name)):
            host = bed.hosts[host_name]
            n = result.count("bum", dst=host.vtep_ip, vni=net.vni)
            bum += n
            detail.append(f"{net.name} → {host_name} ({host.vtep_ip}): {n}")
    return Measurement(sum(results), len(results), result, bum, detail)


def _cap_text(m: Measurement) -> str:
    s = m.capture.summary()
    return (
        f"{s['vxlan']} VXLAN packets: {s['arp_broadcast']} ARP broadcast, "
        f"{s['nd_multicast']} ND multicast, {s['bum']} BUM, {s['unicast']} unicast"
    )


def run_l2pop(p: Progress, topo: Topology, workdir: Path) -> tuple[Measurement, dict[str, str]]:
    """The l2pop half; returns the measurement and the VMs' MACs (for the baseline)."""
    with p.step(
        f"testbed: underlay bridge, {topo.hosts} hosts, server, one agent per host"
    ) as notes:
        bed = Testbed(topo.hosts, workdir=workdir / "l2pop").start()
        notes.append(
            f"run prefix {bed.prefix}: namespaces {bed.prefix}-ul, {bed.prefix}-h1..h{topo.hosts}"
        )
        assert bed.server is not None
        notes.append(f"server {bed.server.url} (pid {bed.server.pid}); agents reach it at "
                     f"{bed.agent_url} over the underlay")  # fmt: skip
        for host in bed.hosts.values():
            assert host.agent is not None
            notes.append(f"{host.name}: VTEP {host.vtep_ip}, agent pid {host.agent.pid}")
    with bed:
        with p.step("networks blue (vni 1001, neigh_suppress) and red (vni 1002, proxy); VMs"):
            topo.build(bed)
        for net in topo.networks:
            members = ", ".join(sorted(topo.members(net.name)))
            outside = ", ".join(sorted(set(bed.hosts) - topo.members(net.name)))
            p.console.print(f"    {net.name}: VMs on {members}; {outside} not a member")
        vms = list(bed.vms.values())
        with p.step("ping every VM pair of each network (IPv4 and IPv6)") as notes:
            pairs = pairs_within(vms)
            ok = sum(bed.ping_many(pairs, timeout=2))
            notes.append(f"{ok}/{len(pairs)} answered")
        p.check(Check("pings within each network", f"{ok}/{len(pairs)}", ok=ok == len(pairs)))
        with p.step(
            "ping across networks (same subnets: only the overlay separates them)"
        ) as notes:
            cross = pairs_across(vms)
            leaked = sum(bed.ping_many(cross, timeout=1))
            notes.append(f"{leaked}/{len(cross)} answered")
        p.check(Check("pings across networks answered", f"{leaked}/{len(cross)}", ok=leaked == 0))
        render_tables(p.console, bed)
        with p.step("compare each kernel with the server's desired state") as notes:
            bad = {h: tables_match(bed, h) for h in bed.hosts}
            same = [h for h, problems in bad.items() if not problems]
            notes.append(f"{len(same)}/{len(bad)} hosts hold exactly the desired state")
            for h, problems in bad.items():
                for problem in problems:
                    p.console.print(Text(f"    {h}: {problem}", style="red"))
        p.check(Check("kernel tables = desired state", f"{len(same)}/{len(bad)} hosts",
                      ok=len(same) == len(bad)))  # fmt: skip
        with p.step("cold caches: flush the VMs' neighbour caches, ping all pairs, tcpdump on "
                    "the underlay") as notes:  # fmt: skip
            m = measure_cold(bed, topo)
            notes.append(f"{m.pings_ok}/{m.pings} answered; {_cap_text(m)}")
        macs = {vm.name: vm.mac for vm in vms}
    return m, macs


def run_baseline(p: Progress, topo: Topology, macs: dict[str, str], workdir: Path) -> Measurement:
    for vm in topo.vms:
        vm.mac = macs.get(vm.name, vm.mac)
    with p.step("baseline: the same topology with flood-and-learn VXLAN (no l2pop)") as notes:
        bed = Testbed(topo.hosts, flood_and_learn=True, workdir=workdir / "baseline").start()
        with bed:
            topo.build(bed)
            notes.append(f"run prefix {bed.prefix}; learning vxlan devices, every host's VTEP "
                         "in every flood list")  # fmt: skip
            time.sleep(1.0)  # the VMs' own start-up chatter (MLD reports) goes first
            m = measure_cold(bed, topo)
            notes.append(f"{m.pings_ok}/{m.pings} answered; {_cap_text(m)}")
    return m


def summary(console: Console, checks: list[Check], *, baseline: bool = True) -> None:
    table = Table(title="l2pop demo: summary")
    table.add_column("promise")
    table.add_column("l2pop", justify="right")
    if baseline:
        table.add_column("flood-and-learn", justify="right")
    table.add_column("", justify="center")
    for c in checks:
        mark = (
            Text("info", "dim")
            if c.ok is None
            else (Text("✓", "bold green") if c.ok else Text("✗", "bold red"))
        )
        table.add_row(c.name, c.l2pop, *([c.baseline] if baseline else []), mark)
    console.print(table)


def run_demo(console: Console | None = None, *, workdir: Path | None = None) -> int:
    """The real demo (root). Returns the exit code."""
    console = console or Console()
    if os.geteuid() != 0:
        console.print("l2pop demo needs root (network namespaces, bridge and vxlan devices).")
        console.print("Run it with sudo, or `l2pop demo --simulate` for the memory datapath.")
        return 2
    missing = [t for t in ("ip", "bridge", "ping", "tcpdump") if shutil.which(t) is None]
    if missing:
        console.print(f"missing tools: {', '.join(missing)} (scripts/bootstrap installs them)")
        return 2
    keep = workdir is not None
    work = workdir or Path(os.environ.get("TMPDIR", "/tmp")) / f"l2pop-demo-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    p = Progress(console)
    topo = demo_topology()
    try:
        m, macs = run_l2pop(p, topo, work)
        b = run_baseline(p, topo, macs, work)
    except Exception as exc:
        console.print(Text(f"demo failed: {exc}", style="bold red"))
        console.print(f"logs: {work}")
        return 1
    s, sb = m.capture.summary(), b.capture.summary()
    p.check(Check("pings during the cold-cache run", f"{m.pings_ok}/{m.pings}",
                  f"{b.pings_ok}/{b.pings}", ok=m.pings_ok == m.pings))  # fmt: skip
    p.check(Check("ARP broadcasts across the underlay", str(s["arp_broadcast"]),
                  str(sb["arp_broadcast"]), ok=s["arp_broadcast"] == 0))  # fmt: skip
    p.check(Check("IPv6 ND multicasts across the underlay", str(s["nd_multicast"]),
                  str(sb["nd_multicast"]), ok=s["nd_multicast"] == 0))  # fmt: skip
    p.check(Check("BUM copies to non-member hosts", str(m.non_member_bum),
                  str(b.non_member_bum), ok=m.non_member_bum == 0))  # fmt: skip
    p.check(Check("all BUM copies on the underlay", str(s["bum"]), str(sb["bum"])))
    p.check(Check("all VXLAN packets on the underlay", str(s["vxlan"]), str(sb["vxlan"])))
    console.print()
    for label, meas in (("l2pop", m), ("flood-and-learn", b)):
        per = meas.capture.per_destination("arp_broadcast")
        where = ", ".join(f"{vtep}: {n}" for vtep, n in sorted(per.items())) or "none"
        console.print(f"ARP broadcasts per destination VTEP, {label}: {where}")
        console.print(f"BUM to non-members, {label}: {'; '.join(meas.non_member_detail)}")
    summary(console, p.checks)
    failed = p.failed()
    if failed:
        console.print(Text(f"{len(failed)} promise(s) failed; logs: {work}", style="bold red"))
        return 1
    console.print(Text("every promise holds: no ARP broadcast crossed the underlay with l2pop",
                       style="bold green"))  # fmt: skip
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0
