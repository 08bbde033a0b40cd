"""``OvsHost``: testbed hosts whose datapath is Open vSwitch (``l2pop agent --datapath ovs``).

Per host namespace (``prepare``, before any agent):

* a private ``OvsInstance`` (ovsdb-server + ovs-vswitchd, userspace datapath) with all its
  files in ``<workdir>/ovs-<host>``; its pid files go into the run record before it starts,
  so ``l2pop testbed clean`` finds the daemons of a run that died at any point; teardown
  stops them by pid (after the agent, before the namespaces go);
* the underlay moved onto OVS (``ovs.setup_underlay``): the VTEP address on ``br-phy``,
  whose port is the uplink veth ``ul0``; ovs-vswitchd does the tunnelling itself, so the
  tunnels must leave through a bridge it owns;
* the MAC of every other host's VTEP (``ovs.preset_neighbour``), whatever its kind: the
  first packet to an unresolved VTEP is lost in userspace tunnelling. A linux host's VTEP
  MAC is its ``ul0``'s, an OVS host's its ``br-phy``'s (``vtep_mac`` reads whichever
  device holds the address); linux hosts resolve OVS VTEPs with plain ARP, which
  ``br-phy``'s kernel side answers;
* checksums computed before frames reach the host: the underlay bridge's port towards it
  gets ``tx off``. A veth hands on a frame whose TCP/UDP checksum is still to be filled in
  (offload), ovs-vswitchd reads it as it is from its AF_PACKET socket on ``ul0`` and
  passes it on, and the receiving stack drops it: the agent's TCP session to the server's
  relay, and any VM's TCP from a linux host, would never get through.

Then the agent: ``l2pop agent --datapath ovs --ovs-db unix:<dir>/db.sock --ovs-rundir <dir>
--ovs-datapath-type netdev`` inside the namespace, started and stopped by pid like a linux
host's. The agent creates and owns ``br-l2pop``.

A VM plugs in as on a linux host (a veth whose host end is ``tap<port id[:11]>`` in the
host namespace; the agent adds it to ``br-l2pop``), with the two fixes userspace tunnels
need: the VM's MTU leaves room for the encapsulation (1450 VXLAN, 1458 GRE) and its
``eth0`` computes its own TCP/UDP checksums (``ethtool -K eth0 tx off``).

The read-back (``tables``) is ``ovstables.ovs_tables``: the flows and groups as ovs-ofctl
prints them, never the datapath's code. ``restart_vswitchd`` is a fault for tests: flows
and tunnel neighbours are gone afterwards; the neighbours are the testbed's (the underlay),
so it presets them again; the flows are the agent's to restore.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from l2pop.testbed import iproute
from l2pop.testbed.hosts import AgentProcess, HostKind, TableMonitor
from l2pop.testbed.nodes import Host, Run, Vm, wait_for
from l2pop.testbed.ovs import (
    GRE_VM_MTU,
    VXLAN_VM_MTU,
    OvsInstance,
    missing,
    preset_neighbour,
    setup_underlay,
)
from l2pop.testbed.ovstables import (
    DEFAULT_BRIDGE,
    OvsFlowMonitor,
    add_foreign_ovs,
    bridge_exists,
    foreign_ovs_state,
    ovs_tables,
)
from l2pop.testbed.tables import KernelNetwork
from l2pop.testbed.underlay import UNDERLAY_MTU, Underlay

#: the host's uplink (``underlay.py`` names it) and the OVS bridge that takes it over
UPLINK, PHY_BRIDGE = "ul0", "br-phy"


def vm_mtu(vm: Vm) -> int:
    """The MTU a VM on an OVS host gets: room for its network's encapsulation."""
    return GRE_VM_MTU if vm.network.encap == "gre" else VXLAN_VM_MTU


def vtep_mac(host: Host) -> str:
    """The MAC of the device holding ``host``'s VTEP address, read from its namespace (a
    linux host's ``ul0``, an OVS host's ``br-phy``)."""
    for link in json.loads(iproute.ip(host.netns, "-j", "addr", "show") or "[]"):
        if any(a.get("local") == host.vtep_ip for a in link.get("addr_info", [])):
            return str(link["address"])
    raise iproute.TestbedError(f"no device holds {host.vtep_ip} in {host.netns}")


class OvsHost(HostKind):
    """Hosts with their own Open vSwitch and the ovs datapath agent (see the module
    docstring). One instance serves every OVS host of a testbed."""

    name = "ovs"

    def __init__(self, heartbeat: float = 2.0, *, bridge: str = DEFAULT_BRIDGE) -> None:
        self.heartbeat = heartbeat
        self.bridge = bridge
        self.instances: dict[str, OvsInstance] = {}
        #: host name -> the (VTEP, MAC) pairs preset in its ovs-vswitchd
        self._neighbours: dict[str, list[tuple[str, str]]] = {}
        self._vtep_cidr: dict[str, str] = {}

    def ovs(self, host: Host | str) -> OvsInstance:
        """The Open vSwitch of ``host``."""
        name = host if isinstance(host, str) else host.name
        try:
            return self.instances[name]
        except KeyError:
            raise KeyError(f"{name} is not an OVS host") from None

    # -- before the agents ------------------------------------------------------------------

    def prepare(
        self, hosts: Sequence[Host], everyone: Sequence[Host], run: Run, underlay: Underlay | None
    ) -> None:
        """Start every host's Open vSwitch, move its VTEP onto ``br-phy``, then preset
        every other host's VTEP MAC in it."""
        if underlay is None:
            raise ValueError("OVS hosts need host namespaces on an underlay")
        lacking = missing() + ([] if shutil.which("ethtool") else ["ethtool"])
        if lacking:
            raise RuntimeError(
                f"Open vSwitch is not installed (missing {', '.join(lacking)}); "
                "scripts/bootstrap installs the Debian package openvswitch-switch"
            )
        for host in hosts:
            instance = OvsInstance(host.netns, run.workdir / f"ovs-{host.name}")
            self.instances[host.name] = instance
            # recorded and undone before it starts: a start that fails halfway leaves
            # nothing behind, and a run that dies leaves pid files ``testbed clean`` reads
            underlay.note_pidfiles(instance.pidfiles)
            run.teardown.push(instance.stop)
            instance.start()
            self._vtep_cidr[host.name] = f"{host.vtep_ip}/{underlay.plen}"
            setup_underlay(
                instance, UPLINK, self._vtep_cidr[host.name], bridge=PHY_BRIDGE, mtu=UNDERLAY_MTU
            )
            port = underlay.host_port(host)
            iproute.in_netns(underlay.netns, "ethtool", "-K", port, "tx", "off")
        macs = {other.name: vtep_mac(other) for other in everyone}
        for host in hosts:
            pairs = [(o.vtep_ip, macs[o.name]) for o in everyone if o.name != host.name]
            self._neighbours[host.name] = pairs
            self._preset(host.name)
        run.log(f"Open vSwitch on {', '.join(h.name for h in hosts)}")

    def _preset(self, name: str) -> None:
        for vtep, mac in self._neighbours.get(name, []):
            preset_neighbour(self.instances[name], vtep, mac, bridge=PHY_BRIDGE)

    # -- agents -------------------------------------------------------------------------

    def start_agents(self, hosts: Sequence[Host], server_url: str, run: Run) -> None:
        for host in hosts:
            self.start_agent(host, server_url, run)

    def start_agent(self, host: Host, server_url: str, run: Run) -> None:
        instance = self.ovs(host)
        args = ["--datapath", "ovs", "--ovs-db", f"unix:{instance.db_sock}"]
        args += ["--ovs-rundir", str(instance.dir), "--bridge", self.bridge]
        args += ["--ovs-datapath-type", "netdev"]
        log_path = run.workdir / f"agent-{host.name}.log"
        agent = AgentProcess(host, server_url, log_path, self.heartbeat, args)
        run.teardown.push(agent.stop)
        host.agent = agent.start()

    # -- VMs ------------------------------------------------------------------------------

    def plug(self, vm: Vm, host: Host) -> None:
        """A fresh veth (``tap...`` in the host, up; ``eth0`` in the VM), both ends at the
        VM's MTU; the VM fills in its own checksums."""
        mtu = str(vm_mtu(vm))
        iproute.ip(host.netns, "link", "add", vm.tap, "mtu", mtu, "type", "veth",
                   "peer", "name", "eth0", "mtu", mtu, "netns", vm.netns)  # fmt: skip
        iproute.ip(host.netns, "link", "set", vm.tap, "up")
        # userspace tunnelling sends what the VM's stack hands it: no checksum offload
        iproute.in_netns(vm.netns, "ethtool", "-K", "eth0", "tx", "off")

    def unplug(self, vm: Vm, host: Host) -> None:
        iproute.ip(host.netns, "link", "del", vm.tap)

    # -- read-back and hand-made objects ---------------------------------------------------

    def tables(self, host: Host) -> dict[int, KernelNetwork]:
        return ovs_tables(self.ovs(host), self.bridge)

    def wait_bridge(self, host: Host, timeout: float = 20.0) -> None:
        """Until the agent has made its bridge."""
        instance = self.ovs(host)
        wait_for(f"{self.bridge} on {host.name}", lambda: bridge_exists(instance, self.bridge),
                 timeout)  # fmt: skip

    def add_foreign(self, host: Host) -> None:
        """The kernel's hand-made objects, and Open vSwitch ones beside the agent's
        (``ovstables.add_foreign_ovs``; waits for the agent's bridge)."""
        super().add_foreign(host)
        self.wait_bridge(host)
        add_foreign_ovs(self.ovs(host), self.bridge)

    def foreign_state(self, host: Host) -> dict[str, bool]:
        return {**super().foreign_state(host), **foreign_ovs_state(self.ovs(host), self.bridge)}

    def monitor(self, host: Host) -> TableMonitor:
        """Flow changes on the agent's bridge (``ovs-ofctl monitor``)."""
        self.wait_bridge(host)
        return OvsFlowMonitor(self.ovs(host), self.bridge)

    # -- faults and measurements ----------------------------------------------------------

    def restart_vswitchd(self, host: Host, timeout: float = 10.0) -> None:
        """Stop ovs-vswitchd (SIGTERM by pid) and start it again; the underlay's VTEP
        neighbours are preset again (they live in ovs-vswitchd only), the flows are left to
        the agent."""
        instance = self.ovs(host)
        instance.restart_vswitchd(timeout)
        self._restore_underlay(host)

    def kill_vswitchd(self, host: Host, timeout: float = 10.0) -> None:
        """``kill -9`` ovs-vswitchd and start it again (a crash and its supervisor)."""
        instance = self.ovs(host)
        instance.kill_vswitchd()
        instance.start_vswitchd(timeout)
        self._restore_underlay(host)

    def _restore_underlay(self, host: Host) -> None:
        # br-phy's kernel side is a tap ovs-vswitchd made; should a restart have recreated
        # it, its address is gone with it
        if self._vtep_cidr[host.name].split("/")[0] not in iproute.ip(
            host.netns, "-br", "addr", "show", "dev", PHY_BRIDGE
        ):
            setup_underlay(
                self.ovs(host), UPLINK, self._vtep_cidr[host.name], bridge=PHY_BRIDGE,
                mtu=UNDERLAY_MTU,
            )  # fmt: skip
        self._preset(host.name)

    def vswitchd_rss_kib(self, host: Host) -> int:
        """ovs-vswitchd's resident memory on ``host`` (KiB)."""
        rss = self.ovs(host).rss_kib()
        if "ovs-vswitchd" not in rss:
            raise RuntimeError(f"ovs-vswitchd is not running on {host.name}")
        return rss["ovs-vswitchd"]

    def workdir(self, host: Host) -> Path:
        """Where ``host``'s Open vSwitch keeps its database, sockets and logs."""
        return self.ovs(host).dir
