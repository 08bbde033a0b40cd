"""iproute2 from Python: ``ip`` and ``bridge`` commands inside a namespace, named namespaces.

Only the testbed, the benchmarks and the tests run these tools; the datapath itself speaks
netlink (``l2pop.datapath``) and keeps just what it needs to enter a namespace
(``datapath/_netns.py``).

``throwaway(prefix)`` makes a named namespace and always deletes it by name afterwards: the
datapath tests and the kernel benchmark use it so nothing outlives a run, even a failed one.
Its names (``prefix-PID-HEX6``) are what ``l2pop testbed clean`` recognises as leftovers.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


class TestbedError(RuntimeError):
    """A testbed command failed; the message names the command and its error."""

    __test__ = False  # not a pytest test class


def run(*args: str, check: bool = True, stdin: str | None = None, timeout: float = 30) -> str:
    """Run a command; returns stdout; raises ``TestbedError`` with stderr on failure."""
    proc = subprocess.run(
        list(args), input=stdin, capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise TestbedError(f"{' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


# -- commands in a namespace -------------------------------------------------------------


def ip(netns: str, *args: str, check: bool = True, stdin: str | None = None) -> str:
    """``ip -n NETNS ARGS`` (``-batch -`` reads ``stdin``); returns stdout."""
    return run("ip", "-n", netns, *args, check=check, stdin=stdin)


def bridge(netns: str, *args: str, check: bool = True, stdin: str | None = None) -> str:
    """``bridge -n NETNS ARGS``; returns stdout."""
    return run("bridge", "-n", netns, *args, check=check, stdin=stdin)


def ip_batch(netns: str, lines: list[str]) -> None:
    """Several ``ip`` commands in one process (stops at the first error)."""
    if lines:
        ip(netns, "-batch", "-", stdin="\n".join(lines) + "\n")


def bridge_batch(netns: str, lines: list[str]) -> None:
    """Several ``bridge`` commands in one process (stops at the first error)."""
    if lines:
        bridge(netns, "-batch", "-", stdin="\n".join(lines) + "\n")


def in_netns(netns: str, *args: str, check: bool = True, timeout: float = 30) -> str:
    """Run a command inside ``netns`` (``ip netns exec``)."""
    return run("ip", "netns", "exec", netns, *args, check=check, timeout=timeout)


def sysctl(netns: str, **values: str | int) -> None:
    """``sysctl -w`` inside ``netns``; keys use ``__`` for dots (``net__ipv4__...``)."""
    args = [f"{k.replace('__', '.')}={v}" for k, v in values.items()]
    in_netns(netns, "sysctl", "-q", "-w", *args)


# -- named namespaces --------------------------------------------------------------------


def list_netns() -> list[str]:
    """The names under /run/netns (``ip netns list``)."""
    out = run("ip", "-j", "netns", "list", check=False).strip()
    return [entry["name"] for entry in json.loads(out or "[]")]


def add_netns(name: str, *, loopback: bool = True) -> None:
    """``ip netns add NAME``, with its ``lo`` up unless ``loopback=False``."""
    run("ip", "netns", "add", name)
    if loopback:
        ip(name, "link", "set", "lo", "up")


def remove_netns(name: str) -> None:
    """``ip netns delete NAME``; no error when it is already gone."""
    run("ip", "netns", "delete", name, check=False)


def unique_name(prefix: str) -> str:
    """``prefix`` + this process's pid + 6 hex characters: unique per call."""
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"


@contextmanager
def throwaway(prefix: str) -> Iterator[str]:
    """A fresh named namespace (``lo`` down), deleted by name when the body ends, however
    it ends."""
    name = unique_name(prefix)
    add_netns(name, loopback=False)
    try:
        yield name
    finally:
        remove_netns(name)
