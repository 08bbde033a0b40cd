"""The whole system on Open vSwitch hosts: OVS-VXLAN, OVS-GRE, and linux + OVS hosts mixed.

One testbed per module: 5 hosts, h1 and h2 linux (``l2pop agent --datapath linux``), h3-h5
Open vSwitch (a private ovsdb-server + ovs-vswitchd each, userspace datapath, ``l2pop agent
--datapath ovs``), a real ``l2pop server``. Tests that change things make their own network.
Packets crossing the underlay (VXLAN and GRE) are counted with tcpdump on the underlay
bridge. Needs root and Open vSwitch; skipped otherwise. Everything is deleted by name or pid
at the end.

Base topology (every network shares one IPv4 /16 and one IPv6 /64: only the overlay keeps
them apart; h5 is a member of neither neigh_suppress network nor of ``mix``)::

    ovx  (4001, vxlan, neigh_suppress):  ovx-3@h3  ovx-4@h4                 OVS only
    ovxp (4002, vxlan, proxy):           ovxp-3@h3 ovxp-5@h5                OVS only
    gre  (4003, gre,   neigh_suppress):  gre-3@h3  gre-4@h4                 OVS only
    grep (4004, gre,   proxy):           grep-4@h4 grep-5@h5                OVS only
    mix  (4005, vxlan, neigh_suppress):  mix-1@h1  mix-2@h2 mix-3@h3 mix-4@h4  mixed
    mixp (4006, vxlan, proxy):           mixp-1@h1 mixp-4@h4                 mixed
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from overlay_checks import (
    all_pairs,
    assert_tables_match_server,
    check_agent_kill_restart,
    check_cold_resolution,
    check_fixed_ip_change,
    check_migration,
    failed,
    need_root,
    vms_of,
    wait_tables,
)

from l2pop.testbed import iproute, leftovers, netns, ovs
from l2pop.testbed.bed import Testbed

pytestmark = pytest.mark.root

OVS_HOSTS = ("h3", "h4", "h5")
#: network -> (VNI, encap, mode, hosts of its VMs)
BASE = {
    "ovx": (4001, "vxlan", "neigh_suppress", ("h3", "h4")),
    "ovxp": (4002, "vxlan", "proxy", ("h3", "h5")),
    "gre": (4003, "gre", "neigh_suppress", ("h3", "h4")),
    "grep": (4004, "gre", "proxy", ("h4", "h5")),
    "mix": (4005, "vxlan", "neigh_suppress", ("h1", "h2", "h3", "h4")),
    "mixp": (4006, "vxlan", "proxy", ("h1", "h4")),
}
#: the neigh_suppress networks h5 is no member of (unknown-IP ARP floods to members only)
FLOODING = ("ovx", "gre", "mix")


def need_ovs() -> None:
    need_root("ethtool", "stdbuf")
    if not ovs.available():
        pytest.skip(
            f"Open vSwitch is not installed (missing {', '.join(ovs.missing())}); "
            "scripts/bootstrap installs the Debian package openvswitch-switch"
        )


def ips(net: int, host: str) -> list[str]:
    """A VM's addresses: 198.19.<net>.<host index> and 2001:db8::<net>:<host index>."""
    i = int(host[1:])
    return [f"198.19.{net}.{i}", f"2001:db8::{net}:{i}"]


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    need_ovs()
    workdir: Path = tmp_path_factory.mktemp("overlay-ovs")
    with Testbed(5, kinds=dict.fromkeys(OVS_HOSTS, "ovs"), workdir=workdir) as testbed:
        testbed.add_foreign("h3")  # hand-made objects: must survive everything below
        for n, (name, (vni, encap, mode, hosts)) in enumerate(BASE.items(), start=1):
            testbed.add_network(name, vni=vni, arp_suppression=mode, encap=encap)
            for host in hosts:
                testbed.add_vm(f"{name}-{host[1:]}", name, host, ips(n, host), wait=False)
        testbed.wait_converged()
        yield testbed


# -- the testbed itself ---------------------------------------------------------------------


def test_hosts_are_of_their_kind_and_their_daemons_are_recorded(bed: Testbed) -> None:
    assert [bed.kind_of(h).name for h in bed.hosts] == ["linux"] * 2 + ["ovs"] * 3
    record = leftovers.RunRecord.load_all()[bed.prefix]
    for host in OVS_HOSTS:
        instance = bed.ovs(host)
        assert set(instance.pidfiles) <= set(record.pidfiles)  # ``testbed clean`` finds them
        assert instance.pid("ovs-vswitchd") is not None
        assert bed.vswitchd_rss_kib(host) > 0
        assert bed.host_status(host).datapath == "ovs"
    assert bed.host_status("h1").datapath == "linux"


# -- connectivity ----------------------------------------------------------------------------


@pytest.mark.parametrize("network", list(BASE))
def test_all_pairs_connect_within_a_network(bed: Testbed, network: str) -> None:
    pairs = all_pairs(vms_of(bed, network))
    bad = failed(pairs, bed.ping_many(pairs))
    assert not bad, f"pings failed: {bad}"


def test_networks_are_isolated(bed: Testbed) -> None:
    """From one VM of each network to every address of every other network."""
    pairs = []
    for name in BASE:
        first = vms_of(bed, name)[0]
        pairs += [(first, ip) for other in BASE if other != name for vm in vms_of(bed, other)
                  for ip in vm.ips]  # fmt: skip
    leaked = failed(pairs, bed.ping_many(pairs, timeout=1), want=False)
    assert not leaked, f"reached another network: {leaked}"


def test_every_host_holds_the_desired_state(bed: Testbed) -> None:
    for host in bed.hosts:
        assert_tables_match_server(bed, host)
    h5 = bed.kernel_tables("h5")
    assert set(h5) == {4002, 4004}  # a member of ovxp and grep only
    assert h5[4004].vxlan == "l2pop-gre" and h5[4002].vxlan == "l2pop-vxlan"
    h4 = bed.kernel_tables("h4")[4005]
    assert h4.flood == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]  # linux VTEPs among them
    assert len(h4.ports) == 1 and h4.ports[0].startswith("tap")


# -- what crosses the underlay --------------------------------------------------------------


@pytest.mark.parametrize("network", list(BASE))
def test_no_arp_broadcast_crosses_the_underlay(bed: Testbed, network: str) -> None:
    check_cold_resolution(bed, network, 4)


@pytest.mark.parametrize("network", list(BASE))
def test_no_nd_multicast_crosses_the_underlay(bed: Testbed, network: str) -> None:
    check_cold_resolution(bed, network, 6)


@pytest.mark.parametrize("network", FLOODING)
def test_unknown_ips_flood_to_the_members_only(bed: Testbed, network: str) -> None:
    vms = vms_of(bed, network)
    vni = vms[0].network.vni
    members = {bed.hosts[vm.host].vtep_ip for vm in vms[1:]}
    bed.flush_neigh(vms)
    net = list(BASE).index(network) + 1
    with bed.capture(f"bum-{network}") as cap:
        # neigh_suppress floods an unknown IP's ARP/NS to the member VTEPs, and only them
        bed.ping(vms[0], f"198.19.{net}.200", timeout=1)
        bed.ping(vms[0], f"2001:db8::{net}:200", timeout=1)
    assert cap.result is not None
    flooded = cap.result.per_destination("bum", vni=vni)
    assert set(flooded) == members, f"BUM copies went to {dict(flooded)}"
    assert cap.result.count(dst=bed.hosts["h5"].vtep_ip, vni=vni) == 0


# -- changes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encap", "vni", "hosts"),
    [
        ("vxlan", 4108, ("h3", "h4", "h5")),
        ("gre", 4101, ("h3", "h4", "h5")),
        ("vxlan", 4102, ("h1", "h2", "h4")),
    ],
    ids=["ovs-vxlan", "ovs-gre", "mixed-linux-to-ovs"],
)
def test_migration_restores_connectivity_once_active(
    bed: Testbed, encap: str, vni: int, hosts: tuple[str, str, str]
) -> None:
    """b moves from hosts[1] to hosts[2] (OVS to OVS over VXLAN and GRE; linux to OVS)."""
    check_migration(bed, f"mig-{vni}", vni, hosts, encap)


@pytest.mark.parametrize(
    ("encap", "vni", "a_host", "b_host"),
    [("vxlan", 4105, "h3", "h4"), ("gre", 4109, "h4", "h5"), ("vxlan", 4107, "h3", "h1")],
    ids=["ovs-vxlan", "ovs-gre", "mixed"],
)
def test_fixed_ip_change(bed: Testbed, encap: str, vni: int, a_host: str, b_host: str) -> None:
    """b changes its IPs: the ARP/ND responder flows on a's OVS host follow."""
    check_fixed_ip_change(bed, vni, a_host, b_host, encap)


def test_agent_kill_restart_converges_without_rewriting(bed: Testbed) -> None:
    """kill -9 h3's agent, change the tables while it is down (a VM on an OVS host goes, one
    changes its IPs, one comes on a linux host), restart it: the flows converge, and no flow
    that did not change is removed or even rewritten (flow monitor)."""
    check_agent_kill_restart(bed, 4104, "h3", ("h5", "h4", "h2"))


def test_vswitchd_restart_brings_the_flows_back(bed: Testbed) -> None:
    """ovs-vswitchd on h4 restarts: its flows and groups are gone (they live in its memory
    only); the agent notices, writes them again, and traffic flows. Hand-made objects in
    OVSDB (a bridge, a port, an external_id) survive; hand-made flows cannot, and those
    added afterwards are left alone by the rebuild's aftermath."""
    bed.add_foreign("h4")
    rss = bed.vswitchd_rss_kib("h4")
    pid = bed.ovs("h4").pid("ovs-vswitchd")
    t0 = time.monotonic()
    bed.restart_vswitchd("h4")
    assert bed.ovs("h4").pid("ovs-vswitchd") != pid
    wait_tables(bed, "h4")
    back_s = time.monotonic() - t0
    for name in ("ovx", "gre", "grep", "mix", "mixp"):
        pairs = all_pairs(vms_of(bed, name))
        bad = failed(pairs, bed.ping_many(pairs, count=2))
        assert not bad, f"{name}: pings failed after the restart: {bad}"
    state = bed.foreign_state("h4")
    assert state["ovs_bridge"] and state["ovs_port"] and state["ovs_external_id"], state
    assert not state["ovs_flows"]  # in ovs-vswitchd's memory: gone with it
    bed.add_foreign("h4")
    bed.add_network("after", vni=4106, encap="gre")
    bed.add_vm("after-4", "after", "h4", ["198.19.16.4"])
    bed.add_vm("after-5", "after", "h5", ["198.19.16.5"])
    bed.wait_converged()
    wait_tables(bed, "h4")
    assert all(bed.foreign_state("h4").values()), bed.foreign_state("h4")
    print(f"\nvswitchd restart on h4: flows back in {back_s:.2f}s; RSS before {rss} KiB")


def test_hand_made_objects_are_left_untouched(bed: Testbed) -> None:
    """What ``add_foreign`` made on h3 before anything else, through every change above."""
    state = bed.foreign_state("h3")
    assert all(state.values()), state
    assert set(state) >= {"bridge", "fdb", "neigh", "ovs_bridge", "ovs_flows", "ovs_group"}


# -- a testbed's own life cycle -------------------------------------------------------------


def test_ovs_daemons_are_stopped_by_pid_and_recorded_even_when_a_start_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two OVS hosts whose second underlay setup fails: the run record named both hosts'
    pid files before that, and the failed ``open`` stopped every daemon and deleted every
    namespace. Then a clean open and teardown leave nothing either."""
    need_ovs()
    from l2pop.testbed import ovshost

    seen: list[list[str]] = []
    real = ovshost.setup_underlay

    def fail_second(instance: ovs.OvsInstance, *args: object, **kw: object) -> str:
        bed_prefix = instance.netns.rsplit("-", 1)[0]
        seen.append(leftovers.RunRecord.load_all()[bed_prefix].pidfiles)
        if instance.netns.endswith("-h2"):
            raise iproute.TestbedError("injected failure")
        return real(instance, *args, **kw)

    monkeypatch.setattr(ovshost, "setup_underlay", fail_second)
    bed = Testbed(2, kind="ovs", workdir=tmp_path / "failed")
    with pytest.raises(iproute.TestbedError, match="injected"):
        bed.open()
    kind = bed.kind_of("h1")
    assert isinstance(kind, ovshost.OvsHost)
    pids = [p for i in kind.instances.values() for p in i.all_pids()]
    assert len(pids) == 4 and not any(netns.pid_alive(p) for p in pids)
    assert len(seen[-1]) == 4  # both hosts' daemons recorded before the failure
    assert not [n for n in iproute.list_netns() if n.startswith(bed.prefix + "-")]
    assert bed.prefix not in leftovers.RunRecord.load_all()

    monkeypatch.undo()
    ok = Testbed(2, kind="ovs", workdir=tmp_path / "ok").open()
    try:
        kind = ok.kind_of("h1")
        assert isinstance(kind, ovshost.OvsHost)
        instances = list(kind.instances.values())
        assert all(i.running for i in instances)
    finally:
        ok.teardown()
    assert not any(netns.pid_alive(p) for i in instances for p in i.all_pids())
    assert not [n for n in iproute.list_netns() if n.startswith(ok.prefix + "-")]
