"""``l2pop bench activation`` at smoke size on real kernels (root): a few activations on a
3-host linux testbed, each cut into its stages from the agents' and the server's telemetry.

Every stage is present and in order (the last one, datapath write returned -> entry seen,
may be a hair negative: the kernel notifies its monitors before the agent has its answer),
the stages of each activation add up to its end-to-end time, and the run's namespaces are
gone afterwards.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest

from l2pop.bench import activation_trace
from l2pop.testbed import netns as nsx

pytestmark = pytest.mark.root

#: how far before the agent's "write returned" the kernel's entry may be seen (s)
WRITE_SLACK_S = 0.002


def test_activation_stages_are_present_ordered_and_add_up() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, bridge and vxlan devices)")
    if shutil.which("bridge") is None:
        pytest.skip("missing iproute2's bridge")
    lines: list[str] = []
    result = activation_trace.run(hosts=3, samples=4, datapath="linux", progress=lines.append)

    prefixes = [m.group(1) for line in lines if (m := re.search(r"run prefix (\S+?):", line))]
    assert prefixes, lines
    assert not [n for n in nsx.list_netns() if n.startswith(prefixes[0])]

    assert result["samples"] == 4
    assert result["remote_members"] == 2
    # every agent's resident memory, read at the end of the run
    memory = result["agent_memory"]["by_kind"]["linux"]
    assert memory["agents"] == 3
    assert 0 < memory["rss_p50_mib"] <= memory["rss_max_mib"] <= memory["hwm_max_mib"]
    names = [name for name, _ in result["stages"]]
    assert names == list(activation_trace.STAGE_NAMES)
    assert set(result["by_stage"]) == set(names)
    assert len(result["activations"]) == 4
    for act in result["activations"]:  # ms
        for name in names[:-1]:
            assert act[name] >= 0, (name, act)
        assert act["kernel"] >= -WRITE_SLACK_S * 1000, act
        assert abs(sum(act[n] for n in names) - act["end_to_end"]) < 0.01, act
        assert 0 < act["end_to_end"] < activation_trace.TIMEOUT_S * 1000
    e2e = result["end_to_end"]
    assert 0 < e2e["min_ms"] <= e2e["p50_ms"] <= e2e["p99_ms"] <= e2e["max_ms"]
    # the clock starts at the tap: the old figure (from the API call) is the longer one
    assert result["from_api_call"]["p50_ms"] > e2e["p50_ms"]
    # every removal was applied on every host before the next VM started
    removal = result["removal_applied"]
    assert 0 < removal["p50_ms"] <= removal["max_ms"] < activation_trace.TIMEOUT_S * 1000
