"""``l2pop demo --simulate``: the demo's story on the memory datapath, as a user runs it."""

from __future__ import annotations

import subprocess
import sys


def test_demo_simulate_tells_the_story_and_exits_0() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "l2pop", "demo", "--simulate"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "4/4 agents hold exactly the desired state" in out
    assert "h4: heard of red; never of blue" in out
    assert "h3: heard of blue; never of red" in out
    assert "h4: 0 snapshot/delta message(s)" in out
    assert "No packets were sent" in out
