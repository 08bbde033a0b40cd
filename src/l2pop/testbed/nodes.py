"""The pieces of a testbed: hosts, networks, VMs, agent processes, topologies.

``Topology`` describes hosts, networks and VM placement once, so the demo can build the
same topology on an l2pop testbed and on a flood-and-learn baseline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from l2pop.testbed import netns as nsx

if TYPE_CHECKING:
    from l2pop.testbed.bed import Testbed

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
    """(VTEP per host, the relay's address, prefix length)."""
    if hosts <= 250:
        return [f"192.0.2.{i}" for i in range(1, hosts + 1)], "192.0.2.254", 24
    return [f"198.18.{i // 250}.{i % 250 + 1}" for i in range(hosts)], "198.18.255.254", 16


@dataclass
class Host:
    name: str
    index: int
    netns: str
    vtep_ip: str
    token: str | None = None
    agent: AgentProcess | None = None


@dataclass
class Network:
    id: str
    name: str
    vni: int
    arp_suppression: str


@dataclass
class Vm:
    """A VM: its namespace, its port and where it is plugged."""

    name: str
    netns: str
    network: Network
    host: str
    mac: str
    ips: list[str]
    port_id: str

    @property
    def tap(self) -> str:
        return "tap" + self.port_id[:11]

    @property
    def ipv4(self) -> str | None:
        return next((i for i in self.ips if ":" not in i), None)

    @property
    def ipv6(self) -> str | None:
        return next((i for i in self.ips if ":" in i), None)


class AgentProcess:
    """``l2pop agent --datapath linux`` inside a host's namespace; the pid is the agent's
    own (``ip netns exec`` execs it), so ``kill()`` is a real ``kill -9``."""

    def __init__(self, host: Host, server_url: str, log_path: Path, heartbeat: float) -> None:
        self.host = host
        self.server_url = server_url
        self.log_path = log_path
        self.heartbeat = heartbeat
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        assert self.host.token is not None
        cmd = ["ip", "netns", "exec", self.host.netns, sys.executable, "-m", "l2pop", "agent"]
        cmd += ["--server", self.server_url, "--host", self.host.name]
        cmd += ["--local-ip", self.host.vtep_ip, "--datapath", "linux"]
        cmd += ["--heartbeat-interval", str(self.heartbeat)]
        env = {**os.environ, "L2POP_AGENT_TOKEN": self.host.token, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """``kill -9`` by pid: no shutdown code runs, the kernel keeps its state."""
        if self.alive:
            assert self.proc is not None
            nsx.kill_pid(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        nsx.stop_process(self.proc)


@dataclass
class VmSpec:
    name: str
    network: str
    host: str
    ips: list[str]
    mac: str | None = None


@dataclass
class NetworkSpec:
    name: str
    vni: int
    arp_suppression: str = "neigh_suppress"


@dataclass
class Topology:
    """Hosts, networks and VM placement, buildable on either kind of testbed."""

    hosts: int
    networks: list[NetworkSpec]
    vms: list[VmSpec] = field(default_factory=list)

    def build(self, bed: Testbed) -> None:
        for net in self.networks:
            bed.add_network(net.name, vni=net.vni, arp_suppression=net.arp_suppression)
        for vm in self.vms:
            bed.add_vm(vm.name, vm.network, vm.host, vm.ips, mac=vm.mac, wait=False)
        bed.wait_converged()

    def members(self, network: str) -> set[str]:
        return {vm.host for vm in self.vms if vm.network == network}
