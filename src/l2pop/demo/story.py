"""What both demos share: the topology, how it is built, and the desired-state comparison.

Story: 4 hosts, 2 networks (``blue`` with ``neigh_suppress``, ``red`` with ``proxy``), VMs
spread so that each network has a host that is not a member. The real demo builds it on
Linux hosts (and again on the flood-and-learn baseline), the simulated one on
memory-datapath agents; the steps below print the same lines for both.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text

from l2pop.demo.progress import Check, Progress
from l2pop.testbed.bed import Testbed
from l2pop.testbed.nodes import Vm
from l2pop.testbed.topology import NetworkSpec, Topology, VmSpec

HOSTS = 4
#: the VM the simulated demo adds at the end, to show who hears of a change
EXTRA_VM = VmSpec("blue-4", "blue", "h2", ["198.19.1.4", "2001:db8::1:4"])


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


#: the real demo's hosts: two Linux-bridge hosts and two Open vSwitch hosts
DATAPATH_KINDS = {"h1": "linux", "h2": "linux", "h3": "ovs", "h4": "ovs"}


def datapaths_topology() -> Topology:
    """The original system's three datapaths side by side, plus a network that spans both
    kinds of host: ``lb`` Linux bridge + VXLAN on h1, h2; ``ov`` OVS + VXLAN and ``og`` OVS +
    GRE on h3, h4; ``mx`` one VXLAN network with a VM on a Linux host (h1) and one on an OVS
    host (h3). Every network has hosts that are not members, and all share one IPv4 /16 and
    one IPv6 /64: only the overlay keeps them apart."""
    nets = [
        NetworkSpec("lb", 1001, "neigh_suppress", "vxlan", "Linux bridge + VXLAN"),
        NetworkSpec("ov", 1002, "proxy", "vxlan", "Open vSwitch + VXLAN"),
        NetworkSpec("og", 1003, "neigh_suppress", "gre", "Open vSwitch + GRE"),
        NetworkSpec("mx", 1004, "neigh_suppress", "vxlan", "mixed: Linux + OVS, VXLAN"),
    ]
    place = {"lb": ("h1", "h2"), "ov": ("h3", "h4"), "og": ("h3", "h4"), "mx": ("h1", "h3")}
    vms = [
        VmSpec(f"{net.name}-{i}", net.name, host, [f"198.19.{k}.{i}", f"2001:db8::{k}:{i}"])
        for k, net in enumerate(nets, start=1)
        for i, host in enumerate(place[net.name], start=1)
    ]
    kinds = {h: k for h, k in DATAPATH_KINDS.items() if k != "linux"}
    return Topology(len(DATAPATH_KINDS), nets, vms, kinds)


def build(p: Progress, bed: Testbed, topo: Topology, title: str, placed: str) -> None:
    """Build ``topo`` on ``bed`` as one step, then say where each network lives
    (``placed``: what sits on the hosts, "VMs" or "ports")."""
    with p.step(title):
        topo.build(bed)
    for net in topo.networks:
        members = topo.members(net.name)
        outside = ", ".join(sorted(set(bed.hosts) - members))
        p.console.print(f"    {net.name}: {placed} on {', '.join(sorted(members))}; "
                        f"{outside} not a member")  # fmt: skip


def compare(
    p: Progress,
    hosts: list[str],
    differences: Callable[[str], list[str]],
    *,
    title: str,
    holders: str,
    check: str,
) -> None:
    """One step comparing each host with the server's desired state, and its check;
    ``differences(host)`` is empty when the host holds exactly the desired state."""
    with p.step(title) as notes:
        bad = {h: differences(h) for h in hosts}
        same = [h for h, problems in bad.items() if not problems]
        notes.append(f"{len(same)}/{len(bad)} {holders} hold exactly the desired state")
        for h, problems in bad.items():
            for problem in problems:
                p.console.print(Text(f"    {h}: {problem}", style="red"))
    p.check(Check(check, f"{len(same)}/{len(bad)} hosts", ok=len(same) == len(bad)))


def table_differences(bed: Testbed, host: str) -> list[str]:
    """Differences between ``host``'s tables, read back, and the server's desired state."""
    desired = {n.vni: n for n in bed.host_fdb(host).networks}
    held = bed.kernel_tables(host)
    problems = []
    for vni in sorted(set(desired) | set(held)):
        want, got = desired.get(vni), held.get(vni)
        if want is None or got is None:
            problems.append(f"vni {vni}: {'not desired' if want is None else 'missing'}")
            continue
        if sorted(want.flood) != got.flood:
            problems.append(f"vni {vni}: flood {got.flood} != {want.flood}")
        if {e.mac: e.vtep for e in want.fdb} != got.fdb:
            problems.append(f"vni {vni}: fdb differs")
        if {e.ip: e.mac for e in want.neigh} != got.neigh:
            problems.append(f"vni {vni}: neigh differs")
    return problems


def pairs_within(vms: list[Vm]) -> list[tuple[Vm, str]]:
    """Every ordered pair of VMs of the same network, IPv4 and IPv6."""
    out = []
    for a in vms:
        for b in vms:
            if a is not b and a.network.name == b.network.name:
                out += [(a, ip) for ip in b.ips]
    return out


def pairs_across(vms: list[Vm]) -> list[tuple[Vm, str]]:
    """Every ordered pair of VMs of different networks, IPv4 and IPv6."""
    out = []
    for a in vms:
        for b in vms:
            if a.network.name != b.network.name:
                out += [(a, ip) for ip in b.ips]
    return out
