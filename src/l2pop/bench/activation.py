"""Activation latency on real datapaths: a VM's port goes live -> every remote member
holds its forwarding entry (a linux host's FDB entry, an OVS host's table-40 flow).

The comparison point is FRR EVPN measured on this machine kind (a new VM's MAC reaches the remote
kernels 77 ms p50 / 82 ms p99 after its first frame). Here the clock starts *before* the
port is created through the API and the VM's veth is made (so it includes both), and stops
when the last remote member holds the VM's entry pointing at the VM's VTEP. How that moment
is read depends on the remote host's kind (``watch_for``):

* a linux host (``FdbWatch``): the kernel's own timestamp of the ``MAC dst VTEP self``
  entry, from ``bridge -timestamp monitor fdb`` in the host's namespace (microseconds);
* an OVS host (``OvsFlowWatch``): the *receipt time* of the flow-monitor event line for the
  ``dl_dst=MAC ... set_field:VTEP->tun_dst`` flow in table 40 of the agent's bridge, read
  from ``ovs-ofctl monitor <bridge> watch:table=40`` (line-buffered through ``stdbuf -oL``)
  by this process, not a time the switch reports: ovs-vswitchd sends flow-monitor updates
  at the end of the main-loop iteration that installed the flow, and the receipt time came
  1 ms p50 (6 ms at most, over 40 events) after ovs-ofctl's own ``--timestamp`` of the same
  event (millisecond resolution), so an OVS figure is late by about that much.

So a testbed whose hosts are of several kinds is measured as one: the clock stops at the
last remote member, whichever kind it is. The path between: the tap appears -> the agent's
netlink listener -> enslave (linux) or add to the bridge (OVS) -> ``PUT .../status`` ACTIVE
-> the server's hub -> a delta to each member -> each agent's datapath writes the entry.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Protocol

from l2pop.testbed.bed import Testbed
from l2pop.testbed.ovs import OvsInstance
from l2pop.testbed.ovshost import OvsHost
from l2pop.testbed.ovstables import OF, T_FORWARD, parse_flow

_TIMESTAMP = re.compile(r"^Timestamp: (.+ \d{4}) (\d+) usec$")


class EntryWatch(Protocol):
    """When did a remote host's datapath first hold ``mac`` -> ``vtep`` (epoch seconds)?"""

    def when(self, mac: str, vtep: str) -> float | None: ...

    def close(self) -> None: ...


class FdbWatch:
    """``bridge -timestamp monitor fdb`` in one namespace: when did a ``mac dst vtep``
    entry appear (epoch seconds, the kernel event's timestamp)?"""

    def __init__(self, netns: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, "bridge", "-timestamp", "monitor", "fdb"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        stamp = None
        for raw in stream:
            line = raw.rstrip()
            match = _TIMESTAMP.match(line)
            if match:
                parsed = time.mktime(time.strptime(match.group(1), "%a %b %d %H:%M:%S %Y"))
                stamp = parsed + int(match.group(2)) / 1e6
                continue
            fields = line.split()
            if stamp is None or line.startswith("Deleted") or "dst" not in fields:
                continue
            key = (fields[0], fields[fields.index("dst") + 1])
            with self._lock:
                self.seen.setdefault(key, stamp)

    def when(self, mac: str, vtep: str) -> float | None:
        with self._lock:
            return self.seen.get((mac, vtep))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def forward_entry(line: str) -> tuple[str, str] | None:
    """(MAC, VTEP) of one ``ovs-ofctl monitor`` line when it reports a table-40 flow that
    sends ``dl_dst=MAC`` into a tunnel to VTEP (``set_field:VTEP->tun_dst``) being added or
    modified; None for anything else (headers, the initial dump, deletions, other flows)."""
    if "event=ADDED" not in line and "event=MODIFIED" not in line:
        return None
    flow = parse_flow(line)
    if flow is None or flow.table != T_FORWARD or "dl_dst" not in flow.match:
        return None
    vtep = flow.set_fields().get("tun_dst")
    return None if vtep is None else (flow.match["dl_dst"], vtep)


class OvsFlowWatch:
    """``ovs-ofctl monitor BRIDGE watch:table=40`` on one OVS host: when did a flow
    ``dl_dst=MAC -> tun_dst=VTEP`` appear (epoch seconds, the receipt time of its event
    line; see the module docstring)?

    Ready once the switch has answered the monitor request with the table's initial dump
    (``__init__`` waits for it, at most ``timeout`` s, else ``RuntimeError``); events after
    that are never missed. ``close()`` stops ovs-ofctl (by pid) and is idempotent."""

    def __init__(self, ovs: OvsInstance, bridge: str, *, timeout: float = 10.0) -> None:
        cmd = ["stdbuf", "-oL", "ovs-ofctl", *OF, "monitor", ovs.mgmt(bridge)]
        cmd.append(f"watch:table={T_FORWARD}")
        # ovs-ofctl prints its events on stderr: both go into the pipe
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ovs.env
        )
        self.seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._early: list[str] = []  # what it said before it was ready (an error, say)
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            output = "".join(self._early)
            self.close()
            raise RuntimeError(
                f"ovs-ofctl monitor on {bridge} ({ovs.netns}) never answered: {output.strip()}"
            )

    def _read(self, stream: IO[str]) -> None:
        for raw in stream:
            stamp = time.time()
            if "FLOW_MONITOR reply" in raw:
                self._ready.set()
                continue
            if not self._ready.is_set():
                self._early.append(raw)
            key = forward_entry(raw)
            if key is not None:
                with self._lock:
                    self.seen.setdefault(key, stamp)
        self._ready.set()  # it exited: no need to wait any longer

    def when(self, mac: str, vtep: str) -> float | None:
        with self._lock:
            return self.seen.get((mac, vtep))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(5)


def watch_for(bed: Testbed, host: str) -> EntryWatch:
    """The watch that fits ``host``'s kind: ``OvsFlowWatch`` on the agent's bridge of an
    OVS host (once the agent has made it), ``FdbWatch`` in any other host's namespace."""
    kind = bed.kind_of(host)
    if isinstance(kind, OvsHost):
        kind.wait_bridge(bed.hosts[host])
        return OvsFlowWatch(bed.ovs(host), kind.bridge)
    return FdbWatch(bed.hosts[host].netns)


def _p50(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": round(_p50(ordered) * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "min_ms": round(ordered[0] * 1000, 1),
    }


def wait_entries(
    watches: dict[str, EntryWatch], mac: str, vtep: str, deadline: float
) -> dict[str, float]:
    """host -> when its watch saw ``mac`` pointing at ``vtep`` (wall clock), once every host
    has it; ``TimeoutError`` naming the hosts without it at ``deadline`` (monotonic)."""
    seen: dict[str, float | None] = {}
    while time.monotonic() < deadline:
        seen = {h: w.when(mac, vtep) for h, w in watches.items()}
        if all(s is not None for s in seen.values()):
            break
        time.sleep(0.005)
    missing = sorted(h for h, s in seen.items() if s is None)
    if missing:
        raise TimeoutError(f"{mac} never reached {', '.join(missing)}")
    return {h: s for h, s in seen.items() if s is not None}


def measure(
    bed: Testbed,
    network: str,
    host: str,
    remote_hosts: list[str],
    *,
    samples: int = 10,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """``samples`` activations, one at a time, of a new VM on ``host`` in ``network`` (a
    started l2pop testbed); each is removed before the next. Returns ``samples``,
    ``remote_kernels`` (how many remote members) and p50/max/min latency in ms to the last
    of ``remote_hosts``, whatever their kinds. When a remote host is not a linux one, also
    ``remote_kinds`` (kind -> how many) and ``by_kind`` (kind -> p50/max/min to the last
    remote member of that kind). Raises ``TimeoutError`` when an entry is not everywhere
    within 10 s."""
    kinds = {h: bed.kind_of(h).name for h in remote_hosts}
    counts = {k: sum(1 for v in kinds.values() if v == k) for k in sorted(set(kinds.values()))}
    vtep = bed.hosts[host].vtep_ip
    latencies: list[float] = []
    per_kind: dict[str, list[float]] = {k: [] for k in counts}
    watches: dict[str, EntryWatch] = {}
    try:
        for h in remote_hosts:
            watches[h] = watch_for(bed, h)
        time.sleep(0.3)  # the kernel monitors are listening (the OVS ones said so)
        for i in range(samples):
            t0 = time.time()
            vm = bed.add_vm(f"act{i}", network, host, [f"198.19.250.{i + 1}"], wait=False)
            stamps = wait_entries(watches, vm.mac, vtep, time.monotonic() + 10)
            got = {h: s - t0 for h, s in stamps.items()}
            latencies.append(max(got.values()))
            for kind, values in per_kind.items():
                values.append(max(v for h, v in got.items() if kinds[h] == kind))
            bed.remove_vm(vm)
    finally:
        for watch in watches.values():
            watch.close()
    linux_only = set(counts) == {"linux"}
    split = ", ".join(f"{n} {k}" for k, n in counts.items())
    progress(
        f"activation to {len(remote_hosts)} remote "
        f"{'kernels' if linux_only else f'members ({split})'}: "
        f"p50 {_p50(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms "
        f"over {samples} VMs"
    )
    out: dict[str, Any] = {"samples": samples, "remote_kernels": len(remote_hosts)}
    out.update(_summary(latencies))
    if not linux_only:
        out["remote_kinds"] = counts
        out["by_kind"] = {k: _summary(v) for k, v in per_kind.items()}
    return out
