"""What every command that talks to the server shares: options, a context, a wrapper.

Global options (``--server``, ``--token``, ``-o``) are defined on the top-level parser
with their defaults (environment, then built-in). ``client_options()`` is a parent
parser that lets a leaf command accept the same options after its own name too; it
sets no defaults (``SUPPRESS``), so a value given before the subcommand stands unless
repeated after it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass

from l2pop.cli.client import DEFAULT_SERVER, ApiClient
from l2pop.cli.output import OUTPUT_FORMATS, Output

ENV_SERVER = "L2POP_SERVER"
ENV_TOKEN = "L2POP_TOKEN"

Handler = Callable[[argparse.Namespace], int]


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """``--server``, ``--token``, ``-o/--output`` with their defaults, on the main parser."""
    group = parser.add_argument_group("global options")
    group.add_argument(
        "--server",
        default=os.environ.get(ENV_SERVER) or DEFAULT_SERVER,
        metavar="URL",
        help=f"l2pop server URL (env {ENV_SERVER}; default {DEFAULT_SERVER})",
    )
    group.add_argument(
        "--token",
        default=os.environ.get(ENV_TOKEN) or None,
        metavar="T",
        help=f"bearer token for the API (env {ENV_TOKEN})",
    )
    group.add_argument(
        "-o",
        "--output",
        choices=OUTPUT_FORMATS,
        default="table",
        help="table (default) or json: the server's JSON as is",
    )


def client_options() -> argparse.ArgumentParser:
    """A parent parser repeating the global options on a leaf command, without defaults."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("global options (also accepted here)")
    group.add_argument("--server", default=argparse.SUPPRESS, metavar="URL")
    group.add_argument("--token", default=argparse.SUPPRESS, metavar="T")
    group.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default=argparse.SUPPRESS)
    return parent


@dataclass(frozen=True)
class Context:
    """One command's arguments, its API client and its output."""

    args: argparse.Namespace
    api: ApiClient
    out: Output

    @property
    def server(self) -> str:
        return self.api.base_url


def api_command(fn: Callable[[Context], None]) -> Handler:
    """Wrap ``fn(ctx)`` into an argparse handler returning exit code 0.

    The client is built from the global options and closed afterwards; ``CliError``
    from ``fn`` propagates to ``main``, which prints it.
    """

    def handler(args: argparse.Namespace) -> int:
        out = Output(getattr(args, "output", "table"))
        server = getattr(args, "server", None) or DEFAULT_SERVER
        with ApiClient(server, getattr(args, "token", None)) as api:
            fn(Context(args, api, out))
        return 0

    handler.__doc__ = fn.__doc__
    return handler
