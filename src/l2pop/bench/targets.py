"""The benchmark targets, and how a saved result measures up to them (the page's "Targets"
and "Gaps" sections; the plots draw the same lines)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from l2pop.bench.formatting import num

KERNEL_RATIO_TARGET = 0.6
KERNEL_RECONCILE_TARGET_S = 0.100
KERNEL_TARGET_ENTRIES = 20_000  # 10k FDB + 10k neighbour
#: the OVS datapath must install at least as fast as one ``ovs-ofctl --bundle add-flows``
#: and reconcile unchanged in at most one ``ovs-ofctl dump-flows`` of its bridge
OVS_RATIO_TARGET = 1.0
OVS_RECONCILE_TARGET = "unchanged reconcile of 10k + 10k ≤ one `ovs-ofctl dump-flows`"
SCALE_P99_TARGET_MS = 250.0
SCALE_TARGET_RATE = 100.0
SCALE_RESTART_TARGET_S = 30.0
SCALE_TARGET_HOSTS = 1000

TIMES = "\u00d7"  # the multiplication sign


@dataclass
class Target:
    """One benchmark target and how this run measured up."""

    benchmark: str
    target: str
    measured: str
    met: bool | None  # None: not measured (or not at the target size)
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "not measured" + (f" ({self.note})" if self.note else "")
        return "met" if self.met else "**MISSED**"


def kernel_targets(saved: dict[str, Any] | None) -> list[Target]:
    """The kernel targets against ``kernel.json`` (None: not saved yet)."""
    if saved is None:
        return [
            Target(
                "kernel",
                f"install ≥ {KERNEL_RATIO_TARGET} {TIMES} iproute2 batch rate",
                "-",
                None,
                "no kernel.json",
            ),
            Target(
                "kernel", "unchanged reconcile of 10k + 10k ≤ 100 ms", "-", None, "no kernel.json"
            ),
        ]
    r = saved["result"]
    entries = r.get("entries", 0)
    small = entries < KERNEL_TARGET_ENTRIES
    note = f"run at {entries:,} entries, not 10k + 10k" if small else ""
    ratio = r.get("ratio_to_iproute2_batch")
    reconcile = r.get("reconcile_unchanged_s")
    return [
        Target(
            "kernel",
            f"install ≥ {KERNEL_RATIO_TARGET} {TIMES} iproute2 batch rate",
            f"{num(ratio, 2)} {TIMES} ({num(r.get('install_entries_per_s'))} vs "
            f"{num(r.get('iproute2_batch_entries_per_s'))} entries/s)",
            None if ratio is None else ratio >= KERNEL_RATIO_TARGET,
        ),
        Target(
            "kernel",
            "unchanged reconcile of 10k + 10k ≤ 100 ms",
            num(None if reconcile is None else reconcile * 1000, 1, "ms") + " (median of 5)",
            None if (reconcile is None or small) else reconcile <= KERNEL_RECONCILE_TARGET_S,
            note,
        ),
    ]


def kernel_ovs_targets(saved: dict[str, Any] | None) -> list[Target]:
    """The OVS datapath targets against ``kernel-ovs.json`` (None: not saved yet): install
    rate at least ``OVS_RATIO_TARGET`` times the bundle rate; no-change reconcile (median)
    at most one ``dump-flows`` (median), judged only at 10k + 10k entries."""
    name = "kernel (ovs)"
    ratio_target = f"install ≥ {OVS_RATIO_TARGET} {TIMES} `ovs-ofctl --bundle add-flows` rate"
    if saved is None:
        missing = "no kernel-ovs.json"
        return [
            Target(name, ratio_target, "-", None, missing),
            Target(name, OVS_RECONCILE_TARGET, "-", None, missing),
        ]
    r = saved["result"]
    entries = r.get("entries", 0)
    small = entries < KERNEL_TARGET_ENTRIES
    note = f"run at {entries:,} entries, not 10k + 10k" if small else ""
    ratio = r.get("ratio_to_bundle")
    reconcile, dump = r.get("reconcile_unchanged_s"), r.get("dump_flows_s")
    measured = "-"
    if reconcile is not None and dump is not None:
        measured = f"{num(reconcile * 1000, 1)} ms vs {num(dump * 1000, 1)} ms (medians of 5)"
    return [
        Target(
            name,
            ratio_target,
            f"{num(ratio, 2)} {TIMES} ({num(r.get('install_entries_per_s'))} vs "
            f"{num(r.get('bundle_flows_per_s'))} flows/s)",
            None if ratio is None else ratio >= OVS_RATIO_TARGET,
        ),
        Target(
            name,
            OVS_RECONCILE_TARGET,
            measured,
            None if (reconcile is None or dump is None or small) else reconcile <= dump,
            note,
        ),
    ]


def scale_targets(engine: str, saved: dict[str, Any] | None) -> list[Target]:
    """The scale targets against ``scale-<engine>.json`` (None: not saved yet)."""
    name = f"scale ({engine})"
    p99_target = f"p99 ≤ {SCALE_P99_TARGET_MS:.0f} ms at {SCALE_TARGET_RATE:.0f} port events/s"
    restart_target = (
        f"all {SCALE_TARGET_HOSTS:,} agents in sync ≤ {SCALE_RESTART_TARGET_S:.0f} s after "
        "a server restart"
    )
    if saved is None:
        missing = f"no scale-{engine}.json"
        return [
            Target(name, p99_target, "-", None, missing),
            Target(name, restart_target, "-", None, missing),
        ]
    r = saved["result"]
    hosts = r.get("config", {}).get("hosts", 0)
    small = hosts < SCALE_TARGET_HOSTS
    note = f"run at {hosts:,} hosts, not {SCALE_TARGET_HOSTS:,}" if small else ""
    row = next((x for x in r.get("rates", []) if x.get("rate") == SCALE_TARGET_RATE), None)
    out = []
    if row is None:
        out.append(Target(name, p99_target, "-", None, f"no run at {SCALE_TARGET_RATE:g}/s"))
    else:
        p99 = row.get("p99_ms")
        out.append(
            Target(
                name,
                p99_target,
                f"p99 {num(p99, 1, 'ms')} (p50 {num(row.get('p50_ms'), 1, 'ms')})",
                None if small else (p99 is not None and p99 <= SCALE_P99_TARGET_MS),
                note,
            )
        )
    resync = r.get("restart_resync_s")
    out.append(
        Target(
            name,
            restart_target,
            "-" if resync is None else f"{num(resync, 1, 's')} ({hosts:,} agents)",
            None if (small or resync is None) else resync <= SCALE_RESTART_TARGET_S,
            note if resync is not None else "no restart in this run",
        )
    )
    return out
