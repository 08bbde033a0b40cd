"""Read-validate-write use-cases raced for real, on SQLite and PostgreSQL.

The defect these tests pin down: on PostgreSQL (READ COMMITTED) a use-case read a port,
validated it, and wrote the whole row back later; a concurrent migration committed in
between was silently overwritten by the agent's status report for the old binding. Every
use-case must behave as if it ran alone (docs/adr/0014-write-serialisation.md).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import httpx

from conftest import Api
from l2pop.model import Conflict, DomainError, Forbidden, NotFound, PortStatus
from l2pop.server import usecases
from l2pop.store import Store
from l2pop.wire import HostCreate, NetworkCreate, PortCreate, PortUpdate

TRIES = 120


def race(*calls: Callable[[], object]) -> list[object]:
    """Run ``calls`` at the same instant on their own threads; results or exceptions."""
    barrier = threading.Barrier(len(calls))
    out: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = calls[i]()
        except DomainError as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def setup(store: Store) -> str:
    usecases.create_host(store, HostCreate(name="h1", vtep_ip="192.0.2.1"))
    usecases.create_host(store, HostCreate(name="h2", vtep_ip="192.0.2.2"))
    return usecases.create_network(store, NetworkCreate(name="blue")).id


def test_status_report_never_undoes_a_migration(store: Store) -> None:
    """h2's agent reports ACTIVE while the operator migrates the port to h1: whatever the
    interleaving, an acknowledged migration stays, and the port is never ACTIVE on h1
    without h1's own report."""
    network_id = setup(store)
    for i in range(TRIES):
        port = usecases.create_port(
            store, PortCreate(network_id=network_id, host="h2", fixed_ips=[f"198.19.0.{i + 1}"])
        )
        report, migrate = race(
            lambda p=port: usecases.report_port_status(store, p.id, "h2", PortStatus.ACTIVE),
            lambda p=port: usecases.update_port(store, p.id, PortUpdate(host="h1")),
        )
        assert not isinstance(migrate, BaseException), migrate
        with store.read() as tx:
            final = tx.get_port(port.id)
        assert final is not None
        assert (final.host, final.status) == ("h1", PortStatus.BUILD), (i, report, final)
        if isinstance(report, BaseException):
            assert isinstance(report, Forbidden), report


def test_concurrent_updates_keep_every_acknowledged_field(store: Store) -> None:
    """A rename and a re-address of one port at the same instant: both acknowledged, so
    both must be in the store (no whole-row write from a stale read)."""
    network_id = setup(store)
    for i in range(TRIES):
        port = usecases.create_port(
            store, PortCreate(network_id=network_id, fixed_ips=[f"198.19.1.{i + 1}"])
        )
        renamed, readdressed = race(
            lambda p=port, i=i: usecases.update_port(store, p.id, PortUpdate(name=f"r{i}")),
            lambda p=port, i=i: usecases.update_port(
                store, p.id, PortUpdate(fixed_ips=[f"198.19.2.{i + 1}"])
            ),
        )
        assert not isinstance(renamed, BaseException), renamed
        assert not isinstance(readdressed, BaseException), readdressed
        with store.read() as tx:
            final = tx.get_port(port.id)
        assert final is not None
        assert (final.name, final.fixed_ips) == (f"r{i}", (f"198.19.2.{i + 1}",))


def test_bind_races_host_deletion(store: Store) -> None:
    """Binding a port to a host while the host is deleted: either the bind loses (the host
    is gone, the port unbound) or it wins and the deletion unbinds it; never a port bound
    to a host that no longer exists."""
    network_id = setup(store)
    for i in range(40):
        name = f"x{i}"
        usecases.create_host(store, HostCreate(name=name, vtep_ip=f"192.0.2.{100 + i}"))
        port = usecases.create_port(store, PortCreate(network_id=network_id))
        race(
            lambda p=port, n=name: usecases.update_port(store, p.id, PortUpdate(host=n)),
            lambda n=name: usecases.delete_host(store, n),
        )
        with store.read() as tx:
            final = tx.get_port(port.id)
            gone = tx.get_host(name) is None
        assert final is not None
        if gone:
            assert (final.host, final.status) == (None, PortStatus.DOWN), final


def test_mac_change_races_activation(store: Store) -> None:
    """A MAC change is refused while ACTIVE. Raced against the activation, either the MAC
    changed first (and the port went ACTIVE with the new MAC) or the change was refused;
    never an ACTIVE port whose MAC changed after the check."""
    network_id = setup(store)
    for i in range(TRIES):
        port = usecases.create_port(store, PortCreate(network_id=network_id, host="h2"))
        new_mac = f"fa:16:3e:aa:{i // 256:02x}:{i % 256:02x}"
        report, remac = race(
            lambda p=port: usecases.report_port_status(store, p.id, "h2", PortStatus.ACTIVE),
            lambda p=port, m=new_mac: usecases.update_port(store, p.id, PortUpdate(mac=m)),
        )
        assert not isinstance(report, BaseException), report
        with store.read() as tx:
            final = tx.get_port(port.id)
        assert final is not None and final.status is PortStatus.ACTIVE
        if isinstance(remac, Conflict):
            assert final.mac == port.mac
        else:
            assert final.mac == new_mac


def test_delete_races_update(store: Store) -> None:
    """An update racing a delete either happened before it or finds the port gone."""
    network_id = setup(store)
    for _ in range(40):
        port = usecases.create_port(store, PortCreate(network_id=network_id))
        upd, _deleted = race(
            lambda p=port: usecases.update_port(store, p.id, PortUpdate(name=uuid.uuid4().hex)),
            lambda p=port: usecases.delete_port(store, p.id),
        )
        assert upd is None or not isinstance(upd, BaseException) or isinstance(upd, NotFound)
        with store.read() as tx:
            assert tx.get_port(port.id) is None


def test_migration_survives_the_old_hosts_report_over_http(api: Api) -> None:
    """The same race through a real server process: the PATCH that answered 200 with
    host h1 is what the store holds afterwards; the old host's late report is refused."""
    network = api.network(name="blue")
    api.host("h1", "192.0.2.1")
    h2 = api.host("h2", "192.0.2.2")
    refused = 0
    with api.as_token(str(h2["token"])) as agent:
        for i in range(60):
            port = api.port(network_id=network["id"], host="h2", fixed_ips=[f"198.19.3.{i + 1}"])
            path = f"/v1/ports/{port['id']}"
            report, migrate = race(
                lambda p=path: agent.put(f"{p}/status", json={"status": "ACTIVE"}),
                lambda p=path: api.http.patch(p, json={"host": "h1"}),
            )
            assert isinstance(migrate, httpx.Response) and migrate.status_code == 200
            assert migrate.json()["host"] == "h1"
            assert isinstance(report, httpx.Response) and report.status_code in (200, 403)
            refused += report.status_code == 403
            final = api.http.get(path).json()
            assert (final["host"], final["status"]) == ("h1", "BUILD"), (i, report.text)
    assert refused <= 60
