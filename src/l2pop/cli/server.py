"""``l2pop server``: parse the options and hand over to ``l2pop.server.main.run``."""

from __future__ import annotations

import argparse
import sys

from l2pop.cli.common import CliError
from l2pop.cli.config import ConfigError, IntRange, add_log_options, layered, resolve
from l2pop.tokenfile import TokenFileError, resolve_token

DEFAULT_DB = "sqlite:///l2pop.db"
DEFAULT_LISTEN = "127.0.0.1:9696"
ENV_ADMIN_TOKEN = "L2POP_ADMIN_TOKEN"
#: ``l2pop.server.workers.MAX_WORKERS``, spelt out so building the parser does not import
#: the server (tests/unit/test_config.py keeps the two equal)
MAX_WORKERS = 64


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``l2pop server [--db URL] [--listen HOST:PORT] [--admin-token[-file] T|FILE]
    [--tls-cert FILE --tls-key FILE] [--replica NAME] [--workers N] [--config FILE] ...``.

    Every option can also come from the environment (``L2POP_<OPTION>``) or the TOML file
    ``--config`` names (``l2pop.cli.config``; docs/configuration.md lists them all)."""
    p = subparsers.add_parser(
        "server",
        help="run the l2pop server (REST API and agent channel)",
        description="Run the l2pop server: REST API, store and agent channel.",
    )
    p.add_argument(
        "--db",
        default=DEFAULT_DB,
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
        default=None,
        metavar="T",
        help=f"bearer token for admin calls (env {ENV_ADMIN_TOKEN})",
    )
    p.add_argument(
        "--admin-token-file",
        default=None,
        metavar="FILE",
        help=f"read the admin token from FILE (env {ENV_ADMIN_TOKEN}_FILE)",
    )
    p.add_argument(
        "--tls-cert",
        default=None,
        metavar="FILE",
        help="serve https/wss with this PEM certificate (chain); needs --tls-key",
    )
    p.add_argument(
        "--tls-key", default=None, metavar="FILE", help="the PEM private key of --tls-cert"
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
    p.add_argument(
        "--client-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds a client has to send a request head, a request body, or (agents) its "
        "hello; slower connections are closed (default 10)",
    )
    p.add_argument(
        "--max-body",
        type=int,
        default=64 * 1024,
        metavar="BYTES",
        help="largest request body accepted; larger ones get 413 unread (default 65536)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=4096,
        metavar="N",
        help="open connections, agents included, before new requests get 503 (default 4096)",
    )
    p.add_argument(
        "--replica",
        default=None,
        metavar="NAME",
        help="this server's name among replicas on one database: shown as the holder of "
        "host sessions and as the replica label of /metrics (env L2POP_REPLICA; default "
        "HOSTNAME:PORT)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve with N worker processes behind the one --listen address (SO_REUSEPORT), "
        "each a replica named <replica>/w<i>, restarted if it dies; PostgreSQL only; "
        "--max-connections is per worker (env L2POP_WORKERS; default 1)",
    )
    add_log_options(p, default_level="INFO")
    # set by the --workers supervisor on the workers it starts: the supervisor's pid
    p.add_argument("--worker-of", type=int, default=None, help=argparse.SUPPRESS)
    layered(
        p,
        groups=[("admin-token", "admin-token-file")],
        bounds={
            "queue-limit": IntRange(1),
            "max-body": IntRange(1),
            "max-connections": IntRange(1),
            "workers": IntRange(1, MAX_WORKERS),
        },
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    """Import the server only now (the CLI must start fast) and run it until stopped."""
    try:
        resolve(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        from l2pop.server.main import run
    except ImportError as exc:
        raise CliError(f"the l2pop server is not available: {exc}") from None
    try:
        admin_token = resolve_token(
            args.admin_token, args.admin_token_file, option="--admin-token", env=ENV_ADMIN_TOKEN
        )
    except TokenFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = run(
        db_url=args.db,
        listen=args.listen,
        admin_token=admin_token,
        heartbeat_interval=args.heartbeat_interval,
        queue_limit=args.queue_limit,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        client_timeout=args.client_timeout,
        max_body=args.max_body,
        max_connections=args.max_connections,
        replica=args.replica,
        workers=args.workers,
        worker_of=args.worker_of,
        log_level=args.log_level,
        log_format=args.log_format,
    )
    return result if isinstance(result, int) else 0
