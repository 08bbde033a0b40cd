"""Activation latency on real kernels: a VM's port goes live -> every remote member kernel
holds its FDB entry.

The comparison point is FRR EVPN measured on this machine kind (a new VM's MAC reaches the remote
kernels 77 ms p50 / 82 ms p99 after its first frame). Here the clock starts *before* the
port is created through the API and the VM's veth is made (so it includes both), and stops
at the kernel's own timestamp of the last remote member's ``MAC dst VTEP self`` entry, read
from ``bridge -timestamp monitor fdb`` in each remote host's namespace. The path between:
the tap appears -> the agent's netlink listener -> enslave -> ``PUT .../status`` ACTIVE ->
the server's hub -> a delta to each member -> each agent's datapath writes the entry.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable
from typing import IO

from l2pop.testbed.bed import Testbed

_TIMESTAMP = re.compile(r"^Timestamp: (.+ \d{4}) (\d+) usec$")


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


def measure(
    bed: Testbed,
    network: str,
    host: str,
    remote_hosts: list[str],
    *,
    samples: int = 10,
    progress: Callable[[str], None] = print,
) -> dict[str, float | int]:
    """``samples`` activations of a new VM on ``host`` in ``network`` (started testbed);
    returns p50/max latency to the last of ``remote_hosts``' kernels, in ms."""
    watches = {h: FdbWatch(bed.hosts[h].netns) for h in remote_hosts}
    vtep = bed.hosts[host].vtep_ip
    latencies: list[float] = []
    try:
        time.sleep(0.3)  # the monitors are listening
        for i in range(samples):
            t0 = time.time()
            vm = bed.add_vm(f"act{i}", network, host, [f"198.19.250.{i + 1}"], wait=False)
            deadline = time.monotonic() + 10
            stamps: list[float | None] = [None]
            while time.monotonic() < deadline:
                stamps = [w.when(vm.mac, vtep) for w in watches.values()]
                if all(s is not None for s in stamps):
                    break
                time.sleep(0.005)
            if any(s is None for s in stamps):
                raise TimeoutError(f"{vm.mac} never reached every remote kernel")
            latencies.append(max(s for s in stamps if s is not None) - t0)
            bed.remove_vm(vm)
        progress(
            f"activation to {len(remote_hosts)} remote kernels: "
            f"p50 {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms over {samples} VMs"
        )
    finally:
        for watch in watches.values():
            watch.close()
    ordered = sorted(latencies)
    return {
        "samples": samples,
        "remote_kernels": len(remote_hosts),
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "min_ms": round(ordered[0] * 1000, 1),
    }
