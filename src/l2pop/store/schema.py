"""Tables of the SQL store (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Every constraint carries an explicit name: ``sql.py`` turns an ``IntegrityError`` back into a
``Conflict`` naming the field at fault by looking the constraint up by name (PostgreSQL reports
it directly; for SQLite ``SQLITE_UNIQUE_COLUMNS`` maps the reported columns back to it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes in and out, on every engine.

    SQLite has no time zones: values are stored as naive UTC and UTC is re-attached on the
    way out. Naive values are refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store takes timezone-aware values")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if not isinstance(value, datetime):
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData()

ID = 36  # canonical UUID text
HOST_NAME = 63
IP = 45  # longest IPv6 text form
REPLICA_NAME = 128

#: one row (id = 1): the global revision and the change-log pruning watermark
meta = Table(
    "meta",
    metadata,
    Column("id", Integer, nullable=False),
    Column("revision", BigInteger, nullable=False),
    # change rows with revision < pruned_before may have been deleted
    Column("pruned_before", BigInteger, nullable=False),
    PrimaryKeyConstraint("id", name="pk_meta"),
    CheckConstraint("id = 1", name="ck_meta_single_row"),
)

networks = Table(
    "networks",
    metadata,
    Column("id", String(ID), nullable=False),
    Column("name", String(255), nullable=False),
    Column("vni", Integer, nullable=False),
    Column("arp_suppression", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revision", BigInteger, nullable=False),
    # added after the first release: a store made before it needs the column added
    # (docs/adr/0017-network-encap.md gives the statement per engine)
    Column("encap", String(8), nullable=False, server_default="vxlan"),
    PrimaryKeyConstraint("id", name="pk_networks"),
    UniqueConstraint("vni", name="uq_networks_vni"),
)

hosts = Table(
    "hosts",
    metadata,
    Column("name", String(HOST_NAME), nullable=False),
    Column("vtep_ip", String(IP), nullable=False),
    Column("token_hash", String(128), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_seen", UtcDateTime, nullable=True),
    Column("applied_revision", BigInteger, nullable=True),
    Column("applied_digest", String(64), nullable=True),
    # what the host's agent last announced (telemetry); NULL: no agent ever connected.
    # ``encaps`` is the sorted, comma-separated list ("gre,vxlan")
    Column("datapath", String(32), nullable=True),
    Column("encaps", String(64), nullable=True),
    # the replica holding the agent's session, and the count of sessions ever claimed
    # (docs/adr/0022-sessions-across-replicas.md)
    Column("session_replica", String(REPLICA_NAME), nullable=True),
    Column("session_generation", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("name", name="pk_hosts"),
    UniqueConstraint("vtep_ip", name="uq_hosts_vtep_ip"),
    UniqueConstraint("token_hash", name="uq_hosts_token_hash"),
)

ports = Table(
    "ports",
    metadata,
    Column("id", String(ID), nullable=False),
    Column("network_id", String(ID), nullable=False),
    Column("name", String(255), nullable=False),
    Column("mac", String(17), nullable=False),
    Column("host", String(HOST_NAME), nullable=True),
    Column("status", String(8), nullable=False),
    Column("revision", BigInteger, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("id", name="pk_ports"),
    # no ON DELETE: a network with ports, or a host with bound ports, cannot be deleted
    ForeignKeyConstraint(["network_id"], ["networks.id"], name="fk_ports_network_id"),
    ForeignKeyConstraint(["host"], ["hosts.name"], name="fk_ports_host"),
    # also serves lookups by network_id (leading column)
    UniqueConstraint("network_id", "mac", name="uq_ports_network_id_mac"),
    Index("ix_ports_host", "host"),
)

#: one row per fixed IP, so that "each IP unique within its network" is the database's rule
port_ips = Table(
    "port_ips",
    metadata,
    Column("port_id", String(ID), nullable=False),
    Column("network_id", String(ID), nullable=False),
    Column("ip", String(IP), nullable=False),
    PrimaryKeyConstraint("port_id", "ip", name="pk_port_ips"),
    ForeignKeyConstraint(["port_id"], ["ports.id"], name="fk_port_ips_port_id", ondelete="CASCADE"),
    UniqueConstraint("network_id", "ip", name="uq_port_ips_network_id_ip"),
)

#: one row per server replica that ever ran on this database: its beat says it is alive
replicas = Table(
    "replicas",
    metadata,
    Column("name", String(REPLICA_NAME), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("last_seen", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("name", name="pk_replicas"),
)

#: columns added after the first release, as (table, column): ``SqlStore`` adds those a store
#: made before them lacks, when it opens it (each is nullable or has a default)
ADDED_COLUMNS = (
    ("networks", "encap"),
    ("hosts", "datapath"),
    ("hosts", "encaps"),
    ("hosts", "session_replica"),
    ("hosts", "session_generation"),
)

changes = Table(
    "changes",
    metadata,
    Column("revision", BigInteger, nullable=False, autoincrement=False),
    Column("seq", Integer, nullable=False, autoincrement=False),
    Column("kind", String(8), nullable=False),
    Column("key", String(HOST_NAME), nullable=False),
    Column("op", String(8), nullable=False),
    Column("network_id", String(ID), nullable=True),
    PrimaryKeyConstraint("revision", "seq", name="pk_changes"),
)


def _unique_columns() -> dict[str, str]:
    """SQLite's "UNIQUE constraint failed: t.a, t.b" column list -> constraint name."""
    out: dict[str, str] = {}
    for table in metadata.tables.values():
        for constraint in table.constraints:
            if isinstance(constraint, UniqueConstraint | PrimaryKeyConstraint):
                cols = ", ".join(f"{table.name}.{c.name}" for c in constraint.columns)
                out[cols] = str(constraint.name)
    return out


SQLITE_UNIQUE_COLUMNS = _unique_columns()
