"""Queries of the SQL store: ``SqlReadTx`` (the ``ReadTx`` of ``store/abc.py``) and the
mapping between rows and model values, shared with ``_write.py``.

Reads are one snapshot: SQLite WAL readers see the database as of their first read;
PostgreSQL reads run REPEATABLE READ, READ ONLY (``sql.py`` opens the transaction).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from enum import Enum
from sys import intern
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, Table, func, literal, select

from l2pop.model import ArpSuppression, Encap, Host, Network, Port, PortStatus
from l2pop.model.validation import ip_sort_key
from l2pop.store.abc import Change, ChangedRows, ChangeLogTruncated, StoreCounts, iter_chunks
from l2pop.store.schema import changes, hosts, meta, networks, port_ips, ports, replicas

#: ids per ``IN (...)``; well under SQLite's 32766 and PostgreSQL's 65535 bound parameters
CHUNK = 1000


def now() -> datetime:
    return datetime.now(UTC)


def sorted_ips(ips: Iterable[str]) -> tuple[str, ...]:
    distinct = set(ips)
    if len(distinct) < 2:  # most ports: nothing to sort, so no address to parse
        return tuple(distinct)
    return tuple(sorted(distinct, key=ip_sort_key))


def row_values(table: Table, obj: object, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The column values of ``obj`` for ``table``; enums are stored by value."""
    values = {}
    for column in table.columns:
        if column.name not in skip and hasattr(obj, column.name):
            value = getattr(obj, column.name)
            values[column.name] = value.value if isinstance(value, Enum) else value
    return values


def encaps_text(encaps: Iterable[Encap] | None) -> str | None:
    """How the hosts table stores announced encaps: sorted, comma-separated; None as NULL."""
    return None if encaps is None else ",".join(sorted(e.value for e in encaps))


def encaps_of(text: str | None) -> frozenset[Encap] | None:
    """``encaps_text`` read back; values this version does not know are left out."""
    if text is None:
        return None
    known = {e.value for e in Encap}
    return frozenset(Encap(t) for t in text.split(",") if t in known)


def network_of(row: Any) -> Network:
    return Network(
        id=row.id,
        name=row.name,
        vni=row.vni,
        arp_suppression=ArpSuppression(row.arp_suppression),
        created_at=row.created_at,
        revision=row.revision,
        encap=Encap(row.encap),
    )


def host_of(row: Any) -> Host:
    return Host(
        name=row.name,
        vtep_ip=row.vtep_ip,
        created_at=row.created_at,
        last_seen=row.last_seen,
        applied_revision=row.applied_revision,
        applied_digest=row.applied_digest,
        datapath=row.datapath,
        encaps=encaps_of(row.encaps),
        session_replica=row.session_replica,
        session_generation=row.session_generation,
    )


def port_of(row: Any, ips: Iterable[str]) -> Port:
    # network ids and host names repeat across ports: one string each, not one per row
    # (the hub holds every port; 100,000 ports share 2,000 network ids and 1,000 hosts)
    return Port(
        id=row.id,
        network_id=intern(row.network_id),
        name=row.name,
        mac=row.mac,
        fixed_ips=sorted_ips(ips),
        host=intern(row.host) if row.host is not None else None,
        status=PortStatus(row.status),
        revision=row.revision,
        created_at=row.created_at,
    )


def labelled(table: Table, prefix: str, skip: tuple[str, ...] = ()) -> list[Any]:
    """The columns of ``table`` labelled ``prefix + name``, to select beside other tables'."""
    return [c.label(prefix + c.name) for c in table.columns if c.name not in skip]


def unprefixed(row: Any, prefix: str) -> Any:
    """The columns of ``row`` labelled by ``labelled(..., prefix)``, by their own names;
    None when the row's outer join found nothing (its primary key is NULL)."""
    values = {k[len(prefix) :]: v for k, v in row._mapping.items() if k.startswith(prefix)}
    key = "name" if prefix == "h_" else "id"
    return SimpleNamespace(**values) if values[key] is not None else None


#: one row to outer-join single lookups to, so that a miss is a NULL, not a missing row
ONE_ROW = select(literal(1).label("one")).subquery("one")


def port_filters(network_id: str | None, host: str | None, status: PortStatus | None) -> list[Any]:
    """The WHERE terms of the list filters that are given."""
    conds: list[Any] = []
    if network_id is not None:
        conds.append(ports.c.network_id == network_id)
    if host is not None:
        conds.append(ports.c.host == host)
    if status is not None:
        conds.append(ports.c.status == PortStatus(status).value)
    return conds


class SqlReadTx:
    """``ReadTx`` over one connection inside one transaction."""

    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def revision(self) -> int:
        return int(self._c.execute(select(meta.c.revision)).scalar_one())

    def get_network(self, network_id: str) -> Network | None:
        row = self._c.execute(select(networks).where(networks.c.id == network_id)).first()
        return network_of(row) if row else None

    def list_networks(self) -> list[Network]:
        rows = self._c.execute(select(networks).order_by(networks.c.vni)).all()
        return [network_of(r) for r in rows]

    def get_port(self, port_id: str) -> Port | None:
        found = self._ports([ports.c.id == port_id])
        return found[0] if found else None

    def list_ports(
        self,
        *,
        network_id: str | None = None,
        host: str | None = None,
        status: PortStatus | None = None,
        network_ids: Iterable[str] | None = None,
        port_ids: Iterable[str] | None = None,
    ) -> list[Port]:
        conds = port_filters(network_id, host, status)
        if network_ids is not None and port_ids is not None:
            conds.append(ports.c.network_id.in_(sorted(set(network_ids))))
        if port_ids is not None:
            column, keys = ports.c.id, port_ids
        elif network_ids is not None:
            column, keys = ports.c.network_id, network_ids
        else:
            return self._ports(conds)
        out: list[Port] = []
        for chunk in iter_chunks(sorted(set(keys)), CHUNK):
            out += self._ports([*conds, column.in_(chunk)])
        out.sort(key=lambda p: (p.network_id, p.id))
        return out

    def _ports(self, conds: list[Any], *, sql_order: bool = False) -> list[Port]:
        """Ports matching ``conds`` with their fixed IPs, in one query (a LEFT JOIN on
        port_ips: a port has at most a handful of IPs), ordered by (network_id, id), or
        with ``sql_order`` by id as the database orders it."""
        stmt = (
            select(ports, port_ips.c.ip)
            .select_from(ports.outerjoin(port_ips, port_ips.c.port_id == ports.c.id))
            .where(*conds)
        )
        if sql_order:
            stmt = stmt.order_by(ports.c.id)
        rows: dict[str, Any] = {}
        ips: dict[str, list[str]] = {}
        for row in self._c.execute(stmt).all():  # one fetchall, not a fetchone per row
            if row.id not in rows:
                rows[row.id] = row
                ips[row.id] = []
            if row.ip is not None:
                ips[row.id].append(row.ip)
        found = [port_of(r, ips[r.id]) for r in rows.values()]
        if not sql_order:
            # sorted here, not in SQL: database collations need not order text as Python does
            found.sort(key=lambda p: (p.network_id, p.id))
        return found

    def page_ports(
        self,
        *,
        limit: int,
        after: str | None = None,
        network_id: str | None = None,
        host: str | None = None,
        status: PortStatus | None = None,
    ) -> list[Port]:
        conds = port_filters(network_id, host, status)
        if after is not None:
            conds.append(ports.c.id > after)
        # the page's ids in a subquery: a LIMIT over the IP join would cut a port's addresses
        page = select(ports.c.id).where(*conds).order_by(ports.c.id).limit(limit)
        return self._ports([ports.c.id.in_(page.scalar_subquery())], sql_order=True)

    def page_networks(self, *, limit: int, after_vni: int | None = None) -> list[Network]:
        stmt = select(networks).order_by(networks.c.vni).limit(limit)
        if after_vni is not None:
            stmt = stmt.where(networks.c.vni > after_vni)
        return [network_of(r) for r in self._c.execute(stmt).all()]

    def page_hosts(self, *, limit: int, after: str | None = None) -> list[Host]:
        stmt = select(hosts).order_by(hosts.c.name).limit(limit)
        if after is not None:
            stmt = stmt.where(hosts.c.name > after)
        return [host_of(r) for r in self._c.execute(stmt).all()]

    def count_ports(self, network_id: str) -> int:
        stmt = select(func.count()).select_from(ports).where(ports.c.network_id == network_id)
        return int(self._c.execute(stmt).scalar_one())

    def counts(self) -> StoreCounts:
        by_status = dict.fromkeys(PortStatus, 0)
        stmt = select(ports.c.status, func.count()).group_by(ports.c.status)
        for status, count in self._c.execute(stmt):
            by_status[PortStatus(status)] = int(count)
        return StoreCounts(
            networks=int(self._c.execute(select(func.count()).select_from(networks)).scalar_one()),
            hosts=int(self._c.execute(select(func.count()).select_from(hosts)).scalar_one()),
            ports=by_status,
        )

    def get_host(self, name: str) -> Host | None:
        row = self._c.execute(select(hosts).where(hosts.c.name == name)).first()
        return host_of(row) if row else None

    def get_binding(self, network_id: str, host: str | None) -> tuple[Network | None, Host | None]:
        if host is None:
            return self.get_network(network_id), None
        stmt = select(*labelled(networks, "n_"), *labelled(hosts, "h_", skip=("token_hash",)))
        joined = ONE_ROW.outerjoin(networks, networks.c.id == network_id).outerjoin(
            hosts, hosts.c.name == host
        )
        row = self._c.execute(stmt.select_from(joined)).one()
        net, found = unprefixed(row, "n_"), unprefixed(row, "h_")
        return (network_of(net) if net else None), (host_of(found) if found else None)

    def get_host_by_token_hash(self, token_hash: str) -> Host | None:
        row = self._c.execute(select(hosts).where(hosts.c.token_hash == token_hash)).first()
        return host_of(row) if row else None

    def list_hosts(self) -> list[Host]:
        rows = self._c.execute(select(hosts)).all()
        return sorted((host_of(r) for r in rows), key=lambda h: h.name)

    def list_replicas(self) -> dict[str, datetime]:
        rows = self._c.execute(select(replicas.c.name, replicas.c.last_seen))
        return {r.name: r.last_seen for r in rows}

    def _check_log(self, revision: int) -> int:
        """The snapshot's revision; ``ChangeLogTruncated`` when rows after ``revision`` may
        have been pruned."""
        stmt = select(meta.c.revision, meta.c.pruned_before)
        current, pruned_before = self._c.execute(stmt).one()
        if revision + 1 < pruned_before:
            raise ChangeLogTruncated(
                f"changes after revision {revision} were pruned; "
                f"the log starts at revision {pruned_before}",
                starts_at=pruned_before - 1,
            )
        return int(current)

    def changes_with_rows(self, revision: int) -> ChangedRows:
        current = self._check_log(revision)
        # each change with the current row of its network, then the changed ports by id (a
        # join on ports too would be one query less, but with stale statistics, as after a
        # bulk import, PostgreSQL plans it as hash joins over every port and fixed IP)
        stmt = (
            select(*labelled(changes, "c_"), *labelled(networks, "n_"))
            .select_from(changes.outerjoin(networks, networks.c.id == changes.c.network_id))
            .where(changes.c.revision > revision)
            .order_by(changes.c.revision, changes.c.seq)
        )
        log: list[Change] = []
        nets: dict[str, Network | None] = {}
        for row in self._c.execute(stmt).all():
            nid = row.c_network_id
            log.append(Change(row.c_revision, row.c_kind, row.c_key, row.c_op, nid))
            if nid is not None and nid not in nets:
                net = unprefixed(row, "n_")
                nets[nid] = network_of(net) if net else None
        keys = {c.key for c in log if c.kind == "port"}
        found = self.list_ports(port_ids=keys) if keys else []
        return ChangedRows(current, log, dict(sorted(nets.items())), found)

    def changes_since(self, revision: int, limit: int | None = None) -> list[Change]:
        """Change rows after ``revision`` in (revision, seq) order.

        ``limit`` never splits a revision: the last revision returned is complete, so a
        reader can always resume from the revision of the last row it got.
        """
        self._check_log(revision)
        order = (changes.c.revision, changes.c.seq)
        stmt = select(changes).where(changes.c.revision > revision).order_by(*order)
        rows = list(self._c.execute(stmt if limit is None else stmt.limit(limit)))
        if limit is not None and rows and len(rows) == limit:
            last = rows[-1]
            rest = select(changes).where(
                changes.c.revision == last.revision, changes.c.seq > last.seq
            )
            rows += self._c.execute(rest.order_by(changes.c.seq))
        return [Change(r.revision, r.kind, r.key, r.op, r.network_id) for r in rows]
