"""``l2pop``: parser assembly, global options, dispatch and error handling.

Command modules plug in through a ``register(subparsers)`` function that adds their
sub-parsers and sets ``func`` (``Namespace -> int`` exit code) on each leaf; list the
module in ``COMMAND_MODULES``. Heavy imports belong inside handlers, not at module level.

Exit codes: the handler's code (0 on success); 1 with one line ``error: <message>`` on
stderr for a ``CliError`` (bad reference, bad option) or an ``l2pop.client.ClientError``
(server or connection failure, error answer); 2 for argparse usage errors; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import TYPE_CHECKING

from l2pop.cli.common import CliError, add_global_options

if TYPE_CHECKING:
    from l2pop.client import ClientError

COMMAND_MODULES: tuple[str, ...] = (
    "l2pop.cli.server",
    "l2pop.cli.resources",
    "l2pop.cli.status",
    "l2pop.cli.agent",
    "l2pop.cli.demo",
    "l2pop.cli.testbed",
    "l2pop.cli.bench",
)


def _version() -> str:
    try:
        return metadata.version("l2pop")
    except metadata.PackageNotFoundError:
        return "unknown"


def _client_error() -> type[ClientError]:
    """``l2pop.client.ClientError``, imported only once something has failed: an ``except``
    clause is evaluated only then, so commands that never call the server do not pay for
    importing the client."""
    from l2pop.client import ClientError

    return ClientError


def build_parser() -> argparse.ArgumentParser:
    """The full ``l2pop`` parser with every module of ``COMMAND_MODULES`` registered."""
    parser = argparse.ArgumentParser(
        prog="l2pop",
        description="L2 Population for Linux VXLAN overlays.",
    )
    parser.add_argument("--version", action="version", version=f"l2pop {_version()}")
    add_global_options(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except CliError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`): not an error; silence the flush at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except _client_error() as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return code
