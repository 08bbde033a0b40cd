"""Counting the SQL statements a piece of code sends to a store's database.

``counting(store)`` listens on the store's engine (``before_cursor_execute``) and records
every statement sent from the calling thread, transaction control included (SQLite's
``BEGIN``; PostgreSQL's ``BEGIN`` and ``COMMIT`` are driver calls, not statements, so they
are not counted there). Used by ``test_statement_counts.py`` to keep the use-cases' round
trips from creeping back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from l2pop.store import Store


class Statements(list[str]):
    """The statements recorded, in order, one line each."""

    def show(self, title: str) -> str:
        lines = [f"{title}: {len(self)} statement(s)"]
        lines += [f"  {' '.join(s.split())[:160]}" for s in self]
        return "\n".join(lines)


@contextmanager
def counting(store: Store) -> Iterator[Statements]:
    """Record the statements this thread sends to ``store`` within the block."""
    engine = store._engine  # type: ignore[attr-defined]  # SqlStore's
    me = threading.get_ident()
    out = Statements()

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if threading.get_ident() == me:
            out.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield out
    finally:
        event.remove(engine, "before_cursor_execute", record)
