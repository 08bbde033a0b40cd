"""``l2pop bench ui``'s browser part (``l2pop.bench.ui``'s module docstring, 2): the page's
load in Debian's Chromium, headless, driven by Playwright, each in a fresh context with the
admin token already in the tab's session storage, until the page's own readiness mark
(``<html data-ready>``, set by ``app.js`` in the first animation frame after the live
stream's hello, so after the first render of the loaded state); and one page kept open
under churn: Chrome's main-thread time (``Performance.getMetrics``) per live tick.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import statistics
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from l2pop.bench.scale import Plan, Progress, churn
from l2pop.testbed.process import ServerProcess

if TYPE_CHECKING:
    from l2pop.bench.ui import UiConfig

CHROMIUM = Path("/usr/bin/chromium")
#: as tests/integration/test_ui_browser.py runs it: no sandbox as root, no background traffic
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN_KEY = "l2pop-token"  # app.js's sessionStorage key
VIEWPORT = {"width": 1500, "height": 900}

#: milliseconds a page load may take before it counts as failed
LOAD_TIMEOUT_MS = 120_000
#: seconds the open page follows the stream before its main-thread time is read
RENDER_SETTLE_S = 1.5
_TYPE = re.compile(r'"type":\s*"(\w+)"')


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def chromium_available() -> bool:
    return CHROMIUM.exists()


def _token_script(token: str) -> str:
    """An init script putting the admin token in the tab's session storage (before app.js
    runs, on every navigation; about:blank has no storage, hence the try)."""
    quoted = json.dumps(token)
    return f"try {{ sessionStorage.setItem({json.dumps(TOKEN_KEY)}, {quoted}); }} catch (e) {{}}"


def _one_load(browser: Any, server: ServerProcess) -> dict[str, Any]:
    """One page load in a fresh context (module docstring)."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        context.add_init_script(_token_script(server.admin_token or ""))
        page = context.new_page()
        t0 = time.perf_counter()
        page.goto(server.url + "/ui/")
        page.wait_for_function(
            "() => document.documentElement.dataset.ready !== undefined",
            timeout=LOAD_TIMEOUT_MS,
            polling="raf",
        )
        wall = time.perf_counter() - t0
        seen = page.evaluate(
            """() => ({
              ready: Number(document.documentElement.dataset.ready),
              dom: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,
              live: document.querySelector('#live').textContent,
              rows: document.querySelectorAll('#hosts tbody tr').length,
              total: Number(document.querySelector('#hosts-total').textContent),
              in_sync: Number(document.querySelector('#hosts-in-sync').textContent),
            })"""
        )
    finally:
        context.close()
    return {
        "ready_ms": round(seen["ready"], 1),
        "wall_ms": _ms(wall),
        "dom_content_loaded_ms": round(seen["dom"], 1),
        "live": seen["live"],
        "rows": seen["rows"],
        "hosts_total": seen["total"],
        "hosts_in_sync": seen["in_sync"],
    }


def _metrics(cdp: Any) -> dict[str, float]:
    return {m["name"]: float(m["value"]) for m in cdp.send("Performance.getMetrics")["metrics"]}


def _render_cycle(
    browser: Any, server: ServerProcess, plan: Plan, cfg: UiConfig, rng: random.Random
) -> dict[str, Any]:
    """One page open under the churn's live ticks: the browser's main-thread time per tick
    (module docstring). The churn runs in a thread of its own while Playwright, on this
    one, counts the stream's frames."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        context.add_init_script(_token_script(server.admin_token or ""))
        page = context.new_page()
        frames = {"ticks": 0, "bytes": 0, "hosts": 0, "events": 0}

        def on_frame(payload: str | bytes) -> None:
            text = payload if isinstance(payload, str) else payload.decode()
            match = _TYPE.search(text[:40])
            if match and match.group(1) == "tick":
                frames["ticks"] += 1
                frames["bytes"] += len(text.encode())
                tick = json.loads(text)  # one a second: what a tick carries
                frames["hosts"] += len(tick.get("hosts", ()))
                frames["events"] += len(tick.get("events", ())) + len(tick.get("settled", ()))

        page.on("websocket", lambda ws: ws.on("framereceived", on_frame))
        page.goto(server.url + "/ui/")
        page.wait_for_function(
            "() => document.documentElement.dataset.ready !== undefined",
            timeout=LOAD_TIMEOUT_MS,
        )
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        page.wait_for_timeout(RENDER_SETTLE_S * 1000)
        before, start = _metrics(cdp), dict(frames)
        t0 = time.monotonic()
        worker = threading.Thread(
            target=lambda: asyncio.run(churn([server], plan, cfg.rate, cfg.render_window, rng))
        )
        worker.start()
        while worker.is_alive():
            page.wait_for_timeout(100)  # Playwright delivers the frame events meanwhile
        worker.join()
        after = _metrics(cdp)
        got = {k: v - start[k] for k, v in frames.items()}
        took = time.monotonic() - t0
    finally:
        context.close()
    n = max(got["ticks"], 1)

    def per_tick(*names: str) -> float:
        return round(sum(after.get(k, 0.0) - before.get(k, 0.0) for k in names) / n * 1000, 2)

    return {
        "window_s": round(took, 2),
        "rate": cfg.rate,
        "ticks": got["ticks"],
        "tick_bytes_mean": round(got["bytes"] / n),
        # host rows and events (new and settled) a tick carried, on average
        "tick_hosts_mean": round(got["hosts"] / n, 1),
        "tick_events_mean": round(got["events"] / n, 1),
        "task_ms_per_tick": per_tick("TaskDuration"),
        "script_ms_per_tick": per_tick("ScriptDuration"),
        "layout_style_ms_per_tick": per_tick("LayoutDuration", "RecalcStyleDuration"),
    }


def measure_browser(
    server: ServerProcess, plan: Plan, cfg: UiConfig, rng: random.Random, progress: Progress
) -> dict[str, Any]:
    """``cfg.loads`` page loads, then the render cycle under churn (module docstring)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            out: dict[str, Any] = {"chromium": browser.version}
            loads = []
            for i in range(cfg.loads):
                loads.append(_one_load(browser, server))
                progress(
                    f"page load {i + 1}/{cfg.loads}: ready {loads[-1]['ready_ms']} ms "
                    f"(wall {loads[-1]['wall_ms']} ms)"
                )
            out["loads"] = loads
            ready = [x["ready_ms"] for x in loads]
            out["load_median_ms"] = round(statistics.median(ready), 1)
            out["load_max_ms"] = round(max(ready), 1)
            out["wall_median_ms"] = round(statistics.median(x["wall_ms"] for x in loads), 1)
            out["loaded"] = all(
                x["live"] == "live" and x["rows"] > 0 and x["hosts_total"] == cfg.hosts
                for x in loads
            )
            if cfg.render_window > 0:
                out["render"] = _render_cycle(browser, server, plan, cfg, rng)
        finally:
            browser.close()
    return out
