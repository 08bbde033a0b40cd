"""Writes of the SQL store: ``SqlWriteTx`` (the ``WriteTx`` of ``store/abc.py``).

Each write runs its explicit checks first (a better message, the block stays usable), then
the statement; uniqueness and references are constraints, and an ``IntegrityError`` is
mapped back to ``Conflict``/``NotFound`` by constraint name (``integrity.py``): the
constraints stay the race-free last word. The first write takes the block's revision and
every write logs one change row.

Round trips are what a write costs, so a block does not ask twice: a network or host it has
seen exists, and a port it has read, are remembered for the block (it holds the write
serialisation: only the block itself can change them), and the change rows are written
together at the end (``finish``). On PostgreSQL the lock that starts the block reads the
revision, so the block's revision is the next one, taken without a statement and written by
``finish`` with the change rows and the ``NOTIFY``, in one statement; on SQLite the first
write takes it (``UPDATE meta SET revision = revision + 1 RETURNING revision``).
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
    literal,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from l2pop.model import Conflict, Host, Network, NotFound, Port
from l2pop.store._read import CHUNK, SqlReadTx, encaps_text, now, row_values, sorted_ips
from l2pop.store.abc import NOTIFY_CHANNEL, Change, ChangedRows, ChangeKind, ChangeOp
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

    def __init__(self, conn: Connection, locked_revision: int | None = None) -> None:
        """``locked_revision``: the revision the block's lock read (PostgreSQL), or None
        (SQLite: the first write bumps the stored revision)."""
        super().__init__(conn)
        self._locked = locked_revision
        self._revision: int | None = None
        self._seq = 0
        self.failed = False
        self._pending: list[dict[str, Any]] = []  # change rows ``finish`` writes
        # known to exist in this block (read or written by it)
        self._networks: set[str] = set()
        self._hosts: set[str] = set()
        self._seen: dict[str, Port] = {}  # ports as read or last written by this block

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
            if self._locked is not None:
                self._revision = self._locked + 1  # written by ``finish``
            else:
                bump = update(meta).values(revision=meta.c.revision + 1)
                self._revision = int(self._exec(bump.returning(meta.c.revision)).scalar_one())
        return self._revision

    def _give_back(self, taken_before: bool) -> None:
        """Undo the stamp of a write that was refused after taking it (first write only)."""
        if taken_before or self._revision is None:
            return
        if self._locked is None:
            self._exec(update(meta).values(revision=meta.c.revision - 1))
        self._revision = None

    def _log(self, kind: ChangeKind, key: str, op: ChangeOp, network_id: str | None) -> None:
        self._seq += 1
        row = dict(revision=self._revision, seq=self._seq, kind=kind, key=key, op=op)
        self._pending.append(row | {"network_id": network_id})

    def _write_log(self, keep_one: bool = False) -> dict[str, Any] | None:
        """Write the pending change rows; with ``keep_one`` and a single row pending, return
        it instead (for ``finish`` to fold into its statement)."""
        rows, self._pending = self._pending, []
        if keep_one and len(rows) == 1:
            return rows[0]
        # one row: a statement SQLAlchemy caches (a multi-row VALUES is compiled each time)
        if len(rows) == 1:
            self._exec(insert(changes).values(rows[0]))
        for start in range(0, len(rows) if len(rows) > 1 else 0, CHUNK):
            self._exec(insert(changes), rows[start : start + CHUNK])
        return None

    def finish(self) -> None:
        """Write what the block deferred, before its commit: the change rows and, on
        PostgreSQL, the revision and the ``NOTIFY`` (delivered on commit), in one statement
        with the change row when the block wrote one."""
        if self._locked is None or self._revision is None:
            self._write_log()
            return
        row = self._write_log(keep_one=True)
        stmt = (
            update(meta)
            .where(meta.c.id == 1)
            .values(revision=self._revision)
            .returning(func.pg_notify(NOTIFY_CHANNEL, str(self._revision)))
        )
        if row is not None:  # a data-modifying CTE runs whether or not the statement reads it
            stmt = stmt.add_cte(insert(changes).values(row).cte("logged"))
        self._exec(stmt).all()

    # -- reads: the block remembers what it saw -------------------------------------

    def revision(self) -> int:
        if self._revision is not None:
            return self._revision
        return self._locked if self._locked is not None else super().revision()

    def changes_since(self, revision: int, limit: int | None = None) -> list[Change]:
        self._write_log()  # the block sees its own writes
        return super().changes_since(revision, limit)

    def changes_with_rows(self, revision: int) -> ChangedRows:
        self._write_log()
        return replace(super().changes_with_rows(revision), revision=self.revision())

    def get_network(self, network_id: str) -> Network | None:
        found = super().get_network(network_id)
        if found is not None:
            self._networks.add(found.id)
        return found

    def get_host(self, name: str) -> Host | None:
        found = super().get_host(name)
        if found is not None:
            self._hosts.add(found.name)
        return found

    def get_binding(self, network_id: str, host: str | None) -> tuple[Network | None, Host | None]:
        network, found = super().get_binding(network_id, host)
        if network is not None:
            self._networks.add(network.id)
        if found is not None:
            self._hosts.add(found.name)
        return network, found

    def get_port(self, port_id: str) -> Port | None:
        seen = self._seen.get(port_id)
        return seen if seen is not None else super().get_port(port_id)

    def _ports(self, conds: list[Any], *, sql_order: bool = False) -> list[Port]:
        found = super()._ports(conds, sql_order=sql_order)
        self._seen.update((p.id, p) for p in found)
        return found

    def _modified(self, result: CursorResult[Any], what: str) -> None:
        if result.rowcount == 0:  # deleted by a concurrent writer after our check
            self.failed = True
            raise NotFound(f"{what} not found")

    # -- networks ---------------------------------------------------------------------

    def _require_network(self, network_id: str) -> None:
        if network_id not in self._networks and self.get_network(network_id) is None:
            raise NotFound(f"network {network_id} not found")

    def serialize(self) -> int:
        return self._stamp()

    def insert_network(self, network: Network) -> Network:
        stored = replace(network, revision=self._stamp())
        self._exec(insert(networks).values(row_values(networks, stored)), subject=stored)
        self._networks.add(stored.id)
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
        self._networks.discard(network_id)
        self._log("network", network_id, "delete", network_id)

    # -- ports ------------------------------------------------------------------------

    def _check_host(self, host: str | None) -> None:
        if host is None or host in self._hosts:
            return
        if not self._c.execute(select(exists().where(hosts.c.name == host))).scalar():
            raise Conflict(f"host {host} is not registered", field="host")
        self._hosts.add(host)

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

    def _insert_port_row(self, stored: Port) -> bool:
        """Insert the row of ``stored`` unless one of its IPs is taken in its network (the
        check rides on the insert: ``INSERT ... SELECT ... WHERE NOT EXISTS``); whether it
        was inserted."""
        values = row_values(ports, stored)
        if not stored.fixed_ips:
            self._exec(insert(ports).values(values), subject=stored)
            return True
        taken = select(port_ips.c.ip).where(
            port_ips.c.network_id == stored.network_id, port_ips.c.ip.in_(stored.fixed_ips)
        )
        row = select(*(literal(v, ports.c[k].type) for k, v in values.items()))
        stmt = insert(ports).from_select(list(values), row.where(~exists(taken)))
        # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... SELECT
        return self._exec(stmt.returning(ports.c.id), subject=stored).first() is not None

    def _insert_ips(self, port: Port, ips: Iterable[str]) -> None:
        rows = [{"port_id": port.id, "network_id": port.network_id, "ip": ip} for ip in ips]
        if len(rows) == 1:  # most ports: a statement SQLAlchemy caches
            self._exec(insert(port_ips).values(rows[0]), subject=port)
        elif rows:
            # one multi-row VALUES statement: psycopg runs executemany() in pipeline mode,
            # which logs a warning when a row violates a constraint
            self._exec(insert(port_ips).values(rows), subject=port)

    def insert_port(self, port: Port) -> Port:
        self._require_network(port.network_id)
        self._check_host(port.host)
        taken_before = self._revision is not None
        stored = replace(
            port,
            fixed_ips=sorted_ips(port.fixed_ips),
            revision=self._stamp(),
            created_at=port.created_at or now(),
        )
        if not self._insert_port_row(stored):  # an IP is taken: nothing was written
            self._give_back(taken_before)
            self._check_ips(port, port.fixed_ips)  # names the first
            ips = ", ".join(stored.fixed_ips)
            raise Conflict(f"ip {ips} is already used in network {port.network_id}", "fixed_ips")
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
        self._seen[stored.id] = stored
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
        self._seen.pop(port_id, None)
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
        self._hosts.add(stored.name)
        self._log("host", stored.name, "create", None)
        return stored

    def delete_host(self, name: str) -> None:
        """Refused (``Conflict``) while ports are bound to the host: unbind them first, in
        the same block, so that their change rows are written too."""
        if name not in self._hosts and self.get_host(name) is None:
            raise NotFound(f"host {name} not found")
        bound = select(func.count()).select_from(ports).where(ports.c.host == name)
        if count := int(self._c.execute(bound).scalar_one()):
            raise Conflict(f"host {name} still has {count} bound port(s)", field="host")
        self._stamp()
        stmt = delete(hosts).where(hosts.c.name == name)
        self._modified(self._exec(stmt, subject=Deleting("host", name)), f"host {name}")
        self._hosts.discard(name)
        self._log("host", name, "delete", None)
