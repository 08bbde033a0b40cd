"""The ``ui`` result (``l2pop.bench.ui``) as the "Web page" section of
``docs/benchmarks.md`` and as tables on the terminal: the page's load reads, its load in
Chromium, and the server's cost per live-stream watcher. Both render the same rows."""

from __future__ import annotations

from typing import Any

from l2pop.bench.formatting import num, run_command, table

READ_COLUMNS = ["read", "median ms", "max ms", "bytes", "pages"]
STREAM_COLUMNS = [
    "watchers",
    "windows",
    "server CPU ms/s (mean)",
    "each window",
    "server CPU ms/s per watcher (vs 0)",
    "msgs/s per watcher",
    "bytes/s per watcher",
    "ticks per watcher",
    "churn events",
    "dropped",
    "load generator CPU ms/s",
]

RUN = "l2pop bench ui --save"


def read_rows(r: dict[str, Any]) -> list[list[str]]:
    """One row per API read of the page's load."""
    return [
        [
            f"`GET {x.get('path', name)}`" + (" (every page)" if name == "hosts" else ""),
            num(x.get("median_ms"), 1),
            num(x.get("max_ms"), 1),
            num(x.get("bytes")),
            num(x.get("pages")),
        ]
        for name, x in _in_page_order(r.get("reads") or {})
    ]


def _in_page_order(reads: dict[str, Any]) -> list[tuple[str, Any]]:
    """The reads in the order the page makes them (a saved result's keys are sorted)."""
    order = ("status", "hosts", "topology", "events")
    return sorted(reads.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 9)


def stream_rows(r: dict[str, Any]) -> list[list[str]]:
    """One row per watcher count of the live-stream windows."""
    return [
        [
            num(x.get("watchers")),
            num(x.get("windows")),
            num(x.get("server_cpu_ms_per_s"), 1),
            " / ".join(num(v, 1) for v in x.get("server_cpu_ms_per_s_each", [])),
            num(x.get("server_cpu_ms_per_s_per_watcher"), 2),
            num(x.get("messages_per_s_per_watcher"), 2),
            num(x.get("bytes_per_s_per_watcher")),
            num(x.get("ticks_per_watcher"), 1),
            num(x.get("events")),
            num(x.get("dropped")),
            num(x.get("driver_cpu_ms_per_s"), 1),
        ]
        for x in (r.get("stream") or {}).get("rows", [])
    ]


def browser_rows(r: dict[str, Any]) -> list[list[str]]:
    """The page's load (and re-render) figures, one per row; empty if skipped."""
    b = r.get("browser") or {}
    if "loads" not in b:
        return []
    rows = [
        [
            f"page load to hosts table drawn and stream live, median of {len(b['loads'])}",
            num(b.get("load_median_ms"), 0, "ms"),
        ],
        ["the same, slowest load", num(b.get("load_max_ms"), 0, "ms")],
        ["the same as Playwright's caller waited, median", num(b.get("wall_median_ms"), 0, "ms")],
        ["every load showed every host and said live", "yes" if b.get("loaded") else "no"],
    ]
    render = b.get("render")
    if render:
        rows += [
            [
                f"one re-render per live tick: main-thread time ({num(render.get('ticks'))} "
                f"ticks under churn of {num(render.get('rate'), 0)} events/s)",
                num(render.get("task_ms_per_tick"), 1, "ms"),
            ],
            ["of which script", num(render.get("script_ms_per_tick"), 1, "ms")],
            ["of which layout and style", num(render.get("layout_style_ms_per_tick"), 1, "ms")],
            ["a tick message, mean", num(render.get("tick_bytes_mean"), 0, "bytes")],
            ["host rows in a tick, mean", num(render.get("tick_hosts_mean"), 1)],
            ["events (new and settled) in a tick, mean", num(render.get("tick_events_mean"), 1)],
        ]
    return rows


def summary(r: dict[str, Any]) -> str:
    """The cost per watcher in two sentences."""
    s = r.get("stream") or {}
    return (
        f"Under churn of {num(s.get('rate'), 0)} events/s each live-stream watcher receives "
        f"{num(s.get('bytes_per_s_per_watcher'))} bytes/s "
        f"({num(s.get('messages_per_s_per_watcher'), 2)} messages/s) and costs the server "
        f"{num(s.get('server_cpu_ms_per_s_per_watcher'), 2)} ms of CPU per second "
        f"(least-squares slope over every window). The first watcher costs "
        f"{num(s.get('first_watcher_server_cpu_ms_per_s'), 1)} ms/s (the tick is then built "
        f"and encoded, once whatever the number of watchers); each one more "
        f"{num(s.get('server_cpu_ms_per_s_per_extra_watcher'), 2)} ms/s (slope over the "
        f"counts of at least one)."
    ) + _resolution(s)


def _resolution(s: dict[str, Any]) -> str:
    """Whether the CPU readings resolve that cost (the spread of repeated windows)."""
    spread = s.get("repeat_spread_ms_per_s")
    if spread is None:
        return ""
    if s.get("resolved"):
        return f" Repeated windows of one count differed by {num(spread, 1)} ms/s on average."
    return (
        f" These costs are within the noise: repeated windows of one count differed by "
        f"{num(spread, 1)} ms/s on average, more than the most watchers' cost by the slope."
    )


def section(saved: dict[str, Any] | None) -> list[str]:
    """The page's "Web page" section."""
    lines = ["## Web page", ""]
    lines.append(
        "The operators' page (`/ui`) on the scale benchmark's store (N hosts, 2N networks, "
        "100N ports, SQLite) with every agent in sync. The API reads the page makes when it "
        "loads, one at a time after a warm-up; its load in Debian's Chromium (headless, "
        "Playwright) from `page.goto`, the token already in the tab's session storage, to "
        "the first animation frame after the first render and the live stream's hello (the "
        "page's own `performance.now()`), each load in a fresh context; then the server's "
        "CPU (`/proc/<pid>/stat`) over a window of steady churn (port activations) with each "
        "count of raw WebSocket clients reading every message of `/v1/watch` (0, 1, 10 and "
        "30 by default; the server refuses more than 32): the difference from 0 watchers is "
        "the streams' cost. Bytes are message payloads as received (the server does not "
        "compress the stream)."
    )
    lines.append("")
    if saved is None:
        return [*lines, f"_Not measured yet: run `{RUN}`._", ""]
    r = saved["result"]
    lines += [run_command(saved), ""]
    lines.append(
        f"{num(r.get('hosts'))} hosts in {num(r.get('swarms'))} agent-swarm processes, "
        f"{num(r.get('networks'))} networks, {num(r.get('ports'))} ports; all in sync "
        f"{num(r.get('initial_sync_s'), 1)} s after the agents started; load average "
        f"{r.get('load_average_start', '?')} at the start, {r.get('load_average_end', '?')} at "
        "the end."
    )
    lines.append("")
    lines += [table(READ_COLUMNS, read_rows(r)), ""]
    rows = browser_rows(r)
    if rows:
        chromium = (r.get("browser") or {}).get("chromium", "?")
        lines += [f"Chromium {chromium}:", ""]
        lines += [table(["in the browser", "time"], rows), ""]
    else:
        skipped = (r.get("browser") or {}).get("skipped", "not measured")
        lines += [f"_The browser was not measured: {skipped}._", ""]
    s = r.get("stream") or {}
    lines.append(
        f"The live stream: {num(s.get('window_s'), 0)} s windows of churn at "
        f"{num(s.get('rate'), 0)} events/s, {num(s.get('passes'))} per watcher count (the "
        "counts ascending, then descending)."
    )
    lines.append("")
    lines += [table(STREAM_COLUMNS, stream_rows(r)), ""]
    lines += [summary(r), ""]
    return lines


def show_ui(r: dict[str, Any]) -> None:
    """The tables on stdout (``bench ui`` without ``--json``)."""
    from rich.table import Table

    from l2pop.console import make_console

    console = make_console()
    t = Table(title=f"the page's load reads, {r.get('hosts', '?')} hosts")
    for i, col in enumerate(READ_COLUMNS):
        t.add_column(col, justify="left" if i == 0 else "right")
    for row in read_rows(r):
        t.add_row(*(cell.replace("`", "") for cell in row))
    console.print(t)
    rows = browser_rows(r)
    if rows:
        t = Table(title="in Chromium")
        t.add_column("figure")
        t.add_column("value", justify="right")
        for row in rows:
            t.add_row(*row)
        console.print(t)
    t = Table(title="the live stream's cost")
    for col in STREAM_COLUMNS:
        t.add_column(col, justify="right")
    for row in stream_rows(r):
        t.add_row(*row)
    console.print(t)
    console.print(summary(r), markup=False)
