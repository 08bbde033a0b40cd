"""The testbed's safety rules: run prefixes, namespace names, address ranges, processes.

Rules (docs/design.md, "Testing"; ADR 9):

* Every run has a prefix ``l2p`` + 4 hex characters. Every namespace it makes is named
  ``<prefix>-<role>``; a device made outside a namespace would carry the prefix too (the
  testbed makes none: every veth is created with both ends inside its namespaces).
* Namespaces and devices are deleted by name, processes are stopped by the pid we started.
* Addresses come only from the documentation ranges: underlay 192.0.2.0/24 or
  198.18.0.0/16, VMs 198.19.0.0/16, 203.0.113.0/24 and 2001:db8::/32 (``check_address``).
* The root namespace gets no address and no route. The agents reach the server (a process in
  the root namespace on loopback) through a TCP relay whose listening socket lives in the
  underlay namespace (``relay.py``). (This machine's own LAN is 192.0.2.0/24 on eth0: a
  route for the testbed's underlay in the root namespace would hijack it.)
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from l2pop.testbed.iproute import add_netns, list_netns, remove_netns, run

__all__ = [
    "ALLOWED_NETS",
    "PREFIX_RE",
    "STATE_DIR",
    "TESTBED_DEVICE_RE",
    "TESTBED_NETNS_RE",
    "THROWAWAY_NETNS_RE",
    "add_netns",
    "check_address",
    "delete_netns",
    "kill_pid",
    "list_netns",
    "netns_pids",
    "new_prefix",
    "pid_alive",
    "prefixlen",
    "signals_ignored",
    "stop_process",
]

#: per-run prefix: ``l2p`` + 4 hex characters (7 characters: room for a role in 15)
PREFIX_RE = re.compile(r"^l2p[0-9a-f]{4}$")
#: a namespace of a testbed run
TESTBED_NETNS_RE = re.compile(r"^(l2p[0-9a-f]{4})-(ul|h\d+|v\d+)$")
#: a device outside any namespace carrying a run prefix
TESTBED_DEVICE_RE = re.compile(r"^l2p[0-9a-f]{4}")
#: ``iproute.throwaway`` names (datapath tests, kernel benchmark): prefix-pid-hex6
THROWAWAY_NETNS_RE = re.compile(r"^l2p[a-z]*-(\d+)-[0-9a-f]{6}$")
#: where runs record themselves (``leftovers.RunRecord``)
STATE_DIR = Path("/run/l2pop-testbed")

ALLOWED_NETS = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.18.0.0/16", "198.19.0.0/16", "203.0.113.0/24", "2001:db8::/32")
)


def new_prefix() -> str:
    """A fresh run prefix that no namespace and no run record uses yet."""
    taken = set(list_netns())
    while True:
        prefix = "l2p" + secrets.token_hex(2)
        record = STATE_DIR / f"{prefix}.json"
        if not record.exists() and not any(n.startswith(prefix + "-") for n in taken):
            return prefix


# -- addresses ----------------------------------------------------------------------------


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


# -- namespaces and processes ---------------------------------------------------------------


def delete_netns(name: str) -> None:
    """Kill what still runs in ``name`` (only processes a testbed started there), then
    delete it by name. Never fails when it is already gone."""
    for pid in netns_pids(name):
        kill_pid(pid)
    remove_netns(name)


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


class ChildProcess:
    """A process this run started (``proc``), signalled only by its own pid.

    ``kill()`` is a real ``kill -9`` (no shutdown code runs, as in a crash) and reaps it;
    ``stop_child()`` is ``stop_process``. Both do nothing once the process has exited.
    """

    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.alive:
            kill_pid(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop_child(self, timeout: float = 5.0) -> None:
        stop_process(self.proc, timeout)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
