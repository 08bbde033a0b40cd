"""``l2pop.bench.agent_memory``: the agents' VmRSS/VmHWM as ``bench activation`` records them,
prints them and puts them on the benchmarks page (fabricated results; ``read`` on this very
process standing in for the agents)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, cast

from l2pop.bench import activation_trace, agent_memory
from l2pop.testbed.bed import Testbed


@dataclass
class FakeAgent:
    pid: int
    alive: bool = True


@dataclass
class FakeHost:
    agent: FakeAgent | None


@dataclass
class FakeKind:
    name: str


class FakeBed:
    def __init__(self, kinds: dict[str, str], agents: dict[str, FakeAgent | None]) -> None:
        self.hosts = {h: FakeHost(agents[h]) for h in kinds}
        self._kinds = kinds

    def kind_of(self, host: str) -> FakeKind:
        return FakeKind(self._kinds[host])


def test_read_takes_every_running_agent_by_kind() -> None:
    me = FakeAgent(os.getpid())
    bed = FakeBed(
        {"h1": "linux", "h2": "linux", "h3": "ovs", "h4": "linux", "h5": "linux"},
        {"h1": me, "h2": me, "h3": me, "h4": FakeAgent(os.getpid(), alive=False), "h5": None},
    )
    memory = agent_memory.read(cast(Testbed, bed))
    assert sorted(memory["per_agent"]) == ["h1", "h2", "h3"]
    linux = memory["by_kind"]["linux"]
    assert linux["agents"] == 2 and memory["by_kind"]["ovs"]["agents"] == 1
    assert 0 < linux["rss_p50_mib"] <= linux["rss_max_mib"] <= linux["hwm_max_mib"]
    assert linux["rss_max_mib"] < 10_000  # MiB, not KiB


MEMORY = {
    "per_agent": {},
    "by_kind": {
        "linux": {
            "agents": 3,
            "rss_p50_mib": 38.9,
            "rss_max_mib": 39.2,
            "hwm_p50_mib": 39.5,
            "hwm_max_mib": 40.0,
        },
        "ovs": {
            "agents": 1,
            "rss_p50_mib": 44.0,
            "rss_max_mib": 44.0,
            "hwm_p50_mib": 45.0,
            "hwm_max_mib": 45.0,
        },
    },
}


def test_lines_name_each_kind() -> None:
    assert agent_memory.lines(MEMORY) == [
        "agent RSS p50/max MiB over 3 agents, linux: 38.9 / 39.2 (peak VmHWM 39.5 / 40.0)",
        "agent RSS p50/max MiB over 1 agents, ovs: 44.0 / 44.0 (peak VmHWM 45.0 / 45.0)",
    ]
    assert agent_memory.lines(None) == [] and agent_memory.report_lines({}) == []


def _activation(memory: dict[str, Any] | None) -> dict[str, Any]:
    stage = {"p50_ms": 1.0, "p99_ms": 2.0, "min_ms": 0.5, "max_ms": 2.0}
    r: dict[str, Any] = {
        "hosts": 3,
        "datapath": "linux",
        "local_kind": "linux",
        "samples": 5,
        "remote_members": 2,
        "remote_kinds": {"linux": 2},
        "load_average_1m": 0.5,
        "stages": [list(s) for s in activation_trace.STAGES],
        "by_stage": dict.fromkeys(activation_trace.STAGE_NAMES, stage),
        "end_to_end": stage,
        "from_api_call": stage,
        "port_known_after_tap": stage,
    }
    if memory is not None:
        r["agent_memory"] = memory
    return {"command": "l2pop bench activation --hosts 3 --samples 5", "result": r}


def test_the_page_shows_the_agents_memory_when_the_result_has_it() -> None:
    page = "\n".join(activation_trace.report_section({"activation": _activation(MEMORY)}))
    assert "linux 38.9 MiB p50 / 39.2 MiB max over 3 agents (peak `VmHWM` 39.5 / 40.0 MiB)" in (
        page
    )
    assert "ovs 44.0 MiB p50" in page
    older = "\n".join(activation_trace.report_section({"activation": _activation(None)}))
    assert "Agent memory" not in older
