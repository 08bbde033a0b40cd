"""Namespaces, devices and processes of a testbed run, and the clean-up of old runs.

Safety rules (docs/design.md, "Testing"; only documentation address ranges):

* Every run has a prefix ``l2p`` + 4 hex characters. Every namespace it makes is named
  ``<prefix>-<role>``; a device made outside a namespace would carry the prefix too (the
  testbed makes none: every veth is created with both ends inside its namespaces).
* Namespaces and devices are deleted by name, processes are stopped by the pid we started.
* Addresses come only from the documentation ranges: underlay 192.0.2.0/24 or
  198.18.0.0/16, VMs 198.19.0.0/16, 203.0.113.0/24 and 2001:db8::/32 (``check_address``).
* The root namespace gets no address and no route. The agents reach the server (a process in
  the root namespace on loopback) through ``Relay``: a TCP relay whose listening socket lives
  in the underlay namespace. (This machine's own LAN is 192.0.2.0/24 on eth0: a route for
  the testbed's underlay in the root namespace would hijack it.)

A run records itself in ``STATE_DIR/<prefix>.json`` (owner pid, server pid) so that
``l2pop testbed clean`` removes only leftovers of runs whose owner is gone.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from l2pop.datapath import _netns

#: per-run prefix: ``l2p`` + 4 hex characters (7 characters: room for a role in 15)
PREFIX_RE = re.compile(r"^l2p[0-9a-f]{4}$")
#: a namespace of a testbed run
TESTBED_NETNS_RE = re.compile(r"^(l2p[0-9a-f]{4})-(ul|h\d+|v\d+)$")
#: a device outside any namespace carrying a run prefix
TESTBED_DEVICE_RE = re.compile(r"^l2p[0-9a-f]{4}")
#: ``datapath._netns.throwaway`` names (datapath tests, kernel benchmark): prefix-pid-hex6
THROWAWAY_NETNS_RE = re.compile(r"^l2p[a-z]*-(\d+)-[0-9a-f]{6}$")
STATE_DIR = Path("/run/l2pop-testbed")

ALLOWED_NETS = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.18.0.0/16", "198.19.0.0/16", "203.0.113.0/24", "2001:db8::/32")
)


class TestbedError(Exception):
    """A testbed operation failed; the message names the command and its error."""


def new_prefix() -> str:
    """A fresh run prefix that no namespace uses yet."""
    taken = set(list_netns())
    while True:
        prefix = "l2p" + secrets.token_hex(2)
        record = STATE_DIR / f"{prefix}.json"
        if not record.exists() and not any(n.startswith(prefix + "-") for n in taken):
            return prefix


def check_address(address: str) -> None:
    """Refuse any address outside the documentation ranges the project may use."""
    ip = ipaddress.ip_interface(address).ip
    if not any(ip in net for net in ALLOWED_NETS):
        raise ValueError(f"{address} is outside the testbed's address ranges")


def prefixlen(ip: str) -> int:
    """The prefix length a VM address gets: /16 in 198.19.0.0/16, /24 in 203.0.113.0/24,
    /64 for IPv6."""
    addr = ipaddress.ip_address(ip)
    check_address(ip)
    if addr.version == 6:
        return 64
    if addr in ipaddress.ip_network("203.0.113.0/24") or addr in ipaddress.ip_network(
        "192.0.2.0/24"
    ):
        return 24
    return 16


# -- commands ---------------------------------------------------------------------------


def run(*args: str, check: bool = True, stdin: str | None = None, timeout: float = 30) -> str:
    """Run a command; returns stdout; raises ``TestbedError`` with stderr on failure."""
    proc = subprocess.run(
        list(args), input=stdin, capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise TestbedError(f"{' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def ip(netns: str, *args: str, check: bool = True) -> str:
    return run("ip", "-n", netns, *args, check=check)


def ip_batch(netns: str, lines: list[str]) -> None:
    """Several ``ip`` commands in one process (stops at the first error)."""
    if lines:
        run("ip", "-n", netns, "-batch", "-", stdin="\n".join(lines) + "\n")


def bridge_batch(netns: str, lines: list[str]) -> None:
    """Several ``bridge`` commands in one process (stops at the first error)."""
    if lines:
        run("bridge", "-n", netns, "-batch", "-", stdin="\n".join(lines) + "\n")


def bridge(netns: str, *args: str, check: bool = True) -> str:
    return run("bridge", "-n", netns, *args, check=check)


def in_netns(netns: str, *args: str, check: bool = True, timeout: float = 30) -> str:
    """Run a command inside ``netns`` (``ip netns exec``)."""
    return run("ip", "netns", "exec", netns, *args, check=check, timeout=timeout)


def sysctl(netns: str, **values: str | int) -> None:
    """``sysctl -w`` inside ``netns``; keys use ``__`` for dots (``net__ipv4__...``)."""
    args = [f"{k.replace('__', '.')}={v}" for k, v in values.items()]
    in_netns(netns, "sysctl", "-q", "-w", *args)


def list_netns() -> list[str]:
    out = run("ip", "-j", "netns", "list", check=False).strip()
    return [entry["name"] for entry in json.loads(out or "[]")]


def add_netns(name: str) -> None:
    run("ip", "netns", "add", name)
    ip(name, "link", "set", "lo", "up")


def delete_netns(name: str) -> None:
    """Kill what still runs in ``name`` (only processes a testbed started there), then
    delete it by name. Never fails when it is already gone."""
    for pid in netns_pids(name):
        kill_pid(pid)
    _netns.delete(name)


def netns_pids(name: str) -> list[int]:
    out = run("ip", "netns", "pids", name, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def kill_pid(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """SIGTERM the process we started, SIGKILL after ``timeout``; always reap it."""
    if proc is None:
        return
    if proc.poll() is None:
        kill_pid(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_pid(proc.pid)
            proc.wait()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the relay --------------------------------------------------------------------------


class Relay:
    """A TCP relay from ``listen`` inside namespace ``netns`` to ``target`` in the caller's
    (root) namespace: how agents on the underlay reach a server on the root's loopback.

    The listening socket is created inside the namespace (a socket keeps the namespace it
    was made in); the outgoing connections are made by threads in the root namespace.
    """

    def __init__(self, netns: str, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.netns = netns
        self.listen = listen
        self.target = target
        self._sock: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> Relay:
        fd = _netns.open_netns(self.netns)
        try:
            with _netns.entered(fd):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            os.close(fd)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(self.listen)
        sock.listen(128)
        self._sock = sock
        threading.Thread(target=self._accept, name="l2pop-relay", daemon=True).start()
        return self

    def _accept(self) -> None:
        assert self._sock is not None
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self._closed:
                client.close()
                upstream.close()
                return
            self._conns.update((client, upstream))
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        with self._lock:
            self._conns.difference_update((client, upstream))
        client.close()
        upstream.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Stop listening and cut every relayed connection."""
        with self._lock:
            self._closed = True
            conns = list(self._conns)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop the relayed connections but keep listening (a flapping link)."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


# -- run records and clean-up -------------------------------------------------------------


@dataclass
class RunRecord:
    """What ``l2pop testbed clean`` needs to know about a run."""

    prefix: str
    owner_pid: int
    server_pid: int | None = None
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


@dataclass
class Leftovers:
    netns: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    servers: list[int] = field(default_factory=list)
    records: list[RunRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # runs whose owner is alive

    def empty(self) -> bool:
        return not (self.netns or self.devices or self.servers or self.records)


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
    return out


def clean(leftovers: Leftovers) -> None:
    """Remove ``leftovers`` (from ``find_leftovers``), each by name or pid."""
    for pid in leftovers.servers:
        kill_pid(pid)
    for name in leftovers.netns:
        delete_netns(name)
    for name in leftovers.devices:
        run("ip", "link", "delete", "dev", name, check=False)
    for record in leftovers.records:
        record.remove()


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM in the body (teardown must not be cut short); main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
