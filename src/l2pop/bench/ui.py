"""``l2pop bench ui``: the web page (``/ui``) at the scale of the benchmark.

The store is ``bench scale``'s, scaled with the hosts as ``bench curve`` scales it (N hosts,
2 x N networks, 100 x N ports, spans of 5-50 hosts; N = 1,000 is ``bench scale``'s default
size), bulk-populated (``scale.populate``) on SQLite, served by a real ``l2pop server``
process, with every host's agent connected and in sync (``agent-swarm`` processes). Then,
in this order, on the idle deployment unless said otherwise:

1. *The API reads the page makes when it loads* (``app.js`` ``loadAll``): ``GET /v1/status``,
   every page of ``GET /v1/hosts?limit=1000`` (following the ``Link`` header, as the page
   does), ``GET /v1/topology`` and ``GET /v1/events?limit=200``; each read ``reps`` times
   after one warm-up, one at a time on one kept-alive connection: median and max wall time
   and the response's bytes (the body; the server does not compress).
2. *The page's load in a real browser*: Debian's Chromium, headless, driven by Playwright;
   ``loads`` times, each in a fresh browser context with the admin token already in the
   tab's session storage (an init script), from ``page.goto`` to the page's own readiness
   mark: ``app.js`` sets ``<html data-ready>`` to ``performance.now()`` (milliseconds since
   the navigation started) in the first animation frame after the live stream said hello,
   which is after the first render of the loaded state (the hosts table filled, ``#live``
   saying "live"). ``ready_ms`` is that mark; ``wall_ms`` what Playwright's caller waited
   (``goto`` to the mark seen, polling each frame). Then, optionally, one page kept open
   while the churn of (3) runs for ``render_window`` s: the browser's main-thread time
   (Chrome's ``Performance.getMetrics``: ``TaskDuration``, ``ScriptDuration``, layout and
   style) divided by the ``tick`` messages the page received, i.e. one re-render cycle
   (``l2pop.bench.ui_browser``).
3. *The server's cost of the live stream* (``/v1/watch``): for each count of ``watchers``
   (0 first; at most ``MAX_WATCHERS``, which the server refuses beyond), that many raw
   WebSocket clients (the ``websockets`` library) send the token and read every message;
   after their hello and ``STREAM_SETTLE_S``, the server's CPU time (``/proc/<pid>/stat``) is
   read over an open-loop churn of port activations at ``rate`` events/s for ``window`` s
   (``scale.churn``: ports created bound to a host, which its agent reports ACTIVE), and the
   messages and payload bytes each watcher received over the same interval. The churn is
   the same at every count, so the difference from 0 watchers is the streams' cost: ms of
   server CPU per second per watcher, from each count and as the least-squares slope over
   all counts; the counts run ``passes`` times, ascending then descending, and each row is
   the mean of its windows, and the spread between repeated windows of one count says
   what the readings resolve (``resolved``: the most watchers' cost stands out of it).
   Between windows every port is ACTIVE again and every host in sync.

The machine's cores are shared by the server, the agents, Chromium and this process (the
load generator and the watchers), so each result records the load average at its start and
end and this process's own CPU per window.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from l2pop.bench.scale import (
    Plan,
    Progress,
    ScaleConfig,
    admin_client,
    churn,
    open_database,
    populate,
    proc_stats,
    start_swarms,
    wait_all_active,
    wait_in_sync,
)
from l2pop.bench.scale_curve import (
    NETWORKS_PER_HOST,
    PORTS_PER_HOST,
    load_average,
    raise_open_files,
    swarms_for,
)
from l2pop.bench.ui_browser import measure_browser
from l2pop.testbed.process import ServerProcess

#: the server's limit of live streams open at once (``server/views.py``'s ``MAX_WATCHERS``)
MAX_WATCHERS = 32
#: the page's load reads: (name, path); ``hosts`` follows the Link header to the last page
READS = (
    ("status", "/v1/status"),
    ("hosts", "/v1/hosts?limit=1000"),
    ("topology", "/v1/topology"),
    ("events", "/v1/events?limit=200"),
)
#: seconds after the watchers' hello before the CPU window opens (the first ticks flow)
STREAM_SETTLE_S = 1.5
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')
_TYPE = re.compile(r'"type":\s*"(\w+)"')


@dataclass
class UiConfig:
    hosts: int = 1000
    swarms: int | None = None  # None: ``swarms_for(hosts)``
    reps: int = 10  # repetitions of each API read
    loads: int = 5  # browser page loads
    browser: bool = True
    render_window: float = 10.0  # s of churn with one page open (0: not measured)
    rate: float = 10.0  # churn events/s during the stream windows
    window: float = 20.0  # s of churn per watcher count
    watchers: list[int] = field(default_factory=lambda: [0, 1, 10, 30])
    passes: int = 2  # windows per watcher count, in ascending then descending order
    settle_s: float = 3.0  # after the initial sync, before the first measurement
    sync_timeout: float = 900.0
    min_span: int = 5
    max_span: int = 50
    seed: int = 1


def scale_config(cfg: UiConfig) -> ScaleConfig:
    """The ``bench scale`` store of ``cfg.hosts`` hosts (``bench curve``'s proportions)."""
    return ScaleConfig(
        hosts=cfg.hosts,
        networks=NETWORKS_PER_HOST * cfg.hosts,
        ports=PORTS_PER_HOST * cfg.hosts,
        min_span=cfg.min_span,
        max_span=cfg.max_span,
        swarms=swarms_for(cfg.hosts, cfg.swarms),
        engine="sqlite",
        rates=[cfg.rate],
        duration=cfg.window,
        restart=False,
        seed=cfg.seed,
    )


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# -- 1. the API reads -----------------------------------------------------------------------


def _read_once(http: httpx.Client, path: str) -> tuple[float, int, int]:
    """(seconds, body bytes, pages) of one read of ``path``, every page of it."""
    t0 = time.perf_counter()
    size = pages = 0
    url: str | None = path
    while url is not None:
        response = http.get(url)
        response.raise_for_status()
        size += len(response.content)
        pages += 1
        match = _NEXT.search(response.headers.get("link", ""))
        url = match.group(1) if match else None
    return time.perf_counter() - t0, size, pages


def measure_reads(server: ServerProcess, reps: int) -> dict[str, dict[str, Any]]:
    """Median and max wall time and bytes of each of ``READS`` (module docstring, 1)."""
    headers = {"Authorization": f"Bearer {server.admin_token}", "Accept": "application/json"}
    out: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120.0) as http:
        for name, path in READS:
            _read_once(http, path)  # warm-up: caches, the connection
            times, size, pages = [], 0, 0
            for _ in range(reps):
                seconds, size, pages = _read_once(http, path)
                times.append(seconds)
            out[name] = {
                "path": path,
                "reps": reps,
                "median_ms": _ms(statistics.median(times)),
                "max_ms": _ms(max(times)),
                "bytes": size,
                "pages": pages,
            }
    return out


# -- 2. the page in a browser: l2pop.bench.ui_browser


# -- 3. the live stream's cost --------------------------------------------------------------


#: seconds a watcher refused as one too many (1013) keeps trying: the previous window's
#: streams may not all be released by the server yet
REFUSED_RETRY_S = 30.0


@dataclass
class WatchCounts:
    """What one watcher received: messages, payload bytes and ticks; ``hello`` once it had
    one; ``closed`` the close code if the server ended its stream; ``ws`` the connection
    (closed cleanly at the end of the window)."""

    messages: int = 0
    bytes: int = 0
    ticks: int = 0
    hello: bool = False
    closed: int | None = None
    ws: Any = None


async def _follow(url: str, token: str, counts: WatchCounts) -> None:
    """One watcher: the token as first frame, then read (and count) every message. Refused
    before its hello with 1013 (too many streams, the last window's not yet gone), it tries
    again for ``REFUSED_RETRY_S``."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    deadline = time.monotonic() + REFUSED_RETRY_S
    while True:
        try:
            async with connect(url, max_size=None, open_timeout=60, ping_interval=None) as ws:
                counts.ws = ws
                await ws.send(json.dumps({"token": token}))
                async for message in ws:
                    text = message if isinstance(message, str) else message.decode()
                    counts.messages += 1
                    counts.bytes += len(text.encode())
                    match = _TYPE.search(text[:40])
                    kind = match.group(1) if match else ""
                    if kind == "hello":
                        counts.hello = True
                    elif kind == "tick":
                        counts.ticks += 1
                code = ws.close_code
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
        if code == 1013 and not counts.hello and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            continue
        counts.closed = code
        return


def _totals(counts: list[WatchCounts]) -> tuple[int, int, int]:
    return (
        sum(c.messages for c in counts),
        sum(c.bytes for c in counts),
        sum(c.ticks for c in counts),
    )


async def _stream_window(
    server: ServerProcess, plan: Plan, cfg: UiConfig, watchers: int, rng: random.Random
) -> dict[str, Any]:
    """One watcher count's window (module docstring, 3)."""
    url = server.url.replace("http", "ws", 1) + "/v1/watch"
    counts = [WatchCounts() for _ in range(watchers)]
    tasks = [asyncio.create_task(_follow(url, server.admin_token or "", c)) for c in counts]
    try:
        deadline = time.monotonic() + 60
        while not all(c.hello or c.closed is not None for c in counts):
            if time.monotonic() > deadline:
                raise TimeoutError("the watchers had no hello after 60 s")
            await asyncio.sleep(0.05)
        refused = [c.closed for c in counts if c.closed is not None]
        if refused:
            raise RuntimeError(f"the server closed {len(refused)} watchers: codes {refused}")
        await asyncio.sleep(STREAM_SETTLE_S)
        messages0, bytes0, ticks0 = _totals(counts)
        cpu0, _ = proc_stats(server.pid)
        driver0, t0 = time.process_time(), time.monotonic()
        events, failed = await churn([server], plan, cfg.rate, cfg.window, rng)
        cpu1, rss = proc_stats(server.pid)
        took = time.monotonic() - t0
        driver = time.process_time() - driver0
        dropped = sum(c.closed is not None for c in counts)  # the server ended them
        messages, size, ticks = (
            b - a for a, b in zip((messages0, bytes0, ticks0), _totals(counts), strict=True)
        )
    finally:
        # closed cleanly, so the server lets go of them before the next window
        await asyncio.gather(
            *(c.ws.close() for c in counts if c.ws is not None), return_exceptions=True
        )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    n = max(watchers, 1)
    return {
        "watchers": watchers,
        "window_s": round(took, 2),
        "events": len(events),
        "failed_calls": failed,
        "server_cpu_ms_per_s": round((cpu1 - cpu0) / took * 1000, 2),
        "server_rss_mib": round(rss / 2**20, 1),
        "driver_cpu_ms_per_s": round(driver / took * 1000, 2),
        "ticks_per_watcher": round(ticks / n, 1) if watchers else 0,
        "messages_per_s_per_watcher": round(messages / took / n, 2) if watchers else 0,
        "bytes_per_s_per_watcher": round(size / took / n) if watchers else 0,
        "dropped": dropped,
    }


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``points`` (None with fewer than two distinct x)."""
    xs = [x for x, _ in points]
    if len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(y for _, y in points)
    num = sum((x - mx) * (y - my) for x, y in points)
    return num / sum((x - mx) ** 2 for x in xs)


def stream_order(counts: list[int], passes: int) -> list[int]:
    """The watcher counts window by window: ascending, then descending, and so on (a drift
    of the machine's load over the run then weighs on every count alike)."""
    ordered = sorted(set(counts) | {0})
    out: list[int] = []
    for i in range(passes):
        out += ordered if i % 2 == 0 else ordered[::-1]
    return out


def _mean(values: list[float], digits: int) -> float:
    return round(statistics.fmean(values), digits)


def _merge(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """One watcher count's row: the mean of its windows (``server_cpu_ms_per_s_each`` keeps
    every window's), the calls failed and streams dropped summed."""
    row: dict[str, Any] = {"watchers": windows[0]["watchers"], "windows": len(windows)}
    for key, digits in (
        ("window_s", 2),
        ("events", 0),
        ("server_cpu_ms_per_s", 2),
        ("server_rss_mib", 1),
        ("driver_cpu_ms_per_s", 2),
        ("ticks_per_watcher", 1),
        ("messages_per_s_per_watcher", 2),
        ("bytes_per_s_per_watcher", 0),
    ):
        row[key] = _mean([w[key] for w in windows], digits)
    row["events"] = int(row["events"])
    row["bytes_per_s_per_watcher"] = int(row["bytes_per_s_per_watcher"])
    row["server_cpu_ms_per_s_each"] = [w["server_cpu_ms_per_s"] for w in windows]
    row["failed_calls"] = sum(w["failed_calls"] for w in windows)
    row["dropped"] = sum(w["dropped"] for w in windows)
    return row


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return round(value, digits) if value is not None else None


def measure_stream(
    server: ServerProcess, plan: Plan, cfg: UiConfig, rng: random.Random, progress: Progress
) -> dict[str, Any]:
    """Every watcher count's windows, and the cost per watcher (module docstring, 3).

    Per count, ``server_cpu_ms_per_s_per_watcher`` is its difference from 0 watchers
    divided by its watchers. Overall: the least-squares slope over every window
    (``server_cpu_ms_per_s_per_watcher``); the first watcher's cost (1 minus 0: the tick
    built and encoded at all, once whatever the number, plus one stream); and the slope
    over the counts of at least one watcher (``..._per_extra_watcher``: what each more
    stream adds, its sends)."""
    windows: dict[int, list[dict[str, Any]]] = {}
    with admin_client(server) as api:
        for watchers in stream_order(cfg.watchers, cfg.passes):
            window = asyncio.run(_stream_window(server, plan, cfg, watchers, rng))
            wait_all_active(api, 300)
            wait_in_sync(api, cfg.sync_timeout)
            windows.setdefault(watchers, []).append(window)
            progress(
                f"{watchers} watchers: server CPU {window['server_cpu_ms_per_s']} ms/s under "
                f"{window['events']} events in {window['window_s']} s; per watcher "
                f"{window['messages_per_s_per_watcher']} msgs/s, "
                f"{window['bytes_per_s_per_watcher']:,} B/s"
            )
    rows = [_merge(windows[n]) for n in sorted(windows)]
    base = rows[0]["server_cpu_ms_per_s"]
    for row in rows:
        w = row["watchers"]
        row["server_cpu_ms_per_s_per_watcher"] = (
            round((row["server_cpu_ms_per_s"] - base) / w, 3) if w else None
        )
    points = [(float(n), float(w["server_cpu_ms_per_s"])) for n in windows for w in windows[n]]
    watched = [r for r in rows if r["watchers"]]
    one = next((r for r in rows if r["watchers"] == 1), None)
    fit = slope(points)
    # how far two windows of the same count differ: what the CPU readings can resolve
    spreads = [max(e) - min(e) for r in rows if len(e := r["server_cpu_ms_per_s_each"]) > 1]
    spread = _mean(spreads, 2) if spreads else None
    most = max(windows)
    return {
        "rate": cfg.rate,
        "window_s": cfg.window,
        "passes": cfg.passes,
        "rows": rows,
        "server_cpu_ms_per_s_per_watcher": _rounded(fit),
        "repeat_spread_ms_per_s": spread,
        # whether the most watchers' cost (the slope times their count) stands out of the
        # spread between repeated windows (None: one pass, no spread to judge by)
        "resolved": (abs(fit) * most > spread if fit is not None and spread is not None else None),
        "first_watcher_server_cpu_ms_per_s": (
            round(one["server_cpu_ms_per_s"] - base, 2) if one is not None else None
        ),
        "server_cpu_ms_per_s_per_extra_watcher": _rounded(slope([p for p in points if p[0] >= 1])),
        "bytes_per_s_per_watcher": (
            round(statistics.fmean(r["bytes_per_s_per_watcher"] for r in watched))
            if watched
            else None
        ),
        "messages_per_s_per_watcher": (
            _mean([r["messages_per_s_per_watcher"] for r in watched], 2) if watched else None
        ),
    }


# -- the whole run --------------------------------------------------------------------------


def run(cfg: UiConfig, workdir: Path, progress: Progress = print) -> dict[str, Any]:
    """Populate, start the server and agents, wait for sync, then (1), (2) and (3) of the
    module docstring. Returns the result (see ``l2pop.bench.ui_report`` for its page)."""
    if max(cfg.watchers, default=0) > MAX_WATCHERS:
        raise ValueError(f"at most {MAX_WATCHERS} watchers: the server refuses more")
    workdir.mkdir(parents=True, exist_ok=True)
    sc = scale_config(cfg)
    result: dict[str, Any] = {
        "config": asdict(cfg),
        "hosts": sc.hosts,
        "networks": sc.networks,
        "ports": sc.ports,
        "swarms": sc.swarms,
        "engine": sc.engine,
        "open_files": raise_open_files(sc.hosts + MAX_WATCHERS),
        "load_average_start": load_average(),
    }
    url, _ = open_database(sc, workdir)
    connections = str(max(4096, 2 * sc.hosts + 256))
    server = ServerProcess(
        url,
        log_path=workdir / "server.log",
        extra_args=("--queue-limit", "1024", "--max-connections", connections),
    )
    swarms = []
    rng = random.Random(cfg.seed + 1)
    try:
        t = time.monotonic()
        plan = populate(url, sc, progress)
        result["populate_s"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        server.start(timeout=600)
        result["server_start_s"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        swarms = start_swarms(sc, server.url, plan, workdir)
        with admin_client(server) as api:
            wait_in_sync(api, cfg.sync_timeout, poll=max(0.5, sc.hosts / 5000))
        result["initial_sync_s"] = round(time.monotonic() - t, 2)
        result["server_rss_mib"] = round(proc_stats(server.pid)[1] / 2**20, 1)
        progress(
            f"{sc.hosts:,} hosts, {sc.networks:,} networks, {sc.ports:,} ports: all in sync "
            f"{result['initial_sync_s']} s after the agents started"
        )
        time.sleep(cfg.settle_s)
        result["reads"] = measure_reads(server, cfg.reps)
        for read in result["reads"].values():
            progress(
                f"GET {read['path']}: median {read['median_ms']} ms, max {read['max_ms']} ms, "
                f"{read['bytes']:,} bytes in {read['pages']} page(s)"
            )
        if cfg.browser:
            result["browser"] = measure_browser(server, plan, cfg, rng, progress)
            if "render" in result["browser"]:
                r = result["browser"]["render"]
                progress(
                    f"one re-render under ticks: {r['task_ms_per_tick']} ms of main thread "
                    f"per tick ({r['ticks']} ticks, {r['tick_bytes_mean']:,} B each)"
                )
            with admin_client(server) as api:
                wait_all_active(api, 300)
                wait_in_sync(api, cfg.sync_timeout)
        else:
            result["browser"] = {"skipped": "not asked (--no-browser)"}
        result["stream"] = measure_stream(server, plan, cfg, rng, progress)
        result["server_rss_mib_end"] = round(proc_stats(server.pid)[1] / 2**20, 1)
    finally:
        for swarm in swarms:
            swarm.stop()
        server.stop()
    result["load_average_end"] = load_average()
    return result
