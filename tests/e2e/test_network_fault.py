"""One network the kernel refuses must not stall a host (real kernels in namespaces, root).

The fault is a realistic one: the operator's own VXLAN device ``opsquat0`` in h1's namespace
(outside every agent prefix, so the agent never touches it) already uses VNI V on UDP 4789,
so the kernel refuses to create the agent's ``vxlan-V`` (EEXIST, "A VXLAN device with the
specified VNI already exists"). The agent must still program network W completely, and a
port added to W afterwards, while the server shows h1 out of sync with V named in its
errors; once the operator deletes the device, V converges on its own retry, the errors clear
and h1 is in sync again.

One testbed per test (2 hosts, a real server and agents); every namespace is deleted by name
at teardown whatever happens (``Testbed``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from l2pop.testbed import iproute
from l2pop.testbed.bed import Testbed
from l2pop.testbed.nodes import wait_for
from l2pop.wire import HostOut

pytestmark = pytest.mark.root

V_VNI, W_VNI = 2101, 2102
SQUATTER = "opsquat0"
#: the agent's retry delays are capped at 30 s; this leaves room for one more retry
HEAL_TIMEOUT = 45.0


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Testbed]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, bridge and vxlan devices)")
    missing = [t for t in ("ip", "bridge", "ping", "tcpdump") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)} (scripts/bootstrap installs them)")
    with Testbed(2, workdir=tmp_path) as testbed:
        yield testbed


def assert_network_matches_server(bed: Testbed, host: str, vni: int) -> None:
    """``host``'s kernel holds exactly what the server says it must for network ``vni``."""
    [want] = [n for n in bed.host_fdb(host).networks if n.vni == vni]
    got = bed.kernel_tables(host)[vni]
    assert got.mode == want.arp_suppression
    assert got.flood == sorted(want.flood)
    assert got.fdb == {e.mac: e.vtep for e in want.fdb}
    assert got.neigh == {e.ip: e.mac for e in want.neigh}
    if got.mode == "neigh_suppress":
        assert got.static == sorted(got.fdb)


def failing(bed: Testbed, host: str, network_id: str) -> HostOut | None:
    """The host's status when it names ``network_id`` in its errors, else None."""
    status = bed.host_status(host)
    return status if any(e.network_id == network_id for e in status.errors) else None


def test_a_refused_network_does_not_stall_the_others_and_heals(bed: Testbed) -> None:
    h1, h2 = bed.hosts["h1"], bed.hosts["h2"]
    iproute.ip(h1.netns, "link", "add", SQUATTER, "type", "vxlan", "id", str(V_VNI),
           "dstport", "4789", "local", h1.vtep_ip, "nolearning")  # fmt: skip
    v = bed.add_network("fault-v", vni=V_VNI)
    bed.add_network("fault-w", vni=W_VNI)
    # Ports on both hosts in both networks: h1 is a member of V and W, with remote entries.
    v1 = bed.add_vm("v-1", "fault-v", "h1", ["198.19.21.1", "2001:db8::21:1"])
    v2 = bed.add_vm("v-2", "fault-v", "h2", ["198.19.21.2", "2001:db8::21:2"])
    w1 = bed.add_vm("w-1", "fault-w", "h1", ["198.19.22.1", "2001:db8::22:1"])
    w2 = bed.add_vm("w-2", "fault-w", "h2", ["198.19.22.2", "2001:db8::22:2"])

    # The server shows the failure, from h1's acks: V named, h1 not in sync.
    status = wait_for("h1 to report V failing", lambda: failing(bed, "h1", v.id), 20)
    assert status.connected and not status.in_sync
    [error] = status.errors
    assert error.vni == V_VNI and error.entry == f"device vxlan-{V_VNI}"
    assert "already exists" in error.message
    assert V_VNI not in bed.kernel_tables("h1")  # no vxlan-V: the kernel refused it
    assert SQUATTER in iproute.ip(h1.netns, "-br", "link", "show")  # not the agent's to touch

    # W is programmed completely on h1, its local port wired: traffic flows.
    wait_for("h1's kernel to hold W", lambda: W_VNI in bed.kernel_tables("h1"), 10)
    assert_network_matches_server(bed, "h1", W_VNI)
    assert bed.kernel_tables("h1")[W_VNI].ports == [w1.tap]
    assert w1.ipv4 is not None and w2.ipv4 is not None
    assert bed.ping(w1, w2.ipv4) and bed.ping(w2, w1.ipv4)

    # A port added to W later reaches h1's kernel while V still fails.
    w3 = bed.add_vm("w-3", "fault-w", "h2", ["198.19.22.3", "2001:db8::22:3"])
    wait_for(
        "w-3's FDB entry on h1",
        lambda: bed.kernel_tables("h1")[W_VNI].fdb.get(w3.mac) == h2.vtep_ip,
        10,
    )
    assert_network_matches_server(bed, "h1", W_VNI)
    assert w3.ipv4 is not None and bed.ping(w1, w3.ipv4)
    assert failing(bed, "h1", v.id) is not None
    h2_status = bed.host_status("h2")  # the other host never had a problem
    assert h2_status.in_sync and h2_status.errors == []

    # The operator removes the device: V converges on its next retry, errors clear.
    iproute.ip(h1.netns, "link", "del", SQUATTER)

    def healed() -> bool:
        s = bed.host_status("h1")
        return s.connected and s.in_sync and s.errors == []

    wait_for("h1 in sync with no errors", healed, HEAL_TIMEOUT)
    bed.wait_converged()
    assert_network_matches_server(bed, "h1", V_VNI)
    assert_network_matches_server(bed, "h1", W_VNI)
    assert bed.kernel_tables("h1")[V_VNI].ports == [v1.tap]
    assert v2.ipv4 is not None and bed.ping(v1, v2.ipv4)
    assert v1.ipv6 is not None and bed.ping(v2, v1.ipv6)
