"""The whole system on real kernels: server, agents (linux datapath) and VMs in namespaces.

One testbed per module (4 hosts, a real ``l2pop server`` and a real ``l2pop agent`` process
per host namespace); tests that change things make their own network so they do not
disturb each other. Packets crossing the underlay are counted with tcpdump on the underlay
bridge. Needs root; skipped otherwise. Everything is deleted by name at the end.

Base topology (both networks share one IPv4 /16 and one IPv6 /64, so only the overlay keeps
them apart)::

    ns  (vni 2001, neigh_suppress): ns-1@h1  ns-2@h2  ns-3@h3        h4 not a member
    px  (vni 2002, proxy):          px-1@h1  px-2@h2           px-3@h4   h3 not a member
"""

from __future__ import annotations

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
    dead_pid,
    failed,
    need_root,
    vms_of,
)

from l2pop.testbed import leftovers, netns
from l2pop.testbed.bed import Testbed

pytestmark = pytest.mark.root

NS_VNI, PX_VNI = 2001, 2002


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    need_root()
    workdir: Path = tmp_path_factory.mktemp("overlay")
    with Testbed(4, workdir=workdir) as testbed:
        testbed.add_foreign("h1")  # hand-made devices: must survive everything below
        testbed.add_network("ns", vni=NS_VNI, arp_suppression="neigh_suppress")
        testbed.add_network("px", vni=PX_VNI, arp_suppression="proxy")
        for i, host in ((1, "h1"), (2, "h2"), (3, "h3")):
            testbed.add_vm(f"ns-{i}", "ns", host, [f"198.19.1.{i}", f"2001:db8::1:{i}"], wait=False)
        for i, host in ((1, "h1"), (2, "h2"), (3, "h4")):
            testbed.add_vm(f"px-{i}", "px", host, [f"198.19.2.{i}", f"2001:db8::2:{i}"], wait=False)
        testbed.wait_converged()
        yield testbed


# -- connectivity ----------------------------------------------------------------------------


@pytest.mark.parametrize("network", ["ns", "px"])
def test_all_pairs_connect_within_a_network(bed: Testbed, network: str) -> None:
    pairs = all_pairs(vms_of(bed, network))
    bad = failed(pairs, bed.ping_many(pairs))
    assert not bad, f"pings failed: {bad}"


def test_networks_are_isolated(bed: Testbed) -> None:
    ns, px = vms_of(bed, "ns"), vms_of(bed, "px")
    pairs = [(a, ip) for a in ns for b in px for ip in b.ips]
    pairs += [(b, ip) for b in px for a in ns for ip in a.ips]
    leaked = failed(pairs, bed.ping_many(pairs, timeout=1), want=False)
    assert not leaked, f"reached the other network: {leaked}"


def test_every_kernel_holds_the_desired_state(bed: Testbed) -> None:
    for host in bed.hosts:
        assert_tables_match_server(bed, host)
    assert NS_VNI not in bed.kernel_tables("h4")  # not a member: nothing of ns
    assert PX_VNI not in bed.kernel_tables("h3")


# -- what crosses the underlay --------------------------------------------------------------


@pytest.mark.parametrize("network", ["ns", "px"])
def test_no_arp_broadcast_crosses_the_underlay_for_known_ips(bed: Testbed, network: str) -> None:
    check_cold_resolution(bed, network, 4)


@pytest.mark.parametrize("network", ["ns", "px"])
def test_ipv6_nd_is_answered_locally(bed: Testbed, network: str) -> None:
    check_cold_resolution(bed, network, 6)


def test_the_non_member_host_receives_no_bum_copy(bed: Testbed) -> None:
    ns = vms_of(bed, "ns")
    members = {bed.hosts[h].vtep_ip for h in ("h2", "h3")}
    outsider = bed.hosts["h4"].vtep_ip
    bed.flush_neigh(ns)
    with bed.capture("bum") as cap:
        bed.ping_many(all_pairs(ns))
        # an unknown IP: neigh_suppress floods its ARP to the member VTEPs (and only them)
        bed.ping(ns[0], "198.19.1.200", timeout=1)
        bed.ping(ns[0], "2001:db8::1:200", timeout=1)
    assert cap.result is not None
    flooded = cap.result.per_destination("bum", vni=NS_VNI)
    assert set(flooded) == members, f"BUM copies went to {dict(flooded)}"
    assert cap.result.count(dst=outsider, vni=NS_VNI) == 0


# -- changes --------------------------------------------------------------------------------


def test_migration_restores_connectivity_once_active(bed: Testbed) -> None:
    check_migration(bed, "mig", 2003, ("h1", "h2", "h3"))


def test_fixed_ip_change(bed: Testbed) -> None:
    check_fixed_ip_change(bed, 2005, "h1", "h2")


def test_agent_kill_restart_converges_without_blinking(bed: Testbed) -> None:
    """kill -9 h1's agent, change the tables while it is down, restart it: the kernel
    converges, and no entry that did not change is removed (netlink monitor)."""
    check_agent_kill_restart(bed, 2004, "h1", ("h3", "h2", "h4"))


def test_hand_made_devices_and_entries_are_left_untouched(bed: Testbed) -> None:
    assert bed.foreign_state("h1") == {"bridge": True, "port": True, "fdb": True, "neigh": True}


def test_clean_skips_live_runs_and_removes_dead_ones(bed: Testbed) -> None:
    dead = leftovers.RunRecord("l2p0dea", owner_pid=dead_pid())
    dead.save()
    name = "l2p0dea-h1"
    netns.add_netns(name)
    keep = "l2pkeep-test"  # no run pattern: never touched
    netns.add_netns(keep)
    try:
        found = leftovers.find_leftovers()
        assert name in found.netns
        assert keep not in found.netns
        assert not any(n.startswith(bed.prefix) for n in found.netns)  # our run is alive
        assert f"{bed.prefix}-h1" in found.skipped
        only = leftovers.Leftovers(netns=[name], records=[dead])
        leftovers.clean(only)
        assert name not in netns.list_netns()
        assert not dead.path.exists()
        assert keep in netns.list_netns()
    finally:
        netns.delete_netns(name)
        netns.delete_netns(keep)
        dead.remove()
