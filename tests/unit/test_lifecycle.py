"""The port status lifecycle (docs/design.md), one rule per test."""

from __future__ import annotations

import pytest

from l2pop.model import Conflict, Forbidden, InvalidField, Port, PortStatus
from l2pop.model import lifecycle as lc


def port(status: PortStatus = PortStatus.DOWN, host: str | None = None) -> Port:
    return Port("p1", "n1", "", "fa:16:3e:00:00:01", (), host, status, 1)


def test_created_unbound_is_down_and_bound_is_build() -> None:
    assert lc.initial_status(None) is PortStatus.DOWN
    assert lc.initial_status("h1") is PortStatus.BUILD


def test_binding_moves_to_build_and_unbinding_to_down() -> None:
    assert lc.status_after_binding(port(), "h1") is PortStatus.BUILD
    assert lc.status_after_binding(port(PortStatus.ACTIVE, "h1"), None) is PortStatus.DOWN


def test_migration_goes_back_to_build() -> None:
    assert lc.status_after_binding(port(PortStatus.ACTIVE, "h1"), "h2") is PortStatus.BUILD


def test_rebinding_to_same_host_keeps_status() -> None:
    assert lc.status_after_binding(port(PortStatus.ACTIVE, "h1"), "h1") is PortStatus.ACTIVE


def test_mac_change_refused_only_while_active() -> None:
    with pytest.raises(Conflict) as err:
        lc.check_mac_change(port(PortStatus.ACTIVE, "h1"), "fa:16:3e:00:00:02")
    assert err.value.field == "mac"
    lc.check_mac_change(port(PortStatus.BUILD, "h1"), "fa:16:3e:00:00:02")
    lc.check_mac_change(port(PortStatus.ACTIVE, "h1"), "fa:16:3e:00:00:01")  # unchanged


def test_only_the_bound_host_reports() -> None:
    bound = port(PortStatus.BUILD, "h1")
    assert lc.status_after_report(bound, "h1", PortStatus.ACTIVE) is PortStatus.ACTIVE
    assert lc.status_after_report(bound, "h1", PortStatus.DOWN) is PortStatus.DOWN
    with pytest.raises(Forbidden):
        lc.status_after_report(bound, "h2", PortStatus.ACTIVE)
    with pytest.raises(Forbidden):
        lc.status_after_report(port(), "h1", PortStatus.ACTIVE)


def test_build_is_never_reported() -> None:
    with pytest.raises(InvalidField):
        lc.status_after_report(port(PortStatus.ACTIVE, "h1"), "h1", PortStatus.BUILD)
