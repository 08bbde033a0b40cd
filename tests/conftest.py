"""Shared fixtures: a throwaway PostgreSQL server and a fresh database per test on each engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from l2pop.testbed import postgres as pg


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg.ThrowawayPostgres]:
    """One PostgreSQL server for the whole session, stopped (and its directory removed) at
    the end."""
    if not pg.available():
        pytest.skip(
            f"PostgreSQL server binaries not found under {pg.PG_ROOT}/*/bin. CI installs the "
            "Debian 'postgresql' package, so there these tests run; install it to run them here."
        )
    server = pg.ThrowawayPostgres().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database on each engine."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'l2pop.db'}"
        return
    server: pg.ThrowawayPostgres = request.getfixturevalue("postgres")
    with server.database("l2pop_test") as url:
        yield url
