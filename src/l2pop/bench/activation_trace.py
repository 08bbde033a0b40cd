"""Activation, stage by stage, on the netns testbed (``l2pop bench activation``).

The clock starts when the VM's tap device appears in its host's namespace (the first
RTM_NEWLINK naming it, read by a ``LinkWatcher`` of this process subscribed like the agent's
own) and stops when the last remote member holds the VM's entry (``activation.watch_for``:
a linux host's FDB entry as ``bridge -timestamp monitor fdb`` stamps it, an OVS host's
table-40 flow as its flow monitor's line is received). Between the two, every step is read
from always-on bounded telemetry, not from test hooks:

* the agent's ``Trace`` ring (``agent.stats``; its control endpoint ``/agents/{host}/trace``):
  ``device`` (a sync found the tap), ``wired``, ``report`` on the VM's host; ``delta``
  (accepted) and ``written`` (the datapath write returned) on each remote member;
* the server's ``GET /v1/trace``: the commit the hub heard of, the hub batch (applied, every
  message queued) and each delta written to a member's socket.

Every process runs on this machine, so their ``time.monotonic()`` (CLOCK_MONOTONIC) is one
clock. The kernel-entry times are wall clock (epoch seconds): each is moved onto the
monotonic clock by the offset ``time.time() - time.monotonic()`` read when that activation's
entries are in (the offset moves only if the wall clock is stepped mid-run).

``STAGES`` are cut along the critical path: the remote member whose entry came last (for
``by_kind``: the last of that kind). Per activation the stages sum exactly to the end-to-end
figure; the p50 of each stage is taken on its own, so the p50s need not add up. The last
stage (datapath write returned -> entry seen) may be negative by a fraction of a
millisecond: the kernel notifies its monitors while it handles the write, before the agent
has its answer. p99 is nearest-rank: over fewer than 100 activations it is the largest.

The FRR EVPN comparison point (``FRR``) starts later, at the VM's first frame: a VM's first
frame comes after its tap exists, so an equal figure here would be the faster one.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from l2pop.bench import agent_memory
from l2pop.bench.activation import EntryWatch, wait_entries, watch_for
from l2pop.client import Client
from l2pop.datapath import _links, _netns
from l2pop.testbed.bed import Testbed
from l2pop.testbed.controlplane import L2popControlPlane
from l2pop.testbed.hosts import control_get
from l2pop.testbed.nodes import Vm

#: FRR EVPN on this machine kind, from the VM's first frame to the remote kernels (ms)
FRR = {"p50_ms": 77.0, "p99_ms": 82.0, "clock_starts": "the VM's first frame"}

#: (stage, what ends it), in order; each stage starts where the one before ended, the first
#: at the tap's RTM_NEWLINK
STAGES: tuple[tuple[str, str], ...] = (
    ("seen", "the agent's sync found the tap (link event, wake-up, worker)"),
    ("wired", "the agent wired it (enslaved to the bridge / added to the OVS bridge)"),
    ("committed", "ACTIVE committed on the server (ack, status PUT, store write)"),
    ("batched", "the hub's batch applied, every member's delta queued"),
    ("sent", "the delta's write to the last member's socket began"),
    ("received", "the last member's agent accepted the delta"),
    ("written", "its datapath write returned"),
    ("kernel", "its entry seen in the kernel (linux) / flow monitor (OVS)"),
)
STAGE_NAMES = tuple(name for name, _ in STAGES)
#: how long an activation may take before it counts as lost
TIMEOUT_S = 10.0
#: activations before the measured ones, not counted: the first status call of each agent
#: opens its HTTP connection, and the server's first calls warm its caches (50-80 ms)
WARMUP = 2
#: each activation's VM takes the next address of one /24
MAX_SAMPLES = 250


class TapWatch:
    """When did each link of a namespace first appear in an RTM_NEWLINK (monotonic s)?

    A ``LinkWatcher`` (the agents' own) on that namespace: the times are when this process
    read the kernel's notification, which the agent's watcher gets at the same moment."""

    def __init__(self, netns: str) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[float, frozenset[str]]] = []
        fd = _netns.open_netns(netns)
        try:
            self._watcher = _links.LinkWatcher(fd, self._on_links)
        finally:
            os.close(fd)

    def _on_links(self, names: set[str] | None) -> None:
        at = time.monotonic()
        if names:
            with self._lock:
                self.events.append((at, frozenset(names)))

    def first(self, name: str, after: float) -> float | None:
        with self._lock:
            return next((t for t, n in self.events if t >= after and name in n), None)

    def close(self) -> None:
        self._watcher.close()


def nearest_rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(values_s: Sequence[float]) -> dict[str, float]:
    """p50 / p99 (nearest rank) / min / max, in ms."""
    return {
        "p50_ms": round(nearest_rank(values_s, 0.5) * 1000, 2),
        "p99_ms": round(nearest_rank(values_s, 0.99) * 1000, 2),
        "min_ms": round(min(values_s) * 1000, 2),
        "max_ms": round(max(values_s) * 1000, 2),
    }


def _first(events: list[list[Any]], event: str, subject: Any, after: float) -> list[Any] | None:
    """The first trace event ``event`` about ``subject`` at or after ``after``."""
    return next(
        (e for e in events if e[1] == event and e[2] == subject and e[0] >= after - 1e-6), None
    )


def stamps(
    vm: Vm,
    tap_at: float,
    *,
    local: list[list[Any]],
    remote: dict[str, list[list[Any]]],
    server: dict[str, Any],
    entries: dict[str, float],
) -> dict[str, Any]:
    """The monotonic time of each step of one activation, from the telemetry: ``local`` the
    VM's host's trace, ``remote`` each remote member's, ``server`` a ``GET /v1/trace``,
    ``entries`` each remote member's entry time (monotonic). Raises ``LookupError`` naming
    the step the telemetry lacks."""

    def need(value: Any, what: str) -> Any:
        if value is None:
            raise LookupError(f"{vm.name}: no {what} in the telemetry")
        return value

    # when the agent first heard of the port's row (its creation, bound here): a tap that
    # appears before that cannot be wired until it does
    known = next((e[0] for e in local if e[1] == "port" and e[2] == vm.port_id), None)
    # The bench's own listener may hear of the tap a little after the agent's did (both are
    # threads on a busy machine): the tap appeared no later than the agent's sync found it.
    device = need(_first(local, "device", vm.port_id, 0.0), "device event")
    tap_at = min(tap_at, device[0])
    wired = need(_first(local, "wired", vm.port_id, device[0]), "wired event")
    report = need(_first(local, "report", vm.port_id, wired[0]), "ACTIVE report")
    heard = need(_first(local, "port", vm.port_id, report[0]), "delta with the ACTIVE port")
    batch_rev = int(heard[3])
    batch = need(
        next((b for b in server["batches"] if b["revision"] == batch_rev), None),
        f"hub batch {batch_rev}",
    )
    commits = [
        c["at"] for c in server["commits"] if batch["prev_revision"] < c["revision"] <= batch_rev
    ]
    committed = need(max(commits) if commits else None, f"commit in batch {batch_rev}")
    out: dict[str, Any] = {
        "revision": batch_rev,
        "tap": tap_at,
        "known": need(known, "delta with the new port"),
        "seen": device[0],
        "wired": wired[0],
        "committed": committed,
        "batched": batch["applied_at"],
        "members": {},
    }
    for host, events in remote.items():
        sent = need(
            next(
                (
                    s["at"]
                    for s in server["sent"]
                    if s["host"] == host and s["type"] == "delta" and s["revision"] == batch_rev
                ),
                None,
            ),
            f"delta {batch_rev} sent to {host}",
        )
        received = need(_first(events, "delta", batch_rev, 0.0), f"delta {batch_rev} at {host}")
        written = need(
            next(
                (
                    e
                    for e in events
                    if e[1] == "written" and int(e[2]) >= batch_rev and e[0] >= received[0]
                ),
                None,
            ),
            f"write of {batch_rev} at {host}",
        )
        out["members"][host] = {
            "sent": sent,
            "received": received[0],
            "written": written[0],
            "kernel": entries[host],
        }
    return out


def stages_of(st: dict[str, Any], hosts: Sequence[str]) -> dict[str, float]:
    """Seconds per stage along the path to the last of ``hosts`` to hold the entry, and
    ``end_to_end`` (their sum: tap -> that entry)."""
    last = max(hosts, key=lambda h: st["members"][h]["kernel"])
    chain = [st["tap"], st["seen"], st["wired"], st["committed"], st["batched"]]
    member = st["members"][last]
    chain += [member["sent"], member["received"], member["written"], member["kernel"]]
    out = {name: chain[i + 1] - chain[i] for i, name in enumerate(STAGE_NAMES)}
    out["end_to_end"] = chain[-1] - chain[0]
    return out


def _poll(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except LookupError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: {exc}") from None
            time.sleep(0.01)


def measure(
    bed: Testbed,
    network: str,
    host: str,
    remote_hosts: list[str],
    *,
    samples: int = 30,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """``samples`` activations, one at a time, of a new VM on ``host`` in ``network`` (a
    started l2pop testbed whose ``remote_hosts`` are members of it), each removed before
    the next; the per-stage and end-to-end figures (see the module docstring)."""
    kinds = {h: bed.kind_of(h).name for h in remote_hosts}
    if not isinstance(bed.control, L2popControlPlane):
        raise TypeError("activation stages need the l2pop control plane")
    api = bed.control.api
    vtep = bed.hosts[host].vtep_ip
    taps = TapWatch(bed.hosts[host].netns)
    watches: dict[str, EntryWatch] = {}
    rows: list[dict[str, Any]] = []
    removals: list[float] = []
    try:
        for h in remote_hosts:
            watches[h] = watch_for(bed, h)
        time.sleep(0.3)  # the monitors are listening (the OVS ones said so)
        after = int(api.trace()["revision"])
        for i in range(WARMUP + samples):
            started = time.monotonic()
            vm = bed.add_vm(f"act{i}", network, host, [f"198.19.250.{i + 1}"], wait=False)
            seen = wait_entries(watches, vm.mac, vtep, started + TIMEOUT_S)
            offset = time.time() - time.monotonic()  # wall -> monotonic
            entries = {h: s - offset for h, s in seen.items()}
            tap_at = taps.first(vm.tap, started)
            if tap_at is None:
                raise TimeoutError(f"no RTM_NEWLINK for {vm.tap} on {host}")

            def read(vm: Vm = vm, tap_at: float = tap_at, entries: dict[str, float] = entries,
                     after: int = after) -> dict[str, Any]:  # fmt: skip
                local = control_get(bed.hosts[host].netns, f"/agents/{host}/trace")["events"]
                remote = {
                    h: control_get(bed.hosts[h].netns, f"/agents/{h}/trace")["events"]
                    for h in remote_hosts
                }
                server = api.trace(after=after)
                return stamps(
                    vm, tap_at, local=local, remote=remote, server=server, entries=entries
                )

            st = _poll(f"{vm.name}: its telemetry", read, 5.0)
            st["api_call"] = started
            after = st["revision"]
            removed = _remove(bed, api, vm)
            if i >= WARMUP:
                rows.append(st)
                removals.append(removed)
    finally:
        taps.close()
        for watch in watches.values():
            watch.close()
    return result(rows, kinds, progress, removals)


def _remove(bed: Testbed, api: Client, vm: Vm) -> float:
    """Remove the VM and wait until every host applied its port's deletion; the seconds
    that took. Each activation then starts on a quiet host: when h1 leaves the network, its
    kernel deletes the bridge and the VXLAN device (tens of ms), which would otherwise fall
    into the next VM's ``seen`` stage."""
    bed.remove_vm(vm)
    start = time.monotonic()
    revision = api.revision
    if revision is not None:
        api.wait_revision(revision, TIMEOUT_S)
    return time.monotonic() - start


def result(
    rows: list[dict[str, Any]],
    kinds: dict[str, str],
    progress: Callable[[str], None] = print,
    removals: list[float] | None = None,
) -> dict[str, Any]:
    """The benchmark's result from each activation's ``stamps`` (``api_call`` added);
    ``removals``: each VM's removal, port deleted -> applied on every host (seconds)."""
    remote = sorted(kinds)
    per = [stages_of(st, remote) for st in rows]
    out: dict[str, Any] = {
        "samples": len(rows),
        "remote_members": len(remote),
        "remote_kinds": {
            k: sum(1 for v in kinds.values() if v == k) for k in sorted(set(kinds.values()))
        },
        "stages": [list(s) for s in STAGES],
        "end_to_end": summary([p["end_to_end"] for p in per]),
        "by_stage": {name: summary([p[name] for p in per]) for name in STAGE_NAMES},
        "api_to_tap": summary([st["tap"] - st["api_call"] for st in rows]),
        # how long after its tap appeared the agent heard of the port (0: before it)
        "port_known_after_tap": summary([max(0.0, st["known"] - st["tap"]) for st in rows]),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "from_api_call": summary(
            [max(m["kernel"] for m in st["members"].values()) - st["api_call"] for st in rows]
        ),
        "frr": FRR,
        "removal_applied": summary(removals) if removals else None,
        "activations": [{k: round(v * 1000, 3) for k, v in p.items()} for p in per],
    }
    if len(out["remote_kinds"]) > 1:
        by_kind = {}
        for kind in out["remote_kinds"]:
            mine = [h for h in remote if kinds[h] == kind]
            ks = [stages_of(st, mine) for st in rows]
            by_kind[kind] = {
                "end_to_end": summary([p["end_to_end"] for p in ks]),
                "by_stage": {name: summary([p[name] for p in ks]) for name in STAGE_NAMES},
            }
        out["by_kind"] = by_kind
    e2e = out["end_to_end"]
    progress(
        f"activation, tap -> last of {len(remote)} remote members: p50 {e2e['p50_ms']:.1f} ms, "
        f"p99 {e2e['p99_ms']:.1f} ms over {len(rows)} VMs (FRR: 77 / 82 ms from the first frame)"
    )
    return out


def run(
    hosts: int = 4,
    samples: int = 30,
    datapath: str = "linux",
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """A testbed of ``hosts`` hosts of ``datapath`` (``bench.flood.host_kinds``: linux, ovs
    or mixed), one network on every host (a resident VM on each but h1), then ``samples``
    activations on h1, timed stage by stage to every other host (at most ``MAX_SAMPLES``)."""
    if not 1 <= samples <= MAX_SAMPLES:
        raise ValueError(f"samples: {samples} is not between 1 and {MAX_SAMPLES}")
    from l2pop.bench.flood import host_kinds, kind_of

    if hosts < 2:
        raise ValueError("need at least 2 hosts")
    with Testbed(hosts, **host_kinds(datapath, hosts)) as bed:
        progress(f"{hosts} hosts ({datapath}), run prefix {bed.prefix}: resident VMs")
        bed.add_network("act", vni=4242)
        names = [f"h{i}" for i in range(1, hosts + 1)]
        for i, h in enumerate(names[1:], start=1):
            bed.add_vm(f"res{i}", "act", h, [f"198.19.251.{i}"])
        bed.control.wait_converged(30)
        out = measure(bed, "act", names[0], names[1:], samples=samples, progress=progress)
        out["agent_memory"] = agent_memory.read(bed)  # at the end of the run
        for line in agent_memory.lines(out["agent_memory"]):
            progress(line)
    out = {"hosts": hosts, "datapath": datapath, "local_kind": kind_of(datapath, "h1"), **out}
    return out


def show(r: dict[str, Any]) -> None:
    """The result as a table on stdout."""
    print(f"{r['hosts']} hosts ({r['datapath']}), {r['samples']} activations on h1")
    print(f"{'stage':<12}{'p50 ms':>9}{'p99 ms':>9}  ends when")
    for name, what in r["stages"]:
        s = r["by_stage"][name]
        print(f"{name:<12}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}  {what}")
    e = r["end_to_end"]
    print(f"{'end to end':<12}{e['p50_ms']:>9.2f}{e['p99_ms']:>9.2f}  tap -> last remote entry")
    a = r["from_api_call"]
    print(f"{'(API call)':<12}{a['p50_ms']:>9.2f}{a['p99_ms']:>9.2f}  API call -> last entry")
    k = r["port_known_after_tap"]
    print(f"(the agent heard of the port {k['p50_ms']:.2f} ms p50 after its tap appeared)")
    print(f"{'FRR EVPN':<12}{77.0:>9.2f}{82.0:>9.2f}  first frame -> remote kernels")
    for kind, k in (r.get("by_kind") or {}).items():
        e = k["end_to_end"]
        print(f"  to the last {kind} member: p50 {e['p50_ms']:.2f} ms, p99 {e['p99_ms']:.2f} ms")
    for line in agent_memory.lines(r.get("agent_memory")):
        print(line)


# -- the page (``l2pop bench report``) -----------------------------------------------------


def report_section(results: dict[str, dict[str, Any]]) -> list[str]:
    """``docs/benchmarks.md``'s "Activation, stage by stage" from the saved
    ``activation[-<datapath>]`` results (``results``: name -> saved envelope)."""
    from l2pop.bench.formatting import num, run_command, table
    from l2pop.bench.results import ACTIVATION_RESULTS

    lines = ["## Activation, stage by stage", ""]
    lines.append(
        "On the netns testbed (a real `l2pop server`, one real agent per host namespace), one "
        "network on every host, then new VMs on h1 one at a time (after two warm-up ones, not "
        "counted: an agent's first status call opens its HTTP connection). The clock starts "
        "when the "
        "VM's tap device appears (its first RTM_NEWLINK, read by a netlink listener like the "
        "agent's own, or the agent's finding it when that came first) and stops when the "
        "last remote member holds the VM's entry (a linux "
        "host's FDB entry as `bridge -timestamp monitor fdb` stamps it; an OVS host's "
        "table-40 flow as its flow monitor's line arrives). The steps between come from "
        "always-on bounded telemetry: the agents' event ring (control endpoint `/trace`) and "
        "the server's (`GET /v1/trace`), all on one `CLOCK_MONOTONIC`. Each activation is cut "
        "along its critical path (the member whose entry came last), so its stages add up to "
        "its end-to-end time; each p50/p99 is taken on its own (the p50s need not add up). "
        "p99 is nearest-rank: over fewer than 100 activations it is the largest. FRR EVPN's "
        "figure (77 ms p50 / 82 ms p99) starts later, at the VM's first frame."
    )
    lines.append("")
    present = [n for n in ACTIVATION_RESULTS if n in results]
    if not present:
        return [*lines, "_Not measured yet: run `l2pop bench activation --save`._", ""]
    for name in present:
        saved = results[name]
        r = saved["result"]
        kinds = ", ".join(f"{n} {k}" for k, n in (r.get("remote_kinds") or {}).items())
        lines += [f"### {r.get('hosts')} hosts, {r.get('datapath')}", "", run_command(saved), ""]
        lines.append(
            f"{num(r.get('samples'))} activations on h1 ({r.get('local_kind', '?')}), to "
            f"{num(r.get('remote_members'))} remote members ({kinds}); load average "
            f"{num(r.get('load_average_1m'), 2)} at the end of the run."
        )
        lines.append("")
        kinds_cols = list((r.get("by_kind") or {}).keys())
        header = ["stage", "ends when", "p50 ms", "p99 ms"]
        for k in kinds_cols:
            header += [f"to last {k}: p50", "p99"]
        rows = []
        for stage, what in r.get("stages", []):
            s = r["by_stage"][stage]
            row = [f"`{stage}`", what, num(s["p50_ms"], 2), num(s["p99_ms"], 2)]
            for k in kinds_cols:
                ks = r["by_kind"][k]["by_stage"][stage]
                row += [num(ks["p50_ms"], 2), num(ks["p99_ms"], 2)]
            rows.append(row)
        e = r["end_to_end"]
        row = ["**end to end**", "tap appears -> last remote entry"]
        row += [f"**{num(e['p50_ms'], 1)}**", f"**{num(e['p99_ms'], 1)}**"]
        for k in kinds_cols:
            ke = r["by_kind"][k]["end_to_end"]
            row += [num(ke["p50_ms"], 1), num(ke["p99_ms"], 1)]
        rows.append(row)
        filler = ["", ""] * len(kinds_cols)
        a = r["from_api_call"]
        api = [num(a["p50_ms"], 1), num(a["p99_ms"], 1), *filler]
        rows.append(["(from the API call)", "port created -> last remote entry", *api])
        rows.append(["FRR EVPN", "VM's first frame -> remote kernels", "77.0", "82.0", *filler])
        lines += [table(header, rows, "llrr" + "rr" * len(kinds_cols)), ""]
        lines += agent_memory.report_lines(r.get("agent_memory"))
        k = r.get("port_known_after_tap") or {}
        lines.append(
            f"`seen` includes waiting for the port itself: the testbed creates the port through "
            f"the API and then the veth, and the agent heard of the port "
            f"{num(k.get('p50_ms'), 1)} ms p50 ({num(k.get('p99_ms'), 1)} ms p99) after the "
            f"tap appeared (0 when before)."
        )
        rm = r.get("removal_applied")
        if rm:
            lines.append("")
            lines.append(
                f"Each VM is removed before the next starts, and the next waits until every "
                f"host applied the removal (`GET /v1/revisions/{{R}}?wait=`): "
                f"{num(rm.get('p50_ms'), 1)} ms p50, {num(rm.get('p99_ms'), 1)} ms p99. Most "
                f"of it is h1 leaving the network: its kernel deletes the network's bridge and "
                f"VXLAN device, tens of milliseconds of RCU grace periods that would otherwise "
                f"fall into the next VM's `seen` stage."
            )
        lines.append("")
    return lines
