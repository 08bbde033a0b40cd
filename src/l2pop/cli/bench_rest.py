"""``l2pop bench rest``: the REST API under many concurrent clients; parses its arguments
and hands them to ``l2pop.bench.runs.rest``."""

from __future__ import annotations

import argparse

from l2pop.cli.bench import _common, _output, _positive


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser(
        "rest",
        help="the REST API under N concurrent clients (90 % reads), with a liveness probe",
        description=(
            "A real server on a store filled through the API; N closed-loop clients for S "
            "seconds and a /healthz probe in a process of its own. Prints requests/s, "
            "latency per kind, and the probe's latency."
        ),
    )
    r.add_argument("--clients", type=_positive, default=200, help="concurrent clients (200)")
    r.add_argument("--duration", type=float, default=30.0, metavar="S", help="seconds (30)")
    r.add_argument(
        "--ports", type=_positive, default=2000, help="ports created before the load (2000)"
    )
    r.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    r.add_argument(
        "--baseline-src",
        default=None,
        metavar="DIR",
        help="run the server from another build's src/ (saved as rest-baseline)",
    )
    r.add_argument(
        "--write-docs",
        action="store_true",
        help="save the result and rewrite the REST section of DOCS/benchmarks.md",
    )
    _common(r, "rest")
    r.set_defaults(func=_rest)


def _rest(args: argparse.Namespace) -> int:
    from l2pop.bench import runs

    return runs.rest(
        clients=args.clients,
        duration=args.duration,
        ports=args.ports,
        db=args.db,
        baseline_src=args.baseline_src,
        out=_output(args),
        write_docs=args.write_docs,
    )
