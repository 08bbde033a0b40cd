"""Process entry points: ``l2pop agent`` (one host) and the shared serve loop.

``run_agent`` returns the process exit code: 0 after SIGTERM/SIGINT, 2 for a usage problem
(a ``--server`` list that is not http(s) URLs, unknown or unavailable datapath, Open vSwitch
or its Python library missing for ``--datapath ovs``, bad control address, unusable CA
file). Stopping never touches the datapath's tables: a restarted agent reconciles against
what the kernel (or the switch) still holds (fail static).

``make_datapath`` is the one place that names concrete datapaths: everything else in the agent
sees only ``l2pop.datapath.abc``, so a new implementation joins by one entry in ``DATAPATHS``
(and its name in the CLI's ``--datapath`` choices). Every factory takes the same
``DatapathOptions`` (``agent/options.py``) and uses the fields it needs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping

from l2pop import logfmt, sdnotify
from l2pop.agent.channel import Agent
from l2pop.agent.control import ControlServer, parse_address
from l2pop.agent.options import DatapathOptions
from l2pop.agent.servers import parse_servers
from l2pop.datapath.abc import Datapath
from l2pop.tlsconfig import TlsConfigError, client_context

log = logging.getLogger("l2pop.agent")

#: how long stopping agents may take to close their sessions before they are cancelled
STOP_GRACE_S = 5.0


class UsageError(Exception):
    """A problem the user must fix; printed as one line, exit code 2."""


def _memory(options: DatapathOptions) -> Datapath:
    from l2pop.datapath.memory import MemoryDatapath

    return MemoryDatapath()


def _linux(options: DatapathOptions) -> Datapath:
    try:
        from l2pop.datapath.linux import LinuxDatapath
    except ImportError:
        raise UsageError("the linux datapath is not available yet; use --datapath memory") from None
    return LinuxDatapath(vtep_ip=options.vtep_ip)


def _ovs(options: DatapathOptions) -> Datapath:
    """``OvsDatapath`` on the given OVSDB and bridge. What this host lacks (the ``ovs``
    Python package, a running Open vSwitch) is a ``UsageError`` naming the fix, checked
    before anything is created."""
    try:
        from l2pop.datapath.ovs import OvsDatapath
    except ImportError as exc:
        # ``exc.name`` tells the missing ``ovs`` package (the OVSDB IDL library) apart from
        # a build of l2pop without the datapath itself
        if exc.name is not None and (exc.name == "ovs" or exc.name.startswith("ovs.")):
            raise UsageError(
                "the ovs datapath needs the Open vSwitch Python library (pip install ovs)"
            ) from None
        raise UsageError(f"the ovs datapath is not available: {exc}") from None
    db_path = options.ovs_db_path
    if db_path is not None and not os.path.exists(db_path):
        raise UsageError(
            f"no Open vSwitch database at {options.ovs_db} (is ovsdb-server running? "
            "--ovs-db names its socket)"
        )
    if not os.path.isdir(options.ovs_rundir):
        raise UsageError(
            f"--ovs-rundir {options.ovs_rundir} is not a directory (where ovs-vswitchd puts "
            "<bridge>.mgmt)"
        )
    try:
        datapath: Datapath = OvsDatapath(
            options.vtep_ip,
            db=options.ovs_db,
            rundir=options.ovs_rundir,
            bridge=options.bridge,
            datapath_type=options.ovs_datapath_type,
        )
    except (OSError, TimeoutError) as exc:  # refused, or nobody answers on the socket
        raise UsageError(f"cannot use Open vSwitch at {options.ovs_db}: {exc}") from None
    return datapath


#: ``--datapath`` name -> factory(options); imports are deferred so a host without the
#: kernel's (or Open vSwitch's) pieces can still run the others
DATAPATHS: dict[str, Callable[[DatapathOptions], Datapath]] = {
    "linux": _linux,
    "memory": _memory,
    "ovs": _ovs,
}


def make_datapath(name: str, options: DatapathOptions) -> Datapath:
    """The datapath called ``name``; raises ``UsageError`` when it cannot be had here."""
    factory = DATAPATHS.get(name)
    if factory is None:
        raise UsageError(f"unknown datapath {name!r}; choose one of {', '.join(DATAPATHS)}")
    return factory(options)


def setup_logging(level: str, log_format: str = "text", *, host: str | None = None) -> None:
    """Log at ``level`` and above to stderr, as text or JSON lines (``l2pop.logfmt``);
    ``host``: the one host of this process, which every JSON line then names."""
    context = {"host": host} if host else None
    logfmt.configure(level, log_format, text=logfmt.AGENT_TEXT, context=context)
    # One line per status call drowns a swarm's log; failures are logged by the reporter.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


async def serve_agents(
    agents: Mapping[str, Agent], ctl: ControlServer | None, *, ramp: float = 0.0
) -> None:
    """Run ``agents`` (and the control endpoint ``ctl``, not yet started) until
    SIGTERM/SIGINT, then stop them.

    ``ramp`` spreads the agents' first connections over that many seconds, so a swarm does
    not open all its sessions in the same instant.

    Readiness (``sdnotify``; docs/adr/0026-operating-the-services.md): ``READY=1`` once the
    control endpoint listens and every agent's channel task runs (the datapaths were opened
    by the caller), not once a session is in sync: a host whose server is unreachable still
    has an agent up, keeping its tables and reconnecting, and ``systemctl start`` must not
    wait for the server. ``STOPPING=1`` when a signal asks it to stop.
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
    await asyncio.sleep(0)  # let each channel task start (register its port listener)
    sdnotify.ready(f"{len(agents)} agent(s) running")
    try:
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        sdnotify.stopping()
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
    token: str,
    datapath_name: str,
    options: DatapathOptions,
    control: str | None,
    *,
    heartbeat_interval: float = 5.0,
    log_level: str | None = None,
    tls_ca: str | None = None,
    log_format: str = "text",
) -> int:
    """``l2pop agent``: run one host's agent until SIGTERM/SIGINT; returns the exit code.

    ``server``: one URL or several comma-separated (replicas the agent fails over between;
    checked by ``parse_servers``). ``options``: the datapath's settings (``options.vtep_ip``
    is the host's VTEP, announced to the server). ``tls_ca``: the CA file an https server's
    certificate is verified with (default: the system trust store); the process builds this
    one SSL context for all its connections.
    """
    setup_logging(log_level or os.environ.get("L2POP_LOG_LEVEL") or "INFO", log_format, host=host)
    try:
        servers = parse_servers(server)
        if control:
            parse_address(control)
        # a context (the trust store read in: ~2 MiB) only for an https replica, or to
        # check a CA file given all the same
        tls = tls_ca or any(u.startswith("https://") for u in servers)
        ssl_context = client_context(tls_ca) if tls else None
        datapath = make_datapath(datapath_name, options)
    except (UsageError, ValueError, TlsConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    agent = Agent(
        servers,
        host,
        options.vtep_ip,
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
