"""Run records and the clean-up of runs that are over (``l2pop testbed clean``).

A run records itself in ``STATE_DIR/<prefix>.json`` (owner pid, server pid, the pid files
of its Open vSwitch daemons) so that ``l2pop testbed clean`` removes only leftovers of runs
whose owner is gone: namespaces with a run prefix or the throwaway pattern, root devices
carrying a run prefix, the server a dead run recorded, and the ovsdb-server/ovs-vswitchd
processes named by its pid files, each by name or pid. Nothing outside those patterns is
looked at. (Deleting a run's host namespace kills what runs in it too; the pid files also
catch a daemon whose namespace is already gone.)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from l2pop.testbed.iproute import list_netns, run
from l2pop.testbed.netns import (
    PREFIX_RE,
    STATE_DIR,
    TESTBED_DEVICE_RE,
    TESTBED_NETNS_RE,
    THROWAWAY_NETNS_RE,
    delete_netns,
    kill_pid,
    pid_alive,
)


@dataclass
class RunRecord:
    """What ``l2pop testbed clean`` needs to know about a run."""

    prefix: str
    owner_pid: int
    server_pid: int | None = None
    pidfiles: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    @property
    def path(self) -> Path:
        return STATE_DIR / f"{self.prefix}.json"

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.__dict__))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    @classmethod
    def load_all(cls) -> dict[str, RunRecord]:
        records = {}
        for path in STATE_DIR.glob("l2p*.json"):
            try:
                data = json.loads(path.read_text())
                record = cls(**data)
            except (OSError, ValueError, TypeError):
                continue
            if PREFIX_RE.match(record.prefix):
                records[record.prefix] = record
        return records


def _is_our_server(pid: int) -> bool:
    """Whether ``pid`` still is an ``l2pop server`` (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"l2pop" in cmdline and b"server" in cmdline


def _recorded_daemon(pidfile: str) -> int | None:
    """The pid in ``pidfile`` if it still is an OVS daemon (guards against pid reuse)."""
    try:
        pid = int(Path(pidfile).read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm in ("ovsdb-server", "ovs-vswitchd") else None


@dataclass
class Leftovers:
    netns: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    servers: list[int] = field(default_factory=list)
    daemons: list[int] = field(default_factory=list)  # OVS daemons named by pid files
    records: list[RunRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # runs whose owner is alive

    def empty(self) -> bool:
        return not (self.netns or self.devices or self.servers or self.daemons or self.records)


def find_leftovers(*, force: bool = False) -> Leftovers:
    """Namespaces, root devices, server processes and records of runs that are over
    (owner process gone), or of every run with ``force``. Nothing outside our patterns."""
    records = RunRecord.load_all()
    live = {p for p, r in records.items() if pid_alive(r.owner_pid) and not force}
    out = Leftovers()
    for name in list_netns():
        m = TESTBED_NETNS_RE.match(name)
        if m:
            if m.group(1) in live:
                out.skipped.append(name)
            else:
                out.netns.append(name)
            continue
        t = THROWAWAY_NETNS_RE.match(name)
        if t:
            if pid_alive(int(t.group(1))) and not force:
                out.skipped.append(name)
            else:
                out.netns.append(name)
    links = json.loads(run("ip", "-j", "link", "show", check=False) or "[]")
    for link in links:
        name = link.get("ifname", "")
        if TESTBED_DEVICE_RE.match(name) and name[:7] not in live:
            out.devices.append(name)
    for prefix, record in records.items():
        if prefix in live:
            continue
        out.records.append(record)
        if record.server_pid and pid_alive(record.server_pid) and _is_our_server(record.server_pid):
            out.servers.append(record.server_pid)
        for pidfile in record.pidfiles:
            pid = _recorded_daemon(pidfile)
            if pid is not None:
                out.daemons.append(pid)
    return out


def clean(leftovers: Leftovers) -> None:
    """Remove ``leftovers`` (from ``find_leftovers``), each by name or pid."""
    for pid in (*leftovers.servers, *leftovers.daemons):
        kill_pid(pid)
    for name in leftovers.netns:
        delete_netns(name)
    for name in leftovers.devices:
        run("ip", "link", "delete", "dev", name, check=False)
    for record in leftovers.records:
        record.remove()
