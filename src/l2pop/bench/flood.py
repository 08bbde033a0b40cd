"""Broadcast reduction: what crosses the underlay with l2pop and with flood-and-learn.

For each host count, one VM workload is built twice on the netns testbed
(``l2pop.testbed.bed.Testbed``): once with l2pop (server, one agent per host) and once as
the flood-and-learn baseline (no server, no agent; MACs learned from the traffic, every
BUM frame copied to every other host: head-end replication without L2 population).

``datapath`` says what the hosts run (``host_kinds``): ``linux`` (every host ``l2pop agent
--datapath linux``; the baseline learning Linux VXLAN devices), ``ovs`` (every host its own
Open vSwitch and ``--datapath ovs``) or ``mixed`` (odd hosts linux, even hosts OVS, so
every network spans both kinds). The baseline runs on hosts of the same kinds: learning
Linux VXLAN devices on a linux host, ``learn()`` flows and a flood group holding every other
host's VTEP on an OVS host (``testbed.floodlearn_ovs``: Neutron's OVS agent without L2
population); the result names it (``baseline``).

Workload (the same for every host count, so only the number of hosts changes):
``networks`` networks (alternately ``neigh_suppress`` and ``proxy``) of ``vms_per_network``
VMs each, every VM on its own host; network k's VMs sit on consecutive hosts starting at
host ``k * hosts // networks + 1``, so every network has hosts that are not members of it.
Each VM has an IPv4 address in 198.19.0.0/16 and an IPv6 one in 2001:db8::/32; all
networks share those subnets (only the overlay keeps them apart).

Traffic: for every ordered pair (a, b) of VMs of one network and each of b's addresses,
both VMs' neighbour caches are flushed and a pings b once, so every resolution starts cold
and the counts do not depend on timing (a concurrent reply can no longer teach b about a).
tcpdump on the underlay bridge counts the VXLAN packets meanwhile (``testbed.capture``):

* ``arp_broadcast``: ARP requests to ff:ff:ff:ff:ff:ff, one per copy (head-end replication
  sends one copy per destination VTEP);
* ``nd_multicast``: IPv6 neighbour discovery to a multicast MAC, per copy;
* ``bum``: every copy with a broadcast or multicast inner destination;
* ``unknown_unicast``: unicast copies sent to a VTEP that does not host the destination MAC
  (flooded because the sender's VTEP did not know where it lives);
* ``non_member_bum`` / ``non_member_packets``: BUM copies / packets of any kind of network
  N reaching a host that is not a member of N.

On the l2pop build it also times activations on real datapaths (``bench.activation``): a
new VM's port created and plugged -> every remote member holds its entry (a linux host's
FDB entry, an OVS host's table-40 flow).

Needs root. Every namespace carries a per-run prefix and is deleted by name at teardown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from l2pop.bench import activation
from l2pop.testbed.bed import Testbed
from l2pop.testbed.capture import CaptureResult
from l2pop.testbed.floodlearn import FloodAndLearn
from l2pop.testbed.nodes import Vm
from l2pop.testbed.topology import NetworkSpec, Topology, VmSpec

Progress = Callable[[str], None]

MODES = ("neigh_suppress", "proxy")
#: what the hosts run (``host_kinds``)
DATAPATHS = ("linux", "ovs", "mixed")
#: seconds between building the VMs and the measurement, for both designs alike: the VMs'
#: own start-up chatter (MLD reports for their new addresses) is not part of the workload
SETTLE_S = 2.0


@dataclass
class Workload:
    networks: int = 2
    vms_per_network: int = 3

    def topology(self, hosts: int) -> Topology:
        if self.vms_per_network < 2:
            raise ValueError("a network needs at least 2 VMs to have pairs")
        if self.vms_per_network >= hosts:
            raise ValueError(
                f"{self.vms_per_network} VMs per network on {hosts} hosts: every host would be "
                "a member; use fewer VMs per network or more hosts"
            )
        nets, vms = [], []
        for k in range(self.networks):
            name = f"net{k + 1}"
            nets.append(NetworkSpec(name, 1001 + k, MODES[k % len(MODES)]))
            first = k * hosts // self.networks
            for i in range(self.vms_per_network):
                host = f"h{(first + i) % hosts + 1}"
                ips = [f"198.19.{k + 1}.{i + 1}", f"2001:db8::{k + 1}:{i + 1}"]
                vms.append(VmSpec(f"{name}-vm{i + 1}", name, host, ips))
        return Topology(hosts, nets, vms)


@dataclass
class Counts:
    """What one design put on the underlay for the workload."""

    pings_ok: int
    pings: int
    vxlan: int
    arp_broadcast: int
    nd_multicast: int
    bum: int
    unicast: int
    unknown_unicast: int
    non_member_bum: int
    non_member_packets: int
    setup_s: float
    measure_s: float


def ordered_pairs(vms: list[Vm]) -> list[tuple[Vm, Vm, str]]:
    """(a, b, address of b) for every ordered pair of VMs of one network, each address."""
    return [
        (a, b, ip)
        for a in vms
        for b in vms
        if a is not b and a.network.name == b.network.name
        for ip in b.ips
    ]


def count(bed: Testbed, topo: Topology, result: CaptureResult) -> dict[str, int]:
    """The underlay figures of one capture (see the module docstring)."""
    where = {vm.mac: bed.hosts[vm.host].vtep_ip for vm in bed.vms.values()}
    unknown = sum(
        1
        for p in result.packets
        if not p.bum and p.inner_dst in where and p.dst_vtep != where[p.inner_dst]
    )
    non_member_bum = non_member_packets = 0
    for net in topo.networks:
        vni = bed.networks[net.name].vni
        for host in set(bed.hosts) - topo.members(net.name):
            vtep = bed.hosts[host].vtep_ip
            non_member_bum += result.count("bum", dst=vtep, vni=vni)
            non_member_packets += result.count(None, dst=vtep, vni=vni)
    summary = result.summary()
    return {
        "vxlan": summary["vxlan"],
        "arp_broadcast": summary["arp_broadcast"],
        "nd_multicast": summary["nd_multicast"],
        "bum": summary["bum"],
        "unicast": summary["unicast"],
        "unknown_unicast": unknown,
        "non_member_bum": non_member_bum,
        "non_member_packets": non_member_packets,
    }


def measure(bed: Testbed, topo: Topology, *, ping_timeout: float = 2.0) -> Counts:
    """Build ``topo`` on ``bed`` (started), let it settle, run the traffic under capture."""
    started = time.monotonic()
    topo.build(bed)
    setup_s = time.monotonic() - started
    time.sleep(SETTLE_S)
    pairs = ordered_pairs(list(bed.vms.values()))
    started = time.monotonic()
    ok = 0
    with bed.capture("flood") as cap:
        for a, b, ip in pairs:
            bed.flush_neigh([a, b])
            ok += bed.ping(a, ip, timeout=ping_timeout)
    assert cap.result is not None
    measure_s = time.monotonic() - started
    return Counts(
        pings_ok=ok,
        pings=len(pairs),
        setup_s=round(setup_s, 2),
        measure_s=round(measure_s, 2),
        **count(bed, topo, cap.result),
    )


def host_kinds(datapath: str, hosts: int) -> dict[str, Any]:
    """The ``Testbed`` keyword arguments that make ``hosts`` hosts of ``datapath``: none
    (linux), ``kind="ovs"`` (ovs) or ``kinds`` naming the even hosts OVS (mixed: h1 linux,
    h2 ovs, h3 linux...). Raises ``ValueError`` for another name."""
    if datapath == "linux":
        return {}
    if datapath == "ovs":
        return {"kind": "ovs"}
    if datapath == "mixed":
        return {"kinds": {f"h{i}": "ovs" for i in range(2, hosts + 1, 2)}}
    raise ValueError(f"unknown datapath {datapath!r}; choose one of {', '.join(DATAPATHS)}")


def kind_of(datapath: str, host: str) -> str:
    """The kind (``linux`` or ``ovs``) of ``host`` on a ``datapath`` testbed."""
    if datapath == "mixed":
        return "ovs" if _host_index(host) % 2 == 0 else "linux"
    return datapath


def hosts_by_kind(datapath: str, hosts: int) -> dict[str, list[str]]:
    """Kind -> its hosts, in order, on ``hosts`` hosts of ``datapath`` (kinds with none left
    out)."""
    out: dict[str, list[str]] = {}
    for i in range(1, hosts + 1):
        out.setdefault(kind_of(datapath, f"h{i}"), []).append(f"h{i}")
    return dict(sorted(out.items()))


def baseline(datapath: str) -> dict[str, str]:
    """What the flood-and-learn baseline of a ``datapath`` run is, as ``label`` (for tables
    and plots): on hosts of the same kinds as l2pop's, learning Linux VXLAN on linux hosts,
    ``learn()`` flows on OVS ones."""
    labels = {
        "linux": "flood-and-learn",
        "ovs": "flood-and-learn (OVS learn() flows)",
        "mixed": "flood-and-learn (Linux VXLAN + OVS learn() flows)",
    }
    return {"label": labels[datapath]}


def run_one(
    hosts: int,
    workload: Workload,
    workdir: Path | None = None,
    progress: Progress = print,
    advance: Callable[[], None] | None = None,
    *,
    datapath: str = "linux",
) -> dict[str, Any]:
    """Both designs on ``hosts`` hosts of ``datapath`` (``host_kinds``); l2pop first, then
    the baseline (``baseline``) with the same MACs."""
    topo = workload.topology(hosts)
    out: dict[str, Any] = {"hosts": hosts}
    base = baseline(datapath)
    for design in ("l2pop", "flood_and_learn"):
        label = "l2pop" if design == "l2pop" else base["label"]
        progress(f"{hosts} hosts, {label}: building the testbed")
        sub = workdir / f"{hosts}-{design}" if workdir is not None else None
        started = time.monotonic()
        control = FloodAndLearn() if design != "l2pop" else None
        kinds = host_kinds(datapath, hosts)
        with Testbed(hosts, control=control, workdir=sub, **kinds) as bed:
            progress(f"{hosts} hosts, {label}: run prefix {bed.prefix}; VMs and traffic")
            counts = measure(bed, topo)
            row: dict[str, Any] = asdict(counts)
            if design == "l2pop":  # the baseline gets the very same MACs
                macs = {vm.name: vm.mac for vm in bed.vms.values()}
                for spec in topo.vms:
                    spec.mac = macs[spec.name]
                first = topo.networks[0].name
                members = sorted(topo.members(first), key=_host_index)
                row["activation"] = activation.measure(
                    bed, first, members[0], members[1:], progress=progress
                )
        row["total_s"] = round(time.monotonic() - started, 1)
        out[design] = row
        progress(
            f"{hosts} hosts, {label}: {counts.pings_ok}/{counts.pings} pings, "
            f"{counts.arp_broadcast} ARP broadcasts, {counts.bum} BUM copies, "
            f"{counts.non_member_bum} to non-members ({row['total_s']} s)"
        )
        if advance is not None:
            advance()
    return out


def run(
    host_counts: tuple[int, ...] | list[int] = (4, 8, 16),
    vms_per_network: int = 3,
    progress: Progress = print,
    *,
    networks: int = 2,
    workdir: Path | None = None,
    advance: Callable[[], None] | None = None,
    datapath: str = "linux",
) -> dict[str, Any]:
    """The benchmark for each host count on hosts of ``datapath`` (root; OVS installed for
    ``ovs`` and ``mixed``); ``advance()`` is called after each of the ``2 *
    len(host_counts)`` testbed runs (for a progress bar). A linux result is as it always
    was; another also names its ``datapath``, the hosts of each kind (``kinds``) and its
    ``baseline``."""
    workload = Workload(networks, vms_per_network)
    for hosts in host_counts:
        workload.topology(hosts)  # refuse a bad size before building anything
        host_kinds(datapath, hosts)
    results = []
    for hosts in host_counts:
        results.append(run_one(hosts, workload, workdir, progress, advance, datapath=datapath))
    pairs = networks * vms_per_network * (vms_per_network - 1)
    out: dict[str, Any] = {
        "workload": {
            "networks": networks,
            "vms_per_network": vms_per_network,
            "modes": [MODES[k % len(MODES)] for k in range(networks)],
            "addresses_per_vm": 2,
            "ordered_pairs": pairs,
            "pings": pairs * 2,
            "placement": {
                str(h): {
                    net.name: sorted(workload.topology(h).members(net.name), key=_host_index)
                    for net in workload.topology(h).networks
                }
                for h in host_counts
            },
        },
        "host_counts": list(host_counts),
        "results": results,
    }
    if datapath != "linux":
        out["datapath"] = datapath
        out["kinds"] = {str(h): hosts_by_kind(datapath, h) for h in host_counts}
        out["baseline"] = baseline(datapath)
    return out


def _host_index(name: str) -> int:
    return int(name[1:])
