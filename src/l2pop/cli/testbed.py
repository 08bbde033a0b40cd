"""``l2pop testbed clean``: remove what a testbed run left behind (this project's only).

Only namespaces named with a testbed run prefix (``l2p`` + 4 hex + ``-ul|-hN|-vN``) or the
datapath tests' throwaway pattern (``l2p...-PID-HEX``), root devices carrying a run prefix,
the server process and the Open vSwitch daemons (by pid file) a dead run recorded are
touched, each by name or pid. Runs whose owner process is still alive are skipped unless
``--force``.
"""

from __future__ import annotations

import argparse
import os
import sys


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``l2pop testbed clean``."""
    p = subparsers.add_parser(
        "testbed",
        help="manage the network-namespace testbed (demo, e2e tests)",
        description="Manage the network-namespace testbed used by the demo and e2e tests.",
    )
    sub = p.add_subparsers(dest="testbed_command", metavar="COMMAND", required=True)
    c = sub.add_parser(
        "clean",
        help="remove leftovers of testbed runs (this project's namespaces and devices only)",
        description=(
            "Remove what testbed runs left behind, this project's only: namespaces named "
            "l2pXXXX-ul/-hN/-vN (a run prefix) or l2p...-PID-HEX (the datapath tests' "
            "throwaway namespaces), root devices carrying a run prefix, and the server "
            "process and Open vSwitch daemons a dead run recorded; each by name or pid. "
            "Runs whose owner process is alive are skipped unless --force."
        ),
    )
    c.add_argument(
        "--force", action="store_true", help="also remove runs whose owner process is alive"
    )
    c.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    c.set_defaults(func=_clean)


def _clean(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("error: l2pop testbed clean needs root (ip netns)", file=sys.stderr)
        return 2
    from l2pop.testbed import leftovers

    found = leftovers.find_leftovers(force=args.force)
    for name in found.skipped:
        print(f"skipped (its run is alive; --force removes it): namespace {name}")
    if found.empty():
        print("nothing to clean")
        return 0
    verb = "would remove" if args.dry_run else "removing"
    for pid in found.servers:
        print(f"{verb} server process {pid}")
    for pid in found.daemons:
        print(f"{verb} Open vSwitch daemon {pid}")
    for name in found.netns:
        print(f"{verb} namespace {name}")
    for name in found.devices:
        print(f"{verb} device {name}")
    for record in found.records:
        print(f"{verb} run record {record.path}")
    if not args.dry_run:
        leftovers.clean(found)
    return 0
