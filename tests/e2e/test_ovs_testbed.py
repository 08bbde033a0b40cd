"""Open vSwitch hosts in the testbed: two OVS hosts, hand-written flows, VXLAN and GRE (root).

Topology (run prefix P)::

    P-ul   underlay bridge ulbr0
    P-h1   OvsInstance: br-phy (ul0, 192.0.2.1/24)  br-int (vm1 -> port 1, tun0 -> port 10)
    P-h2   OvsInstance: br-phy (ul0, 192.0.2.2/24)  br-int (vm2 -> port 1, tun0 -> port 10)
    P-v1   eth0 198.19.0.1/16, MTU 1400 (veth peer of vm1)
    P-v2   eth0 198.19.0.2/16, MTU 1400 (veth peer of vm2)

The flows are what an agent would write: VM port -> tunnel with the VNI as tunnel key,
tunnel with that key -> VM port, and an ARP responder for the remote VM. Skipped without
root or without Open vSwitch (``scripts/bootstrap`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from l2pop.testbed import iproute, leftovers, netns, ovs
from l2pop.testbed.nodes import Host, Run
from l2pop.testbed.ovs import OvsInstance
from l2pop.testbed.teardown import Teardown
from l2pop.testbed.underlay import UNDERLAY_BRIDGE, Underlay

pytestmark = pytest.mark.root

VNI = 5001
VM_PORT, TUN_PORT = 1, 10
VM_MTU = 1400
TIMESTAMP = re.compile(r"^\d\d:\d\d:\d\d\.\d+ ")


def _need() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    tools = [t for t in ("ip", "ping", "tcpdump", "ethtool") if shutil.which(t) is None]
    if tools:
        pytest.skip(f"missing tools: {', '.join(tools)} (scripts/bootstrap installs them)")
    if not ovs.available():
        pytest.skip(
            f"Open vSwitch is not installed (missing {', '.join(ovs.missing())}); "
            "scripts/bootstrap installs the Debian package openvswitch-switch"
        )


def vm_mac(i: int) -> str:
    return f"02:00:c6:13:00:{i:02x}"


def vm_ip(i: int) -> str:
    return f"198.19.0.{i}"


@dataclass
class OvsHost:
    host: Host
    ovs: OvsInstance
    vm_netns: str
    index: int
    phy_mac: str = ""
    start_s: float = 0.0


@dataclass
class OvsBed:
    run: Run
    underlay: Underlay
    tunnel: str
    hosts: list[OvsHost] = field(default_factory=list)

    def peer(self, h: OvsHost) -> OvsHost:
        return self.hosts[1] if h is self.hosts[0] else self.hosts[0]


def arp_responder(ip: str, mac: str) -> str:
    """The flow that answers an ARP request for ``ip`` with ``mac`` on the port it came in."""
    return (
        f"priority=100,in_port={VM_PORT},arp,arp_op=1,arp_tpa={ip} "
        "actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],"
        f"set_field:{mac}->eth_src,set_field:2->arp_op,"
        "move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],"
        f"set_field:{mac}->arp_sha,set_field:{ip}->arp_spa,IN_PORT"
    )


def install_flows(bed: OvsBed, h: OvsHost) -> None:
    """The agent's part: flows on br-int and the remote VTEP's neighbour entry."""
    peer = bed.peer(h)
    flows = [
        arp_responder(vm_ip(peer.index), vm_mac(peer.index)),
        f"priority=50,in_port={VM_PORT},actions=set_field:{VNI}->tun_id,output:{TUN_PORT}",
        f"priority=50,in_port={TUN_PORT},tun_id={VNI},dl_dst={vm_mac(h.index)},"
        f"actions=output:{VM_PORT}",
    ]
    h.ovs.ofctl("br-int", "add-flows", "-", stdin="\n".join(flows) + "\n")
    ovs.preset_neighbour(h.ovs, peer.host.vtep_ip, peer.phy_mac)


def build(tmp_path: Path, tunnel: str) -> OvsBed:
    """Two OVS hosts with a VM each; every step's undo is on ``run.teardown``."""
    run = Run(tmp_path, Teardown(print), lambda _msg: None)
    run.teardown.arm()
    underlay = Underlay(run)
    bed = OvsBed(run, underlay, tunnel)
    try:
        underlay.open()
        hosts = underlay.build(2)
        for host in hosts:
            iproute.sysctl(
                host.netns,
                net__ipv6__conf__all__disable_ipv6=1,
                net__ipv6__conf__default__disable_ipv6=1,
            )
            instance = OvsInstance(host.netns, tmp_path / f"ovs-{host.name}")
            run.teardown.push(instance.stop)
            t0 = time.monotonic()
            instance.start()
            underlay.note_pidfiles(instance.pidfiles)
            h = OvsHost(host, instance, "", host.index, start_s=time.monotonic() - t0)
            h.phy_mac = ovs.setup_underlay(instance, "ul0", f"{host.vtep_ip}/24")
            bed.hosts.append(h)
        for h in bed.hosts:
            _add_vm(bed, h)
        for h in bed.hosts:
            install_flows(bed, h)
    except BaseException:
        run.teardown.run()
        raise
    return bed


def _add_vm(bed: OvsBed, h: OvsHost) -> None:
    """VM ``P-vI`` on a veth whose host end is port 1 of br-int; tunnel port 10 to the peer."""
    i, ns = h.index, h.host.netns
    peer = bed.peer(h)
    h.vm_netns = vm = bed.underlay.add_netns(f"v{i}")
    iproute.sysctl(
        vm, net__ipv6__conf__all__disable_ipv6=1, net__ipv6__conf__default__disable_ipv6=1
    )
    iproute.ip_batch(
        ns,
        [
            f"link add vm{i} mtu {VM_MTU} type veth peer name eth0 netns {vm}",
            f"link set vm{i} up",
        ],
    )
    iproute.ip_batch(
        vm,
        [
            f"link set eth0 address {vm_mac(i)} mtu {VM_MTU} up",
            f"addr add {vm_ip(i)}/16 dev eth0",
        ],
    )
    iproute.in_netns(vm, "ethtool", "-K", "eth0", "tx", "off")
    h.ovs.vsctl(
        "add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev",
        "fail_mode=secure",
        "--", "add-port", "br-int", f"vm{i}", "--", "set", "interface", f"vm{i}",
        f"ofport_request={VM_PORT}",
        "--", "add-port", "br-int", "tun0", "--", "set", "interface", "tun0",
        f"type={bed.tunnel}", f"options:remote_ip={peer.host.vtep_ip}", "options:key=flow",
        f"ofport_request={TUN_PORT}",
    )  # fmt: skip


def ping(vm_ns: str, ip: str, count: int = 1, timeout: int = 2) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", vm_ns, "ping", "-n", "-q", "-c", str(count), "-i", "0.2"]
    cmd += ["-W", str(timeout), ip]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)


class UnderlayDump:
    """tcpdump of everything on the underlay bridge; ``stop()`` returns one line per packet,
    as tcpdump prints it (VXLAN and GRE decoded down to the inner frame)."""

    def __init__(self, ul_netns: str, path: Path) -> None:
        self.path = path
        cmd = ["ip", "netns", "exec", ul_netns, "tcpdump", "-i", UNDERLAY_BRIDGE, "-n", "-U"]
        cmd += ["--immediate-mode", "-w", str(path)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                if b"listening on" in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        assert ready.wait(10), "tcpdump did not start"

    def stop(self) -> list[str]:
        time.sleep(0.3)
        self.proc.terminate()
        self.proc.wait(5)
        out = iproute.run("tcpdump", "-r", str(self.path), "-nn", "-e", check=False)
        packets: list[str] = []
        for line in out.splitlines():  # an encapsulated frame's inner part: its own line
            if packets and not TIMESTAMP.match(line):
                packets[-1] += " | " + line.strip()
            else:
                packets.append(line)
        return packets

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(params=["vxlan", "gre"])
def bed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OvsBed]:
    _need()
    testbed = build(tmp_path, request.param)
    try:
        yield testbed
    finally:
        testbed.run.teardown.run()


def test_ping_over_tunnel_arp_local_flows_lost_on_restart(bed: OvsBed) -> None:
    h1, h2 = bed.hosts
    pids = h1.ovs.all_pids() + h2.ovs.all_pids()
    names = [h.host.netns for h in bed.hosts] + [h.vm_netns for h in bed.hosts]
    names.append(bed.underlay.netns)
    rss = {h.host.name: h.ovs.rss_kib() for h in bed.hosts}

    dump = UnderlayDump(bed.underlay.netns, bed.run.workdir / "underlay.pcap")
    bed.run.teardown.push(dump.kill)
    first = ping(h1.vm_netns, vm_ip(2), count=10)
    lines = dump.stop()
    assert first.returncode == 0, first.stdout + first.stderr
    assert "10 received" in first.stdout, first.stdout  # no first packet lost either
    rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)", first.stdout)
    encap = "VXLAN" if bed.tunnel == "vxlan" else "GRE"
    tunnelled = [ln for ln in lines if encap in ln and "ICMP echo request" in ln]
    assert len(tunnelled) >= 10, "\n".join(lines[:20])
    assert f"vni {VNI}" in tunnelled[0] or f"key=0x{VNI:x}" in tunnelled[0], tunnelled[0]
    overlay_arp = [ln for ln in lines if "ARP" in ln and "198.19." in ln]
    assert overlay_arp == [], "ARP crossed the underlay:\n" + "\n".join(overlay_arp)
    # ...because the VM got its answer from the flow on its own host
    neigh = iproute.ip(h1.vm_netns, "neigh", "show", vm_ip(2))
    assert vm_mac(2) in neigh, neigh
    stats = h1.ovs.ofctl("br-int", "dump-flows", "arp")
    assert re.search(r"n_packets=[1-9]", stats), stats

    # ovs-vswitchd crashes and comes back: bridges and ports are in OVSDB, flows are not
    assert h2.host.vtep_ip in h1.ovs.appctl("tnl/neigh/show")
    h1.ovs.kill_vswitchd()
    assert h1.ovs.pid("ovs-vswitchd") is None
    t0 = time.monotonic()
    h1.ovs.restart_vswitchd()
    restart_s = time.monotonic() - t0
    assert set(h1.ovs.vsctl("list-ports", "br-int").split()) == {"vm1", "tun0"}
    flows = h1.ovs.ofctl("br-int", "dump-flows", "--no-stats").strip().splitlines()
    assert [f for f in flows if "actions=" in f] == [], flows  # every flow is gone
    assert h2.host.vtep_ip not in h1.ovs.appctl("tnl/neigh/show")  # the neighbour too
    assert ping(h1.vm_netns, vm_ip(2), timeout=1).returncode != 0
    install_flows(bed, h1)  # what an agent must do after a vswitchd restart
    again = ping(h1.vm_netns, vm_ip(2), count=3)
    assert again.returncode == 0, again.stdout + again.stderr
    pids += h1.ovs.all_pids()

    print(
        f"\n[{bed.tunnel}] start {[round(h.start_s, 3) for h in bed.hosts]} s, "
        f"vswitchd restart {restart_s:.3f} s, idle RSS KiB {rss}, "
        f"ping rtt min/avg/max {rtt.groups() if rtt else None} ms"
    )

    bed.run.teardown.run()
    assert not any(netns.pid_alive(p) for p in pids), pids
    assert not set(names) & set(iproute.list_netns())
    assert not h1.ovs.running and not h2.ovs.running


def _dead(pid: int | None, timeout: float = 5.0) -> bool:
    """Whether ``pid`` exits (or is a zombie) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return True
        if "\nState:\tZ" in status:
            return True
        time.sleep(0.02)
    return False


def test_clean_stops_ovs_daemons_of_a_dead_run_by_pid_file(tmp_path: Path) -> None:
    """A run whose owner died leaves its OVS daemons' pid files in its record:
    ``l2pop testbed clean`` (``find_leftovers`` + ``clean``) stops exactly those pids."""
    _need()
    with iproute.throwaway("l2pt") as ns, OvsInstance(ns, tmp_path / "ovs") as instance:
        gone = subprocess.Popen(["true"])
        gone.wait()
        record = leftovers.RunRecord(netns.new_prefix(), gone.pid, pidfiles=instance.pidfiles)
        record.save()
        try:
            pids = [instance.pid(d) for d in ovs.DAEMONS]
            found = leftovers.find_leftovers()
            assert set(pids) <= set(found.daemons), (pids, found.daemons)
            mine = [p for p in found.daemons if p in pids]
            leftovers.clean(leftovers.Leftovers(daemons=mine, records=[record]))
            assert all(_dead(p) for p in pids), pids  # killed (zombies until reaped)
            assert not record.path.exists()
        finally:
            record.remove()
