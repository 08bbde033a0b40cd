"""Host kinds by name and mixed testbeds: what ``Testbed(kind=..., kinds=...)`` resolves to
(no root: nothing is started)."""

from __future__ import annotations

import pytest

from l2pop.testbed.hosts import LinuxHost, SwarmHosts
from l2pop.testbed.kinds import MixedHosts, host_kinds, make_kind
from l2pop.testbed.nodes import Host
from l2pop.testbed.ovshost import OvsHost


def test_a_kind_by_name_or_instance() -> None:
    assert isinstance(host_kinds(None, None, 4), LinuxHost)
    assert isinstance(host_kinds("ovs", None, 4), OvsHost)
    mine = SwarmHosts()
    assert host_kinds(mine, None, 4) is mine
    with pytest.raises(ValueError, match="unknown host kind 'vpp'"):
        make_kind("vpp")


def test_a_mix_hands_each_host_to_its_kind() -> None:
    kind = host_kinds(None, {"h3": "ovs", "h4": "ovs"}, 4, heartbeat=1.5)
    assert isinstance(kind, MixedHosts)
    assert isinstance(kind.of("h1"), LinuxHost) and kind.of("h1") is kind.default
    ovs = kind.of("h3")
    assert isinstance(ovs, OvsHost) and ovs.heartbeat == 1.5
    assert kind.of(Host("h4", 4, "ns", "192.0.2.4")) is ovs  # one OvsHost for all its hosts
    assert kind.kinds == [kind.default, ovs]


def test_a_mix_of_one_kind_is_that_kind() -> None:
    linux = LinuxHost()
    assert host_kinds(linux, {"h2": "linux", "h3": linux}, 3) is linux


def test_a_mix_needs_hosts_the_testbed_has_and_namespaced_kinds() -> None:
    with pytest.raises(ValueError, match="h9"):
        host_kinds(None, {"h9": "ovs"}, 4)
    with pytest.raises(ValueError, match="memory hosts cannot share"):
        host_kinds(None, {"h2": "memory"}, 2)
