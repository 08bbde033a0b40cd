"""Process entry points: ``l2pop agent`` (one host) and the shared serve loop.

``run_agent`` returns the process exit code: 0 after SIGTERM/SIGINT, 2 for a usage problem
(unknown or unavailable datapath, bad control address, unusable CA file). Stopping never touches
the datapath's tables: a restarted agent reconciles against what the kernel still holds (fail
static).

``make_datapath`` is the one place that names concrete datapaths: everything else in the agent
sees only ``l2pop.datapath.abc``, so a new implementation joins by one entry in ``DATAPATHS``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping

from l2pop.agent.channel import Agent
from l2pop.agent.control import ControlServer, parse_address
from l2pop.datapath.abc import Datapath
from l2pop.tlsconfig import TlsConfigError, client_context

log = logging.getLogger("l2pop.agent")

#: how long stopping agents may take to close their sessions before they are cancelled
STOP_GRACE_S = 5.0


class UsageError(Exception):
    """A problem the user must fix; printed as one line, exit code 2."""


def _memory(vtep_ip: str) -> Datapath:
    from l2pop.datapath.memory import MemoryDatapath

    return MemoryDatapath()


def _linux(vtep_ip: str) -> Datapath:
    try:
        from l2pop.datapath.linux import LinuxDatapath
    except ImportError:
        raise UsageError("the linux datapath is not available yet; use --datapath memory") from None
    return LinuxDatapath(vtep_ip=vtep_ip)


#: ``--datapath`` name -> factory(VTEP IP); imports are deferred so a host without the
#: kernel's pieces can still run the memory one
DATAPATHS: dict[str, Callable[[str], Datapath]] = {"linux": _linux, "memory": _memory}


def make_datapath(name: str, vtep_ip: str) -> Datapath:
    """The datapath called ``name``; raises ``UsageError`` when it cannot be had here."""
    factory = DATAPATHS.get(name)
    if factory is None:
        raise UsageError(f"unknown datapath {name!r}; choose one of {', '.join(DATAPATHS)}")
    return factory(vtep_ip)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One line per status call drowns a swarm's log; failures are logged by the reporter.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


async def serve_agents(
    agents: Mapping[str, Agent], ctl: ControlServer | None, *, ramp: float = 0.0
) -> None:
    """Run ``agents`` (and the control endpoint ``ctl``, not yet started) until
    SIGTERM/SIGINT, then stop them.

    ``ramp`` spreads the agents' first connections over that many seconds, so a swarm does
    not open all its sessions in the same instant.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ctl is not None:
        port = await ctl.start()
        # One line on stdout that tests and scripts wait for (port 0 picks a free port).
        print(f"control listening on {ctl.host}:{port}", flush=True)

    async def start(agent: Agent, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        await agent.run()

    n = max(len(agents), 1)
    tasks = [
        asyncio.create_task(start(agent, ramp * i / n), name=f"agent-{agent.host}")
        for i, agent in enumerate(agents.values())
    ]
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("agent ended: %r", task.exception())
    finally:
        await asyncio.gather(*(agent.stop() for agent in agents.values()))
        _, pending = await asyncio.wait([*tasks, waiter], timeout=STOP_GRACE_S)
        for leftover in pending:
            leftover.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if ctl is not None:
            await ctl.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run_agent(  # noqa: PLR0917 (the CLI's contract)
    server: str,
    host: str,
    local_ip: str,
    token: str,
    datapath_name: str,
    control: str | None,
    *,
    heartbeat_interval: float = 5.0,
    log_level: str | None = None,
    tls_ca: str | None = None,
) -> int:
    """``l2pop agent``: run one host's agent until SIGTERM/SIGINT; returns the exit code.

    ``tls_ca``: the CA file an https server's certificate is verified with (default: the
    system trust store); the process builds this one SSL context for all its connections.
    """
    setup_logging(log_level or os.environ.get("L2POP_LOG_LEVEL") or "INFO")
    try:
        if control:
            parse_address(control)
        ssl_context = client_context(tls_ca)
        datapath = make_datapath(datapath_name, local_ip)
    except (UsageError, ValueError, TlsConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    agent = Agent(
        server,
        host,
        local_ip,
        token,
        datapath,
        heartbeat_interval=heartbeat_interval,
        ssl_context=ssl_context,
    )
    agents = {host: agent}
    try:
        asyncio.run(serve_agents(agents, ControlServer(agents, control) if control else None))
    except OSError as exc:  # e.g. the control address is taken
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        datapath.close()
    return 0
