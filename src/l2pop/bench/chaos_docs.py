"""The chaos section of ``docs/benchmarks.md``, from ``docs/bench/chaos-<engine>.json``.

The section sits between its own markers and is rewritten in place (inserted before "How
these results were produced" the first time). ``l2pop bench report`` regenerates the rest of
the page from the other result files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from l2pop.bench import sections
from l2pop.bench.report import num, table

ENGINES = ("sqlite", "postgresql")
INTRO = (
    "A soak under random `kill -9`: a real `l2pop server` process, one real agent process "
    "per host (memory datapath) and client threads driving random writes (create network, "
    "create port with and without a host, bind, migrate, unbind, change IPs and MAC, rename, "
    "delete) and deliberate conflicts (duplicate MAC or IP in a network, duplicate VNI, "
    "delete of a network with ports, MAC change of an ACTIVE port), each client on its own "
    "objects so its expected state is known. A killer `kill -9`s, by pid, at reproducible random "
    "intervals, the server, an agent or (PostgreSQL) the postmaster, and restarts it. Each "
    "write is acknowledged (2xx: must be in the store), refused (4xx: must leave nothing) "
    "or indeterminate (connection lost, timeout, 5xx: read back, must be its before or after "
    "state). At the end every client's model is compared field by field with the store, "
    "every agent's tables (read from its control endpoint) with the desired state the server "
    "answers for its host (`l2pop fdb show --host NAME`), "
    "and every host must be connected and in sync. Convergence after a kill: from the kill "
    "to the first moment every host is connected and in sync again (clients still writing)."
)


def _per_target(kills: list[dict[str, Any]], target: str) -> list[str]:
    times = sorted(
        k["converge_s"] for k in kills if k["target"] == target and k["converge_s"] is not None
    )
    n = sum(1 for k in kills if k["target"] == target)
    p50 = times[min(len(times) - 1, round(0.5 * (len(times) - 1)))] if times else None
    return [target, num(n), num(p50, 2), num(max(times, default=None), 2)]


def engine_section(saved: dict[str, Any]) -> list[str]:
    r = saved["result"]
    cfg = r.get("config", {})
    lines = [f"### {cfg.get('engine')}", "", "```", saved.get("command", "?"), "```", ""]
    lines.append(
        f"Run {saved.get('started_at')}, {num(r.get('duration_s'))} s of chaos; "
        f"{cfg.get('agents')} agents, {cfg.get('clients')} clients, seed {cfg.get('seed')}, "
        f"a kill every {cfg.get('kill_min'):g}-{cfg.get('kill_max'):g} s after recovery."
    )
    lines.append("")
    ops, kills = r["operations"], r["kills"]
    conv = r["convergence_after_kill_s"]
    final = r.get("final_convergence", {})
    after_db = ", ".join(f"{k}: {v}" for k, v in kills.get("server_after_db_kill", {}).items())
    verdict = "**all checks passed**"
    if not r.get("ok"):
        verdict = "**FAILED: " + ", ".join(r.get("failed_checks", [])) + "**"
    outcomes = ", ".join(f"{k} {num(v)}" for k, v in ops["by_outcome"].items())
    resolved = " / ".join(
        num(ops["indeterminate_resolved"].get(k)) for k in ("before", "after", "neither")
    )
    targets = ", ".join(f"{k} {num(v)}" for k, v in kills["by_target"].items())
    rows = [
        ["verdict", verdict],
        ["operations", f"{num(ops['total'])} ({outcomes})"],
        ["indeterminate resolved to before / after / neither", resolved],
        ["kills", f"{num(kills['total'])} ({targets})"],
        ["lost writes", num(r.get("lost_writes"))],
        ["leftovers of refused writes", num(r.get("leftovers"))],
        ["every agent's tables equal its /fdb", "yes" if r.get("agents_equal_fdb") else "**no**"],
        ["every host connected and in sync", "yes" if r.get("hosts_in_sync") else "**no**"],
        [
            "convergence after a kill, p50 / max",
            f"{num(conv.get('p50'), 2)} s / {num(conv.get('max'), 2)} s",
        ],
        ["kills not followed by convergence within the bound", num(conv.get("not_converged"))],
        ["final convergence after the chaos", f"{num(final.get('converge_s'), 2)} s"],
    ]
    if after_db:
        rows.append(["server after a database kill", after_db])
    lines += [table(["check", "result"], rows, "lr"), ""]
    lines += [
        table(
            ["killed", "kills", "in sync after, p50 s", "max s"],
            [_per_target(kills["events"], t) for t in kills["by_target"]],
            "lrrr",
        ),
        "",
    ]
    kind_rows = [
        [f"`{kind}`", *(num(row.get(o)) for o in ("acknowledged", "refused", "indeterminate"))]
        for kind, row in ops["by_kind"].items()
    ]
    lines += [
        table(["operation", "acknowledged", "refused", "indeterminate"], kind_rows, "lrrr"),
        "",
    ]
    if r.get("problem_samples"):
        lines.append("Problems found (first ones, with the operations on the object):")
        lines.append("")
        for p in r["problem_samples"][:10]:
            lines.append(f"- `{p['check']}` client {p['client']} {p['target']}: {p['detail']}")
        lines.append("")
    return lines


def section(bench_dir: Path) -> str:
    lines = ["## Chaos soak: kill -9 under load, nothing lost", "", INTRO, ""]
    found = False
    for engine in ENGINES:
        path = bench_dir / f"chaos-{engine}.json"
        if path.exists():
            found = True
            lines += engine_section(json.loads(path.read_text()))
    if not found:
        lines += ["_No result yet: run `l2pop bench chaos --write-docs`._", ""]
    return "\n".join(lines) + "\n"


def write(docs: Path) -> Path:
    """Rewrite the chaos section of ``docs/benchmarks.md`` from the saved results."""
    return sections.replace(docs, "chaos", section(docs / "bench"))
