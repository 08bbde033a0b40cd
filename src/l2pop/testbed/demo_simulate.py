"""``l2pop demo --simulate``: the demo's story without root, on the memory datapath.

A real server (SQLite, loopback) and a real ``l2pop agent-swarm`` process running one agent
per host, each with its own WebSocket session; the agents apply snapshot and deltas to an
in-memory table instead of a kernel. What it shows: the tables each agent holds equal the
server's desired state, a host never hears of a network it is not a member of, and how many
messages each agent received. No packet is sent: there is no kernel datapath here.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from l2pop.testbed.agents import AgentSwarm, HostCredentials
from l2pop.testbed.bed import Topology, wait_for
from l2pop.testbed.demo import Check, Progress, demo_topology, summary
from l2pop.testbed.process import ServerProcess


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.url.path}: {response.status_code} {response.text}")
    return response.json() if response.content else None


def _converged(api: httpx.Client) -> bool:
    ports = _ok(api.get("/v1/ports"))
    hosts = _ok(api.get("/v1/hosts"))
    return all(p["status"] == "ACTIVE" for p in ports if p["host"]) and all(
        h["connected"] and h["in_sync"] for h in hosts
    )


def _render(console: Console, swarm: AgentSwarm, hosts: list[str], names: dict[str, str]) -> None:
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


def run_simulation(console: Console | None = None) -> int:
    """The demo on the memory datapath; returns the exit code (0: every promise holds)."""
    console = console or Console()
    console.print(
        Text("--simulate: memory datapath, no kernel and no packets; the control plane is real "
             "(server, WebSocket sessions, snapshot and deltas, status reports).", "bold")
    )  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="l2pop-demo-sim-"))
    p = Progress(console)
    topo = demo_topology()
    try:
        code = _story(p, topo, work)
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
    admin = secrets.token_urlsafe(18)
    server = ServerProcess(
        f"sqlite:///{work / 'l2pop.db'}", admin_token=admin, log_path=work / "server.log"
    )
    try:
        with p.step("server (SQLite) on loopback") as notes:
            server.start()
            notes.append(f"{server.url}, pid {server.pid}")
        with server.client() as api:
            return _with_server(p, topo, work, server, api)
    finally:
        server.stop()


def _with_server(
    p: Progress, topo: Topology, work: Path, server: ServerProcess, api: httpx.Client
) -> int:
    creds = []
    for i in range(1, topo.hosts + 1):
        body = _ok(api.post("/v1/hosts", json={"name": f"h{i}", "vtep_ip": f"192.0.2.{i}"}))
        creds.append(HostCredentials(body["name"], body["vtep_ip"], body["token"]))
    hosts = [c.host for c in creds]
    swarm = AgentSwarm(server.url, creds, work, name="agents")
    try:
        with p.step(f"{len(creds)} agents (memory datapath) in one agent-swarm process") as notes:
            swarm.start()
            wait_for("agents connected", lambda: all(a["connected"] for a in swarm.agents()))
            notes.append(f"pid {swarm.pid}; " + ", ".join(f"{c.host} {c.vtep_ip}" for c in creds))
        return _with_agents(p, topo, api, swarm, hosts)
    finally:
        swarm.stop()


def _with_agents(
    p: Progress, topo: Topology, api: httpx.Client, swarm: AgentSwarm, hosts: list[str]
) -> int:
    names: dict[str, str] = {}
    with p.step("networks blue (neigh_suppress) and red (proxy); ports bound to hosts"):
        nets = {}
        for net in topo.networks:
            body = {"name": net.name, "vni": net.vni, "arp_suppression": net.arp_suppression}
            data = _ok(api.post("/v1/networks", json=body))
            nets[net.name] = data["id"]
            names[data["id"]] = net.name
        for vm in topo.vms:
            body = {"network_id": nets[vm.network], "name": vm.name}
            body |= {"fixed_ips": vm.ips, "host": vm.host}
            _ok(api.post("/v1/ports", json=body))
        wait_for("ports ACTIVE and hosts in sync", lambda: _converged(api))
    for net in topo.networks:
        outside = ", ".join(sorted(set(hosts) - topo.members(net.name)))
        p.console.print(f"    {net.name}: ports on {', '.join(sorted(topo.members(net.name)))}; "
                        f"{outside} not a member")  # fmt: skip
    _render(p.console, swarm, hosts, names)
    with p.step("compare each agent's tables with the server's desired state") as notes:
        same = [
            h for h in hosts
            if swarm.tables(h)["digest"] == _ok(api.get(f"/v1/hosts/{h}/fdb"))["digest"]
        ]  # fmt: skip
        notes.append(f"{len(same)}/{len(hosts)} agents hold exactly the desired state")
    p.check(Check("agent tables = desired state", f"{len(same)}/{len(hosts)} hosts",
                  ok=len(same) == len(hosts)))  # fmt: skip
    with p.step("which host heard of which network (every message it received)") as notes:
        leaks = 0
        for h in hosts:
            seen = {names.get(n, n) for n in swarm.stats(h)["networks_seen"]}
            never = sorted(set(nets) - seen)
            member_of = {n.name for n in topo.networks if h in topo.members(n.name)}
            leaks += len(seen - member_of)
            notes.append(f"{h}: heard of {', '.join(sorted(seen)) or 'nothing'}; "
                         f"never of {', '.join(never) or '-'}")  # fmt: skip
    p.check(Check("messages about a network reaching a non-member", str(leaks), ok=leaks == 0))
    before = _messages(swarm, hosts)
    with p.step("one more VM in blue (on h2): who receives the change?") as notes:
        body = {"network_id": nets["blue"], "name": "blue-4", "host": "h2"}
        body["fixed_ips"] = ["198.19.1.4", "2001:db8::1:4"]
        _ok(api.post("/v1/ports", json=body))
        wait_for("ports ACTIVE and hosts in sync", lambda: _converged(api))
        after = _messages(swarm, hosts)
        got = {h: sum(after[h].values()) - sum(before[h].values()) for h in hosts}
        # heartbeats also arrive: count deltas and snapshots only
        moved = {
            h: sum(after[h].get(t, 0) - before[h].get(t, 0) for t in ("delta", "snapshot"))
            for h in hosts
        }
        for h in hosts:
            notes.append(f"{h}: {moved[h]} snapshot/delta message(s), {got[h]} message(s) in all")
    non_members = sorted(set(hosts) - topo.members("blue") - {"h2"})
    quiet = all(moved[h] == 0 for h in non_members)
    p.check(Check("blue's change reaching non-members " + ", ".join(non_members),
                  str(sum(moved[h] for h in non_members)), ok=quiet))  # fmt: skip
    table = Table(title="messages received per agent (by type)")
    kinds = sorted({k for m in after.values() for k in m})
    table.add_column("host")
    for kind in kinds:
        table.add_column(kind, justify="right")
    for h in hosts:
        table.add_row(h, *(str(after[h].get(k, 0)) for k in kinds))
    p.console.print(table)
    p.check(Check("packets on the underlay", "not measured: no kernel in --simulate"))
    summary(p.console, p.checks, baseline=False)
    p.console.print("No packets were sent: run `sudo l2pop demo` for the underlay counts "
            "(ARP broadcasts with l2pop vs flood-and-learn).")  # fmt: skip
    return 1 if p.failed() else 0
