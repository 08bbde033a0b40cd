"""``Testbed``: hosts and VMs on one machine, with a control plane and a kind of host.

A testbed is put together from three parts:

* the underlay (``underlay.py``): the run's namespaces, the underlay bridge, the hosts'
  veths and the relay to the server, all undone by name or pid (``teardown.py``);
* a control plane (``controlplane.py``): l2pop (a real server, one agent per host; the
  default) or ``FloodAndLearn`` (``floodlearn.py``, no server);
* a host kind (``hosts.py``): ``LinuxHost`` (``l2pop agent --datapath linux`` in each host
  namespace; the default), ``OvsHost`` (``ovshost.py``: a private Open vSwitch and
  ``l2pop agent --datapath ovs`` in each host namespace) or ``SwarmHosts`` (memory-datapath
  agents in one process, no namespaces and no root); hosts of several namespaced kinds mix
  in one testbed (``kinds``, ``kinds.py``).

    with Testbed(4) as bed:                          # l2pop on Linux hosts
        bed.add_network("blue", vni=1001)
        a = bed.add_vm("a", "blue", "h1", ["198.19.1.1"])
        b = bed.add_vm("b", "blue", "h2", ["198.19.1.2"])
        assert bed.ping(a, "198.19.1.2")

    with Testbed(4, kinds={"h3": "ovs", "h4": "ovs"}) as bed:   # two of each
        bed.add_network("gre", vni=1002, encap="gre")           # OVS hosts only
        bed.restart_vswitchd("h3")                              # a fault: flows are lost

A VM is a namespace whose ``eth0`` is the peer of a tap in its host, with the port's MAC and
fixed IPs (only a port with ``SwarmHosts``). Teardown (``teardown()``, the context manager,
atexit and SIGTERM/SIGHUP) stops the processes it started by pid and deletes every
namespace by name; it is idempotent.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from l2pop.testbed import iproute, netns
from l2pop.testbed.capture import Capture
from l2pop.testbed.controlplane import ControlPlane, L2popControlPlane
from l2pop.testbed.hosts import HostKind, TableMonitor
from l2pop.testbed.kinds import MixedHosts, host_kinds
from l2pop.testbed.nodes import Agent, Host, Network, Run, Vm, underlay_addresses
from l2pop.testbed.ovs import OvsInstance
from l2pop.testbed.ovshost import OvsHost
from l2pop.testbed.tables import KernelNetwork
from l2pop.testbed.teardown import Teardown
from l2pop.testbed.underlay import Underlay
from l2pop.wire import HostFdb, HostOut, PortOut

MAX_HOSTS = 5000


class Testbed:
    """N hosts and their VMs; see the module docstring. Use as a context manager, or call
    ``start()`` and ``teardown()``."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        hosts: int = 4,
        *,
        control: ControlPlane | None = None,
        kind: HostKind | str | None = None,
        kinds: Mapping[str, HostKind | str] | None = None,
        workdir: Path | None = None,
        prefix: str | None = None,
        heartbeat: float = 2.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"hosts must be 1..{MAX_HOSTS}")
        self.n_hosts = hosts
        self.control = control or L2popControlPlane()
        #: every host's kind: ``kind`` (a HostKind or its name; default linux) but for the
        #: hosts ``kinds`` names (a ``MixedHosts`` then)
        self.kind = host_kinds(kind, kinds, hosts, heartbeat)
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="l2pop-testbed-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.run = Run(self.workdir, Teardown(log), log or (lambda _msg: None))
        self.underlay = Underlay(self.run, prefix or "") if self.kind.namespaced else None
        self.hosts: dict[str, Host] = {}
        self.networks: dict[str, Network] = {}
        self.vms: dict[str, Vm] = {}
        self._next_vm = 0
        self._opened = self._started = False

    # -- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> Testbed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    @property
    def prefix(self) -> str:
        """The run prefix of every namespace ("" when hosts are not namespaces)."""
        return self.underlay.prefix if self.underlay is not None else ""

    def start(self) -> Testbed:
        """``open()``, then the control plane (server and agents for l2pop)."""
        if self._started:
            return self
        self.open()
        self._started = True
        try:
            self.control.start(self.run, list(self.hosts.values()), self.kind, self.underlay)
        except BaseException:
            self.teardown()
            raise
        return self

    def open(self) -> Testbed:
        """The hosts, with no agent on them yet: the underlay and host namespaces when the
        host kind is namespaced, else just names and VTEP addresses; then what the host
        kind needs before its agents (``HostKind.prepare``: an OVS host's switch)."""
        if self._opened:
            return self
        self._opened = True
        self.run.teardown.arm()
        if self._own_workdir:
            self.run.teardown.push(lambda: shutil.rmtree(self.workdir, ignore_errors=True))
        try:
            if self.underlay is not None:
                self.underlay.open()
                hosts = self.underlay.build(self.n_hosts)
            else:
                vteps = underlay_addresses(self.n_hosts)[0]
                hosts = [Host(f"h{i}", i, "", v) for i, v in enumerate(vteps, start=1)]
            self.hosts = {h.name: h for h in hosts}
            self.kind.prepare(hosts, hosts, self.run, self.underlay)
        except BaseException:
            self.teardown()
            raise
        return self

    def teardown(self) -> None:
        """Stop every process we started (by pid), delete every namespace (by name)."""
        self.run.teardown.run()

    # -- l2pop: agents and what the server says ---------------------------------------------

    @property
    def l2pop(self) -> L2popControlPlane:
        """The l2pop control plane (server, agents); an error on the baseline."""
        if not isinstance(self.control, L2popControlPlane):
            raise RuntimeError(f"a {self.control.label} testbed has no l2pop server")
        return self.control

    def start_agent(self, host: str, *, wait: bool = True) -> Agent:
        return self.l2pop.start_agent(host, wait=wait)

    def kill_agent(self, host: str) -> None:
        agent = self.hosts[host].agent
        if agent is not None:
            agent.kill()

    def wait_connected(self, hosts: Iterable[str] | None = None, timeout: float = 30) -> None:
        self.l2pop.wait_connected(hosts, timeout)

    def host_fdb(self, host: str) -> HostFdb:
        """The server's desired state for ``host``: flood list, FDB and neighbours per network."""
        return self.l2pop.host_fdb(host)

    def host_status(self, host: str) -> HostOut:
        """What the server knows of ``host``: connected, applied_revision, in_sync, errors."""
        return self.l2pop.host_status(host)

    def port(self, vm: Vm) -> PortOut:
        return self.l2pop.port(vm)

    def wait_converged(self, timeout: float = 30) -> None:
        """Every bound port ACTIVE and every host with a live agent in sync (l2pop)."""
        self.control.wait_converged(timeout)

    def wait_active(self, vm: Vm, timeout: float = 20) -> None:
        self.control.wait_active(vm, timeout)

    # -- networks and VMs -----------------------------------------------------------------

    def add_network(
        self,
        name: str,
        *,
        vni: int | None = None,
        arp_suppression: str = "neigh_suppress",
        encap: str = "vxlan",
    ) -> Network:
        """A network; ``encap`` vxlan or gre (only OVS hosts carry GRE)."""
        net = self.control.add_network(name, vni, arp_suppression, encap)
        self.networks[name] = net
        return net

    def add_vm(
        self,
        name: str,
        network: str | Network,
        host: str,
        ips: list[str],
        *,
        mac: str | None = None,
        wait: bool = True,
    ) -> Vm:
        """A VM on ``host`` in ``network``: its port (created bound), its namespace and the
        veth whose host end is the port's tap."""
        net = network if isinstance(network, Network) else self.networks[network]
        for address in ips:
            netns.check_address(address)
        port_id, mac = self.control.add_port(name, net, host, ips, mac)
        self._next_vm += 1
        vm_ns = self.underlay.add_netns(f"v{self._next_vm}") if self.underlay else ""
        vm = Vm(name, vm_ns, net, host, mac, list(ips), port_id)
        self.vms[name] = vm
        self._plug(vm, self.hosts[host])
        if wait:
            self.wait_active(vm)
        return vm

    def _plug(self, vm: Vm, host: Host) -> None:
        """Plug the VM into ``host``; in a VM namespace, bring ``eth0`` up addressed."""
        self.kind.plug(vm, host)
        if vm.netns:
            lines = [f"link set eth0 address {vm.mac} addrgenmode none", "link set eth0 up"]
            iproute.ip_batch(vm.netns, lines + _addr_lines(vm.ips))
        self.control.plugged(vm, host)

    def move_vm(self, vm: Vm, host: str, *, wait: bool = True) -> None:
        """Migrate: unplug the VM from its host, bind its port to ``host``, plug it there."""
        self.kind.unplug(vm, self.hosts[vm.host])
        self.control.move_port(vm, host)
        vm.host = host
        self._plug(vm, self.hosts[host])
        if wait:
            self.wait_active(vm)

    def readdress_vm(self, vm: Vm, ips: list[str]) -> None:
        """Give the VM new fixed IPs: in the VM, then on its port."""
        for address in ips:
            netns.check_address(address)
        if vm.netns:
            iproute.ip_batch(vm.netns, ["addr flush dev eth0", *_addr_lines(ips)])
        self.control.readdress_port(vm, ips)
        vm.ips = list(ips)

    def remove_vm(self, vm: Vm) -> None:
        """Delete the VM's port, then its namespace."""
        self.control.remove_port(vm)
        if self.underlay is not None and vm.netns:
            self.underlay.remove_netns(vm.netns)
        self.vms.pop(vm.name, None)

    # -- traffic and read-back ----------------------------------------------------------

    def ping(self, vm: Vm, address: str, *, count: int = 1, timeout: float = 2.0) -> bool:
        return self.ping_many([(vm, address)], count=count, timeout=timeout)[0]

    def ping_many(
        self, pairs: list[tuple[Vm, str]], *, count: int = 1, timeout: float = 2.0
    ) -> list[bool]:
        """Ping each (VM, address) concurrently; True where every echo came back."""
        procs = []
        for vm, address in pairs:
            cmd = ["ip", "netns", "exec", vm.netns, "ping", "-n", "-q", "-c", str(count)]
            cmd += ["-i", "0.2", "-W", str(timeout), address]
            procs.append(
                subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        return [proc.wait() == 0 for proc in procs]

    def flush_neigh(self, vms: Iterable[Vm] | None = None) -> None:
        """Empty the VMs' neighbour caches (ARP and ND): the next packet resolves afresh."""
        for vm in vms if vms is not None else self.vms.values():
            iproute.ip(vm.netns, "neigh", "flush", "all")

    def kernel_tables(self, host: str) -> dict[int, KernelNetwork]:
        """What ``host``'s datapath holds for each VNI, read back."""
        return self.control.tables(self.hosts[host], self.kind)

    def capture(self, name: str = "underlay") -> Capture:
        """A capture of VXLAN and GRE packets on the underlay bridge (a context manager)."""
        return self._underlay.capture(self.workdir / f"{name}.pcap")

    def add_foreign(self, host: str) -> None:
        """Hand-made objects ``host``'s datapath must leave alone: devices and entries
        outside every project prefix (``tables``), and on an OVS host a bridge, a port,
        flows, a group and an external_id beside the agent's (``ovstables``)."""
        self.kind.add_foreign(self.hosts[host])

    def foreign_state(self, host: str) -> dict[str, bool]:
        """Whether each hand-made object of ``add_foreign`` is still there."""
        return self.kind.foreign_state(self.hosts[host])

    def monitor(self, host: str) -> TableMonitor:
        """Changes to ``host``'s entries (context manager): ``ip monitor neigh`` + ``bridge
        monitor fdb`` on a linux host, ``ovs-ofctl monitor`` on an OVS host."""
        return self.kind.monitor(self.hosts[host])

    # -- host kinds and Open vSwitch --------------------------------------------------------

    def kind_of(self, host: str) -> HostKind:
        """The kind of ``host`` (linux, ovs, ...)."""
        if host not in self.hosts:
            raise KeyError(f"the testbed has no host {host!r}")
        return self.kind.of(host) if isinstance(self.kind, MixedHosts) else self.kind

    def _ovs_kind(self, host: str) -> OvsHost:
        kind = self.kind_of(host)
        if not isinstance(kind, OvsHost):
            raise RuntimeError(f"{host} is a {kind.name} host, not an Open vSwitch one")
        return kind

    def ovs(self, host: str) -> OvsInstance:
        """The Open vSwitch of OVS host ``host`` (for ``vsctl``/``ofctl``/``appctl``)."""
        return self._ovs_kind(host).ovs(host)

    def restart_vswitchd(self, host: str) -> None:
        """A fault: restart ovs-vswitchd on OVS host ``host``. Bridges and ports come back
        from OVSDB, flows do not (the agent must write them again); the underlay's
        neighbours are restored by the testbed."""
        self._ovs_kind(host).restart_vswitchd(self.hosts[host])

    def vswitchd_rss_kib(self, host: str) -> int:
        """ovs-vswitchd's resident memory on OVS host ``host`` (KiB)."""
        return self._ovs_kind(host).vswitchd_rss_kib(self.hosts[host])

    @property
    def _underlay(self) -> Underlay:
        if self.underlay is None:
            raise RuntimeError(f"{self.kind.name} hosts have no underlay")
        return self.underlay


def _addr_lines(ips: list[str]) -> list[str]:
    """``ip addr add`` lines for a VM's ``eth0`` (IPv6 without duplicate detection)."""
    lines = []
    for address in ips:
        extra = " nodad" if ":" in address else ""
        lines.append(f"addr add {address}/{netns.prefixlen(address)} dev eth0{extra}")
    return lines
