"""OVS programming benchmark (``l2pop bench kernel --datapath ovs``): how fast the OVS
datapath fills, reads back and empties a network's flows, beside ``ovs-ofctl`` doing the
same work.

``run(entries)`` works in a throwaway network namespace (deleted by name at the end) with a
private ``OvsInstance`` (ovsdb-server + ovs-vswitchd, userspace datapath
``datapath_type=netdev``, every file in a temporary directory; both daemons stopped by pid
at the end) and the same network as ``bench.kernel``: one ``neigh_suppress`` VXLAN network
holding ``entries`` FDB + ``entries`` neighbour entries (half IPv4, half IPv6) over 16
remote VTEPs. Through the agent's own code (``OvsDatapath.apply`` / ``dump``) it measures:

* ``datapath_start_s``: making the ``OvsDatapath`` (OVSDB connection, bridge, tunnel
  ports, base flows);
* ``install_entries_per_s``: the snapshot, the network (groups, its own flows, its OVSDB
  record) made on the way (entries per second, wall clock, Python and every ``ovs-*``
  process included; the median of ``INSTALLS`` installs from nothing, each ``_samples_s``);
* ``reconcile_unchanged_s``: a full no-change reconcile, ``diff_state(dump(), desired)``
  finding nothing to apply (median of 5; ``_best_s``: the fastest);
* ``remove_entries_per_s``: conditional removal of every entry through ``apply``;
* ``reinstall_entries_per_s``: the same install again into the network, now existing;
* ``leave_s``: a ``leave`` of the network holding every entry.

Then, on fresh bridges of the same instance, with the same flows (``kernel_ovs_baselines``;
checked identical to the datapath's in the dump):

* ``bundle_flows_per_s``: one ``ovs-ofctl --bundle add-flows FILE`` (median of
  ``INSTALLS``, the bridge emptied between them; each in ``bundle_samples_s``);
* ``per_process_flows_per_s``: one ``ovs-ofctl add-flow`` process per flow (Neutron's old
  way), measured on ``per_process_flows`` (at most ``PER_PROCESS_SAMPLE``) and extrapolated;
* ``dump_flows_s``: one ``ovs-ofctl dump-flows`` of the datapath's full bridge (median of 5).

And memory: ``rss_kib`` holds the ``VmRSS`` of ovs-vswitchd, ovsdb-server and this Python
process at ``start`` (daemons up, nothing programmed), ``installed`` (the datapath's flows
in) and ``end`` (after the baselines), and this process's peak (VmHWM) while the datapath
ran (``python_peak.datapath``: the agent's code, the desired state already built) and
while the baselines ran (``python_peak.baselines``).

``load_average_1m`` is the machine's load when the run began (other work skews every
figure). Each entry is one flow, so entries/s and flows/s compare directly. Targets
(``targets``): install rate >= 1.0 x the bundle rate; no-change reconcile <= one
``dump-flows``.

Run: ``python -m l2pop.bench.kernel_ovs [--entries N]`` (root); prints the dict as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from l2pop.bench import kernel_ovs_baselines as base
from l2pop.bench.kernel import LOCAL_VTEP, tables
from l2pop.datapath.ovs import TUNNELS, OvsDatapath
from l2pop.model import Encap, NetworkDelta, NetworkTables, diff_state
from l2pop.testbed import iproute
from l2pop.testbed.ovs import OvsInstance

NETWORK = "bench-net"
VNI = 4001
BRIDGE = "br-l2pop"
TUNNEL_PORT = TUNNELS[Encap.VXLAN][0]
PER_PROCESS_SAMPLE = 200
RECONCILES = 5
#: installs from nothing timed on each side (the datapath, the bundle): the rates are their
#: medians, a single one being at the mercy of whatever else the machine is doing
INSTALLS = 3


def _self_kib(field: str) -> int:
    """``field`` (``VmRSS``, ``VmHWM``) of this process, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    """Start this process's ``VmHWM`` again from its current RSS (``clear_refs`` 5); on a
    kernel without it the peak stays the lifetime's."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _rss(ovs: OvsInstance) -> dict[str, int]:
    return {**ovs.rss_kib(), "python": _self_kib("VmRSS")}


def _timed(fn: Any, *args: Any) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def _datapath(ovs: OvsInstance, netns: str) -> OvsDatapath:
    """The agent's OVS datapath on ``ovs``, as ``l2pop agent --datapath ovs`` makes it."""
    return OvsDatapath(
        LOCAL_VTEP,
        db=f"unix:{ovs.db_sock}",
        rundir=str(ovs.dir),
        bridge=BRIDGE,
        datapath_type="netdev",
        netns=netns,
    )


def _measure_datapath(dp: OvsDatapath, ovs: OvsInstance, desired: NetworkTables) -> dict[str, Any]:
    """Install, reconcile, dump-flows, remove, reinstall and leave on ``dp``, then
    ``INSTALLS - 1`` more installs from nothing (each left again); the figures in seconds,
    the datapath's entry flows as dumped (``flows``) and its tunnel ofport."""
    want = {NETWORK: desired}
    out: dict[str, Any] = {"install": [_timed(dp.apply, diff_state({}, want))]}
    if dp.dump() != want:
        raise RuntimeError("the OVS datapath does not hold what was applied")
    out["rss_installed"] = _rss(ovs)
    reconcile = []
    for _ in range(RECONCILES):
        started = time.perf_counter()
        deltas = diff_state(dp.dump(), want)
        reconcile.append(time.perf_counter() - started)
        if deltas:
            raise RuntimeError(f"a no-change reconcile found changes: {deltas[0]}")
    out["reconcile"] = reconcile
    dumps = [base.dump_flows(ovs, BRIDGE) for _ in range(RECONCILES)]
    out["dump_flows"] = [s for s, _ in dumps]
    text = dumps[-1][1]
    out["table_flows"] = sum(1 for line in text.splitlines() if "actions=" in line)
    out["flows"] = base.entry_flow_lines(text)
    out["tunnel_ofport"] = int(ovs.vsctl("get", "interface", TUNNEL_PORT, "ofport").strip())
    removal = NetworkDelta(
        NETWORK, VNI, desired.arp_suppression, fdb_remove=desired.fdb, neigh_remove=desired.neigh
    )
    out["remove_s"] = _timed(dp.apply, [removal])
    left = dp.dump()[NETWORK]
    if left.fdb or left.neigh:
        raise RuntimeError("entries left after removing them all")
    out["reinstall_s"] = _timed(dp.apply, diff_state(dp.dump(), want))
    if dp.dump() != want:
        raise RuntimeError("the OVS datapath does not hold what was applied again")
    out["leave_s"] = _timed(dp.apply, diff_state(dp.dump(), {}))
    if NETWORK in dp.dump():
        raise RuntimeError("the network is still there after leaving it")
    for _ in range(INSTALLS - 1):
        out["install"].append(_timed(dp.apply, diff_state(dp.dump(), want)))
        if dp.dump() != want:
            raise RuntimeError("the OVS datapath does not hold what was applied")
        dp.apply(diff_state(dp.dump(), {}))
    return out


def _measure_baselines(
    ovs: OvsInstance, desired: NetworkTables, measured: dict[str, Any], workdir: Path
) -> dict[str, Any]:
    """The bundle installs (``INSTALLS``, the bridge emptied between them) and the
    per-process one on fresh bridges; checks the bundle installed exactly the flows the
    datapath had."""
    ofport = measured["tunnel_ofport"]
    flows = base.entry_flows(desired, ofport)
    bundle_port, process_port = base.BASELINE_DST_PORTS[:2]
    base.fresh_bridge(ovs, "br-bundle", ofport, bundle_port)
    bundle_s = [base.bundle_install(ovs, "br-bundle", flows, workdir)]
    _, text = base.dump_flows(ovs, "br-bundle")
    installed = base.entry_flow_lines(text)
    if installed != measured["flows"]:
        theirs, ours = measured["flows"] - installed, installed - measured["flows"]
        example = next(iter(sorted(theirs)), "-"), next(iter(sorted(ours)), "-")
        raise RuntimeError(
            f"the bundle baseline's flows differ from the datapath's ({len(theirs)} of the "
            f"datapath's missing, {len(ours)} extra); datapath: {example[0]}; "
            f"baseline: {example[1]}"
        )
    for _ in range(INSTALLS - 1):
        base.clear_flows(ovs, "br-bundle")
        bundle_s.append(base.bundle_install(ovs, "br-bundle", flows, workdir))
    some = base.sample(flows, len(desired.fdb), PER_PROCESS_SAMPLE)
    base.fresh_bridge(ovs, "br-process", ofport, process_port)
    process_s = base.per_process_install(ovs, "br-process", some)
    return {"flows": len(flows), "bundle_s": bundle_s, "sample": len(some), "process_s": process_s}


def run(entries: int) -> dict[str, Any]:
    """Measure everything listed in the module docstring for ``entries`` FDB + neighbour
    entries; needs root and Open vSwitch (``testbed.ovs.available()``). Returns the figures
    (rates in entries or flows per second, times in seconds, memory in KiB). Raises
    ``RuntimeError`` when the datapath or a baseline does not hold what it was given."""
    load = os.getloadavg()[0]  # others' work on the machine skews every figure
    desired = tables(NETWORK, VNI, entries)
    total = len(desired.fdb) + len(desired.neigh)
    with (
        iproute.throwaway("l2pbench") as netns,
        tempfile.TemporaryDirectory(prefix="l2pop-bench-ovs-") as tmp,
        OvsInstance(netns, Path(tmp) / "ovs") as ovs,
    ):
        rss: dict[str, Any] = {"start": _rss(ovs)}
        _reset_peak()
        started = time.perf_counter()
        dp = _datapath(ovs, netns)
        start_s = time.perf_counter() - started
        try:
            measured = _measure_datapath(dp, ovs, desired)
        finally:
            dp.close()
        rss["installed"] = measured.pop("rss_installed")
        peak = {"datapath": _self_kib("VmHWM")}
        _reset_peak()
        baselines = _measure_baselines(ovs, desired, measured, Path(tmp))
        rss["end"] = _rss(ovs)
        rss["python_peak"] = {**peak, "baselines": _self_kib("VmHWM")}
    install = total / statistics.median(measured["install"])
    bundle = baselines["flows"] / statistics.median(baselines["bundle_s"])
    per_process = baselines["sample"] / baselines["process_s"]
    reconcile = statistics.median(measured["reconcile"])
    dump_flows = statistics.median(measured["dump_flows"])
    return {
        "entries": total,
        "datapath_type": "netdev",
        "ovs_version": base.version(),
        "load_average_1m": round(load, 2),
        "datapath_start_s": round(start_s, 4),
        "install_entries_per_s": round(install),
        "install_samples_s": [round(x, 4) for x in measured["install"]],
        "reinstall_entries_per_s": round(total / measured["reinstall_s"]),
        "remove_entries_per_s": round(total / measured["remove_s"]),
        "leave_s": round(measured["leave_s"], 4),
        "bundle_flows_per_s": round(bundle),
        "bundle_samples_s": [round(x, 4) for x in baselines["bundle_s"]],
        "ratio_to_bundle": round(install / bundle, 2),
        "per_process_flows_per_s": round(per_process, 1),
        "per_process_flows": baselines["sample"],
        "per_process_extrapolated_s": round(total / per_process, 1),
        "reconcile_unchanged_s": round(reconcile, 4),
        "reconcile_unchanged_best_s": round(min(measured["reconcile"]), 4),
        "dump_flows_s": round(dump_flows, 4),
        "dump_flows_best_s": round(min(measured["dump_flows"]), 4),
        "reconcile_to_dump_flows": round(reconcile / dump_flows, 2),
        "table_flows": measured["table_flows"],
        "rss_kib": rss,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=10_000, help="FDB (and neighbour) entries")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.entries), indent=2))


if __name__ == "__main__":
    main()
