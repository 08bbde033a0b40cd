"""A topology described once: hosts, networks, VM placement, buildable on any testbed.

The demos and the flood benchmark build the same ``Topology`` on an l2pop testbed and on
the flood-and-learn baseline, and the simulated demo on memory-datapath agents; only the
control plane and the host kind differ (``Testbed(control=..., kind=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from l2pop.testbed.bed import Testbed


@dataclass
class VmSpec:
    name: str
    network: str
    host: str
    ips: list[str]
    mac: str | None = None  # None: the control plane picks one


@dataclass
class NetworkSpec:
    name: str
    vni: int
    arp_suppression: str = "neigh_suppress"
    encap: str = "vxlan"
    label: str = ""  # what the demo calls it ("OVS + GRE"); the name when empty


@dataclass
class Topology:
    """Hosts, networks and VM placement."""

    hosts: int
    networks: list[NetworkSpec]
    vms: list[VmSpec] = field(default_factory=list)
    #: host name -> its kind when not the testbed's default (``Testbed(kinds=...)``)
    kinds: dict[str, str] = field(default_factory=dict)

    def build(self, bed: Testbed) -> None:
        """Every network, then every VM (not waiting for each), then wait until converged."""
        for net in self.networks:
            bed.add_network(
                net.name, vni=net.vni, arp_suppression=net.arp_suppression, encap=net.encap
            )
        for vm in self.vms:
            bed.add_vm(vm.name, vm.network, vm.host, vm.ips, mac=vm.mac, wait=False)
        bed.wait_converged()

    def members(self, network: str) -> set[str]:
        """The hosts with a VM in ``network``."""
        return {vm.host for vm in self.vms if vm.network == network}
