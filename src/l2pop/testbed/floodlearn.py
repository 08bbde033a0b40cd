"""The flood-and-learn baseline: Linux VXLAN without L2 population, no server, no agent.

Per network, every host gets a bridge ``brfl-V`` and a *learning* VXLAN device ``vxfl-V``
whose flood list holds every other host's VTEP (a static full mesh: head-end replication);
a VM's tap is enslaved to the bridge as it is plugged. MACs are learned from the traffic
and ARP/ND is broadcast to every host, members or not: what l2pop removes, measured on the
same topology by the demo and the flood benchmark.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from l2pop.testbed import iproute
from l2pop.testbed.controlplane import ControlPlane
from l2pop.testbed.floodlearn_ovs import OvsFloodLearn
from l2pop.testbed.hosts import HostKind
from l2pop.testbed.kinds import MixedHosts
from l2pop.testbed.nodes import Host, Network, Run, Vm
from l2pop.testbed.ovshost import OvsHost
from l2pop.testbed.tables import KernelNetwork, kernel_tables
from l2pop.testbed.underlay import Underlay

BRIDGE_PREFIX, VXLAN_PREFIX = "brfl-", "vxfl-"
#: the VNI of the first network made without one: 1001, then 1002...
FIRST_VNI = 1001
VXLAN_PORT = 4789


def random_mac() -> str:
    """A locally administered MAC in the range OpenStack uses for ports (fa:16:3e)."""
    return "fa:16:3e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


class FloodAndLearn(ControlPlane):
    """Learning VXLAN devices with a static full-mesh flood list (see the module docstring)."""

    label = "flood-and-learn"

    def __init__(self) -> None:
        self.hosts: list[Host] = []
        self._networks = 0
        self._ovs: OvsFloodLearn | None = None
        self._ovs_hosts: set[str] = set()

    def start(
        self, run: Run, hosts: Sequence[Host], kind: HostKind, underlay: Underlay | None
    ) -> None:
        if underlay is None or not kind.namespaced:
            raise ValueError("flood-and-learn needs host namespaces on an underlay")
        self.hosts = list(hosts)
        instances = {}
        for host in hosts:
            host_kind = kind.of(host) if isinstance(kind, MixedHosts) else kind
            if isinstance(host_kind, OvsHost):
                instances[host.name] = host_kind.ovs(host)
        if instances:
            self._ovs = OvsFloodLearn(instances)
            self._ovs_hosts = set(instances)
            for host in hosts:
                if host.name in instances:
                    self._ovs.ensure_bridge(host)

    def add_network(
        self, name: str, vni: int | None, arp_suppression: str, encap: str = "vxlan"
    ) -> Network:
        """``arp_suppression`` is ignored: a learning switch answers nothing locally. VXLAN
        reaches every host (Linux learning devices, OVS ``learn()`` flows); GRE only the OVS
        hosts (the Linux baseline has no GRE)."""
        if encap not in ("vxlan", "gre"):
            raise ValueError(f"flood-and-learn carries vxlan and gre, not {encap}")
        self._networks += 1
        if vni is None:
            vni = FIRST_VNI + self._networks - 1
        carriers = [h for h in self.hosts if encap == "vxlan" or h.name in self._ovs_hosts]
        if not carriers:
            raise ValueError(f"no host of this testbed carries {encap}")
        for host in carriers:
            if host.name in self._ovs_hosts:
                assert self._ovs is not None
                self._ovs.add_network(host, vni, encap, carriers)
            else:
                self._devices(host, vni, carriers)
        return Network(f"flood-{vni}", name, vni, "learning", encap=encap)

    def _devices(self, host: Host, vni: int, carriers: Sequence[Host]) -> None:
        br, vx = f"{BRIDGE_PREFIX}{vni}", f"{VXLAN_PREFIX}{vni}"
        iproute.ip_batch(
            host.netns,
            [
                f"link add {br} type bridge",
                f"link add {vx} type vxlan id {vni} local {host.vtep_ip} "
                f"dstport {VXLAN_PORT} learning",
                f"link set {vx} master {br}",
                f"link set {vx} up",
                f"link set {br} up",
            ],
        )
        flood = [
            f"fdb append 00:00:00:00:00:00 dev {vx} dst {other.vtep_ip}"
            for other in carriers
            if other is not host
        ]
        iproute.bridge_batch(host.netns, flood)

    def add_port(
        self, name: str, network: Network, host: str, ips: list[str], mac: str | None
    ) -> tuple[str, str]:
        return secrets.token_hex(16), mac or random_mac()

    def plugged(self, vm: Vm, host: Host) -> None:
        if host.name in self._ovs_hosts:
            assert self._ovs is not None
            self._ovs.plugged(vm, host)
            return
        iproute.ip(host.netns, "link", "set", vm.tap, "master",
                   f"{BRIDGE_PREFIX}{vm.network.vni}", "up")  # fmt: skip

    def move_port(self, vm: Vm, host: str) -> None:
        """Nothing to tell anyone: the other hosts learn the MAC's new VTEP from traffic."""

    def readdress_port(self, vm: Vm, ips: list[str]) -> None:
        """Nothing to tell anyone: ARP finds the new addresses."""

    def remove_port(self, vm: Vm) -> None:
        """Nothing to tell anyone."""

    def wait_active(self, vm: Vm, timeout: float) -> None:
        """Nothing to wait for: a plugged tap forwards at once, nobody reports a status."""

    def wait_converged(self, timeout: float) -> None:
        """Nothing to wait for: the devices are complete when made."""

    def tables(self, host: Host, kind: HostKind) -> dict[int, KernelNetwork]:
        return kernel_tables(host.netns, BRIDGE_PREFIX, VXLAN_PREFIX)
