"""``l2pop demo --simulate``: the demo's story without root, on the memory datapath.

A real server (SQLite, loopback) and a real ``l2pop agent-swarm`` process running one agent
per host, each with its own WebSocket session (``Testbed(kind=SwarmHosts())``); the agents
apply snapshot and deltas to an in-memory table instead of a kernel. What it shows: the
tables each agent holds equal the server's desired state, a host never hears of a network
it is not a member of, and how many messages each agent received. No packet is sent:
there is no kernel datapath here.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from l2pop.console import make_console
from l2pop.demo import story
from l2pop.demo.progress import Check, Progress, summary
from l2pop.testbed.agents import AgentSwarm
from l2pop.testbed.bed import Testbed
from l2pop.testbed.controlplane import L2popControlPlane
from l2pop.testbed.hosts import SwarmHosts
from l2pop.testbed.topology import Topology


def run_simulation(console: Console | None = None) -> int:
    """The demo on the memory datapath; returns the exit code (0: every promise holds)."""
    console = console or make_console()
    console.print(
        Text("--simulate: memory datapath, no kernel and no packets; the control plane is real "
             "(server, WebSocket sessions, snapshot and deltas, status reports).", "bold")
    )  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="l2pop-demo-sim-"))
    p = Progress(console)
    try:
        code = _story(p, story.demo_topology(), work)
    except Exception as exc:
        console.print(Text(f"demo failed: {exc}", style="bold red"))
        console.print(f"logs: {work}")
        return 1
    if code == 0:
        shutil.rmtree(work, ignore_errors=True)
    else:
        console.print(f"logs: {work}")
    return code


def _story(p: Progress, topo: Topology, work: Path) -> int:
    """The server, then the agents (two steps), then the story on them."""
    control, kind = L2popControlPlane(), SwarmHosts()
    bed = Testbed(topo.hosts, control=control, kind=kind, workdir=work)
    try:
        with p.step("server (SQLite) on loopback") as notes:
            bed.open()
            control.start_server(bed.run, bed.underlay)
            notes.append(f"{control.server.url}, pid {control.server.pid}")
        hosts = list(bed.hosts.values())
        with p.step(f"{len(hosts)} agents (memory datapath) in one agent-swarm process") as notes:
            control.start_agents(hosts, kind)
            notes.append(
                f"pid {kind.swarm.pid}; " + ", ".join(f"{h.name} {h.vtep_ip}" for h in hosts)
            )
        return _with_agents(p, topo, bed, kind.swarm)
    finally:
        bed.teardown()


def _render(console: Console, swarm: AgentSwarm, hosts: list[str], names: dict[str, str]) -> None:
    """Each agent's tables as its control endpoint reads them back."""
    table = Table(title="tables each agent holds (memory datapath, read back)", show_lines=True)
    for column in ("host", "network", "flood list", "FDB (MAC → VTEP)", "ARP/ND"):
        table.add_column(column)
    for host in hosts:
        nets = swarm.tables(host)["networks"]
        if not nets:
            table.add_row(host, Text("(none)", "dim"), "", "", "")
        for n in nets:
            table.add_row(
                host,
                f"{names.get(n['network_id'], '?')}\nvni {n['vni']}\n{n['arp_suppression']}",
                "\n".join(n["flood"]) or "-",
                "\n".join(f"{e['mac']} → {e['vtep']}" for e in n["fdb"]) or "-",
                "\n".join(f"{e['ip']} → {e['mac']}" for e in n["neigh"]) or "-",
            )
    console.print(table)


def _messages(swarm: AgentSwarm, hosts: list[str]) -> dict[str, dict[str, int]]:
    return {h: dict(swarm.stats(h)["messages"]) for h in hosts}


def _digest_differs(bed: Testbed, swarm: AgentSwarm, host: str) -> list[str]:
    held, desired = swarm.tables(host)["digest"], bed.host_fdb(host).digest
    return [] if held == desired else [f"digest {held} != {desired}"]


def _with_agents(p: Progress, topo: Topology, bed: Testbed, swarm: AgentSwarm) -> int:
    hosts = list(bed.hosts)
    story.build(p, bed, topo,
                "networks blue (neigh_suppress) and red (proxy); ports bound to hosts",
                "ports")  # fmt: skip
    names = {net.id: net.name for net in bed.networks.values()}
    _render(p.console, swarm, hosts, names)
    story.compare(p, hosts, lambda h: _digest_differs(bed, swarm, h),
                  title="compare each agent's tables with the server's desired state",
                  holders="agents", check="agent tables = desired state")  # fmt: skip
    with p.step("which host heard of which network (every message it received)") as notes:
        leaks = 0
        for h in hosts:
            seen = {names.get(n, n) for n in swarm.stats(h)["networks_seen"]}
            never = sorted(set(bed.networks) - seen)
            member_of = {n.name for n in topo.networks if h in topo.members(n.name)}
            leaks += len(seen - member_of)
            notes.append(f"{h}: heard of {', '.join(sorted(seen)) or 'nothing'}; "
                         f"never of {', '.join(never) or '-'}")  # fmt: skip
    p.check(Check("messages about a network reaching a non-member", str(leaks), ok=leaks == 0))
    extra = story.EXTRA_VM
    before = _messages(swarm, hosts)
    with p.step(f"one more VM in {extra.network} (on {extra.host}): who receives the change?"
                ) as notes:  # fmt: skip
        bed.add_vm(extra.name, extra.network, extra.host, extra.ips, wait=False)
        bed.wait_converged()
        after = _messages(swarm, hosts)
        got = {h: sum(after[h].values()) - sum(before[h].values()) for h in hosts}
        # heartbeats also arrive: count deltas and snapshots only
        moved = {
            h: sum(after[h].get(t, 0) - before[h].get(t, 0) for t in ("delta", "snapshot"))
            for h in hosts
        }
        for h in hosts:
            notes.append(f"{h}: {moved[h]} snapshot/delta message(s), {got[h]} message(s) in all")
    non_members = sorted(set(hosts) - topo.members(extra.network) - {extra.host})
    quiet = all(moved[h] == 0 for h in non_members)
    p.check(Check(f"{extra.network}'s change reaching non-members " + ", ".join(non_members),
                  str(sum(moved[h] for h in non_members)), ok=quiet))  # fmt: skip
    _message_table(p.console, hosts, after)
    p.check(Check("packets on the underlay", "not measured: no kernel in --simulate"))
    summary(p.console, p.checks, baseline=False)
    p.console.print("No packets were sent: run `sudo l2pop demo` for the underlay counts "
            "(ARP broadcasts with l2pop vs flood-and-learn).")  # fmt: skip
    return 1 if p.failed() else 0


def _message_table(console: Console, hosts: list[str], counts: dict[str, dict[str, int]]) -> None:
    table = Table(title="messages received per agent (by type)")
    kinds = sorted({k for m in counts.values() for k in m})
    table.add_column("host")
    for kind in kinds:
        table.add_column(kind, justify="right")
    for h in hosts:
        table.add_row(h, *(str(counts[h].get(k, 0)) for k in kinds))
    console.print(table)
