"""``l2pop server``: parse the options and hand over to ``l2pop.server.main.run``."""

from __future__ import annotations

import argparse
import os

from l2pop.cli.client import CliError

DEFAULT_DB = "sqlite:///l2pop.db"
DEFAULT_LISTEN = "127.0.0.1:9696"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``l2pop server [--db URL] [--listen HOST:PORT] [--admin-token T]``."""
    p = subparsers.add_parser(
        "server",
        help="run the l2pop server (REST API and agent channel)",
        description="Run the l2pop server: REST API, store and agent channel.",
    )
    p.add_argument(
        "--db",
        default=os.environ.get("L2POP_DB") or DEFAULT_DB,
        metavar="URL",
        help=f"database URL, sqlite:///FILE or postgresql://... (env L2POP_DB; "
        f"default {DEFAULT_DB})",
    )
    p.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address to listen on (default {DEFAULT_LISTEN})",
    )
    p.add_argument(
        "--admin-token",
        default=os.environ.get("L2POP_ADMIN_TOKEN") or None,
        metavar="T",
        help="bearer token for admin calls (env L2POP_ADMIN_TOKEN)",
    )
    p.add_argument(
        "--heartbeat-interval",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between channel heartbeats to agents (default 5)",
    )
    p.add_argument(
        "--queue-limit",
        type=int,
        default=256,
        metavar="N",
        help="messages buffered per agent before its backlog becomes a snapshot (default 256)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    """Import the server only now (the CLI must start fast) and run it until stopped."""
    try:
        from l2pop.server.main import run
    except ImportError as exc:
        raise CliError(f"the l2pop server is not available: {exc}") from None
    result = run(
        db_url=args.db,
        listen=args.listen,
        admin_token=args.admin_token,
        heartbeat_interval=args.heartbeat_interval,
        queue_limit=args.queue_limit,
    )
    return result if isinstance(result, int) else 0
