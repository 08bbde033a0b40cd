"""``l2pop demo [--simulate]``: no ARP broadcast and no flooding to non-members, shown on
real kernels (root), or simulated."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``l2pop demo``."""
    p = subparsers.add_parser(
        "demo",
        help="show L2 population end to end: no ARP broadcast crosses the underlay",
        description=(
            "Start a server and 4 hosts (network namespaces) with real agents: two Linux-bridge "
            "hosts and two Open vSwitch hosts, with networks on Linux bridge + VXLAN, OVS + "
            "VXLAN, OVS + GRE and one VXLAN network spanning both kinds; ping every pair, show "
            "the networks are isolated, print each host's tables (kernel or flows), and count "
            "the packets crossing the underlay from cold ARP caches with l2pop and with a "
            "flood-and-learn baseline. Needs root. Exit code 0 when every promise holds, 1 "
            "when one fails, 2 when this machine cannot run it."
        ),
    )
    p.add_argument(
        "--simulate",
        action="store_true",
        help="no root: the same story on the memory datapath (control plane only, no packets)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep logs, databases and captures in DIR (default: a temporary directory, "
        "removed when every promise holds)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from l2pop.console import make_console

    console = make_console()
    if args.simulate:
        from l2pop.demo.simulate import run_simulation

        return run_simulation(console)
    from l2pop.demo.real import run_demo

    return run_demo(console, workdir=args.workdir)
