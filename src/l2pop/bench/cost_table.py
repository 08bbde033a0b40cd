"""The page's "Cost per event" section: one row per figure the cost-per-event work is judged
by, with what it was before that work, what the latest saved results say, and the target.

Every "now" cell is read from a saved result (``docs/bench/*.json``) written by a committed
command; a figure whose result is missing says so. "Before" is what these same benchmarks
measured when the work began (1,000 agents, 100,000 ports, SQLite unless the row says
otherwise), kept here as text because those results were overwritten since.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from l2pop.bench.formatting import num, table

Results = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class CostRow:
    """One figure: its name, the value before, how to read it now, the target, and the
    command that measures it."""

    figure: str
    before: str
    now: Callable[[Results], str | None]
    target: str
    command: str


def _result(results: Results, name: str) -> dict[str, Any] | None:
    saved = results.get(name)
    return saved.get("result") if saved else None


def _rate(results: Results, engine: str, rate: float) -> dict[str, Any] | None:
    r = _result(results, f"scale-{engine}")
    if r is None:
        return None
    return next((x for x in r.get("rates", []) if x.get("rate") == rate), None)


def _lowest_rate(results: Results, engine: str) -> dict[str, Any] | None:
    """The run's lowest churn rate: below the machine's knee, where CPU per event is the
    system's own and not also the cost of queues growing (and of a load generator that
    shares the cores falling behind)."""
    r = _result(results, f"scale-{engine}")
    rates = [x for x in (r or {}).get("rates", []) if x.get("rate") is not None]
    return min(rates, key=lambda x: x["rate"]) if rates else None


def _cpu(results: Results, key: str) -> str | None:
    cells = []
    for engine in ("sqlite", "postgresql"):
        row = _lowest_rate(results, engine)
        if row is not None and row.get(key) is not None:
            cells.append(f"{num(row[key], 1)} ms {engine} at {num(row['rate'], 0)}/s")
    return ", ".join(cells) or None


def _agents_cpu(results: Results) -> str | None:
    cpu = _cpu(results, "agents_cpu_ms_per_event")
    row = _lowest_rate(results, "sqlite")
    if cpu is None or row is None or not row.get("messages_per_event"):
        return cpu
    per_message = row["agents_cpu_ms_per_event"] / row["messages_per_event"]
    return f"{cpu} (~{num(per_message, 2)} ms per message, sqlite)"


def _server_rss(results: Results) -> str | None:
    r = _result(results, "scale-sqlite")
    if r is None:
        return None
    values = [x.get("server_rss_mib") for x in r.get("rates", [])] + [r.get("server_rss_mib")]
    known = [v for v in values if v is not None]
    return f"{num(max(known), 0)} MiB (the most over the run)" if known else None


def _agent_rss(results: Results) -> str | None:
    r = _result(results, "activation")
    memory = (r or {}).get("agent_memory") or {}
    linux = (memory.get("by_kind") or {}).get("linux") or memory
    p50 = linux.get("rss_p50_mib")
    top = linux.get("rss_max_mib")
    if p50 is None:
        return None
    return f"{num(p50, 1)} MiB p50, {num(top, 1)} MiB max (VmRSS, in sync)"


def _restart(results: Results) -> str | None:
    cells = []
    for engine in ("sqlite", "postgresql"):
        r = _result(results, f"scale-{engine}")
        if r is not None and r.get("restart_resync_s") is not None:
            cells.append(f"{num(r['restart_resync_s'], 1)} s {engine}")
    return ", ".join(cells) or None


def _p99_at_100(results: Results) -> str | None:
    cells = []
    for engine in ("sqlite", "postgresql"):
        row = _rate(results, engine, 100.0)
        if row is None:
            continue
        cell = f"{num(row['p99_ms'] / 1000, 1)} s {engine}"
        duration = ((_result(results, f"scale-{engine}") or {}).get("config") or {}).get("duration")
        planned = int(100.0 * duration) if duration else None
        if planned and row.get("events", planned) < 0.9 * planned:
            # the load generator shares the cores: a p99 over the few events it managed to
            # send is no figure for the rate
            cell += f" (over {num(row['events'])} of {num(planned)} events: the load fell behind)"
        cells.append(cell)
    return ", ".join(cells) or None


def _highest_rate(results: Results) -> str | None:
    cells = []
    for engine in ("sqlite", "postgresql"):
        r = _result(results, f"scale-{engine}")
        if r is not None:
            best = r.get("max_rate_p99_le_1s")
            cells.append(f"{num(best, 0)}/s {engine}" if best else f"none measured {engine}")
    return ", ".join(cells) or None


def _tap_to_remote(results: Results) -> str | None:
    r = _result(results, "activation")
    if r is None:
        return None
    e = r["end_to_end"]
    return f"{num(e['p99_ms'], 1)} ms p99 ({num(e['p50_ms'], 1)} ms p50)"


def _rest(results: Results) -> str | None:
    r = _result(results, "rest")
    if r is None:
        return None
    return f"{num(r.get('requests_per_s'), 1)} requests/s, p99 {num(r['p99_ms'] / 1000, 1)} s"


SCALE = "l2pop bench scale --engine sqlite --save` and `--engine postgresql"
ROWS = (
    CostRow(
        "server CPU per activation event",
        "11.6-13 ms",
        lambda r: _cpu(r, "server_cpu_ms_per_event"),
        "≤ 3 ms",
        SCALE,
    ),
    CostRow(
        "simulated agents' CPU per event, all members together",
        "7.4-9 ms (~0.3 ms per delta message)",
        _agents_cpu,
        "≤ 2 ms (≤ 0.08 ms per message)",
        SCALE,
    ),
    CostRow(
        "server RSS, 1,000 hosts / 100,000 ports",
        "600-650 MiB",
        _server_rss,
        "≤ 200 MiB",
        SCALE,
    ),
    CostRow(
        "agent RSS, one host, linux datapath",
        "47 MiB",
        _agent_rss,
        "≤ 24 MiB",
        "l2pop bench activation --save",
    ),
    CostRow(
        "all 1,000 agents in sync after server `kill -9` + restart",
        "16-20 s",
        _restart,
        "≤ 5 s",
        SCALE,
    ),
    CostRow(
        "p99 at 100 activations/s, everything on this machine",
        "12-57 s (queues grow)",
        _p99_at_100,
        "≤ 100 ms",
        SCALE,
    ),
    CostRow(
        "highest rate with p99 ≤ 1 s",
        "60/s SQLite, 25/s PostgreSQL",
        _highest_rate,
        "≥ 300/s SQLite, ≥ 150/s PostgreSQL",
        SCALE,
    ),
    CostRow(
        "real kernels: tap appears -> last remote member's kernel entry, p99",
        "not measured (17 ms p50 from the API call)",
        _tap_to_remote,
        "≤ 5 ms",
        "l2pop bench activation --save",
    ),
    CostRow(
        "REST, 200 concurrent clients, 90 % reads / 10 % writes",
        "59-73 requests/s, p99 4.3-7 s",
        _rest,
        "≥ 600 requests/s, p99 ≤ 500 ms",
        "l2pop bench rest --clients 200 --write-docs",
    ),
)


def cost_section(results: Results) -> list[str]:
    """``## Cost per event``: every ``ROWS`` figure, before / now / target."""
    lines = [
        "## Cost per event",
        "",
        "What one activation costs, and what else the cost-per-event work is judged by. "
        "*Before* is what the same benchmarks measured when that work began; *now* is read "
        "from the saved results below (same machine kind, 2 cores, everything on it); the "
        "profile that shows what is left is under Gaps.",
        "",
    ]
    rows = [
        [
            row.figure,
            row.before,
            row.now(results) or "not measured yet",
            row.target,
            f"`{row.command}`",
        ]
        for row in ROWS
    ]
    lines += [table(["figure", "before", "now", "target", "measured by"], rows, "lllll"), ""]
    return lines
