"""Entering a network namespace, for the linux datapath.

``entered(fd)`` switches the *calling thread* into a namespace and back (netns is per
thread; Python 3.11 has no ``os.setns``, so libc's is called through ctypes). Sockets keep
the namespace they were created in, so a datapath whose sockets are made inside
``entered`` works there from any thread.

Making and deleting namespaces, and the iproute2 commands the tests and benchmarks run in
them, live in ``l2pop.testbed.iproute``: the datapath itself only enters one.
"""

from __future__ import annotations

import ctypes
import os
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
