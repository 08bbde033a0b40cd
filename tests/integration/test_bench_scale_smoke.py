"""``l2pop bench scale`` at a smoke size, as a user runs it: a real server process, two
agent-swarm processes, steady churn, a restart; one JSON object on stdout, and ``--save``;
then ``--replicas 1,2`` on a throwaway PostgreSQL (skipped without one): a pass with one
server, a pass with two replicas and a kill -9 failover, rendered into the page."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

RESULT_KEYS = {
    "config",
    "populate_s",
    "server_start_s",
    "initial_sync_s",
    "server_rss_mib",
    "rates",
    "max_rate_p99_le_1s",
    "restart_resync_s",
}
RATE_KEYS = {
    "rate",
    "events",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "messages_per_event",
    "bytes_per_event",
    "fanout_to_all_messages_per_event",
    "server_cpu_ms_per_event",
    "server_rss_mib",
}


def test_scale_smoke_prints_one_json_object_and_saves_it(tmp_path: Path) -> None:
    # ports per network (10) >= the widest span (10): every host a network spans is a member
    args = ["--hosts", "20", "--networks", "20", "--ports", "200", "--max-span", "10",
            "--swarms", "2", "--rates", "10", "--duration", "2"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "l2pop", "bench", "scale", *args, "--json", "--save",
         "--docs", str(tmp_path / "docs"), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)  # exactly one JSON object, nothing else on stdout
    assert set(result) >= RESULT_KEYS
    assert result["config"]["hosts"] == 20 and result["config"]["engine"] == "sqlite"
    [row] = result["rates"]
    assert set(row) >= RATE_KEYS
    assert row["rate"] == 10 and 15 <= row["events"] <= 20
    for key in ("p50_ms", "p99_ms", "max_ms"):
        assert row[key] is not None and math.isfinite(row[key]) and row[key] > 0, key
    assert row["p50_ms"] <= row["p99_ms"] <= row["max_ms"] < 10_000
    assert 0 < row["messages_per_event"] < row["fanout_to_all_messages_per_event"] == 40
    assert row["bytes_per_event"] > 0 and row["server_cpu_ms_per_event"] > 0
    assert 10 < row["server_rss_mib"] < 2000
    assert result["max_rate_p99_le_1s"] == (10 if row["p99_ms"] <= 1000 else None)
    assert 0 < result["initial_sync_s"] < 60 and 0 < result["restart_resync_s"] < 60
    assert "scale (sqlite)" in proc.stderr and "done in" in proc.stderr  # progress on stderr

    saved = json.loads((tmp_path / "docs" / "bench" / "scale-sqlite.json").read_text())
    assert saved["result"] == result
    assert saved["command"] == (
        "l2pop bench scale --hosts 20 --networks 20 --ports 200 --min-span 5 --max-span 10 "
        "--swarms 2 --engine sqlite --rates 10 --duration 2 --save"
    )
    assert saved["machine"]["cores"] >= 1


def test_scale_replicas_refused_on_sqlite(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "l2pop", "bench", "scale", "--replicas", "1,2",
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith("error: --replicas") and "postgresql" in line


def test_scale_replicas_smoke_one_and_two_on_postgresql(tmp_path: Path) -> None:
    from l2pop.testbed import postgres

    if not postgres.available():
        pytest.skip("PostgreSQL server binaries not installed")
    args = ["--hosts", "20", "--networks", "20", "--ports", "200", "--max-span", "10",
            "--swarms", "2", "--rates", "10", "--duration", "2", "--engine", "postgresql",
            "--replicas", "1,2"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "l2pop", "bench", "scale", *args, "--json", "--save",
         "--docs", str(tmp_path / "docs"), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["config"]["replicas"] == [1, 2]
    one, two = result["passes"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert one["agents_per_replica"] == {"r1": 20}
    assert set(two["agents_per_replica"]) == {"r1", "r2"}
    assert sum(two["agents_per_replica"].values()) == 20
    for p in (one, two):
        [row] = p["rates"]
        assert set(row) >= RATE_KEYS and row["rate"] == 10 and 15 <= row["events"] <= 20
        assert 0 < row["p50_ms"] <= row["p99_ms"] < 10_000
        assert row["server_cpu_ms_per_event"] > 0
        assert len(row["server_rss_mib_per_replica"]) == p["replicas"]
        assert p["max_rate_p99_le_1s"] == (10 if row["p99_ms"] <= 1000 else None)
    assert 0 < one["restart_resync_s"] < 60 and "failover_resync_s" not in one
    assert 0 < two["failover_resync_s"] < 60 and "restart_resync_s" not in two
    assert two["failover_killed"] == "r1"
    assert two["agents_per_replica_after_failover"] == {"r2": 20}

    saved = json.loads((tmp_path / "docs" / "bench" / "scale-replicas.json").read_text())
    assert saved["result"] == result
    assert saved["command"].endswith("--engine postgresql --rates 10 --duration 2 "
                                      "--replicas 1,2 --save")  # fmt: skip
    from l2pop.bench.report import render

    written = render(tmp_path / "docs" / "bench", tmp_path / "docs" / "benchmarks.md")
    assert "scale-replicas.png" in {p.name for p in written}
    page = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "### Replicas" in page and "failover" in page and "r1: " in page
