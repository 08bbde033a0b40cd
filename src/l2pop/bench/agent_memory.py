"""The agents' resident memory on a testbed: each agent process's ``VmRSS`` (resident now)
and ``VmHWM`` (the most it was ever resident) from ``/proc/<pid>/status``, by host kind.

``l2pop bench activation`` reads them at the end of its run and records them in its result
(``agent_memory``); the issue's target is an agent on the linux datapath at most 24 MiB
(FRR's zebra and bgpd together: 32 MiB).
"""

from __future__ import annotations

from typing import Any

from l2pop.testbed.bed import Testbed

KIB_PER_MIB = 1024


def proc_memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of process ``pid``, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def _p50(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]  # the lower median: a value that was measured


def read(bed: Testbed) -> dict[str, Any]:
    """Every running agent's memory, and per host kind the p50 and max over its agents, in
    MiB: ``{"per_agent": {host: {kind, rss_mib, hwm_mib}}, "by_kind": {kind: {agents,
    rss_p50_mib, rss_max_mib, hwm_p50_mib, hwm_max_mib}}}``."""
    per: dict[str, dict[str, Any]] = {}
    for name, host in sorted(bed.hosts.items()):
        agent = host.agent
        if agent is None or not agent.alive:
            continue
        try:
            kib = proc_memory_kib(agent.pid)
        except (OSError, ValueError):
            continue  # it ended meanwhile
        per[name] = {
            "kind": bed.kind_of(name).name,
            "rss_mib": round(kib.get("VmRSS", 0) / KIB_PER_MIB, 1),
            "hwm_mib": round(kib.get("VmHWM", 0) / KIB_PER_MIB, 1),
        }
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in sorted({a["kind"] for a in per.values()}):
        mine = [a for a in per.values() if a["kind"] == kind]
        rss = [a["rss_mib"] for a in mine]
        hwm = [a["hwm_mib"] for a in mine]
        by_kind[kind] = {
            "agents": len(mine),
            "rss_p50_mib": _p50(rss),
            "rss_max_mib": max(rss),
            "hwm_p50_mib": _p50(hwm),
            "hwm_max_mib": max(hwm),
        }
    return {"per_agent": per, "by_kind": by_kind}


def lines(memory: dict[str, Any] | None) -> list[str]:
    """One line per host kind: ``agent RSS p50/max MiB over N agents, linux: ...``."""
    out = []
    for kind, m in ((memory or {}).get("by_kind") or {}).items():
        out.append(
            f"agent RSS p50/max MiB over {m['agents']} agents, {kind}: "
            f"{m['rss_p50_mib']:.1f} / {m['rss_max_mib']:.1f} "
            f"(peak VmHWM {m['hwm_p50_mib']:.1f} / {m['hwm_max_mib']:.1f})"
        )
    return out


def report_lines(memory: dict[str, Any] | None) -> list[str]:
    """The docs page's paragraph (``bench report``); nothing for a result without it."""
    from l2pop.bench.formatting import num

    by_kind = (memory or {}).get("by_kind") or {}
    if not by_kind:
        return []
    parts = [
        f"{kind} {num(m['rss_p50_mib'], 1)} MiB p50 / {num(m['rss_max_mib'], 1)} MiB max over "
        f"{num(m['agents'])} agents (peak `VmHWM` {num(m['hwm_p50_mib'], 1)} / "
        f"{num(m['hwm_max_mib'], 1)} MiB)"
        for kind, m in by_kind.items()
    ]
    return [
        "Agent memory at the end of the run (each agent process's `VmRSS` from "
        "`/proc/<pid>/status`): " + "; ".join(parts) + ". FRR's zebra and bgpd together "
        "take 32 MiB.",
        "",
    ]
