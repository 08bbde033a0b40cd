"""``l2pop agent`` and ``l2pop agent-swarm``: parse the options, hand over to ``l2pop.agent``.

``--server`` falls back to the global option (``L2POP_SERVER``); it may list replicas,
``URL1,URL2,...``, which the agent fails over between (``l2pop.agent.servers``).
``--tls-ca`` falls back likewise (``L2POP_TLS_CA``). The agent's token is its host's token,
not the operator's: ``--token`` or ``--token-file`` here, or ``L2POP_AGENT_TOKEN`` /
``L2POP_AGENT_TOKEN_FILE`` (never ``L2POP_TOKEN``, which holds the admin token).

``l2pop agent``'s options are layered (``l2pop.cli.config``): each can also come from the
environment (``L2POP_<OPTION>``; the token's as above) or the TOML file ``--config`` names.
``agent-swarm`` is a test tool and is not.
"""

from __future__ import annotations

import argparse
import sys

from l2pop.agent.options import (
    DEFAULT_BRIDGE,
    DEFAULT_OVS_DB,
    DEFAULT_OVS_RUNDIR,
    OVS_DATAPATH_TYPES,
    DatapathOptions,
)
from l2pop.cli.common import DEFAULT_SERVER
from l2pop.cli.config import ConfigError, add_log_options, layered, resolve
from l2pop.tlsconfig import ENV_TLS_CA
from l2pop.tokenfile import TokenFileError, resolve_token

ENV_AGENT_TOKEN = "L2POP_AGENT_TOKEN"
#: the keys of l2pop.agent.main.DATAPATHS, spelt out so building the parser does not import
#: the agent (tests/unit/test_agent_main.py keeps the two equal)
DATAPATH_CHOICES = ("linux", "memory", "ovs")


def _common(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: a --server given before the subcommand (global option) stands unless repeated.
    p.add_argument(
        "--server",
        default=argparse.SUPPRESS,
        metavar="URL[,URL...]",
        help="server URL, or replicas' URLs comma-separated: the agent starts at a random one "
        "and fails over to the next when its session ends (env L2POP_SERVER)",
    )
    p.add_argument(
        "--tls-ca",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help=f"PEM CA certificate(s) to verify an https server with (env {ENV_TLS_CA}; "
        "default the system trust store)",
    )
    p.add_argument(
        "--control",
        default=None,
        metavar="HOST:PORT",
        help="serve the local control/status endpoint there (e.g. 127.0.0.1:9697; port 0 "
        "picks one and prints it)",
    )
    p.add_argument(
        "--heartbeat-interval",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between agent heartbeats and WebSocket pings (default 5)",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``l2pop agent ...`` and ``l2pop agent-swarm ...``."""
    p = subparsers.add_parser(
        "agent",
        help="run the agent of one host",
        description="Run one host's agent: channel to the server, datapath, port status.",
    )
    _common(p)
    p.add_argument("--host", required=True, metavar="NAME", help="this host's name")
    p.add_argument(
        "--local-ip", required=True, metavar="VTEP_IP", help="this host's VTEP IP address"
    )
    p.add_argument(
        "--token",
        dest="agent_token",
        default=None,
        metavar="T",
        help=f"the host's agent token (env {ENV_AGENT_TOKEN})",
    )
    p.add_argument(
        "--token-file",
        dest="agent_token_file",
        default=None,
        metavar="FILE",
        help=f"read the agent token from FILE (env {ENV_AGENT_TOKEN}_FILE); not with --token",
    )
    p.add_argument(
        "--datapath",
        choices=DATAPATH_CHOICES,
        default="linux",
        help="linux programs the kernel's bridges and VXLAN devices; ovs programs an Open "
        "vSwitch bridge (VXLAN and GRE); memory is a fake for tests (default linux)",
    )
    ovs = p.add_argument_group("Open vSwitch (--datapath ovs)")
    ovs.add_argument(
        "--ovs-db",
        default=DEFAULT_OVS_DB,
        metavar="unix:PATH",
        help=f"the OVSDB server to connect to (unix:PATH, tcp:IP:PORT, ssl:IP:PORT; "
        f"default {DEFAULT_OVS_DB})",
    )
    ovs.add_argument(
        "--ovs-rundir",
        default=DEFAULT_OVS_RUNDIR,
        metavar="DIR",
        help=f"ovs-vswitchd's run directory, where the bridge's OpenFlow socket "
        f"<bridge>.mgmt is (default {DEFAULT_OVS_RUNDIR})",
    )
    ovs.add_argument(
        "--bridge",
        default=DEFAULT_BRIDGE,
        metavar="NAME",
        help=f"the bridge the agent creates and owns (default {DEFAULT_BRIDGE})",
    )
    ovs.add_argument(
        "--ovs-datapath-type",
        choices=OVS_DATAPATH_TYPES,
        default="system",
        help="the bridge's datapath: system (kernel module) or netdev (userspace; no kernel "
        "module needed) (default system)",
    )
    add_log_options(p, default_level="INFO")
    layered(
        p,
        env={"token": ENV_AGENT_TOKEN, "token-file": f"{ENV_AGENT_TOKEN}_FILE"},
        groups=[("token", "token-file")],
        # the global --server and --tls-ca (l2pop.cli.common) stand when not repeated here
        inherited={"server": DEFAULT_SERVER, "tls_ca": None},
    )
    p.set_defaults(func=_run_agent)

    s = subparsers.add_parser(
        "agent-swarm",
        help="run many simulated agents (memory datapath) in one process",
        description="Run one agent per entry of a hosts file, each with its own session.",
    )
    _common(s)
    s.add_argument(
        "--hosts-file",
        required=True,
        metavar="F",
        help='JSON list of {"host", "vtep_ip", "token"}',
    )
    s.add_argument(
        "--ramp",
        type=float,
        default=0.0,
        metavar="S",
        help="spread the first connections over S seconds (default 0)",
    )
    s.add_argument(
        "--log-level", default=None, help="DEBUG, INFO, WARNING... (env L2POP_LOG_LEVEL)"
    )
    s.add_argument(
        "--test-hooks", action="store_true", help="enable fault-injection hooks (tests only)"
    )
    s.add_argument(
        "--encaps",
        default=None,
        metavar="E[,E]",
        help="encapsulations the memory datapaths carry, e.g. 'vxlan' to stand in for "
        "linux hosts (default: vxlan,gre)",
    )
    s.set_defaults(func=_run_swarm)


def _run_agent(args: argparse.Namespace) -> int:
    try:
        resolve(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from l2pop.agent.main import run_agent

    try:
        token = resolve_token(
            args.agent_token, args.agent_token_file, option="--token", env=ENV_AGENT_TOKEN
        )
    except TokenFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not token:
        print(
            f"error: --token, --token-file, {ENV_AGENT_TOKEN} or {ENV_AGENT_TOKEN}_FILE is "
            "required",
            file=sys.stderr,
        )
        return 2
    try:
        options = datapath_options(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_agent(
        getattr(args, "server", None) or DEFAULT_SERVER,
        args.host,
        token,
        args.datapath,
        options,
        args.control,
        heartbeat_interval=args.heartbeat_interval,
        log_level=args.log_level,
        tls_ca=getattr(args, "tls_ca", None),
        log_format=args.log_format,
    )


def datapath_options(args: argparse.Namespace) -> DatapathOptions:
    """The datapath's settings from ``l2pop agent``'s options; ``ValueError`` when Open
    vSwitch would refuse one (``DatapathOptions`` checks them)."""
    return DatapathOptions(
        vtep_ip=args.local_ip,
        ovs_db=args.ovs_db,
        ovs_rundir=args.ovs_rundir,
        bridge=args.bridge,
        ovs_datapath_type=args.ovs_datapath_type,
    )


def _run_swarm(args: argparse.Namespace) -> int:
    from l2pop.agent.swarm import run_swarm

    return run_swarm(
        getattr(args, "server", None) or DEFAULT_SERVER,
        args.hosts_file,
        args.control,
        test_hooks=args.test_hooks,
        heartbeat_interval=args.heartbeat_interval,
        ramp=args.ramp,
        log_level=args.log_level,
        tls_ca=getattr(args, "tls_ca", None),
        encaps=args.encaps,
    )
