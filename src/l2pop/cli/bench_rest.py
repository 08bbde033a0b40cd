"""``l2pop bench rest``: the REST API under many concurrent clients (``l2pop.bench.rest``)."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from datetime import UTC, datetime
from typing import Any

from l2pop.cli.bench import Reporter, _common, _console, _finish, _positive, default_docs


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser(
        "rest",
        help="the REST API under N concurrent clients (90 % reads), with a liveness probe",
        description=(
            "A real server on a store seeded through the API; N closed-loop clients for S "
            "seconds and a /healthz probe in a process of its own. Prints requests/s, "
            "latency per kind, and the probe's latency."
        ),
    )
    r.add_argument("--clients", type=_positive, default=200, help="concurrent clients (200)")
    r.add_argument("--duration", type=float, default=30.0, metavar="S", help="seconds (30)")
    r.add_argument("--ports", type=_positive, default=2000, help="ports seeded (2000)")
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
    from l2pop.bench import rest, sections

    if args.write_docs:
        args.save = True
    started_at, t = datetime.now(UTC), time.monotonic()
    name = "rest-baseline" if args.baseline_src else "rest"
    with Reporter(f"rest: {args.clients} clients, {args.duration:g} s ({args.db})") as rep:
        if args.db == "postgresql":
            from l2pop.testbed import postgres as pg

            server = pg.ThrowawayPostgres().start()
            try:
                url = server.create_database("l2pop_bench_rest")
                result = _run(rest, args, url, rep)
            finally:
                server.stop()
        else:
            result = _run(rest, args, None, rep)
    words = ["rest", "--clients", str(args.clients), "--duration", f"{args.duration:g}"]
    words += ["--ports", str(args.ports), "--db", args.db]
    if args.baseline_src:
        words += ["--baseline-src", args.baseline_src]
    words.append("--write-docs" if args.write_docs else "--save")
    _finish(
        args,
        name=name,
        result=result,
        command=shlex.join(["l2pop", "bench", *words]),
        started_at=started_at,
        elapsed_s=time.monotonic() - t,
        show=_show,
    )
    if args.write_docs:
        docs = args.docs if args.docs is not None else default_docs()
        page = sections.replace(docs, "rest", rest.section(docs / "bench"))
        print(f"wrote {page}", file=sys.stderr)
    return 0


def _run(rest: Any, args: argparse.Namespace, url: str | None, rep: Reporter) -> dict[str, Any]:
    result: dict[str, Any] = rest.run(
        clients=args.clients,
        duration=args.duration,
        ports=args.ports,
        db_url=url,
        server_src=args.baseline_src,
        progress=rep,
    )
    return result


def _show(r: dict[str, Any]) -> None:
    from rich.table import Table

    h = r["healthz"]
    t = Table(title=f"REST: {r['requests_per_s']:g} requests/s, p99 {r['p99_ms']:g} ms")
    for col in ("request", "count", "p50 ms", "p99 ms"):
        t.add_column(col, justify="left" if col == "request" else "right")
    for kind, row in r["per_kind"].items():
        t.add_row(kind, str(row["requests"]), f"{row['p50_ms']:g}", f"{row['p99_ms']:g}")
    t.add_row("/healthz probe", str(h["probes"]), f"{h['p50_ms']:g}", f"{h['p99_ms']:g}")
    _console().print(t)
    print(f"probe failures (> 1 s or error): {h['failures']}; status counts: {r['status']}")
