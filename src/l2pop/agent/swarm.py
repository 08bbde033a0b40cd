"""``l2pop agent-swarm``: many simulated hosts in one process, one real WebSocket each.

Each host gets its own ``Agent`` with a memory datapath; they share one HTTP client for
status reports and one control endpoint (keyed by host name). Used by tests and the scale
simulator to stand in for 50-1000 hosts with a few processes.

``--test-hooks`` gives each agent a ``l2pop.testbed.faults.DeltaFaults`` filter and serves its
routes on the control endpoint (the swarm is a test tool; ``l2pop agent`` has no such thing).

``--encaps vxlan`` makes every memory datapath carry only those encapsulations (default: all),
so a swarm can stand in for VXLAN-only hosts such as linux ones.

``--server URL1,URL2`` names replicas: each agent starts at a random one and fails over
(``l2pop.agent.servers``), so the swarm spreads over them.

Hosts file: JSON ``[{"host": NAME, "vtep_ip": IP, "token": T}, ...]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx

from l2pop.agent.channel import Agent
from l2pop.agent.control import ControlServer, parse_address
from l2pop.agent.main import UsageError, serve_agents, setup_logging
from l2pop.agent.servers import parse_servers
from l2pop.datapath.memory import ALL_ENCAPS, MemoryDatapath
from l2pop.model import Encap, InvalidField
from l2pop.model.validation import parse_encap
from l2pop.runtime import keep_heap_frozen
from l2pop.testbed.faults import DeltaFaults, FaultControlServer
from l2pop.tlsconfig import TlsConfigError, client_context


def parse_encaps(text: str) -> frozenset[Encap]:
    """``"vxlan,gre"`` -> the encaps; raises ``UsageError`` naming a value that is none."""
    try:
        return frozenset(parse_encap(t.strip(), "--encaps") for t in text.split(",") if t.strip())
    except InvalidField as exc:
        raise UsageError(exc.message) from None


def load_hosts(path: str) -> list[dict[str, str]]:
    """The hosts file's entries; raises ``UsageError`` naming what is wrong."""
    try:
        data: Any = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read hosts file {path}: {exc}") from None
    if not isinstance(data, list):
        raise UsageError(f"{path}: expected a JSON list of {{host, vtep_ip, token}}")
    hosts: list[dict[str, str]] = []
    names: set[str] = set()
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) and entry[k] for k in ("host", "vtep_ip", "token")
        ):
            raise UsageError(f"{path}: entry {i} needs string host, vtep_ip and token")
        if entry["host"] in names:
            raise UsageError(f"{path}: host {entry['host']} appears twice")
        names.add(entry["host"])
        hosts.append({k: entry[k] for k in ("host", "vtep_ip", "token")})
    return hosts


async def _swarm(
    server: str | tuple[str, ...],
    hosts: list[dict[str, str]],
    *,
    control: str | None,
    test_hooks: bool,
    heartbeat_interval: float,
    ramp: float,
    ssl_context: ssl.SSLContext,
    encaps: frozenset[Encap] = ALL_ENCAPS,
) -> None:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    faults = {h["host"]: DeltaFaults(h["host"]) for h in hosts} if test_hooks else {}
    async with httpx.AsyncClient(timeout=10.0, limits=limits, verify=ssl_context) as client:
        agents = {
            h["host"]: Agent(
                server,
                h["host"],
                h["vtep_ip"],
                h["token"],
                MemoryDatapath(encaps=encaps),
                heartbeat_interval=heartbeat_interval,
                http_client=client,
                ssl_context=ssl_context,
                inbound_filter=faults.get(h["host"]),
            )
            for h in hosts
        }
        ctl: ControlServer | None = None
        if control and test_hooks:
            ctl = FaultControlServer(agents, control, faults)
        elif control:
            ctl = ControlServer(agents, control)
        freezer = asyncio.create_task(keep_heap_frozen())
        try:
            await serve_agents(agents, ctl, ramp=ramp)
        finally:
            freezer.cancel()


def run_swarm(
    server: str,
    hosts_file: str,
    control: str | None,
    *,
    test_hooks: bool = False,
    heartbeat_interval: float = 5.0,
    ramp: float = 0.0,
    log_level: str | None = None,
    tls_ca: str | None = None,
    encaps: str | None = None,
) -> int:
    """Run every host of ``hosts_file`` until SIGTERM/SIGINT; returns the exit code.

    ``server``: one URL or several comma-separated (replicas; ``parse_servers``).
    ``encaps``: what every memory datapath carries, comma-separated (None: all)."""
    setup_logging(log_level or os.environ.get("L2POP_LOG_LEVEL") or "WARNING")
    try:
        servers = parse_servers(server)
        if control:
            parse_address(control)
        hosts = load_hosts(hosts_file)
        ssl_context = client_context(tls_ca)
        carried = ALL_ENCAPS if encaps is None else parse_encaps(encaps)
    except (UsageError, ValueError, TlsConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(
            _swarm(
                servers,
                hosts,
                control=control,
                test_hooks=test_hooks,
                heartbeat_interval=heartbeat_interval,
                ramp=ramp,
                ssl_context=ssl_context,
                encaps=carried,
            )
        )
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
