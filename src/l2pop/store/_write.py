"""Writes of the SQL store: ``SqlWriteTx`` (the ``WriteTx`` of ``store/abc.py``).

Each write runs its explicit checks first (a better message, the block stays usable), then
the statement; uniqueness and references are constraints, and an ``IntegrityError`` is
mapped back to ``Conflict``/``NotFound`` by constraint name (``integrity.py``): the
constraints stay the race-free last word. The first write takes the block's revision
(``UPDATE meta SET revision = revision + 1``) and every write logs one change row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import (
    Connection,
    CursorResult,
    Executable,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from l2pop.model import Conflict, Host, Network, NotFound, Port
from l2pop.store._read import CHUNK, SqlReadTx, encaps_text, now, row_values, sorted_ips
from l2pop.store.abc import ChangeKind, ChangeOp
from l2pop.store.integrity import Deleting, constraint_name, domain_error
from l2pop.store.schema import changes, hosts, meta, networks, port_ips, ports

#: constraint -> request field, for errors of ``insert_ports``
BULK_FIELDS = {
    "uq_ports_network_id_mac": "mac",
    "uq_port_ips_network_id_ip": "fixed_ips",
    "pk_ports": "id",
    "fk_ports_network_id": "network_id",
    "fk_ports_host": "host",
}


class SqlWriteTx(SqlReadTx):
    """``WriteTx``. Each write method runs its read-only checks first: a call they refuse
    (``NotFound``, ``Conflict``) leaves the block usable and the revision untouched. After a
    database error (constraint violation included) the block is ``failed``: it rolls back."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self._revision: int | None = None
        self._seq = 0
        self.failed = False

    def _exec(self, stmt: Executable, params: Any = None, subject: object = None) -> Any:
        try:
            return self._c.execute(stmt, params)
        except DBAPIError as exc:
            # PostgreSQL aborts the transaction on any error; make SQLite behave the same
            self.failed = True
            if isinstance(exc, IntegrityError):
                error = domain_error(exc, subject)
                if error is not None:
                    raise error from exc
            raise

    @property
    def taken_revision(self) -> int | None:
        """This block's revision once its first write (or ``serialize``) took it."""
        return self._revision

    def _stamp(self) -> int:
        """This block's revision, taken on its first write."""
        if self._revision is None:
            bump = update(meta).values(revision=meta.c.revision + 1).returning(meta.c.revision)
            self._revision = int(self._exec(bump).scalar_one())
        return self._revision

    def _log(self, kind: ChangeKind, key: str, op: ChangeOp, network_id: str | None) -> None:
        self._seq += 1
        row = dict(revision=self._revision, seq=self._seq, kind=kind, key=key, op=op)
        self._exec(insert(changes).values(**row, network_id=network_id))

    def _modified(self, result: CursorResult[Any], what: str) -> None:
        if result.rowcount == 0:  # deleted by a concurrent writer after our check
            self.failed = True
            raise NotFound(f"{what} not found")

    # -- networks ---------------------------------------------------------------------

    def _require_network(self, network_id: str) -> None:
        if self.get_network(network_id) is None:
            raise NotFound(f"network {network_id} not found")

    def serialize(self) -> int:
        return self._stamp()

    def insert_network(self, network: Network) -> Network:
        stored = replace(network, revision=self._stamp())
        self._exec(insert(networks).values(row_values(networks, stored)), subject=stored)
        self._log("network", stored.id, "create", stored.id)
        return stored

    def update_network(self, network: Network) -> Network:
        self._require_network(network.id)
        stored = replace(network, revision=self._stamp())
        values = row_values(networks, stored, skip=("id", "created_at"))
        stmt = update(networks).where(networks.c.id == stored.id).values(values)
        self._modified(self._exec(stmt, subject=stored), f"network {stored.id}")
        self._log("network", stored.id, "update", stored.id)
        return stored

    def delete_network(self, network_id: str) -> None:
        self._require_network(network_id)
        if count := self.count_ports(network_id):
            raise Conflict(f"network {network_id} still has {count} port(s); delete them first")
        self._stamp()
        stmt = delete(networks).where(networks.c.id == network_id)
        result = self._exec(stmt, subject=Deleting("network", network_id))
        self._modified(result, f"network {network_id}")
        self._log("network", network_id, "delete", network_id)

    # -- ports ------------------------------------------------------------------------

    def _check_host(self, host: str | None) -> None:
        known = select(exists().where(hosts.c.name == host))
        if host is not None and not self._c.execute(known).scalar():
            raise Conflict(f"host {host} is not registered", field="host")

    def _check_ips(self, port: Port, ips: Iterable[str]) -> None:
        """Refuse IPs another port of the network holds, naming the first one."""
        wanted = sorted(ips)
        if not wanted:
            return
        stmt = select(port_ips.c.ip).where(
            port_ips.c.network_id == port.network_id,
            port_ips.c.ip.in_(wanted),
            port_ips.c.port_id != port.id,
        )
        if taken := self._c.execute(stmt).scalars().all():
            ip = sorted_ips(taken)[0]
            raise Conflict(f"ip {ip} is already used in network {port.network_id}", "fixed_ips")

    def _insert_ips(self, port: Port, ips: Iterable[str]) -> None:
        rows = [{"port_id": port.id, "network_id": port.network_id, "ip": ip} for ip in ips]
        if rows:
            # one multi-row VALUES statement: psycopg runs executemany() in pipeline mode,
            # which logs a warning when a row violates a constraint
            self._exec(insert(port_ips).values(rows), subject=port)

    def insert_port(self, port: Port) -> Port:
        self._require_network(port.network_id)
        self._check_host(port.host)
        self._check_ips(port, port.fixed_ips)
        stored = replace(
            port,
            fixed_ips=sorted_ips(port.fixed_ips),
            revision=self._stamp(),
            created_at=port.created_at or now(),
        )
        self._exec(insert(ports).values(row_values(ports, stored)), subject=stored)
        self._insert_ips(stored, stored.fixed_ips)
        self._log("port", stored.id, "create", stored.network_id)
        return stored

    def insert_ports(self, new_ports: Sequence[Port]) -> int:
        if not new_ports:
            return 0
        revision = self._stamp()
        created = now()
        port_rows, ip_rows, change_rows = [], [], []
        for port in new_ports:
            stored = replace(port, revision=revision, created_at=port.created_at or created)
            port_rows.append(row_values(ports, stored))
            ip_rows += [
                {"port_id": port.id, "network_id": port.network_id, "ip": ip}
                for ip in set(port.fixed_ips)
            ]
            self._seq += 1
            change_rows.append(
                dict(
                    revision=revision,
                    seq=self._seq,
                    kind="port",
                    key=port.id,
                    op="create",
                    network_id=port.network_id,
                )
            )
        try:
            for table, rows in ((ports, port_rows), (port_ips, ip_rows), (changes, change_rows)):
                for start in range(0, len(rows), CHUNK):
                    self._exec(insert(table), rows[start : start + CHUNK])
        except IntegrityError as exc:
            name = constraint_name(exc)
            field = BULK_FIELDS.get(name or "", "ports")
            raise Conflict(f"bulk insert refused: {field} violates {name}", field) from exc
        return len(port_rows)

    def update_port(self, port: Port) -> Port:
        """Update every field but ``network_id`` (a port cannot change networks) and
        ``created_at``; only the fixed IPs that changed are rewritten."""
        old = self.get_port(port.id)
        if old is None:
            raise NotFound(f"port {port.id} not found")
        if port.network_id != old.network_id:
            raise Conflict(f"port {port.id} cannot move to another network", "network_id")
        added = set(port.fixed_ips) - set(old.fixed_ips)
        removed = set(old.fixed_ips) - set(port.fixed_ips)
        if port.host != old.host:
            self._check_host(port.host)
        self._check_ips(port, added)
        stored = replace(
            port,
            fixed_ips=sorted_ips(port.fixed_ips),
            revision=self._stamp(),
            created_at=old.created_at,
        )
        values = row_values(ports, stored, skip=("id", "network_id", "created_at"))
        stmt = update(ports).where(ports.c.id == stored.id).values(values)
        self._modified(self._exec(stmt, subject=stored), f"port {stored.id}")
        if removed:
            gone = port_ips.c.ip.in_(sorted(removed))
            self._exec(delete(port_ips).where(port_ips.c.port_id == stored.id, gone))
        self._insert_ips(stored, sorted_ips(added))
        self._log("port", stored.id, "update", stored.network_id)
        return stored

    def delete_port(self, port_id: str) -> Port:
        old = self.get_port(port_id)
        if old is None:
            raise NotFound(f"port {port_id} not found")
        self._stamp()
        # port_ips rows go with it (ON DELETE CASCADE)
        result = self._exec(delete(ports).where(ports.c.id == port_id))
        self._modified(result, f"port {port_id}")
        self._log("port", port_id, "delete", old.network_id)
        return old

    # -- hosts ------------------------------------------------------------------------

    def insert_host(self, host: Host, token_hash: str) -> Host:
        self._stamp()
        stored = replace(host, created_at=host.created_at or now())
        values = row_values(hosts, stored) | {
            "token_hash": token_hash,
            "encaps": encaps_text(stored.encaps),
        }
        self._exec(insert(hosts).values(values), subject=stored)
        self._log("host", stored.name, "create", None)
        return stored

    def delete_host(self, name: str) -> None:
        """Refused (``Conflict``) while ports are bound to the host: unbind them first, in
        the same block, so that their change rows are written too."""
        if self.get_host(name) is None:
            raise NotFound(f"host {name} not found")
        bound = select(func.count()).select_from(ports).where(ports.c.host == name)
        if count := int(self._c.execute(bound).scalar_one()):
            raise Conflict(f"host {name} still has {count} bound port(s)", field="host")
        self._stamp()
        stmt = delete(hosts).where(hosts.c.name == name)
        self._modified(self._exec(stmt, subject=Deleting("host", name)), f"host {name}")
        self._log("host", name, "delete", None)
