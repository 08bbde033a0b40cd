"""``l2pop bench ui``: the web page at the benchmark's scale; parses its arguments and hands
them to ``l2pop.bench.runs.ui``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from l2pop.cli.bench import _common, _output, _positive

#: the server's limit of live streams (``server/views.py`` ``MAX_WATCHERS``)
MAX_WATCHERS = 32


def _watcher_counts(text: str) -> list[int]:
    values = []
    for part in text.split(","):
        if part.strip():
            try:
                values.append(int(part))
            except ValueError:
                raise argparse.ArgumentTypeError(f"not a list of integers: {text}") from None
    if not values or min(values) < 0 or max(values) > MAX_WATCHERS:
        raise argparse.ArgumentTypeError(
            f"need counts from 0 to {MAX_WATCHERS} (the server refuses more streams): {text}"
        )
    return sorted(set(values) | {0})


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    u = sub.add_parser(
        "ui",
        help="the web page at scale: its API reads, its load in Chromium, the live stream's cost",
        description=(
            "On bench scale's store (N hosts, 2N networks, 100N ports; SQLite) with every agent "
            "in sync: the page's load reads (GET /v1/status, every page of /v1/hosts, "
            "/v1/topology, /v1/events) median and max time and bytes; the page's load in "
            "headless Chromium (Playwright) until its hosts table is drawn and the stream is "
            "live, and its main-thread time per live tick; the server's CPU per second under "
            "churn with 0, 1, 10, 30 live-stream watchers, and the bytes each receives. Saved "
            "as ui."
        ),
    )
    u.add_argument(
        "--hosts",
        type=_positive,
        default=1000,
        help="hosts N (default 1000; 2N networks, 100N ports)",
    )
    u.add_argument(
        "--swarms",
        type=_positive,
        default=None,
        help="agent-swarm processes (default: one per 1000 agents, at least 4)",
    )
    u.add_argument(
        "--reps", type=_positive, default=10, metavar="N", help="repetitions per read (10)"
    )
    u.add_argument("--loads", type=_positive, default=5, metavar="N", help="browser page loads (5)")
    u.add_argument(
        "--render-window",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds of churn with one page open, for its time per tick (10; 0: skip)",
    )
    u.add_argument("--no-browser", action="store_true", help="skip the browser (no Chromium here)")
    u.add_argument(
        "--rate", type=float, default=10.0, metavar="R", help="churn events/s (default 10)"
    )
    u.add_argument(
        "--window",
        type=float,
        default=20.0,
        metavar="S",
        help="seconds of churn per watcher count, server CPU read over it (default 20)",
    )
    u.add_argument(
        "--watchers",
        type=_watcher_counts,
        default=[0, 1, 10, 30],
        metavar="N1,N2,..",
        help=f"live-stream watcher counts, 0 always included (default 0,1,10,30; at most "
        f"{MAX_WATCHERS})",
    )
    u.add_argument(
        "--passes",
        type=_positive,
        default=2,
        metavar="N",
        help="windows per watcher count, ascending then descending order (default 2)",
    )
    u.add_argument(
        "--workdir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the database and logs in DIR (default: a temporary directory)",
    )
    _common(u, "ui")
    u.set_defaults(func=_ui)


def _ui(args: argparse.Namespace) -> int:
    from l2pop.bench import runs, ui, ui_browser

    if min(args.rate, args.window) <= 0 or args.render_window < 0:
        print(
            "error: --rate and --window must be positive, --render-window at least 0",
            file=sys.stderr,
        )
        return 2
    browser = not args.no_browser
    if browser and not ui_browser.chromium_available():
        print(
            f"error: {ui_browser.CHROMIUM} is missing (scripts/bootstrap installs chromium); "
            "or pass --no-browser",
            file=sys.stderr,
        )
        return 2
    cfg = ui.UiConfig(
        hosts=args.hosts,
        swarms=args.swarms,
        reps=args.reps,
        loads=args.loads,
        browser=browser,
        render_window=args.render_window,
        rate=args.rate,
        window=args.window,
        watchers=list(args.watchers),
        passes=args.passes,
    )
    return runs.ui(cfg, args.workdir, _output(args))
