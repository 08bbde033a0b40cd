"""``l2pop demo`` end to end (root): the README's main job must keep every promise on all three
datapaths: pings, isolation, tables equal to the desired state, 0 ARP broadcasts and 0 ND
multicasts on the underlay, no BUM to non-member hosts, against flood-and-learn."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from l2pop.testbed import ovs

pytestmark = pytest.mark.root


def test_demo_keeps_every_promise_on_all_three_datapaths() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not ovs.available():
        pytest.skip(f"Open vSwitch missing: {', '.join(ovs.missing())}")
    proc = subprocess.run(
        [sys.executable, "-m", "l2pop", "demo"],
        capture_output=True,
        check=False,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "200"},
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-2000:]
    for label in ("Linux bridge + VXLAN", "Open vSwitch + VXLAN", "Open vSwitch + GRE", "mixed"):
        assert f"{label}" in out
    assert "every promise holds on all three datapaths" in out
    assert "4/4 hosts hold exactly the desired state" in out
