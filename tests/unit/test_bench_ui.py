"""``l2pop bench ui``'s arithmetic and its page section, without running anything: the
order of the watcher windows, a count's row from its windows, the cost per watcher, the
arguments refused, and the "Web page" section of ``docs/benchmarks.md``."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from l2pop.bench import ui, ui_report
from l2pop.cli.bench_ui import MAX_WATCHERS, _watcher_counts
from l2pop.server import views


def test_windows_go_up_then_down_and_always_start_at_zero_watchers() -> None:
    assert ui.stream_order([30, 1, 10], 1) == [0, 1, 10, 30]
    assert ui.stream_order([1, 10, 30], 2) == [0, 1, 10, 30, 30, 10, 1, 0]
    assert ui.stream_order([0, 2], 3) == [0, 2, 2, 0, 0, 2]


def test_the_watcher_limit_is_the_servers() -> None:
    assert ui.MAX_WATCHERS == MAX_WATCHERS == views.MAX_WATCHERS
    assert _watcher_counts("1,10,30") == [0, 1, 10, 30]
    for bad in ("33", "-1", "x", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            _watcher_counts(bad)


def test_slope_is_least_squares() -> None:
    assert ui.slope([(0, 100.0), (10, 120.0), (30, 160.0)]) == pytest.approx(2.0)
    assert ui.slope([(1, 5.0), (1, 6.0)]) is None


def _window(watchers: int, cpu: float) -> dict[str, Any]:
    return {
        "watchers": watchers,
        "window_s": 20.0,
        "events": 200,
        "failed_calls": 0,
        "server_cpu_ms_per_s": cpu,
        "server_rss_mib": 100.0,
        "driver_cpu_ms_per_s": 30.0,
        "ticks_per_watcher": 20.0 if watchers else 0,
        "messages_per_s_per_watcher": 1.0 if watchers else 0,
        "bytes_per_s_per_watcher": 60_000 if watchers else 0,
        "dropped": 0,
    }


def test_a_row_is_the_mean_of_its_windows() -> None:
    row = ui._merge([_window(10, 200.0), _window(10, 210.0)])
    assert row["watchers"] == 10 and row["windows"] == 2
    assert row["server_cpu_ms_per_s"] == 205.0 and row["server_cpu_ms_per_s_each"] == [200, 210]
    assert row["events"] == 200 and isinstance(row["events"], int)


def _result() -> dict[str, Any]:
    rows = []
    for watchers, cpu in ((0, 200.0), (1, 220.0), (10, 222.0), (30, 226.0)):
        row = ui._merge([_window(watchers, cpu)])
        row["server_cpu_ms_per_s_per_watcher"] = (cpu - 200.0) / watchers if watchers else None
        rows.append(row)
    read = {"median_ms": 5.0, "max_ms": 9.0, "bytes": 1234, "pages": 1, "reps": 10}
    return {
        "hosts": 1000,
        "networks": 2000,
        "ports": 100_000,
        "swarms": 4,
        "initial_sync_s": 30.0,
        # sorted, as a saved result's keys are
        "reads": {
            name: {**read, "path": path} for name, path in sorted(ui.READS, key=lambda x: x[0])
        },
        "browser": {
            "chromium": "1.2",
            "loads": [{"ready_ms": 800.0}],
            "load_median_ms": 800.0,
            "load_max_ms": 900.0,
            "wall_median_ms": 850.0,
            "loaded": True,
            "render": {"ticks": 9, "rate": 10.0, "task_ms_per_tick": 120.0},
        },
        "stream": {
            "rate": 10.0,
            "window_s": 20.0,
            "passes": 1,
            "rows": rows,
            "server_cpu_ms_per_s_per_watcher": 0.5,
            "first_watcher_server_cpu_ms_per_s": 20.0,
            "server_cpu_ms_per_s_per_extra_watcher": 0.21,
            "repeat_spread_ms_per_s": 30.0,
            "resolved": False,
            "bytes_per_s_per_watcher": 60_000,
            "messages_per_s_per_watcher": 1.0,
        },
    }


def test_the_section_has_the_reads_in_page_order_the_browser_and_the_stream() -> None:
    saved = {"command": "l2pop bench ui --save", "started_at": "now", "result": _result()}
    text = "\n".join(ui_report.section(saved))
    assert text.startswith("## Web page")
    order = [text.index(f"`GET {path}`") for _, path in ui.READS]
    assert order == sorted(order)  # status, hosts, topology, events: as the page reads them
    assert "| 800 ms |" in text and "120.0 ms" in text
    assert "| 30 | 1 | 226.0 | 226.0 | 0.87 |" in text
    assert "60,000 bytes/s" in text and "first watcher costs 20.0 ms/s" in text


def test_a_missing_result_or_browser_says_so() -> None:
    assert "_Not measured yet: run `l2pop bench ui --save`._" in ui_report.section(None)
    result = _result()
    result["browser"] = {"skipped": "not asked (--no-browser)"}
    text = "\n".join(ui_report.section({"result": result}))
    assert "_The browser was not measured: not asked (--no-browser)._" in text


def test_a_cost_within_the_noise_is_called_so() -> None:
    result = _result()
    text = ui_report.summary(result)
    assert "within the noise" in text and "30.0 ms/s" in text
    result["stream"].update(resolved=True)
    assert "within the noise" not in ui_report.summary(result)
    result["stream"].update(repeat_spread_ms_per_s=None, resolved=None)
    assert "differed" not in ui_report.summary(result)
