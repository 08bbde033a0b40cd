"""The flood-and-learn baseline on Open vSwitch hosts: what Neutron's OVS agent does without
L2 population (MAC learning with ``learn()`` flows, head-end replication to every VTEP).

Per OVS host: a bridge ``br-fl`` (userspace, ``fail_mode=secure``) with two flow-based tunnel
ports (``fl-vxlan``, ``fl-gre``: ``remote_ip=flow``, ``key=flow``); per network V (its encap
E, tunnel port T):

* table 0, from a VM port P of V: mark the frame as V (``tun_id``), learn "MAC -> P", go to
  table 10; from T with ``tun_id=V``: learn "MAC -> T towards the sender's VTEP", deliver to
  V's local ports (group ``LOCAL | V``).
* table 10: the learned flows; a miss floods (group V): every local port of V and a copy to
  every other host's VTEP, members or not (the full mesh a static flood list gives).

ARP and ND are broadcast like any other frame, to every host: what l2pop removes. It is the
baseline only; l2pop's own pipeline is in ``l2pop.datapath._pipeline``.
"""

from __future__ import annotations

from collections.abc import Sequence

from l2pop.testbed.nodes import Host, Vm
from l2pop.testbed.ovs import OvsInstance

BRIDGE = "br-fl"
TUNNELS = {"vxlan": "fl-vxlan", "gre": "fl-gre"}
LOCAL = 0x1000000
LEARNED = 10
#: how long a learned MAC lasts unused (Open vSwitch's own default for NORMAL: 300 s)
IDLE_S = 300


class OvsFloodLearn:
    """The baseline's flows on the OVS hosts of one testbed (see the module docstring)."""

    def __init__(self, instances: dict[str, OvsInstance]) -> None:
        self.instances = instances
        self._ofport: dict[tuple[str, str], int] = {}  # (host, tunnel) -> ofport
        self._ports: dict[tuple[str, int], list[int]] = {}  # (host, vni) -> VM ofports
        self._encap: dict[int, str] = {}
        self._carriers: dict[int, list[Host]] = {}  # vni -> the hosts that have the network

    def ensure_bridge(self, host: Host) -> None:
        ovs = self.instances[host.name]
        ovs.vsctl("--may-exist", "add-br", BRIDGE, "--", "set", "bridge", BRIDGE,
                  "datapath_type=netdev", "fail_mode=secure",
                  "protocols=OpenFlow10,OpenFlow13,OpenFlow14,OpenFlow15")  # fmt: skip
        for encap, port in TUNNELS.items():
            ovs.vsctl("--may-exist", "add-port", BRIDGE, port, "--", "set", "interface", port,
                      f"type={encap}", "options:remote_ip=flow", "options:key=flow")  # fmt: skip
            self._ofport[(host.name, port)] = int(ovs.vsctl("get", "interface", port, "ofport"))
        ovs.ofctl(BRIDGE, "add-flow", "table=0,priority=0,actions=drop")

    def add_network(self, host: Host, vni: int, encap: str, carriers: Sequence[Host]) -> None:
        """V's groups and its tunnel flow on ``host``; ``carriers``: every host that has V
        (the flood mesh)."""
        self._encap[vni] = encap
        self._carriers[vni] = list(carriers)
        ovs = self.instances[host.name]
        tunnel = self._ofport[(host.name, TUNNELS[encap])]
        learn = (
            f"learn(table={LEARNED},priority=100,idle_timeout={IDLE_S},NXM_NX_TUN_ID[],"
            "NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],"
            "load:NXM_NX_TUN_IPV4_SRC[]->NXM_NX_TUN_IPV4_DST[],output:NXM_OF_IN_PORT[])"
        )
        self._groups(host, vni, add=True)
        ovs.ofctl(BRIDGE, "add-flow",
                  f"table=0,priority=100,in_port={tunnel},tun_id={vni},"
                  f"actions={learn},group:{LOCAL | vni}")  # fmt: skip
        ovs.ofctl(BRIDGE, "add-flow",
                  f"table={LEARNED},priority=1,tun_id={vni},actions=group:{vni}")  # fmt: skip

    def plugged(self, vm: Vm, host: Host) -> None:
        """Put the VM's device on ``br-fl`` as a port of its network."""
        ovs, vni = self.instances[host.name], vm.network.vni
        ovs.vsctl("--may-exist", "add-port", BRIDGE, vm.tap)
        ofport = int(ovs.vsctl("get", "interface", vm.tap, "ofport"))
        learn = (
            f"learn(table={LEARNED},priority=100,idle_timeout={IDLE_S},NXM_NX_TUN_ID[],"
            "NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[])"
        )
        ovs.ofctl(BRIDGE, "add-flow",
                  f"table=0,priority=100,in_port={ofport},"
                  f"actions=set_field:{vni}->tun_id,{learn},resubmit(,{LEARNED})")  # fmt: skip
        self._ports.setdefault((host.name, vni), []).append(ofport)
        self._groups(host, vni, add=False)

    def _groups(self, host: Host, vni: int, *, add: bool) -> None:
        """Group V (flood: local ports + every other VTEP) and group LOCAL|V (local ports)."""
        ovs = self.instances[host.name]
        tunnel = self._ofport[(host.name, TUNNELS[self._encap[vni]])]
        local = [f"bucket=output:{p}" for p in self._ports.get((host.name, vni), [])]
        remote = [
            f"bucket=set_field:{other.vtep_ip}->tun_dst,output:{tunnel}"
            for other in self._carriers[vni]
            if other.name != host.name
        ]
        verb = "add-group" if add else "mod-group"
        flood = ",".join([f"group_id={vni}", "type=all", *local, *remote])
        ovs.ofctl(BRIDGE, verb, flood, options=("-O", "OpenFlow15"))
        only = ",".join([f"group_id={LOCAL | vni}", "type=all", *local])
        ovs.ofctl(BRIDGE, verb, only, options=("-O", "OpenFlow15"))
