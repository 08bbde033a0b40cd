"""The "Cost per event" section reads every "now" cell from the saved results, and says
"not measured yet" for a figure whose result is missing."""

from __future__ import annotations

from typing import Any

from l2pop.bench.cost_table import ROWS, cost_section


def saved(result: dict[str, Any]) -> dict[str, Any]:
    return {"result": result, "command": "l2pop bench ...", "started_at": "2026-12-01"}


def scale(cpu: float, restart: float, best: float | None, sent: int = 2000) -> dict[str, Any]:
    rates = [
        {"rate": 25.0, "p99_ms": 80.0, "server_cpu_ms_per_event": cpu,
         "agents_cpu_ms_per_event": 8.0, "messages_per_event": 28.0, "server_rss_mib": 400.0},
        {"rate": 100.0, "p99_ms": 12_000.0, "server_cpu_ms_per_event": cpu + 2,
         "agents_cpu_ms_per_event": 9.0, "messages_per_event": 30.0, "server_rss_mib": 420.0,
         "events": sent},
    ]  # fmt: skip
    return saved(
        {
            "rates": rates,
            "restart_resync_s": restart,
            "max_rate_p99_le_1s": best,
            "server_rss_mib": 380.0,
            "config": {"duration": 20.0},
        }
    )


def test_every_row_is_read_from_its_result() -> None:
    results = {
        "scale-sqlite": scale(10.0, 4.2, 50.0, sent=239),
        "scale-postgresql": scale(20.0, 6.5, None),
        "activation": saved(
            {
                "end_to_end": {"p50_ms": 13.7, "p99_ms": 40.1},
                "agent_memory": {"by_kind": {"linux": {"rss_p50_mib": 38.8, "rss_max_mib": 39.2}}},
            }
        ),
        "rest": saved({"requests_per_s": 120.5, "p99_ms": 2500.0}),
    }
    text = "\n".join(cost_section(results))
    assert "not measured yet" not in text
    for expected in (
        "10.0 ms sqlite at 25/s, 20.0 ms postgresql at 25/s",  # at the lowest rate
        "~0.29 ms per message, sqlite",  # agents' CPU / messages per event
        "420 MiB",  # the most RSS over the run
        "38.8 MiB p50, 39.2 MiB max",
        "4.2 s sqlite, 6.5 s postgresql",
        "12.0 s sqlite (over 239 of 2,000 events: the load fell behind), 12.0 s postgresql",
        "50/s sqlite, none measured postgresql",
        "40.1 ms p99 (13.7 ms p50)",
        "120.5 requests/s, p99 2.5 s",
    ):
        assert expected in text, expected
    assert text.count("\n| ") == len(ROWS) + 2  # a header, a rule, one line per figure


def test_a_missing_result_says_so() -> None:
    text = "\n".join(cost_section({}))
    assert text.count("not measured yet") == len(ROWS)
