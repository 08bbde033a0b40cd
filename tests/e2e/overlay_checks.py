"""What the overlay suites share (``test_overlay.py`` on linux hosts, ``test_overlay_ovs.py``
on Open vSwitch and mixed hosts): skipping without root or tools, picking VMs and ping pairs,
the one check that a host's datapath holds what the server wants, and the scenarios both
suites run (migration, fixed-IP change).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from l2pop.testbed.bed import Testbed
from l2pop.testbed.nodes import Vm, wait_for

TOOLS = ("ip", "bridge", "ping", "tcpdump")


def need_root(*tools: str) -> None:
    """Skip unless root with iproute2, ping, tcpdump and ``tools``."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, bridge and vxlan devices)")
    missing = [t for t in (*TOOLS, *tools) if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)} (scripts/bootstrap installs them)")


def vms_of(bed: Testbed, network: str) -> list[Vm]:
    return [vm for vm in bed.vms.values() if vm.network.name == network]


def all_pairs(vms: list[Vm], family: int | None = None) -> list[tuple[Vm, str]]:
    """(VM, address) for every VM and every address of every other VM (of ``family``)."""
    out = []
    for a in vms:
        for b in vms:
            if a is not b:
                out += [(a, ip) for ip in b.ips if family is None or (family == 6) == (":" in ip)]
    return out


def failed(pairs: list[tuple[Vm, str]], results: list[bool], *, want: bool = True) -> list[str]:
    """The pairs whose ping did not give ``want``, as ``vm -> address``."""
    return [f"{vm.name} -> {ip}" for (vm, ip), ok in zip(pairs, results, strict=True) if ok != want]


def assert_tables_match_server(bed: Testbed, host: str) -> None:
    """``host``'s datapath, read back independently of it, holds exactly the server's
    desired state: the networks, each one's mode, flood list, FDB and neighbours. On a
    linux host in neigh_suppress mode every FDB MAC also has its bridge ``static`` entry
    (what makes the bridge answer for it); an OVS host has no such thing."""
    desired = {n.vni: n for n in bed.host_fdb(host).networks}
    held = bed.kernel_tables(host)
    assert set(held) == set(desired), f"{host}: networks {set(held)} != {set(desired)}"
    for vni, want in desired.items():
        got = held[vni]
        assert got.mode == want.arp_suppression, f"{host} vni {vni}"
        assert got.flood == sorted(want.flood), f"{host} vni {vni}"
        assert got.fdb == {e.mac: e.vtep for e in want.fdb}, f"{host} vni {vni}"
        assert got.neigh == {e.ip: e.mac for e in want.neigh}, f"{host} vni {vni}"
        if got.mode == "neigh_suppress" and bed.kind_of(host).name == "linux":
            assert got.static == sorted(got.fdb), f"{host} vni {vni}"


def in_sync(bed: Testbed, host: str) -> bool:
    return bed.host_status(host).in_sync


def dead_pid() -> int:
    """A pid that is not running (a child that has exited and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- scenarios both overlay suites run (linux hosts; OVS and mixed hosts) --------------------


def check_migration(bed: Testbed, name: str, vni: int, hosts: tuple[str, str, str],
                    encap: str = "vxlan") -> None:  # fmt: skip
    """b moves from hosts[1] to hosts[2] while a stays on hosts[0]: once b's port is ACTIVE on
    its new host, a's host forwards b's MAC to the new VTEP, the old host is no longer a
    member, every host holds the desired state and a and b ping both ways."""
    home, old, new = hosts
    bed.add_network(name, vni=vni, encap=encap)
    a = bed.add_vm(f"{name}-a", name, home, [f"203.0.113.{vni % 100}", f"2001:db8::{vni}:1"])
    b = bed.add_vm(f"{name}-b", name, old, [f"203.0.113.{vni % 100 + 100}", f"2001:db8::{vni}:2"])
    assert all(bed.ping_many([(a, ip) for ip in b.ips]))
    bed.move_vm(b, new)  # delete the veth on old, PATCH host, new veth into new; ACTIVE
    assert bed.port(b).host == new
    bed.wait_converged()
    assert bed.kernel_tables(home)[vni].fdb == {b.mac: bed.hosts[new].vtep_ip}
    assert vni not in bed.kernel_tables(old)  # no longer a member
    for host in hosts:
        assert_tables_match_server(bed, host)
    assert all(bed.ping_many([(a, ip) for ip in b.ips])), "no connectivity after migration"
    assert all(bed.ping_many([(b, ip) for ip in a.ips]))


def check_fixed_ip_change(
    bed: Testbed, vni: int, a_host: str, b_host: str, encap: str = "vxlan"
) -> None:
    """b changes its IPs (``proxy`` network): a's host answers for the new ones only, and a
    reaches b at its new address, not at its old one."""
    k = vni % 100
    old = [f"203.0.113.{k}", f"2001:db8::{vni}:1"]
    new = [f"203.0.113.{k + 100}", f"2001:db8::{vni}:2"]
    bed.add_network(f"addr-{vni}", vni=vni, arp_suppression="proxy", encap=encap)
    a = bed.add_vm(f"addr-{vni}-a", f"addr-{vni}", a_host, [f"203.0.113.{k + 50}"])
    b = bed.add_vm(f"addr-{vni}-b", f"addr-{vni}", b_host, old)
    assert bed.ping(a, old[0])
    bed.readdress_vm(b, new)
    bed.wait_converged()
    neigh = bed.kernel_tables(a_host)[vni].neigh
    assert neigh == {ip: b.mac for ip in new}  # the old IPs are gone
    bed.flush_neigh([a])
    assert bed.ping(a, new[0])
    assert not bed.ping(a, old[0], timeout=1)


def wait_tables(bed: Testbed, host: str, timeout: float = 20) -> None:
    """Until ``host``'s datapath holds the server's desired state (read back)."""

    def matches() -> bool:
        try:
            assert_tables_match_server(bed, host)
        except AssertionError:
            return False
        return True

    try:
        wait_for(f"{host}'s tables to match the server", matches, timeout)
    except TimeoutError:
        assert_tables_match_server(bed, host)  # fail with the difference
        raise


def check_agent_kill_restart(
    bed: Testbed, vni: int, host: str, peers: tuple[str, str, str], encap: str = "vxlan"
) -> None:
    """``kill -9`` the agent of ``host`` (its VM a stays), then while it is down: the VM on
    peers[0] goes, the one on peers[1] changes its IPs, a new one comes on peers[2]. The
    datapath is left as it was (fail static); once the agent restarts it converges to the
    server's tables, the changes reach the datapath, and no entry that did not change is
    removed or even rewritten (the host kind's table monitor)."""
    k = vni % 100
    name = f"kill-{vni}"

    def addrs(i: int) -> list[str]:
        return [f"198.19.{100 + k}.{i}", f"2001:db8::{vni}:{i}"]

    bed.add_network(name, vni=vni, encap=encap)
    a = bed.add_vm(f"{name}-a", name, host, addrs(1))
    gone = bed.add_vm(f"{name}-gone", name, peers[0], addrs(2))
    moved = bed.add_vm(f"{name}-readdressed", name, peers[1], addrs(3))
    bed.wait_converged()
    before = bed.kernel_tables(host)
    agent = bed.hosts[host].agent
    assert agent is not None
    old_pid = agent.pid
    bed.kill_agent(host)
    assert not agent.alive
    bed.remove_vm(gone)
    new_vm = bed.add_vm(f"{name}-new", name, peers[2], addrs(4))
    bed.readdress_vm(moved, addrs(33))
    wait_for(f"{host} to fall out of sync", lambda: not in_sync(bed, host), 10)
    assert bed.kernel_tables(host) == before  # fail static: nobody touched the datapath
    others = [v for v in before if v != vni]
    unchanged_macs = [moved.mac] + [mac for v in others for mac in before[v].fdb]
    unchanged_ips = [ip for v in others for ip in before[v].neigh]
    with bed.monitor(host) as mon:
        new = bed.start_agent(host)
        bed.wait_converged()
        wait_tables(bed, host)
    assert new.pid != old_pid
    tables = bed.kernel_tables(host)[vni]
    assert tables.fdb == {
        moved.mac: bed.hosts[peers[1]].vtep_ip,
        new_vm.mac: bed.hosts[peers[2]].vtep_ip,
    }
    assert set(tables.neigh) == set(addrs(33) + addrs(4))
    # entries that did not change: never removed, not even rewritten
    assert mon.touched(*unchanged_macs, *unchanged_ips) == []
    # the changes themselves did reach the datapath through the monitor's window
    assert mon.deleted(gone.mac), "the gone VM's FDB entry should have been removed"
    assert mon.deleted(addrs(3)[0]), "the old address should have been removed"
    assert mon.mentioning(new_vm.mac)
    assert all(bed.ping_many([(a, ip) for ip in moved.ips + new_vm.ips]))


def check_cold_resolution(bed: Testbed, network: str, family: int) -> None:
    """Every VM of ``network`` pings every other over IPv``family`` from cold neighbour
    caches: all answer, the capture sees the unicast traffic, and not one ARP broadcast
    (IPv4) or ND multicast (IPv6) of the network crosses the underlay."""
    vms = vms_of(bed, network)
    vni = vms[0].network.vni
    bed.flush_neigh(vms)
    pairs = all_pairs(vms, family=family)
    what = "arp_broadcast" if family == 4 else "nd_multicast"
    with bed.capture(f"{'arp' if family == 4 else 'nd'}-{network}") as cap:
        results = bed.ping_many(pairs)
    assert all(results), f"pings from cold {'ARP' if family == 4 else 'ND'} caches failed"
    assert cap.result is not None
    assert cap.result.count("unicast", vni=vni) >= 2 * len(pairs)  # the capture does see them
    assert cap.result.count(what, vni=vni) == 0, cap.result.select(what)
