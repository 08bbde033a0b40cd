"""``l2pop bench rest`` at a smoke size, so the benchmark cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_rest_benchmark_smoke(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    cmd = [sys.executable, "-m", "l2pop", "bench", "rest", "--clients", "8", "--duration", "3"]
    cmd += ["--ports", "60", "--json", "--write-docs", "--docs", str(docs)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    r = json.loads(out.stdout)
    assert r["requests"] > 20 and set(r["status"]) == {"200"}, r["status"]
    assert r["healthz"]["probes"] > 10 and r["healthz"]["failures"] == 0
    assert set(r["per_kind"]) >= {"get_port", "list_ports", "rename_port"}
    page = (docs / "benchmarks.md").read_text()
    assert "<!-- rest:begin" in page and "| this build |" in page
