"""Integrity errors back into domain errors, by constraint name (see ``schema.py``).

PostgreSQL names the violated constraint (``diag.constraint_name``); SQLite names the columns
of a UNIQUE violation, mapped back to the constraint, and never names a failed foreign key:
the subject being written says which one it must have been.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from l2pop.model import Conflict, DomainError, Host, Network, NotFound, Port
from l2pop.store.abc import ChangeKind
from l2pop.store.schema import SQLITE_UNIQUE_COLUMNS


@dataclass(frozen=True, slots=True)
class Deleting:
    """The subject of a delete, for error messages."""

    kind: ChangeKind
    key: str


_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (.+)$")
_PG_KEY_VALUES = re.compile(r"\)=\((.*)\) already exists")


def constraint_name(exc: IntegrityError) -> str | None:
    """The name of the violated constraint; "fk" for SQLite's anonymous FK failures."""
    diag = getattr(exc.orig, "diag", None)
    if diag is not None:  # psycopg
        return getattr(diag, "constraint_name", None)
    text = str(exc.orig)
    if m := _SQLITE_UNIQUE.search(text):
        return SQLITE_UNIQUE_COLUMNS.get(m.group(1).strip())
    if "FOREIGN KEY constraint failed" in text:
        return "fk"
    return None


def _pg_duplicate_ip(exc: IntegrityError) -> str | None:
    """The IP of a uq_port_ips_network_id_ip violation, from PostgreSQL's detail line."""
    detail = getattr(getattr(exc.orig, "diag", None), "message_detail", None) or ""
    m = _PG_KEY_VALUES.search(detail)
    return m.group(1).split(", ")[-1] if m else None


def domain_error(exc: IntegrityError, subject: object) -> DomainError | None:
    """The domain error for ``exc``, raised while writing ``subject`` (a ``Network``,
    ``Port`` or ``Host``, or a ``Deleting``); None when the constraint is not one we map."""
    name = constraint_name(exc)
    if isinstance(subject, Network):
        if name == "uq_networks_vni":
            return Conflict(f"vni {subject.vni} is already used by another network", "vni")
        if name == "pk_networks":
            return Conflict(f"network {subject.id} already exists", "id")
    elif isinstance(subject, Host):
        if name == "pk_hosts":
            return Conflict(f"host {subject.name} is already registered", "name")
        if name == "uq_hosts_vtep_ip":
            return Conflict(f"vtep_ip {subject.vtep_ip} is already used by another host", "vtep_ip")
        if name == "uq_hosts_token_hash":
            return Conflict("this token is already used by another host", "token")
    elif isinstance(subject, Port):
        net = subject.network_id
        if name == "uq_ports_network_id_mac":
            return Conflict(f"mac {subject.mac} is already used in network {net}", "mac")
        if name == "uq_port_ips_network_id_ip":
            ip = _pg_duplicate_ip(exc) or " or ".join(subject.fixed_ips)
            return Conflict(f"ip {ip} is already used in network {net}", "fixed_ips")
        if name == "pk_ports":
            return Conflict(f"port {subject.id} already exists", "id")
        if name == "fk_ports_network_id":
            return NotFound(f"network {net} not found")
        if name in ("fk_ports_host", "fk"):
            return Conflict(f"host {subject.host} is not registered (or was just removed)", "host")
    elif isinstance(subject, Deleting) and name in ("fk", "fk_ports_network_id", "fk_ports_host"):
        return Conflict(f"{subject.kind} {subject.key} still has ports")
    return None
