"""``l2pop bench chaos`` at a smoke size, as a user runs it: a real server, four agent
processes, four clients and a few ``kill -9`` (server, agent and, on PostgreSQL, the
postmaster) in 20 s; nothing lost, nothing left over, every agent equal to its /fdb."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from l2pop.testbed import postgres as pg

# with these seeds the killer's first targets are: sqlite server, agent; postgresql
# postmaster, server, agent (the sequence is seeded; how many kills fit in 20 s is not)
SEEDS = {"sqlite": 1, "postgresql": 2}


def run_chaos(tmp_path: Path, engine: str) -> tuple[dict, subprocess.CompletedProcess[str]]:
    args = ["--duration", "20", "--db", engine, "--kill-interval", "2,4", "--seed",
            str(SEEDS[engine]), "--converge-timeout", "30"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "l2pop", "bench", "chaos", *args, "--json", "--write-docs",
         "--docs", str(tmp_path / "docs"), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"no JSON on stdout (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return result, proc


def check(result: dict, proc: subprocess.CompletedProcess[str], targets: set[str]) -> None:
    why = json.dumps(result.get("problem_samples"), indent=1)[:4000] + proc.stderr[-3000:]
    assert result["lost_writes"] == 0, why
    assert result["leftovers"] == 0, why
    assert result["indeterminate_neither"] == 0, why
    assert result["agents_equal_fdb"], result["final_convergence"]
    assert result["hosts_in_sync"], result["hosts_not_in_sync"]
    assert result["failed_checks"] == [] and result["ok"], why
    assert proc.returncode == 0, why
    ops = result["operations"]
    assert ops["total"] > 50
    assert ops["by_outcome"]["acknowledged"] > 0 and ops["by_outcome"]["refused"] > 0
    conflicts = [k for k in ops["by_kind"] if k.startswith("conflict_")]
    assert len(conflicts) >= 4, ops["by_kind"]
    for kind in conflicts:  # a deliberate conflict is never acknowledged
        assert ops["by_kind"][kind]["acknowledged"] == 0, kind
    kills = result["kills"]
    assert kills["total"] >= 2
    assert {t for t, n in kills["by_target"].items() if n} >= targets, kills["by_target"]
    conv = result["convergence_after_kill_s"]
    assert conv["not_converged"] == 0 and conv["max"] is not None and conv["max"] < 30
    assert result["final_convergence"]["converge_s"] is not None


def check_saved(tmp_path: Path, engine: str, result: dict) -> None:
    saved = json.loads((tmp_path / "docs" / "bench" / f"chaos-{engine}.json").read_text())
    assert saved["result"] == result
    assert saved["command"].startswith(f"l2pop bench chaos --duration 20 --db {engine} ")
    page = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "<!-- chaos:begin" in page and "<!-- chaos:end -->" in page
    assert f"### {engine}" in page and "all checks passed" in page


def test_chaos_smoke_sqlite(tmp_path: Path) -> None:
    result, proc = run_chaos(tmp_path, "sqlite")
    check(result, proc, {"server", "agent"})
    check_saved(tmp_path, "sqlite", result)


@pytest.mark.postgres
def test_chaos_smoke_postgresql(tmp_path: Path) -> None:
    if not pg.available():
        pytest.skip(f"PostgreSQL server binaries not found under {pg.PG_ROOT}/*/bin")
    result, proc = run_chaos(tmp_path, "postgresql")
    check(result, proc, {"server", "postgres"})
    assert set(result["kills"]["server_after_db_kill"]) <= {
        "survived",
        "restarted",
        "restarted (it had exited)",
    }
    check_saved(tmp_path, "postgresql", result)
