"""Control planes: who tells each testbed host what its datapath must hold.

* ``L2popControlPlane``: a real ``l2pop server`` (SQLite in the run's directory) on the
  root's loopback, reached by the agents through the underlay's relay (or directly when the
  hosts are not namespaces); every host registered over REST, its agent started by the host
  kind with its own token; networks and ports made through ``l2pop.client.Client``.
* ``FloodAndLearn`` (``floodlearn.py``): no server and no agent; the baseline l2pop
  replaces.

``Testbed`` talks to either through ``ControlPlane``; what only l2pop has (the server, the
agents' state, the desired tables) it reaches through ``Testbed.l2pop``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from typing import ClassVar, Protocol

from l2pop.client import Client
from l2pop.model import PortStatus
from l2pop.testbed.hosts import HostKind
from l2pop.testbed.nodes import Agent, Host, Network, Run, Vm, wait_for
from l2pop.testbed.process import ServerProcess
from l2pop.testbed.tables import KernelNetwork
from l2pop.testbed.underlay import Underlay
from l2pop.wire import HostFdb, HostOut, PortOut


class ControlPlane(Protocol):
    """What a testbed needs from a control plane; ``Testbed`` calls these in order:
    ``start``, then networks and ports as the caller makes them. An implementation
    subclasses it and writes every method but ``tables``."""

    #: the label reports use ("l2pop", "flood-and-learn")
    label: ClassVar[str]

    def start(
        self, run: Run, hosts: Sequence[Host], kind: HostKind, underlay: Underlay | None
    ) -> None:
        """Bring the control plane up for ``hosts`` (built, not yet running anything)."""

    def add_network(
        self, name: str, vni: int | None, arp_suppression: str, encap: str = "vxlan"
    ) -> Network: ...

    def add_port(
        self, name: str, network: Network, host: str, ips: list[str], mac: str | None
    ) -> tuple[str, str]:
        """A port bound to ``host``: (port id, MAC)."""

    def plugged(self, vm: Vm, host: Host) -> None:
        """The VM's device is in ``host`` now (after ``add_port`` or ``move_port``)."""

    def move_port(self, vm: Vm, host: str) -> None:
        """Bind the VM's port to ``host`` (its device left the old host already)."""

    def readdress_port(self, vm: Vm, ips: list[str]) -> None: ...

    def remove_port(self, vm: Vm) -> None: ...

    def wait_active(self, vm: Vm, timeout: float) -> None:
        """Until the VM's port is live on its host."""

    def wait_converged(self, timeout: float) -> None:
        """Until every host holds what it must."""

    def tables(self, host: Host, kind: HostKind) -> dict[int, KernelNetwork]:
        """What ``host`` holds, read back; the host kind's datapath made it by default."""
        return kind.tables(host)


class L2popControlPlane(ControlPlane):
    """The l2pop server and one agent per host (see the module docstring)."""

    label = "l2pop"

    def __init__(self) -> None:
        self._server: ServerProcess | None = None
        self._api: Client | None = None
        self._run: Run | None = None
        self._kind: HostKind | None = None
        self.hosts: dict[str, Host] = {}
        self.agent_url = ""

    @property
    def server(self) -> ServerProcess:
        if self._server is None:
            raise RuntimeError("the l2pop server is not started")
        return self._server

    @property
    def api(self) -> Client:
        """The admin's REST client on the server."""
        if self._api is None:
            raise RuntimeError("the l2pop server is not started")
        return self._api

    def start(
        self, run: Run, hosts: Sequence[Host], kind: HostKind, underlay: Underlay | None
    ) -> None:
        self.start_server(run, underlay)
        self.start_agents(hosts, kind)
        run.log(f"server {self.server.url} (agents use {self.agent_url}), agents up")

    def start_server(self, run: Run, underlay: Underlay | None) -> None:
        """The server, and the URL agents reach it at (the relay on a namespaced run)."""
        self._run = run
        server = ServerProcess(
            f"sqlite:///{run.workdir / 'l2pop.db'}",
            admin_token=secrets.token_urlsafe(18),
            log_path=run.workdir / "server.log",
        )
        run.teardown.push(server.stop)
        self._server = server.start()
        if underlay is not None:
            underlay.note_server(server.pid)
            self.agent_url = underlay.relay_to(server.port)
        else:
            self.agent_url = server.url
        self._api = server.api()
        run.teardown.push(self._api.close)

    def start_agents(self, hosts: Sequence[Host], kind: HostKind) -> None:
        """Register every host (its token), start their agents, wait until connected."""
        assert self._run is not None
        self._kind = kind
        for host in hosts:
            host.token = self.api.create_host(host.name, host.vtep_ip).token
            self.hosts[host.name] = host
        kind.start_agents(hosts, self.agent_url, self._run)
        self.wait_connected()

    # -- agents -------------------------------------------------------------------------

    def start_agent(self, name: str, *, wait: bool = True) -> Agent:
        """Start ``name``'s agent again (after ``kill_agent``); returns it."""
        assert self._run is not None and self._kind is not None
        host = self.hosts[name]
        if host.agent is not None and host.agent.alive:
            raise RuntimeError(f"the agent of {name} is running")
        self._kind.start_agent(host, self.agent_url, self._run)
        assert host.agent is not None
        if wait:
            self.wait_connected([name])
        return host.agent

    def wait_connected(self, names: Iterable[str] | None = None, timeout: float = 30) -> None:
        wanted = list(names or self.hosts)

        def check() -> bool:
            for name in wanted:
                agent = self.hosts[name].agent
                if agent is not None and not agent.alive:
                    raise RuntimeError(f"agent of {name} exited; see {agent.log_path}")
            state = {h.name: h for h in self.api.hosts()}
            return all(state[n].connected for n in wanted)

        wait_for(f"agents of {', '.join(wanted)} to connect", check, timeout)

    # -- what the server says -------------------------------------------------------------

    def host_fdb(self, name: str) -> HostFdb:
        """The server's desired state for host ``name``."""
        return self.api.host_fdb(name)

    def host_status(self, name: str) -> HostOut:
        """Connected, applied revision, in sync, errors of host ``name``."""
        return self.api.host(name)

    def port(self, vm: Vm) -> PortOut:
        return self.api.port(vm.port_id)

    # -- networks and ports ---------------------------------------------------------------

    def add_network(
        self, name: str, vni: int | None, arp_suppression: str, encap: str = "vxlan"
    ) -> Network:
        out = self.api.create_network(
            name=name, vni=vni, arp_suppression=arp_suppression, encap=encap
        )
        return Network(out.id, name, out.vni, out.arp_suppression, out.encap.value)

    def add_port(
        self, name: str, network: Network, host: str, ips: list[str], mac: str | None
    ) -> tuple[str, str]:
        out = self.api.create_port(network.id, fixed_ips=ips, mac=mac, name=name, host=host)
        return out.id, out.mac

    def plugged(self, vm: Vm, host: Host) -> None:
        """Nothing to do: the host's agent finds the VM's device and wires it."""

    def move_port(self, vm: Vm, host: str) -> None:
        self.api.update_port(vm.port_id, host=host)

    def readdress_port(self, vm: Vm, ips: list[str]) -> None:
        self.api.update_port(vm.port_id, fixed_ips=ips)

    def remove_port(self, vm: Vm) -> None:
        self.api.delete_port(vm.port_id)

    def wait_active(self, vm: Vm, timeout: float) -> None:
        def active() -> bool:
            port = self.port(vm)
            return port.status == PortStatus.ACTIVE and port.host == vm.host

        wait_for(f"port of {vm.name} ACTIVE on {vm.host}", active, timeout)

    def wait_converged(self, timeout: float) -> None:
        """Every bound port ACTIVE and every host with a live agent in sync."""

        def converged() -> bool:
            ports = self.api.ports()
            if any(p.host and p.status != PortStatus.ACTIVE for p in ports):
                return False
            live = {n for n, h in self.hosts.items() if h.agent is not None and h.agent.alive}
            return all(h.connected and h.in_sync for h in self.api.hosts() if h.name in live)

        wait_for("ports ACTIVE and hosts in sync", converged, timeout)
