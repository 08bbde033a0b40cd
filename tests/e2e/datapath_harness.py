"""Helpers for the datapath tests: datapaths of each kind, namespaces, kernel monitors.

Every namespace is made with a per-run prefix and deleted by name at teardown (the
``throwaway`` context), whatever the test did. Addresses: VTEPs in 192.0.2.0/24, VM
addresses in 198.19.0.0/16 and 2001:db8::/32.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pytest

from l2pop.datapath import _netns
from l2pop.datapath.abc import Datapath
from l2pop.datapath.memory import MemoryDatapath
from l2pop.testbed.tables import KernelMonitor

RUN_PREFIX = "l2pt"
VTEP = "192.0.2.1"
ROOT_REASON = "needs root (network namespaces, bridge and vxlan devices); run the e2e tests as root"


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip(ROOT_REASON)


@dataclass
class Rig:
    """A datapath under test; ``netns`` is its namespace (None for the memory one)."""

    datapath: Datapath
    netns: str | None = None


def make_rig(kind: str, stack: ExitStack, **options: str) -> Rig:
    """A fresh datapath of ``kind`` ("memory" or "linux"), torn down by ``stack``."""
    if kind == "memory":
        return Rig(MemoryDatapath())
    need_root()
    from l2pop.datapath.linux import LinuxDatapath

    netns = stack.enter_context(_netns.throwaway(RUN_PREFIX))
    datapath = LinuxDatapath(VTEP, netns=netns, **options)
    stack.callback(datapath.close)
    return Rig(datapath, netns)


def mac(i: int, prefix: int = 0x02) -> str:
    return ":".join(f"{b:02x}" for b in (prefix, 0, (i >> 16) & 255, (i >> 8) & 255, i & 255, 1))


def vm_ip(i: int) -> str:
    """Even i: IPv4 in 198.19.0.0/16; odd i: IPv6 in 2001:db8::/32."""
    return f"198.19.{(i // 250) % 250}.{i % 250 + 1}" if i % 2 == 0 else f"2001:db8::{i:x}"


def ip(netns: str, *args: str) -> str:
    return _netns.ip(netns, *args)


def bridge(netns: str, *args: str) -> str:
    return _netns.bridge(netns, *args)


def foreign_devices(netns: str) -> None:
    """A bridge, a port and entries made by hand, without the datapath's prefixes."""
    ip(netns, "link", "add", "fbr0", "type", "bridge")
    ip(netns, "link", "add", "fv0", "type", "veth", "peer", "name", "fv1")
    ip(netns, "link", "set", "fv0", "master", "fbr0", "up")
    ip(netns, "link", "set", "fbr0", "up")
    bridge(netns, "fdb", "add", "02:ff:00:00:00:01", "dev", "fv0", "master", "static")
    ip(netns, "neigh", "add", "198.19.250.1", "lladdr", "02:ff:00:00:00:01", "dev", "fbr0",
       "nud", "permanent")  # fmt: skip


def kernel_monitor(netns: str) -> KernelMonitor:
    """The testbed's netlink monitor, with markers on the foreign port ``fv0`` (needs
    ``foreign_devices``)."""
    return KernelMonitor(netns, "fv0")


@contextmanager
def vm(netns_host: str, tap: str, address: str, address6: str) -> Iterator[str]:
    """A 'VM': a namespace whose eth0 is the peer of ``tap`` in ``netns_host``."""
    with _netns.throwaway(RUN_PREFIX + "vm") as netns:
        ip(netns_host, "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", netns)
        ip(netns, "link", "set", "eth0", "address", "02:00:00:00:00:aa", "up")
        ip(netns, "addr", "add", address, "dev", "eth0")
        ip(netns, "addr", "add", address6, "dev", "eth0", "nodad")
        yield netns
