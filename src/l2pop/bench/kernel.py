"""Kernel programming benchmark: how fast the linux datapath fills, reads back and empties
a VXLAN network's tables, beside iproute2 doing the same work.

``run(entries)`` works in a throwaway network namespace (deleted by name at the end) with
one ``neigh_suppress`` network (the default mode and the most work per entry: a ``self``
FDB entry, a bridge ``static`` entry and a neighbour entry per port) holding ``entries``
FDB + ``entries`` neighbour entries (half IPv4, half IPv6) over 16 remote VTEPs, and
measures:

* ``install_entries_per_s``: a snapshot through ``LinuxDatapath.apply`` (FDB + neighbour
  entries per second, wall clock, Python included);
* ``reconcile_unchanged_s``: a full no-change reconcile, ``diff_state(dump(), desired)``
  finding nothing to apply (median of 5);
* ``remove_entries_per_s``: conditional removal of every entry through ``apply``;
* ``iproute2_batch_entries_per_s``: the same install by ``bridge -batch`` + ``ip -batch``;
* ``per_process_entries_per_s``: one ``bridge``/``ip`` process per command (Neutron's old
  way), on at most ~500 entries, extrapolated as a rate;
* ``ratio_to_iproute2_batch``: install rate / iproute2 batch rate.

Run: ``python -m l2pop.bench.kernel [--entries N]`` (root); prints the dict as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from typing import Any

from l2pop.datapath.linux import LinuxDatapath
from l2pop.model import ArpSuppression, NetworkDelta, NetworkTables, diff_state
from l2pop.testbed import iproute as _netns

LOCAL_VTEP = "192.0.2.1"
REMOTE_VTEPS = [f"192.0.2.{i}" for i in range(10, 26)]
PER_PROCESS_LIMIT = 500
NS = ArpSuppression.NEIGH_SUPPRESS


def _mac(i: int) -> str:
    return ":".join(f"{b:02x}" for b in (0x02, 0x01, (i >> 16) & 255, (i >> 8) & 255, i & 255, 7))


def _ip(i: int) -> str:
    """Even i: IPv4 in 198.19.0.0/16; odd i: IPv6 in 2001:db8::/32."""
    return f"198.19.{(i // 250) % 256}.{i % 250 + 1}" if i % 2 == 0 else f"2001:db8::1:{i:x}"


def tables(network_id: str, vni: int, entries: int) -> NetworkTables:
    fdb = {_mac(i): REMOTE_VTEPS[i % len(REMOTE_VTEPS)] for i in range(entries)}
    neigh = {_ip(i): _mac(i) for i in range(entries)}
    return NetworkTables(network_id, vni, NS, frozenset(REMOTE_VTEPS), fdb, neigh)


def _timed(fn: Any, *args: Any) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def _iproute2_batch(netns: str, t: NetworkTables, vxlan: str, bridge: str) -> float:
    """Seconds for ``bridge -batch`` + ``ip -batch`` to install ``t`` (same entries and
    kinds as the datapath: self FDB entry, bridge static entry, permanent neighbour)."""
    fdb_lines = []
    for mac, vtep in t.fdb.items():
        fdb_lines.append(f"fdb replace {mac} dev {vxlan} dst {vtep} self permanent")
        fdb_lines.append(f"fdb replace {mac} dev {vxlan} master static")
    neigh_lines = [
        f"neigh replace {ip} lladdr {mac} dev {bridge} nud permanent" for ip, mac in t.neigh.items()
    ]
    fdb_text, neigh_text = "\n".join(fdb_lines) + "\n", "\n".join(neigh_lines) + "\n"
    started = time.perf_counter()
    _netns.bridge(netns, "-batch", "-", stdin=fdb_text)
    _netns.ip(netns, "-batch", "-", stdin=neigh_text)
    return time.perf_counter() - started


def _per_process(netns: str, t: NetworkTables, vxlan: str, bridge: str) -> tuple[int, float]:
    """(entries, seconds) for one process per command on at most PER_PROCESS_LIMIT entries."""
    count = max(1, min(PER_PROCESS_LIMIT, len(t.fdb) + len(t.neigh)) // 2)
    fdb = list(t.fdb.items())[:count]
    neigh = list(t.neigh.items())[:count]
    started = time.perf_counter()
    for mac, vtep in fdb:
        for args in (
            ["bridge", "-n", netns, "fdb", "replace", mac, "dev", vxlan, "dst", vtep, "self",
             "permanent"],
            ["bridge", "-n", netns, "fdb", "replace", mac, "dev", vxlan, "master", "static"],
        ):  # fmt: skip
            subprocess.run(args, check=True)
    for ip, mac in neigh:
        subprocess.run(
            ["ip", "-n", netns, "neigh", "replace", ip, "lladdr", mac, "dev", bridge, "nud",
             "permanent"],
            check=True,
        )  # fmt: skip
    return len(fdb) + len(neigh), time.perf_counter() - started


def run(entries: int) -> dict[str, float | int]:
    """Measure everything listed in the module docstring for ``entries`` FDB + neighbour
    entries; needs root. Returns the figures (rates in entries/s, times in s)."""
    with _netns.throwaway("l2pbench") as netns, LinuxDatapath(LOCAL_VTEP, netns=netns) as dp:
        desired = tables("bench-net", 4001, entries)
        total = len(desired.fdb) + len(desired.neigh)
        install_s = _timed(dp.apply, diff_state({}, {"bench-net": desired}))
        if dp.dump() != {"bench-net": desired}:
            raise RuntimeError("the datapath does not hold what was applied")
        reconcile = []
        for _ in range(5):
            started = time.perf_counter()
            deltas = diff_state(dp.dump(), {"bench-net": desired})
            reconcile.append(time.perf_counter() - started)
            if deltas:
                raise RuntimeError("a no-change reconcile found changes")
        dump_s = min(reconcile)
        removal = NetworkDelta(
            "bench-net", 4001, NS, fdb_remove=desired.fdb, neigh_remove=desired.neigh
        )
        remove_s = _timed(dp.apply, [removal])
        left = dp.dump()["bench-net"]
        if left.fdb or left.neigh:
            raise RuntimeError("entries left after removing them all")
        # iproute2 on a fresh, empty network of the same shape
        empty = NetworkTables("iproute2-net", 4002, NS, desired.flood)
        dp.apply(diff_state({}, {"iproute2-net": empty}))
        batch_s = _iproute2_batch(netns, desired, dp.vxlan_name(4002), dp.bridge_name(4002))
        if dp.dump()["iproute2-net"] != NetworkTables(
            "iproute2-net", 4002, NS, **_tables_of(desired)
        ):
            raise RuntimeError("iproute2 batch did not install the same entries")
        one = NetworkTables("process-net", 4003, NS, desired.flood)
        dp.apply(diff_state({}, {"process-net": one}))
        done, process_s = _per_process(netns, desired, dp.vxlan_name(4003), dp.bridge_name(4003))
        started = time.perf_counter()
        _netns.bridge(netns, "fdb", "show", "dev", dp.vxlan_name(4002))
        _netns.ip(netns, "neigh", "show", "dev", dp.bridge_name(4002))
        iproute2_show_s = time.perf_counter() - started
    install = total / install_s
    iproute2 = total / batch_s
    return {
        "entries": total,
        "install_entries_per_s": round(install),
        "iproute2_batch_entries_per_s": round(iproute2),
        "ratio_to_iproute2_batch": round(install / iproute2, 2),
        "reconcile_unchanged_s": round(statistics.median(reconcile), 4),
        "reconcile_unchanged_best_s": round(dump_s, 4),
        "iproute2_show_s": round(iproute2_show_s, 4),
        "remove_entries_per_s": round(total / remove_s),
        "per_process_entries_per_s": round(done / process_s),
        "per_process_entries": done,
    }


def _tables_of(t: NetworkTables) -> dict[str, Any]:
    return {"flood": t.flood, "fdb": dict(t.fdb), "neigh": dict(t.neigh)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=10_000, help="FDB (and neighbour) entries")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.entries), indent=2))


if __name__ == "__main__":
    main()
