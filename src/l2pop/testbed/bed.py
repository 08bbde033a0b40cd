"""``Testbed``: hosts and VMs as network namespaces on one machine, with real l2pop processes.

Topology of one run with prefix P (``l2p`` + 4 hex)::

    root namespace:  l2pop server on 127.0.0.1:PORT (SQLite in the run's directory)
    P-ul             underlay bridge ``ulbr0`` with 192.0.2.254/24, where a relay (a socket
                     of this process) forwards TCP PORT to the server
    P-hN             host N: ``ul0`` (192.0.2.N/24, veth into ulbr0), the l2pop agent
                     (``ip netns exec P-hN l2pop agent --datapath linux``), its bridges,
                     VXLAN devices and the VMs' tap devices
    P-vK             VM K: ``eth0``, the veth peer of ``tap<port id[:11]>`` in its host,
                     with the port's MAC and fixed IPs

More than 250 hosts use 198.18.0.0/16 for the underlay. ``flood_and_learn=True`` builds the
same topology without server and agents: per network a bridge ``brfl-V`` and a learning
VXLAN device ``vxfl-V`` on every host whose flood list holds every other host's VTEP, which
is what Linux VXLAN does without L2 population (head-end replication).

Teardown (``teardown()``, the context manager, atexit and SIGTERM/SIGHUP) stops the
processes it started by pid and deletes every namespace by name; it is idempotent.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from l2pop.testbed import netns as nsx
from l2pop.testbed.capture import Capture
from l2pop.testbed.nodes import (
    AgentProcess,
    Host,
    Network,
    NetworkSpec,
    Topology,
    Vm,
    VmSpec,
    underlay_addresses,
    wait_for,
)
from l2pop.testbed.process import ServerProcess
from l2pop.testbed.tables import (
    FOREIGN_PORT,
    KernelMonitor,
    KernelNetwork,
    add_foreign,
    foreign_state,
    kernel_tables,
)

__all__ = [
    "AgentProcess",
    "Host",
    "Network",
    "NetworkSpec",
    "Testbed",
    "Topology",
    "Vm",
    "VmSpec",
    "underlay_addresses",
    "wait_for",
]

MAX_HOSTS = 5000
UNDERLAY_BRIDGE = "ulbr0"
UNDERLAY_MTU = 9000


class Testbed:
    """N hosts and their VMs in namespaces; see the module docstring. Use as a context
    manager, or call ``start()`` and ``teardown()``."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        hosts: int = 4,
        *,
        flood_and_learn: bool = False,
        workdir: Path | None = None,
        prefix: str | None = None,
        heartbeat: float = 2.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"hosts must be 1..{MAX_HOSTS}")
        self.n_hosts = hosts
        self.flood_and_learn = flood_and_learn
        self.prefix = prefix or ""
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="l2pop-testbed-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.heartbeat = heartbeat
        self.log = log or (lambda _msg: None)
        self.hosts: dict[str, Host] = {}
        self.networks: dict[str, Network] = {}
        self.vms: dict[str, Vm] = {}
        self.server: ServerProcess | None = None
        self.relay: nsx.Relay | None = None
        self.api: httpx.Client | None = None
        self.underlay = ""
        self.relay_ip = ""
        self.agent_url = ""
        self._netns: list[str] = []
        self._captures: list[Capture] = []
        self._record: nsx.RunRecord | None = None
        self._next_vm = 0
        self._started = self._torn_down = False
        self._old_handlers: dict[int, Any] = {}
        self._lock = threading.Lock()
        self.bridge_prefix, self.vxlan_prefix = (
            ("brfl-", "vxfl-") if flood_and_learn else ("brvx-", "vxlan-")
        )

    # -- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> Testbed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def start(self) -> Testbed:
        if self._started:
            return self
        self._started = True
        if os.geteuid() != 0:
            raise PermissionError("the testbed needs root (network namespaces)")
        for tool in ("ip", "bridge", "ping", "tcpdump"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not installed (scripts/bootstrap installs it)")
        self.prefix = self.prefix or nsx.new_prefix()
        if not nsx.PREFIX_RE.match(self.prefix):
            raise ValueError(f"bad run prefix {self.prefix!r}")
        self._record = nsx.RunRecord(self.prefix, os.getpid())
        self._record.save()
        atexit.register(self.teardown)
        self._install_signal_handlers()
        try:
            self._build_underlay()
            if not self.flood_and_learn:
                self._start_control_plane()
        except BaseException:
            self.teardown()
            raise
        return self

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, _frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                self._old_handlers[sig] = signal.signal(sig, handler)

    def teardown(self) -> None:
        """Stop every process we started (by pid), delete every namespace (by name)."""
        with self._lock:
            if self._torn_down:
                return
            self._torn_down = True
        steps: list[Callable[[], None]] = [cap.kill for cap in self._captures]
        steps += [h.agent.stop for h in self.hosts.values() if h.agent is not None]
        for closer in (self.api, self.relay, self.server):
            if closer is not None:
                steps.append(closer.stop if isinstance(closer, ServerProcess) else closer.close)
        steps += [functools.partial(nsx.delete_netns, name) for name in reversed(self._netns)]
        if self._record is not None:
            steps.append(self._record.remove)
        if self._own_workdir:
            steps.append(lambda: shutil.rmtree(self.workdir, ignore_errors=True))
        with nsx.signals_ignored():
            for step in steps:  # each one runs, whatever the others did
                try:
                    step()
                except Exception as exc:
                    self.log(f"teardown: {exc}")
        with contextlib.suppress(Exception):
            atexit.unregister(self.teardown)
        if threading.current_thread() is threading.main_thread():
            for sig, old in self._old_handlers.items():
                signal.signal(sig, old)

    def _add_netns(self, role: str) -> str:
        name = f"{self.prefix}-{role}"
        self._netns.append(name)  # recorded first: deleted even if the rest fails
        nsx.add_netns(name)
        return name

    # -- underlay and hosts ---------------------------------------------------------------

    def _build_underlay(self) -> None:
        vteps, self.relay_ip, plen = underlay_addresses(self.n_hosts)
        for address in (*vteps, self.relay_ip):
            nsx.check_address(address)
        self.underlay = ul = self._add_netns("ul")
        nsx.sysctl(
            ul, net__ipv6__conf__all__disable_ipv6=1, net__ipv6__conf__default__disable_ipv6=1
        )
        lines = [f"link add {UNDERLAY_BRIDGE} type bridge"]
        lines.append(f"link set {UNDERLAY_BRIDGE} mtu {UNDERLAY_MTU} up")
        lines.append(f"addr add {self.relay_ip}/{plen} dev {UNDERLAY_BRIDGE}")
        nsx.ip_batch(ul, lines)
        lines = []
        for i, vtep in enumerate(vteps, start=1):
            name = f"h{i}"
            host_ns = self._add_netns(name)
            # IPv6 stays on (the ND tables live on the bridges) but no device of a host gets
            # an address of its own: no DAD, router solicitation or MLD noise to flood.
            nsx.sysctl(
                host_ns,
                net__ipv6__conf__all__addr_gen_mode=1,
                net__ipv6__conf__default__addr_gen_mode=1,
            )
            lines.append(
                f"link add {name} mtu {UNDERLAY_MTU} type veth peer name ul0 netns {host_ns}"
            )
            lines.append(f"link set {name} master {UNDERLAY_BRIDGE} up")
            self.hosts[name] = Host(name, i, host_ns, vtep)
            if len(lines) >= 400:
                nsx.ip_batch(ul, lines)
                lines = []
        nsx.ip_batch(ul, lines)
        for host in self.hosts.values():
            nsx.ip_batch(
                host.netns,
                [f"link set ul0 mtu {UNDERLAY_MTU} up", f"addr add {host.vtep_ip}/{plen} dev ul0"],
            )
        self.log(f"underlay {ul}: {len(self.hosts)} hosts on bridge {UNDERLAY_BRIDGE}")

    def _start_control_plane(self) -> None:
        admin = secrets.token_urlsafe(18)
        self.server = ServerProcess(
            f"sqlite:///{self.workdir / 'l2pop.db'}",
            admin_token=admin,
            log_path=self.workdir / "server.log",
        )
        self.server.start()
        assert self._record is not None
        self._record.server_pid = self.server.pid
        self._record.save()
        self.relay = nsx.Relay(
            self.underlay, (self.relay_ip, self.server.port), ("127.0.0.1", self.server.port)
        ).start()
        self.agent_url = f"http://{self.relay_ip}:{self.server.port}"
        self.api = self.server.client()
        for host in self.hosts.values():
            body = self._ok(
                self.api.post("/v1/hosts", json={"name": host.name, "vtep_ip": host.vtep_ip})
            )
            host.token = body["token"]
        for host in self.hosts.values():
            self.start_agent(host.name, wait=False)
        self.wait_connected()
        self.log(f"server {self.server.url} (agents use {self.agent_url}), agents up")

    def start_agent(self, host: str, *, wait: bool = True) -> AgentProcess:
        h = self.hosts[host]
        if h.agent is not None and h.agent.alive:
            raise RuntimeError(f"the agent of {host} is running")
        h.agent = AgentProcess(
            h, self.agent_url, self.workdir / f"agent-{host}.log", self.heartbeat
        ).start()
        if wait:
            self.wait_connected([host])
        return h.agent

    def kill_agent(self, host: str) -> None:
        agent = self.hosts[host].agent
        if agent is not None:
            agent.kill()

    def wait_connected(self, hosts: Iterable[str] | None = None, timeout: float = 30) -> None:
        names = list(hosts or self.hosts)

        def check() -> bool:
            for name in names:
                agent = self.hosts[name].agent
                if agent is not None and not agent.alive:
                    raise RuntimeError(f"agent of {name} exited; see {agent.log_path}")
            state = {h["name"]: h for h in self._ok(self._api.get("/v1/hosts"))}
            return all(state[n]["connected"] for n in names)

        wait_for(f"agents of {', '.join(names)} to connect", check, timeout)

    # -- REST helpers -----------------------------------------------------------------

    @property
    def _api(self) -> httpx.Client:
        if self.api is None:
            raise RuntimeError("a flood-and-learn testbed has no server")
        return self.api

    @staticmethod
    def _ok(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise nsx.TestbedError(
                f"{response.request.method} {response.request.url.path}: "
                f"{response.status_code} {response.text}"
            )
        return response.json() if response.content else None

    def host_fdb(self, host: str) -> dict[str, Any]:
        """The server's desired state for ``host`` (``GET /v1/hosts/{name}/fdb``)."""
        return dict(self._ok(self._api.get(f"/v1/hosts/{host}/fdb")))

    def host_status(self, host: str) -> dict[str, Any]:
        """``GET /v1/hosts/{name}``: connected, applied_revision, in_sync..."""
        return dict(self._ok(self._api.get(f"/v1/hosts/{host}")))

    def wait_converged(self, timeout: float = 30) -> None:
        """Every bound port ACTIVE and every host with a live agent in sync."""
        if self.flood_and_learn:
            return

        def check() -> bool:
            ports = self._ok(self._api.get("/v1/ports"))
            if any(p["host"] and p["status"] != "ACTIVE" for p in ports):
                return False
            hosts = self._ok(self._api.get("/v1/hosts"))
            live = {n for n, h in self.hosts.items() if h.agent is not None and h.agent.alive}
            return all(h["connected"] and h["in_sync"] for h in hosts if h["name"] in live)

        wait_for("ports ACTIVE and hosts in sync", check, timeout)

    # -- networks and VMs -----------------------------------------------------------------

    def add_network(
        self, name: str, *, vni: int | None = None, arp_suppression: str = "neigh_suppress"
    ) -> Network:
        if self.flood_and_learn:
            if vni is None:
                vni = 1000 + len(self.networks) + 1
            net = Network(f"flood-{vni}", name, vni, "learning")
            for host in self.hosts.values():
                self._flood_devices(host, vni)
        else:
            body: dict[str, Any] = {"name": name, "arp_suppression": arp_suppression}
            if vni is not None:
                body["vni"] = vni
            data = self._ok(self._api.post("/v1/networks", json=body))
            net = Network(data["id"], name, data["vni"], data["arp_suppression"])
        self.networks[name] = net
        return net

    def _flood_devices(self, host: Host, vni: int) -> None:
        br, vx = f"brfl-{vni}", f"vxfl-{vni}"
        lines = [
            f"link add {br} type bridge",
            f"link add {vx} type vxlan id {vni} local {host.vtep_ip} dstport 4789 learning",
            f"link set {vx} master {br}",
            f"link set {vx} up",
            f"link set {br} up",
        ]
        nsx.ip_batch(host.netns, lines)
        flood = [
            f"fdb append 00:00:00:00:00:00 dev {vx} dst {other.vtep_ip}"
            for other in self.hosts.values()
            if other is not host
        ]
        nsx.bridge_batch(host.netns, flood)

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
        """A VM on ``host`` in ``network``: the port (l2pop: created bound, via the API),
        the VM's namespace and the veth whose host end is the port's tap."""
        net = network if isinstance(network, Network) else self.networks[network]
        for address in ips:
            nsx.check_address(address)
        if self.flood_and_learn:
            port_id = secrets.token_hex(16)
            mac = mac or "fa:16:3e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        else:
            body: dict[str, Any] = {"network_id": net.id, "name": name, "fixed_ips": ips}
            body["host"] = host
            if mac:
                body["mac"] = mac
            data = self._ok(self._api.post("/v1/ports", json=body))
            port_id, mac = data["id"], data["mac"]
        self._next_vm += 1
        vm_ns = self._add_netns(f"v{self._next_vm}")
        vm = Vm(name, vm_ns, net, host, mac, list(ips), port_id)
        self.vms[name] = vm
        self._plug(vm, self.hosts[host])
        if wait:
            self.wait_active(vm)
        return vm

    def _plug(self, vm: Vm, host: Host) -> None:
        """A fresh veth: ``tap...`` in the host, ``eth0`` (MAC, addresses, up) in the VM."""
        nsx.ip(host.netns, "link", "add", vm.tap, "type", "veth", "peer", "name", "eth0",
               "netns", vm.netns)  # fmt: skip
        lines = [f"link set eth0 address {vm.mac} addrgenmode none", "link set eth0 up"]
        lines += self._addr_lines(vm.ips)
        nsx.ip_batch(vm.netns, lines)
        if self.flood_and_learn:
            nsx.ip(host.netns, "link", "set", vm.tap, "master", f"brfl-{vm.network.vni}", "up")

    @staticmethod
    def _addr_lines(ips: list[str]) -> list[str]:
        lines = []
        for address in ips:
            extra = " nodad" if ":" in address else ""
            lines.append(f"addr add {address}/{nsx.prefixlen(address)} dev eth0{extra}")
        return lines

    def port(self, vm: Vm) -> dict[str, Any]:
        return dict(self._ok(self._api.get(f"/v1/ports/{vm.port_id}")))

    def wait_active(self, vm: Vm, timeout: float = 20) -> None:
        if self.flood_and_learn:
            return
        wait_for(
            f"port of {vm.name} ACTIVE on {vm.host}",
            lambda: (p := self.port(vm))["status"] == "ACTIVE" and p["host"] == vm.host,
            timeout,
        )

    def move_vm(self, vm: Vm, host: str, *, wait: bool = True) -> None:
        """Migrate: delete the VM's veth on its host, ``PATCH host``, plug a new veth into
        ``host``."""
        old, new = self.hosts[vm.host], self.hosts[host]
        nsx.ip(old.netns, "link", "del", vm.tap)
        if not self.flood_and_learn:
            self._ok(self._api.patch(f"/v1/ports/{vm.port_id}", json={"host": host}))
        vm.host = host
        self._plug(vm, new)
        if wait:
            self.wait_active(vm)

    def readdress_vm(self, vm: Vm, ips: list[str]) -> None:
        """Give the VM new fixed IPs: in the VM, then ``PATCH fixed_ips``."""
        for address in ips:
            nsx.check_address(address)
        nsx.ip_batch(vm.netns, ["addr flush dev eth0", *self._addr_lines(ips)])
        if not self.flood_and_learn:
            self._ok(self._api.patch(f"/v1/ports/{vm.port_id}", json={"fixed_ips": ips}))
        vm.ips = list(ips)

    def remove_vm(self, vm: Vm) -> None:
        if not self.flood_and_learn:
            self._ok(self._api.delete(f"/v1/ports/{vm.port_id}"))
        nsx.delete_netns(vm.netns)
        with contextlib.suppress(ValueError):
            self._netns.remove(vm.netns)
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
            nsx.ip(vm.netns, "neigh", "flush", "all")

    def kernel_tables(self, host: str) -> dict[int, KernelNetwork]:
        return kernel_tables(self.hosts[host].netns, self.bridge_prefix, self.vxlan_prefix)

    def capture(self, name: str = "underlay") -> Capture:
        """A capture of VXLAN packets on the underlay bridge (use as a context manager)."""
        cap = Capture(self.underlay, UNDERLAY_BRIDGE, self.workdir / f"{name}.pcap")
        self._captures.append(cap)
        return cap

    def add_foreign(self, host: str) -> None:
        """Hand-made devices and entries outside every project prefix (``tables``)."""
        add_foreign(self.hosts[host].netns)

    def foreign_state(self, host: str) -> dict[str, bool]:
        """Whether each hand-made object of ``add_foreign`` is still there."""
        return foreign_state(self.hosts[host].netns)

    def monitor(self, host: str) -> KernelMonitor:
        """``ip monitor neigh`` + ``bridge monitor fdb`` in ``host`` (context manager)."""
        self.add_foreign(host)
        return KernelMonitor(self.hosts[host].netns, FOREIGN_PORT)
