"""Host kinds: what runs on a testbed host, how its VMs plug in, how its tables read back.

* ``LinuxHost``: a host namespace running ``l2pop agent --datapath linux``; a VM's veth has
  its host end ``tap<port id[:11]>`` in the host, which the agent wires to the network's
  bridge; the tables are read back from the kernel with iproute2 (``tables.py``).
* ``SwarmHosts``: no namespaces and no kernel: one ``l2pop agent-swarm`` process runs a
  memory-datapath agent per host, each with its own WebSocket; a "VM" is its port only, and
  the tables are read back from the swarm's control endpoint (``l2pop demo --simulate``).

* ``OvsHost`` (``ovshost.py``): a host namespace with its own Open vSwitch and
  ``l2pop agent --datapath ovs``; ``MixedHosts`` (``kinds.py``) puts kinds side by side in
  one testbed.

Design note: a host kind knows nothing of the control plane; the l2pop control plane asks
it to start agents (with the URL and tokens it made), the flood-and-learn one never does.
A new kind implements ``HostKind``: what its hosts need before any agent (``prepare``), its
agent, its plugging, its read-back, and the hand-made objects its datapath must leave alone.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

from l2pop.datapath import _netns
from l2pop.testbed import iproute, netns
from l2pop.testbed.agents import AgentSwarm, HostCredentials
from l2pop.testbed.nodes import Host, Run, Vm
from l2pop.testbed.tables import (
    FOREIGN_PORT,
    KernelMonitor,
    KernelNetwork,
    add_foreign,
    foreign_state,
    kernel_tables,
)
from l2pop.testbed.underlay import Underlay


class TableMonitor(Protocol):
    """What a host kind's ``monitor`` returns: changes to the datapath's entries between
    ``__enter__`` and ``__exit__``, keyed by MAC (FDB) or IP (neighbours)."""

    def __enter__(self) -> TableMonitor: ...

    def __exit__(self, *exc: object) -> None: ...

    def mentioning(self, *keys: str) -> list[str]: ...

    def touched(self, *keys: str) -> list[str]: ...

    def deleted(self, *keys: str) -> list[str]: ...


class HostKind(ABC):
    """What runs on a host (see the module docstring)."""

    #: short name, as in ``l2pop agent --datapath NAME``
    name: ClassVar[str]
    #: hosts and VMs are network namespaces on an underlay (needs root)
    namespaced: ClassVar[bool] = True

    def prepare(  # noqa: B027 (an optional hook: most kinds need nothing)
        self, hosts: Sequence[Host], everyone: Sequence[Host], run: Run, underlay: Underlay | None
    ) -> None:
        """Ready ``hosts`` (this kind's, built on the underlay, nothing running yet) before
        any control plane starts: whatever the datapath needs beside the agent (an OVS
        host's switch). ``everyone`` is every host of the testbed, of any kind, all built;
        undo steps go on ``run.teardown``. Nothing to do by default."""

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

    # hand-made objects and watching entries change: the kernel's, on a namespaced host

    def add_foreign(self, host: Host) -> None:
        """Hand-made objects the host's datapath must never touch (idempotent)."""
        add_foreign(self._netns(host))

    def foreign_state(self, host: Host) -> dict[str, bool]:
        """Whether each object of ``add_foreign`` is still there, unchanged."""
        return foreign_state(self._netns(host))

    def monitor(self, host: Host) -> TableMonitor:
        """A monitor of the datapath's entries on ``host`` (not yet entered)."""
        self.add_foreign(host)  # its bridge port carries the kernel monitor's markers
        return KernelMonitor(self._netns(host), FOREIGN_PORT)

    def _netns(self, host: Host) -> str:
        if not self.namespaced:
            raise RuntimeError(f"{self.name} hosts have no kernel of their own")
        return host.netns


# -- Linux hosts -------------------------------------------------------------------------


#: the port of each namespaced agent's control endpoint, on the loopback of its host's
#: namespace (every host has its own loopback, so one port serves them all)
AGENT_CONTROL_PORT = 9697


class AgentProcess(netns.ChildProcess):
    """``l2pop agent --datapath linux`` (or ``datapath_args``) inside a host's namespace;
    the pid is the agent's own (``ip netns exec`` execs it), so ``kill()`` is a real
    ``kill -9``. Its control endpoint listens on ``127.0.0.1:AGENT_CONTROL_PORT`` of that
    namespace; ``control(path)`` reads it from this process."""

    def __init__(
        self,
        host: Host,
        server_url: str,
        log_path: Path,
        heartbeat: float,
        datapath_args: Sequence[str] = ("--datapath", "linux"),
    ) -> None:
        self.host = host
        self.server_url = server_url
        self.log_path = log_path
        self.heartbeat = heartbeat
        self.datapath_args = list(datapath_args)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        assert self.host.token is not None
        cmd = ["ip", "netns", "exec", self.host.netns, sys.executable, "-m", "l2pop", "agent"]
        cmd += ["--server", self.server_url, "--host", self.host.name]
        cmd += ["--local-ip", self.host.vtep_ip, *self.datapath_args]
        cmd += ["--heartbeat-interval", str(self.heartbeat)]
        cmd += ["--control", f"127.0.0.1:{AGENT_CONTROL_PORT}"]
        env = {**os.environ, "L2POP_AGENT_TOKEN": self.host.token, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    def stop(self) -> None:
        self.stop_child()

    def control(self, path: str, timeout: float = 5.0) -> Any:
        """``GET path`` on the agent's control endpoint (JSON), over a socket made in the
        host's namespace; raises ``OSError`` when it does not answer, ``RuntimeError`` for a
        status other than 200."""
        return control_get(self.host.netns, path, timeout)


def control_get(netns_name: str, path: str, timeout: float = 5.0) -> Any:
    """``GET path`` on the agent control endpoint of namespace ``netns_name`` (JSON)."""
    conn = http.client.HTTPConnection("127.0.0.1", AGENT_CONTROL_PORT, timeout=timeout)
    fd = _netns.open_netns(netns_name)
    try:
        with _netns.entered(fd):  # the socket keeps the namespace it was made in
            conn.connect()
    finally:
        os.close(fd)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"agent control {path} in {netns_name}: {answer.status} {body!r}")
        return json.loads(body)
    finally:
        conn.close()


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
