"""What a testbed is made of: hosts, networks, VMs, the agent handle, and what a run shares.

Plain data; the parts that act on it (``underlay``, ``hosts``, ``controlplane``,
``floodlearn``, ``bed``) import it, and it imports none of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from l2pop.datapath.abc import tap_name
from l2pop.testbed.teardown import Teardown

T = TypeVar("T")


def wait_for(what: str, predicate: Callable[[], T | None], timeout: float = 20.0) -> T:
    """Poll ``predicate`` until it returns something truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def underlay_addresses(hosts: int) -> tuple[list[str], str, int]:
    """(VTEP per host, the relay's address, prefix length): 192.0.2.0/24 up to 250 hosts,
    198.18.0.0/16 beyond."""
    if hosts <= 250:
        return [f"192.0.2.{i}" for i in range(1, hosts + 1)], "192.0.2.254", 24
    return [f"198.18.{i // 250}.{i % 250 + 1}" for i in range(hosts)], "198.18.255.254", 16


@dataclass(frozen=True)
class Run:
    """What every part of one testbed run shares."""

    workdir: Path  # databases, logs, captures
    teardown: Teardown
    log: Callable[[str], None]


class Agent(Protocol):
    """A running agent (or a process running several): stopped by the pid we started."""

    log_path: Path

    @property
    def pid(self) -> int: ...

    @property
    def alive(self) -> bool: ...

    def kill(self) -> None:
        """``kill -9``: no shutdown code runs, the datapath keeps its state."""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go; always reaped."""


@dataclass
class Host:
    """A hypervisor: ``netns`` is its namespace ("" when hosts are not namespaces)."""

    name: str
    index: int
    netns: str
    vtep_ip: str
    token: str | None = None
    agent: Agent | None = None


@dataclass
class Network:
    id: str
    name: str
    vni: int
    arp_suppression: str
    encap: str = "vxlan"  # vxlan | gre (how its frames cross the underlay)


@dataclass
class Vm:
    """A VM: its namespace ("" when VMs are ports only), its port and where it is plugged."""

    name: str
    netns: str
    network: Network
    host: str
    mac: str
    ips: list[str]
    port_id: str

    @property
    def tap(self) -> str:
        """The host end of the VM's veth, named as the agents expect it."""
        return tap_name(self.port_id)

    @property
    def ipv4(self) -> str | None:
        return next((i for i in self.ips if ":" not in i), None)

    @property
    def ipv6(self) -> str | None:
        return next((i for i in self.ips if ":" in i), None)
