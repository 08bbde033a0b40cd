"""Network namespaces for the linux datapath, its tests and its benchmark.

``entered(fd)`` switches the *calling thread* into a namespace and back (netns is per
thread; Python 3.11 has no ``os.setns``, so libc's is called through ctypes). Sockets keep
the namespace they were created in, so a datapath whose sockets are made inside
``entered`` works there from any thread.

``throwaway(prefix)`` makes a named namespace (``ip netns add``) and always deletes it by
name afterwards; tests and benchmarks use it so nothing outlives a run, even a failed one.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def open_netns(name: str | None) -> int:
    """A file descriptor of namespace ``name`` (under /run/netns), or of the calling
    thread's namespace when ``name`` is None. The caller closes it."""
    path = "/proc/thread-self/ns/net" if name is None else os.path.join(NETNS_RUN_DIR, name)
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


@contextmanager
def entered(fd: int) -> Iterator[None]:
    """Run the body with the calling thread in the namespace of ``fd``."""
    own = open_netns(None)
    try:
        _setns(fd)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def add(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)


def delete(name: str) -> None:
    """Delete namespace ``name`` by name; no error when it is already gone."""
    subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


def unique_name(prefix: str) -> str:
    """``prefix`` + a per-run tag: short enough for device-free use, unique per call."""
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"


@contextmanager
def throwaway(prefix: str) -> Iterator[str]:
    """A fresh named namespace, deleted by name when the body ends (however it ends)."""
    name = unique_name(prefix)
    add(name)
    try:
        yield name
    finally:
        delete(name)


def ip(netns: str, *args: str, check: bool = True, stdin: str | None = None) -> str:
    """Run ``ip -n NETNS ARGS`` (``ip -batch`` via ``stdin``); returns stdout."""
    return _tool("ip", netns, args, check, stdin)


def bridge(netns: str, *args: str, check: bool = True, stdin: str | None = None) -> str:
    """Run ``bridge -n NETNS ARGS``; returns stdout."""
    return _tool("bridge", netns, args, check, stdin)


def _tool(tool: str, netns: str, args: tuple[str, ...], check: bool, stdin: str | None) -> str:
    proc = subprocess.run(
        [tool, "-n", netns, *args], input=stdin, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{tool} -n {netns} {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout
