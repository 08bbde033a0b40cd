"""The words of the event feed (``model.events``): each row change named once, in order."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from l2pop.model import ArpSuppression, Encap, Network, Port, PortStatus
from l2pop.model.events import EventKind as K
from l2pop.model.events import host_session_events, network_events, port_events


def port(host: str | None = "h1", status: PortStatus = PortStatus.DOWN, **kw: object) -> Port:
    fields: dict[str, object] = {
        "id": "p1",
        "network_id": "n1",
        "name": "",
        "mac": "fa:16:3e:00:00:01",
        "fixed_ips": ("198.19.0.1",),
        "host": host,
        "status": status,
        "revision": 1,
    }
    fields.update(kw)
    return Port(**fields)  # type: ignore[arg-type]


def network(**kw: object) -> Network:
    fields: dict[str, object] = {
        "id": "n1",
        "name": "blue",
        "vni": 1001,
        "arp_suppression": ArpSuppression.NEIGH_SUPPRESS,
        "created_at": datetime.now(UTC),
        "revision": 1,
        "encap": Encap.VXLAN,
    }
    fields.update(kw)
    return Network(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (None, None, []),
        (None, port(host=None), [K.PORT_CREATED]),
        (None, port(), [K.PORT_CREATED, K.PORT_BOUND]),
        (None, port(status=PortStatus.ACTIVE), [K.PORT_CREATED, K.PORT_BOUND, K.PORT_ACTIVE]),
        (port(), None, [K.PORT_DELETED]),
        (port(), port(), []),
        (port(host=None), port(), [K.PORT_BOUND]),
        (port(), port(host=None), [K.PORT_UNBOUND]),
        (port(), port(host="h2"), [K.PORT_MIGRATED]),
        (port(), port(status=PortStatus.BUILD), [K.PORT_BUILD]),
        (port(status=PortStatus.BUILD), port(status=PortStatus.ACTIVE), [K.PORT_ACTIVE]),
        (port(status=PortStatus.ACTIVE), port(status=PortStatus.DOWN), [K.PORT_DOWN]),
        (port(), port(fixed_ips=("198.19.0.2",)), [K.PORT_UPDATED]),
        (port(), port(mac="fa:16:3e:00:00:02"), [K.PORT_UPDATED]),
        (
            port(status=PortStatus.ACTIVE),
            port(host="h2", status=PortStatus.DOWN),
            [K.PORT_MIGRATED, K.PORT_DOWN],
        ),
        (port(), port(revision=7), []),  # a revision alone is no news
    ],
)
def test_port_events(old: Port | None, new: Port | None, expected: list[K]) -> None:
    assert port_events(old, new) == expected


def test_network_events() -> None:
    assert network_events(None, network()) == [K.NETWORK_CREATED]
    assert network_events(network(), None) == [K.NETWORK_DELETED]
    assert network_events(network(), network(revision=3)) == []
    assert network_events(network(), network(name="red")) == [K.NETWORK_UPDATED]
    assert network_events(network(), network(encap=Encap.GRE)) == [K.NETWORK_UPDATED]


@pytest.mark.parametrize(
    ("was", "now", "expected"),
    [
        (None, None, []),
        (None, (False, False), [K.HOST_CREATED]),
        (None, (True, True), [K.HOST_CREATED, K.HOST_CONNECTED, K.HOST_IN_SYNC]),
        ((True, True), None, [K.HOST_DELETED]),
        ((False, False), (True, False), [K.HOST_CONNECTED]),
        ((False, False), (True, True), [K.HOST_CONNECTED, K.HOST_IN_SYNC]),
        ((True, True), (False, False), [K.HOST_LOST]),
        ((True, True), (False, True), [K.HOST_LOST]),
        ((True, True), (True, False), [K.HOST_OUT_OF_SYNC]),
        ((True, False), (True, True), [K.HOST_IN_SYNC]),
        ((True, True), (True, True), []),
        ((False, True), (False, False), []),  # disconnected hosts' digests are not news
    ],
)
def test_host_session_events(
    was: tuple[bool, bool] | None, now: tuple[bool, bool] | None, expected: list[K]
) -> None:
    assert host_session_events(was, now) == expected
