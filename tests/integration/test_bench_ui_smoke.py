"""``l2pop bench ui`` at a smoke size, as a user runs it: 20 hosts (40 networks, 2,000
ports) in two agent-swarm processes, the page's load reads, one page load in Debian's
Chromium and a short re-render window, then 0, 1 and 2 live-stream watchers over short windows
of churn; one JSON object on stdout whose figures are positive and sane, ``--save``, and the
"Web page" section ``bench report`` renders from it. Without /usr/bin/chromium (and not in
CI) the browser part is skipped with ``--no-browser``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
BROWSER = CHROMIUM.exists() or os.environ.get("CI") == "true"
READS = ("status", "hosts", "topology", "events")


def positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_ui_smoke_measures_reads_page_and_stream(tmp_path: Path) -> None:
    args = ["--hosts", "20", "--swarms", "2", "--reps", "3", "--loads", "1",
            "--render-window", "2", "--rate", "10", "--window", "2", "--watchers", "1,2",
            "--passes", "1"]  # fmt: skip
    if not BROWSER:
        args.append("--no-browser")
    proc = subprocess.run(
        [sys.executable, "-m", "l2pop", "bench", "ui", *args, "--json", "--save",
         "--docs", str(tmp_path / "docs"), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)  # exactly one JSON object, nothing else on stdout
    assert (result["hosts"], result["networks"], result["ports"]) == (20, 40, 2000)
    assert result["engine"] == "sqlite" and result["swarms"] == 2
    for key in ("populate_s", "server_start_s", "initial_sync_s", "server_rss_mib"):
        assert positive(result[key]), (key, result[key])

    reads = result["reads"]
    assert set(reads) == set(READS)
    for name in READS:
        read = reads[name]
        assert read["reps"] == 3 and read["pages"] == 1, read
        assert positive(read["median_ms"]) and read["median_ms"] <= read["max_ms"] < 10_000
        assert read["bytes"] > 100, read  # real bodies, not an error or an empty list
    assert reads["hosts"]["bytes"] > 20 * 100  # every host's row

    browser = result["browser"]
    if BROWSER:
        assert browser["loaded"] is True
        (load,) = browser["loads"]
        assert load["live"] == "live" and load["rows"] == 20 and load["hosts_total"] == 20
        assert load["hosts_in_sync"] == 20
        assert 0 < load["dom_content_loaded_ms"] <= load["ready_ms"] < 60_000
        assert positive(browser["load_median_ms"]) and positive(browser["wall_median_ms"])
        render = browser["render"]
        assert render["ticks"] >= 1 and positive(render["task_ms_per_tick"])
        assert positive(render["tick_bytes_mean"]) and positive(render["tick_events_mean"])
        assert 0 <= render["tick_hosts_mean"] <= 20
    else:
        assert "skipped" in browser

    stream = result["stream"]
    idle, one, watched = stream["rows"]
    assert (idle["watchers"], one["watchers"], watched["watchers"]) == (0, 1, 2)
    for row in (idle, one, watched):
        assert positive(row["server_cpu_ms_per_s"]) and positive(row["window_s"])
        assert 15 <= row["events"] <= 20 and row["failed_calls"] == 0 and row["dropped"] == 0
        assert row["windows"] == 1 and row["server_cpu_ms_per_s_each"] == [
            row["server_cpu_ms_per_s"]
        ]
    assert idle["bytes_per_s_per_watcher"] == 0 and idle["server_cpu_ms_per_s_per_watcher"] is None
    # a tick a second, each carrying the churn's events
    assert watched["ticks_per_watcher"] >= 1 and positive(watched["messages_per_s_per_watcher"])
    assert watched["bytes_per_s_per_watcher"] > 1000
    # the cost per watcher is a difference of two noisy CPU readings: finite, not signed
    assert math.isfinite(watched["server_cpu_ms_per_s_per_watcher"])
    assert math.isfinite(stream["server_cpu_ms_per_s_per_watcher"])
    assert math.isfinite(stream["first_watcher_server_cpu_ms_per_s"])
    assert math.isfinite(stream["server_cpu_ms_per_s_per_extra_watcher"])
    assert one["bytes_per_s_per_watcher"] > 1000 and one["ticks_per_watcher"] >= 1
    assert positive(stream["bytes_per_s_per_watcher"])
    assert len(result["load_average_start"]) == 3 and len(result["load_average_end"]) == 3
    assert "ui: the web page" in proc.stderr and "done in" in proc.stderr  # progress on stderr

    saved = json.loads((tmp_path / "docs" / "bench" / "ui.json").read_text())
    assert saved["result"] == result
    assert saved["command"] == "l2pop bench ui " + " ".join(
        ["--hosts", "20", "--swarms", "2", "--reps", "3", "--loads", "1", "--render-window",
         "2", *([] if BROWSER else ["--no-browser"]), "--rate", "10", "--window", "2",
         "--watchers", "0,1,2", "--passes", "1", "--save"]
    )  # fmt: skip

    from l2pop.bench.report import render as render_page

    render_page(tmp_path / "docs" / "bench", tmp_path / "docs" / "benchmarks.md")
    page = (tmp_path / "docs" / "benchmarks.md").read_text()
    section = page.split("## Web page", 1)[1].split("\n## ", 1)[0]
    assert "`GET /v1/status`" in section and "(every page)" in section
    assert "| 2 |" in section and "bytes/s per watcher" in section
    assert ("page load to hosts table drawn" in section) == BROWSER
