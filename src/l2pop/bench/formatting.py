"""How benchmark figures are written down: numbers, Markdown tables and the per-rate row of a
scale result, shared by ``docs/benchmarks.md`` and the tables the benchmarks print."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def num(value: Any, digits: int = 0, unit: str = "") -> str:
    """``12,345`` / ``1.5`` / ``-`` for missing values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int | float):
        text = f"{value:,.{digits}f}"
        return f"{text} {unit}".rstrip() if unit else text
    return str(value)


def table(header: list[str], rows: Iterable[list[str]], align: str | None = None) -> str:
    """A Markdown table; ``align`` has one of ``l``/``r`` per column (default: ``l``
    for the first, ``r`` for the rest)."""
    align = align or "l" + "r" * (len(header) - 1)
    marks = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


#: one row per churn rate of a scale result: (column, key, digits); the page and the
#: terminal table both render it, so the two never disagree
SCALE_RATE_FIELDS = (
    ("rate (events/s)", "rate", 0),
    ("events", "events", 0),
    ("p50 ms", "p50_ms", 1),
    ("p99 ms", "p99_ms", 1),
    ("max ms", "max_ms", 1),
    ("msgs/event", "messages_per_event", 1),
    ("fanout-to-all msgs/event", "fanout_to_all_messages_per_event", 0),
    ("bytes/event", "bytes_per_event", 0),
    ("server CPU ms/event", "server_cpu_ms_per_event", 2),
    ("agents CPU ms/event", "agents_cpu_ms_per_event", 2),
    ("load generator CPU ms/event", "driver_cpu_ms_per_event", 2),
    ("server RSS MiB", "server_rss_mib", 1),
)
SCALE_RATE_COLUMNS = tuple(column for column, _, _ in SCALE_RATE_FIELDS)


def scale_rate_cells(row: dict[str, Any]) -> list[str]:
    """The cells of one churn rate's row, in ``SCALE_RATE_COLUMNS`` order."""
    return [num(row.get(key), digits) for _, key, digits in SCALE_RATE_FIELDS]
