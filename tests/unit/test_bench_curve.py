"""``l2pop.bench.scale_curve_report`` and the pure parts of ``l2pop.bench.scale_curve``: the
growth verdicts are computed from the measured ratios, the curve's store is scaled with the
hosts, and the net CPU per event leaves out the idle heartbeat cost."""

from __future__ import annotations

from typing import Any

import pytest

from l2pop.bench import scale_curve
from l2pop.bench.scale_curve_report import exponent_verdict, growth, growth_lines
from l2pop.bench.targets import TIMES


def sizes(key: str, values: list[float], hosts: tuple[int, ...] = (1000, 3000, 10_000)) -> Any:
    return {"sizes": [{"hosts": h, key: v} for h, v in zip(hosts, values, strict=True)]}


@pytest.mark.parametrize(
    ("values", "verdict"),
    [
        ([10.0, 30.0, 100.0], "linear"),
        ([10.0, 25.0, 80.0], "linear"),
        ([10.0, 40.0, 300.0], "superlinear"),
        ([10.0, 15.0, 30.0], "sublinear"),
        ([10.0, 10.5, 11.0], "sublinear (about constant)"),
        ([10.0, 5.0, 2.0], "sublinear (falls)"),
    ],
)
def test_verdict_from_the_largest_against_the_smallest(values: list[float], verdict: str) -> None:
    g = growth(sizes("initial_sync_s", values)["sizes"], "initial_sync_s")
    assert g is not None and g["verdict"] == verdict
    assert g["host_ratio"] == 10 and g["ratio"] == pytest.approx(values[-1] / values[0])


def test_no_verdict_without_two_sizes_with_the_figure() -> None:
    result = sizes("server_rss_mib", [600.0, 0.0, 0.0])
    assert growth(result["sizes"], "server_rss_mib") is None
    failed = {"sizes": [{"hosts": 1000, "server_rss_mib": 600.0}, {"hosts": 3000, "error": "x"}]}
    assert growth_lines(failed) == []


def test_exponent_bands() -> None:
    assert exponent_verdict(1.0) == "linear"
    assert exponent_verdict(0.85) == "linear" and exponent_verdict(1.15) == "linear"
    assert exponent_verdict(1.2) == "superlinear" and exponent_verdict(0.5) == "sublinear"


def test_growth_lines_name_the_ratio_and_the_verdict() -> None:
    [line] = growth_lines(sizes("restart_resync_s", [16.0, 50.0, 170.0]))
    assert line.startswith("restart resync: 16 → 170 s from 1,000 to 10,000 hosts")
    assert f"10.62{TIMES} for 10{TIMES} the hosts" in line and "**linear**" in line


def test_store_scales_with_hosts_and_swarms_with_agents() -> None:
    cfg = scale_curve.CurveConfig(rate=5, duration=3)
    sc = scale_curve.scale_config(cfg, 3000)
    assert (sc.hosts, sc.networks, sc.ports) == (3000, 6000, 300_000)
    assert (sc.min_span, sc.max_span, sc.rates, sc.duration) == (5, 50, [5], 3)
    assert [scale_curve.swarms_for(n) for n in (20, 1000, 3000, 10_000)] == [4, 4, 4, 10]
    assert scale_curve.swarms_for(10_000, 6) == 6


def test_net_cpu_per_event_leaves_out_the_heartbeats() -> None:
    row = {"events": 100, "server_cpu_ms_per_event": 20.0, "cpu_window_s": 12.0}
    # 2,000 ms of server CPU, of which 12 s x 50 ms/s were heartbeats
    assert scale_curve.net_cpu_per_event(row, 50.0) == 14.0
    assert scale_curve.net_cpu_per_event({"events": 0}, 50.0) is None


def test_a_pass_that_would_not_fit_in_memory_is_refused() -> None:
    scale_curve.memory_check(10_000, None)  # no previous pass: no estimate, no refusal
    scale_curve.memory_check(10, 1.0)  # 12 MiB fits anywhere
    with pytest.raises(MemoryError, match="10000000 hosts need about"):
        scale_curve.memory_check(10_000_000, 1.0)


def test_a_stalled_initial_sync_says_how_far_it_got() -> None:
    from l2pop.bench.scale_curve_report import CURVE_COLUMNS, curve_cells, section

    ok = {"hosts": 1000, "networks": 2000, "ports": 100_000, "initial_sync_s": 50.0}
    stalled = {
        "hosts": 3000,
        "error": "TimeoutError: 1200 hosts not in sync after 480s",
        "in_sync_at_timeout": 1800,
        "server_rss_mib_at_timeout": 900.0,
        "swarms_rss_mib_at_timeout": 2000.0,
        "sessions_refused": 68_000,
        "elapsed_s": 700.0,
    }
    cells = curve_cells(stalled, 480)
    assert cells[CURVE_COLUMNS.index("initial sync s")] == "> 480 (1,800 of 3,000 in sync)"
    assert cells[-1] == "700 (failed)"
    saved = {"command": "l2pop bench curve --save", "result": {
        "config": {"engine": "sqlite", "sync_timeout": 480}, "sizes": [ok, stalled]}}  # fmt: skip
    page = "\n".join(section(saved, None))
    assert "1,800 of 3,000 hosts were in sync" in page and "refused 68,000 sessions" in page
    # one completed size: the only verdict is the initial sync's, bounded by the timeout
    assert "not done within 480 s at 3,000 hosts" in page and "**superlinear**" in page


def test_a_timed_out_sync_bounds_the_exponent_from_below() -> None:
    ok = {"hosts": 1000, "initial_sync_s": 40.0, "server_start_s": 12.0}
    stalled = [
        {"hosts": h, "error": "TimeoutError", "in_sync_at_timeout": 10, "server_start_s": t}
        for h, t in ((3000, 50.0), (10_000, 150.0))
    ]
    result = {"config": {"sync_timeout": 480}, "sizes": [ok, *stalled]}
    lines = growth_lines(result)
    assert lines[0].startswith("initial sync: 40 s at 1,000 hosts; not done within 480 s at 3,000")
    assert "(exponent above 2.26): **superlinear**" in lines[0]
    assert any(line.startswith("server start") and "**linear**" in line for line in lines)
