"""The broadcast-reduction sections of ``docs/benchmarks.md``, from the flood results
(``l2pop.bench.flood``; one result file per datapath, ``results.FLOOD_RESULTS``).

``sections(results, png)`` is what ``report.render`` puts on the page: the linux section
(``flood.json``, and its activation table) as it always was, then one section for Open
vSwitch hosts with a subsection per datapath measured (``flood-ovs.json``: every host OVS;
``flood-mixed.json``: odd hosts linux, even hosts OVS). A missing result leaves its
section saying how to measure it. Each table labels the baseline as its result does
(``baseline``).
"""

from __future__ import annotations

from typing import Any

from l2pop.bench.formatting import num, run_command, table

#: the subsection of each non-linux datapath: (result name, title, what its hosts are)
OVS_DATAPATHS = (
    ("flood-ovs", "ovs", "Every host Open vSwitch", "every host runs its own Open vSwitch"),
    ("flood-mixed", "mixed", "Mixed: linux and Open vSwitch hosts",
     "odd hosts are linux hosts and even hosts Open vSwitch ones, so every network spans "
     "both kinds and linux and OVS hosts tunnel to each other"),
)  # fmt: skip

#: how activation is timed on OVS hosts (once, above both subsections' tables)
ACTIVATION_METHOD = (
    "*Activation* is timed on each l2pop build as on linux hosts: the clock starts before "
    "the port is created and the VM's veth made, and stops when the last remote member "
    "holds the VM's entry. On an OVS host that is the receipt time of the `ovs-ofctl "
    "monitor watch:table=40` event for the `dl_dst=MAC ... set_field:VTEP->tun_dst` flow "
    "(read line-buffered through `stdbuf -oL`; it came 1 ms p50, 6 ms at most, after "
    "ovs-ofctl's own `--timestamp` of the same event over 40 events), on a linux host the "
    "kernel's `bridge -timestamp "
    "monitor fdb` timestamp. On a mixed testbed the per-kind columns are the time to the "
    "last remote member of that kind: the same VMs and deltas, so they compare the two "
    "datapaths' writes within one run (results of different files ran at different times "
    "on a shared 2-core machine)."
)

COUNT_HEADER = [
    "hosts",
    "design",
    "pings answered",
    "ARP broadcasts",
    "ND multicasts",
    "BUM copies",
    "unknown-unicast copies",
    "BUM copies to non-members",
    "all VXLAN packets",
]


def sections(results: dict[str, dict[str, Any]], png: dict[str, str]) -> list[str]:
    """The page's flood sections (see the module docstring); ``png``: plot name -> its
    path relative to the page, for the plots drawn."""
    lines = linux_section(results.get("flood"), png.get("flood"))
    lines += ovs_section(results, png)
    return lines


def _counts_table(r: dict[str, Any]) -> str:
    base = r.get("baseline", {}).get("label", "flood-and-learn")
    rows = []
    for row in sorted(r.get("results", []), key=lambda x: x["hosts"]):
        for design, label in (("l2pop", "l2pop"), ("flood_and_learn", base)):
            c = row.get(design, {})
            rows.append(
                [
                    str(row["hosts"]),
                    label,
                    f"{c.get('pings_ok', '?')}/{c.get('pings', '?')}",
                    num(c.get("arp_broadcast")),
                    num(c.get("nd_multicast")),
                    num(c.get("bum")),
                    num(c.get("unknown_unicast")),
                    num(c.get("non_member_bum")),
                    num(c.get("vxlan")),
                ]
            )
    return table(COUNT_HEADER, rows, "rl" + "r" * (len(COUNT_HEADER) - 2))


def _placement(r: dict[str, Any]) -> list[str]:
    placement = r.get("workload", {}).get("placement", {})
    if not placement:
        return []
    kinds = r.get("kinds", {})
    lines = ["Members of each network (the other hosts must hear nothing of it):", ""]
    for hosts, nets in sorted(placement.items(), key=lambda kv: int(kv[0])):
        text = "; ".join(f"{n}: {', '.join(h)}" for n, h in nets.items())
        if r.get("datapath") == "mixed" and hosts in kinds:
            ovs = kinds[hosts].get("ovs", [])
            text += f" (OVS hosts: {', '.join(ovs)})"
        lines.append(f"- {hosts} hosts: {text}")
    return [*lines, ""]


def linux_section(saved: dict[str, Any] | None, png: str | None) -> list[str]:
    """Linux hosts: l2pop's linux datapath against learning Linux VXLAN."""
    lines = ["## Broadcast reduction: l2pop vs flood-and-learn", ""]
    if saved is None:
        lines += ["_Not measured yet: run `l2pop bench flood --hosts 4,8,16 --save`._", ""]
        return lines
    r = saved["result"]
    w = r.get("workload", {})
    lines.append(
        "The netns testbed: hosts and VMs as network namespaces, the underlay one Linux "
        "bridge, tcpdump on it counting VXLAN packets (each head-end-replicated copy counts "
        "once). The same VM workload on every host count, built once with l2pop (server, "
        "one agent per host, linux datapath) and once with flood-and-learn (learning VXLAN "
        "devices, every other host in each flood list): "
        f"{w.get('networks', '?')} networks ({', '.join(w.get('modes', []))}) of "
        f"{w.get('vms_per_network', '?')} VMs, each VM on its own host and with an IPv4 and "
        "an IPv6 address, each network leaving some hosts out. For every ordered pair of "
        "VMs of a network and each address, both neighbour caches are flushed and one ping "
        f"is sent ({w.get('pings', '?')} pings per run): every resolution starts cold."
    )
    lines += ["", run_command(saved), "", _counts_table(r), ""]
    lines += _placement(r)
    if png:
        lines += [f"![ARP broadcasts and BUM copies vs hosts]({png})", ""]
    lines += activation_lines(r)
    return lines


def activation_lines(r: dict[str, Any]) -> list[str]:
    """Activation latency on real kernels, measured on the l2pop builds (``bench.activation``)."""
    rows = [
        [
            str(row["hosts"]),
            num(a.get("remote_kernels")),
            num(a.get("samples")),
            num(a.get("p50_ms"), 1),
            num(a.get("max_ms"), 1),
        ]
        for row in sorted(r.get("results", []), key=lambda x: x["hosts"])
        if (a := row.get("l2pop", {}).get("activation"))
    ]
    if not rows:
        return []
    header = ["hosts", "remote member kernels", "VMs", "p50 ms", "max ms"]
    return [
        "### Activation on real kernels",
        "",
        "On each l2pop build, new VMs are added one at a time to the first network: the clock "
        "starts before the port is created through the API and the VM's veth is made, and "
        "stops at the kernel's timestamp (`bridge -timestamp monitor fdb`) of the last remote "
        "member's `MAC dst VTEP` entry. The path: tap appears, the agent's netlink listener "
        "enslaves it and reports ACTIVE, the server fans the delta out, each member's agent "
        "programs its kernel. For comparison, FRR EVPN measured on this machine kind took "
        "77 ms p50 / 82 ms p99 from a new VM's first frame to the remote kernels (3 hosts).",
        "",
        table(header, rows),
        "",
    ]


def ovs_section(results: dict[str, dict[str, Any]], png: dict[str, str]) -> list[str]:
    """Open vSwitch hosts: the same workload on the ovs datapath, alone and beside linux."""
    lines = ["## Broadcast reduction on Open vSwitch hosts", ""]
    lines.append(
        "The same testbed, workload and counts as above, with hosts that run their own Open "
        "vSwitch (userspace datapath, the VTEP on `br-phy`) and `l2pop agent --datapath ovs` "
        "(ADR 18: ARP and ND answered by flows, no learning, one group per flood list). "
        "The baseline is flood-and-learn on hosts of the same kinds: on an OVS host what "
        "Neutron's OVS agent does without L2 population (a bridge of `learn()` flows, "
        "every other host's VTEP in each network's flood group), on a linux host the "
        "learning VXLAN devices above."
    )
    lines += ["", ACTIVATION_METHOD, ""]
    for name, datapath, title, hosts in OVS_DATAPATHS:
        lines += [f"### {title}", ""]
        saved = results.get(name)
        if saved is None:
            lines += [
                f"_Not measured yet: run `l2pop bench flood --hosts 4,8,16 --datapath "
                f"{datapath} --save`._",
                "",
            ]
            continue
        r = saved["result"]
        lines += [f"Here {hosts}.", "", run_command(saved), "", _counts_table(r), ""]
        lines += _placement(r)
        if name in png:
            lines += [f"![ARP broadcasts and BUM copies vs hosts, {datapath}]({png[name]})", ""]
        lines += ovs_activation_lines(r)
    return lines


def _kind_cells(a: dict[str, Any], kind: str) -> list[str]:
    k = a.get("by_kind", {}).get(kind, {})
    return [num(k.get("p50_ms"), 1), num(k.get("max_ms"), 1)]


def ovs_activation_lines(r: dict[str, Any]) -> list[str]:
    """Activation latency to remote OVS flows (and linux kernels, on a mixed testbed)."""
    measured = [
        (row["hosts"], a)
        for row in sorted(r.get("results", []), key=lambda x: x["hosts"])
        if (a := row.get("l2pop", {}).get("activation"))
    ]
    if not measured:
        return []
    kinds = sorted({k for _, a in measured for k in a.get("by_kind", {})})
    header = ["hosts", "remote members", "VMs", "p50 ms", "max ms"]
    if len(kinds) > 1:
        header += [f"{k} {m} ms" for k in kinds for m in ("p50", "max")]
    rows = []
    for hosts, a in measured:
        split = ", ".join(f"{n} {k}" for k, n in a.get("remote_kinds", {}).items())
        row = [str(hosts), f"{num(a.get('remote_kernels'))} ({split})", num(a.get("samples"))]
        row += [num(a.get("p50_ms"), 1), num(a.get("max_ms"), 1)]
        if len(kinds) > 1:
            row += [c for k in kinds for c in _kind_cells(a, k)]
        rows.append(row)
    return [
        "#### Activation",
        "",
        table(header, rows, "rl" + "r" * (len(header) - 2)),
        "",
    ]
