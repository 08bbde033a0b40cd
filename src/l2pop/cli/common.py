"""What every command that talks to the server shares: options, a context, a wrapper.

Global options (``--server``, ``--token``/``--token-file``, ``--tls-ca``, ``-o``) are
defined on the top-level parser with their defaults (environment, then built-in; the token's
environment is read when a command runs, see ``l2pop.tokenfile``). ``client_options()`` is a
parent parser that lets a leaf command accept the same options after its own name too; it
sets no defaults (``SUPPRESS``), so a value given before the subcommand stands unless
repeated after it.

The REST calls go through ``l2pop.client.Client``, imported only when a command runs (it
pulls in httpx, pydantic and the wire models, which building the parser must not pay; nor
``l2pop.cli.output``, which pulls in rich: ``l2pop agent`` builds this parser too).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from l2pop.tlsconfig import ENV_TLS_CA, TlsConfigError, client_context
from l2pop.tokenfile import TokenFileError, resolve_token

if TYPE_CHECKING:
    from l2pop.cli.output import Output
    from l2pop.client import Client

ENV_SERVER = "L2POP_SERVER"
ENV_TOKEN = "L2POP_TOKEN"
#: ``l2pop.client.DEFAULT_SERVER``, spelled again so that the parser is built without
#: importing the client (tests/integration/test_cli.py keeps the two equal)
DEFAULT_SERVER = "http://127.0.0.1:9696"
#: ``-o`` choices; ``l2pop.cli.output`` (rich) is imported only when a command prints
OUTPUT_FORMATS = ("table", "json")


class CliError(Exception):
    """A failure of the command line itself (bad reference, bad option, unreadable token
    file), reported as ``error: <message>`` with exit code 1 (no traceback). The client's
    own failures are ``l2pop.client.ClientError``, which ``main`` reports the same way."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


Handler = Callable[[argparse.Namespace], int]


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """``--server``, ``--token[-file]``, ``--tls-ca``, ``-o`` with defaults, on the main parser."""
    group = parser.add_argument_group("global options")
    group.add_argument(
        "--server",
        default=os.environ.get(ENV_SERVER) or DEFAULT_SERVER,
        metavar="URL",
        help=f"l2pop server URL, or a list of replicas URL1,URL2 (the first is used; env "
        f"{ENV_SERVER}; default {DEFAULT_SERVER})",
    )
    group.add_argument(
        "--token",
        default=None,
        metavar="T",
        help=f"bearer token for the API (env {ENV_TOKEN})",
    )
    group.add_argument(
        "--token-file",
        default=None,
        metavar="FILE",
        help=f"read the bearer token from FILE (env {ENV_TOKEN}_FILE); not with --token",
    )
    group.add_argument(
        "--tls-ca",
        default=os.environ.get(ENV_TLS_CA) or None,
        metavar="FILE",
        help=f"PEM CA certificate(s) to verify an https server with (env {ENV_TLS_CA}; "
        "default the system trust store)",
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
    group.add_argument("--token-file", default=argparse.SUPPRESS, metavar="FILE")
    group.add_argument("--tls-ca", default=argparse.SUPPRESS, metavar="FILE")
    group.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default=argparse.SUPPRESS)
    return parent


@dataclass(frozen=True)
class Context:
    """One command's arguments, its API client and its output."""

    args: argparse.Namespace
    api: Client
    out: Output

    @property
    def server(self) -> str:
        return self.api.base_url


def api_command(fn: Callable[[Context], None]) -> Handler:
    """Wrap ``fn(ctx)`` into an argparse handler returning exit code 0.

    The client is built from the global options and closed afterwards; ``CliError`` and
    ``ClientError`` from ``fn`` propagate to ``main``, which prints them.
    """

    def handler(args: argparse.Namespace) -> int:
        from l2pop.cli.output import Output

        out = Output(getattr(args, "output", "table"))
        # a list of replicas (what agents take, ``URL1,URL2``): any replica serves the API
        server = (getattr(args, "server", None) or DEFAULT_SERVER).split(",")[0].strip()
        try:
            token = resolve_token(
                getattr(args, "token", None),
                getattr(args, "token_file", None),
                option="--token",
                env=ENV_TOKEN,
            )
            verify = client_context(getattr(args, "tls_ca", None))
        except (TokenFileError, TlsConfigError) as exc:
            raise CliError(str(exc)) from None
        from l2pop.client import Client

        with Client(server, token, verify=verify) as api:
            fn(Context(args, api, out))
        return 0

    handler.__doc__ = fn.__doc__
    return handler
