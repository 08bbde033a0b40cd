"""``l2pop bench curve`` at a smoke size, as a user runs it: two host counts, each a real
server process on its own store (2 networks and 100 ports per host), agent-swarm processes,
an idle window, a short churn and a kill -9 restart; one JSON object on stdout holding every
figure of every size, positive, and ``--save``; then the page's section, its verdicts and
its plot from ``bench report``'s renderer."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

#: the figures every size must have, each a positive number
FIGURES = (
    "populate_s",
    "server_start_s",
    "initial_sync_s",
    "server_rss_mib",
    "swarms_rss_mib",
    "idle_s",
    "idle_server_cpu_ms_per_s",
    "idle_server_cpu_us_per_host_per_s",
    "idle_heartbeats",
    "idle_heartbeats_per_s",
    "idle_server_cpu_us_per_heartbeat",
    "p50_ms",
    "p99_ms",
    "server_cpu_ms_per_event",
    "server_cpu_ms_per_event_net",
    "restart_resync_s",
    "elapsed_s",
)


def test_curve_smoke_measures_every_figure_at_every_size(tmp_path: Path) -> None:
    # idle 5 s: one heartbeat interval, so the window holds one round of heartbeats
    args = ["--hosts", "20,40", "--rate", "10", "--duration", "2", "--idle", "5",
            "--swarms", "2"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "l2pop", "bench", "curve", *args, "--json", "--save",
         "--docs", str(tmp_path / "docs"), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)  # exactly one JSON object, nothing else on stdout
    assert result["config"]["hosts"] == [20, 40] and result["config"]["engine"] == "sqlite"
    small, large = result["sizes"]
    for size, hosts in ((small, 20), (large, 40)):
        assert "error" not in size, size
        assert (size["hosts"], size["networks"], size["ports"]) == (hosts, 2 * hosts, 100 * hosts)
        assert size["swarms"] == 2
        for key in FIGURES:
            value = size[key]
            assert isinstance(value, int | float) and math.isfinite(value), (hosts, key)
            assert value > 0, (hosts, key, value)
        assert size["p50_ms"] <= size["p99_ms"] < 10_000
        assert 15 <= size["churn"]["events"] <= 20 and size["churn"]["rate"] == 10
        assert len(size["load_average_start"]) == 3 and len(size["load_average_end"]) == 3
    assert "curve (sqlite)" in proc.stderr and "done in" in proc.stderr  # progress on stderr

    saved = json.loads((tmp_path / "docs" / "bench" / "scale-curve.json").read_text())
    assert saved["result"] == result
    assert saved["command"] == (
        "l2pop bench curve --hosts 20,40 --engine sqlite --rate 10 --duration 2 --idle 5 "
        "--swarms 2 --save"
    )

    from l2pop.bench.report import render

    written = render(tmp_path / "docs" / "bench", tmp_path / "docs" / "benchmarks.md")
    assert "scale-curve.png" in {p.name for p in written}
    page = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "### How cost grows" in page and "| 40 | 80 | 4,000 | 2 |" in page
    verdicts = [line for line in page.splitlines() if line.startswith("- ") and "exponent" in line]
    assert len(verdicts) >= 6
    assert all(any(w in line for w in ("linear", "sublinear", "superlinear")) for line in verdicts)
