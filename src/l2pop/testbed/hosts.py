"""Host kinds: what runs on a testbed host, how its VMs plug in, how its tables read back.

* ``LinuxHost``: a host namespace running ``l2pop agent --datapath linux``; a VM's veth has
  its host end ``tap<port id[:11]>`` in the host, which the agent wires to the network's
  bridge; the tables are read back from the kernel with iproute2 (``tables.py``).
* ``SwarmHosts``: no namespaces and no kernel: one ``l2pop agent-swarm`` process runs a
  memory-datapath agent per host, each with its own WebSocket; a "VM" is its port only, and
  the tables are read back from the swarm's control endpoint (``l2pop demo --simulate``).

Design note: a host kind knows nothing of the control plane; the l2pop control plane asks
it to start agents (with the URL and tokens it made), the flood-and-learn one never does.
A new kind (an Open vSwitch host) implements ``HostKind``: its agent, its plugging, its
read-back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from l2pop.testbed import iproute, netns
from l2pop.testbed.agents import AgentSwarm, HostCredentials
from l2pop.testbed.nodes import Host, Run, Vm
from l2pop.testbed.tables import KernelNetwork, kernel_tables


class HostKind(ABC):
    """What runs on a host (see the module docstring)."""

    #: short name, as in ``l2pop agent --datapath NAME``
    name: ClassVar[str]
    #: hosts and VMs are network namespaces on an underlay (needs root)
    namespaced: ClassVar[bool] = True

    @abstractmethod
    def start_agents(self, hosts: Sequence[Host], server_url: str, run: Run) -> None:
        """Start the agent of every host (``host.token`` set) without waiting for it to
        connect; set ``host.agent``."""

    def start_agent(self, host: Host, server_url: str, run: Run) -> None:
        """Start (or restart) the agent of one host."""
        raise NotImplementedError(f"{self.name} hosts cannot start one agent alone")

    @abstractmethod
    def plug(self, vm: Vm, host: Host) -> None:
        """Connect the VM (its namespace exists) to ``host``."""

    @abstractmethod
    def unplug(self, vm: Vm, host: Host) -> None:
        """Disconnect the VM from ``host`` (its port stays)."""

    @abstractmethod
    def tables(self, host: Host) -> dict[int, KernelNetwork]:
        """VNI -> what ``host``'s datapath holds, read back without the agent's help."""


# -- Linux hosts -------------------------------------------------------------------------


class AgentProcess(netns.ChildProcess):
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

    def stop(self) -> None:
        self.stop_child()


class LinuxHost(HostKind):
    """A host namespace with the linux datapath agent (see the module docstring)."""

    name = "linux"
    #: the device names ``LinuxDatapath`` uses by default
    bridge_prefix, vxlan_prefix = "brvx-", "vxlan-"

    def __init__(self, heartbeat: float = 2.0) -> None:
        self.heartbeat = heartbeat

    def start_agents(self, hosts: Sequence[Host], server_url: str, run: Run) -> None:
        for host in hosts:
            self.start_agent(host, server_url, run)

    def start_agent(self, host: Host, server_url: str, run: Run) -> None:
        log_path = run.workdir / f"agent-{host.name}.log"
        agent = AgentProcess(host, server_url, log_path, self.heartbeat)
        run.teardown.push(agent.stop)
        host.agent = agent.start()

    def plug(self, vm: Vm, host: Host) -> None:
        """A fresh veth: ``tap...`` in the host, ``eth0`` in the VM."""
        iproute.ip(host.netns, "link", "add", vm.tap, "type", "veth", "peer", "name", "eth0",
                   "netns", vm.netns)  # fmt: skip

    def unplug(self, vm: Vm, host: Host) -> None:
        iproute.ip(host.netns, "link", "del", vm.tap)

    def tables(self, host: Host) -> dict[int, KernelNetwork]:
        return kernel_tables(host.netns, self.bridge_prefix, self.vxlan_prefix)


# -- memory-datapath agents in one swarm process -------------------------------------------


class SwarmHosts(HostKind):
    """Every host's agent in one ``l2pop agent-swarm`` process (see the module docstring)."""

    name = "memory"
    namespaced = False

    def __init__(self, process_name: str = "agents") -> None:
        self.process_name = process_name
        self._swarm: AgentSwarm | None = None

    @property
    def swarm(self) -> AgentSwarm:
        """The swarm process, for its control endpoint (tables, stats)."""
        if self._swarm is None:
            raise RuntimeError("the agents are not started")
        return self._swarm

    def start_agents(self, hosts: Sequence[Host], server_url: str, run: Run) -> None:
        creds = []
        for host in hosts:
            assert host.token is not None
            creds.append(HostCredentials(host.name, host.vtep_ip, host.token))
        swarm = AgentSwarm(server_url, creds, run.workdir, name=self.process_name)
        run.teardown.push(swarm.stop)
        self._swarm = swarm.start()
        for host in hosts:
            host.agent = swarm

    def plug(self, vm: Vm, host: Host) -> None:
        """Nothing to plug: the memory datapath takes a bound port as present."""

    def unplug(self, vm: Vm, host: Host) -> None:
        """Nothing to unplug."""

    def tables(self, host: Host) -> dict[int, KernelNetwork]:
        out = {}
        for net in self.swarm.tables(host.name)["networks"]:
            out[net["vni"]] = KernelNetwork(
                net["vni"],
                bridge="",
                vxlan="",
                mode=net["arp_suppression"],
                flood=sorted(net["flood"]),
                fdb={e["mac"]: e["vtep"] for e in net["fdb"]},
                neigh={e["ip"]: e["mac"] for e in net["neigh"]},
            )
        return out
