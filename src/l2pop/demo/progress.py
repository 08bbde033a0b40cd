"""How the demos talk: ``▸ step`` lines, ``✓ result (time)`` notes, and the summary table.

Each promise a demo checks is a ``Check``; the summary lists them with a verdict, and the
exit code is 1 as soon as one of them failed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table
from rich.text import Text


@dataclass
class Check:
    """One promise of the summary: what l2pop showed, what the baseline showed, verdict."""

    name: str
    l2pop: str
    baseline: str = "-"
    ok: bool | None = None  # None: information only


@dataclass
class Progress:
    """Progress lines: ``▸ step`` then ``✓ result (time)``."""

    console: Console
    checks: list[Check] = field(default_factory=list)

    @contextmanager
    def step(self, text: str) -> Iterator[list[str]]:
        """Print the step, run the body, then print the notes it appended (or "done")."""
        self.console.print(Text.assemble(("▸ ", "bold cyan"), text))
        started = time.monotonic()
        notes: list[str] = []
        try:
            yield notes
        except Exception as exc:
            self.console.print(Text(f"  ✗ {exc}", style="bold red"))
            raise
        took = Text(f"({time.monotonic() - started:.1f}s)", "dim")
        notes = notes or ["done"]
        for note in notes[:-1]:
            self.console.print(Text(f"  ✓ {note}", style="green"))
        self.console.print(Text(f"  ✓ {notes[-1]}", style="green"), took)

    def check(self, check: Check) -> None:
        self.checks.append(check)
        if check.ok is False:
            self.console.print(Text(f"  ✗ {check.name}: {check.l2pop}", style="bold red"))

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]


def summary(console: Console, checks: list[Check], *, baseline: bool = True) -> None:
    """The table of every promise, with the baseline's column when there was one."""
    table = Table(title="l2pop demo: summary")
    table.add_column("promise")
    table.add_column("l2pop", justify="right")
    if baseline:
        table.add_column("flood-and-learn", justify="right")
    table.add_column("", justify="center")
    for c in checks:
        mark = (
            Text("info", "dim")
            if c.ok is None
            else (Text("✓", "bold green") if c.ok else Text("✗", "bold red"))
        )
        table.add_row(c.name, c.l2pop, *([c.baseline] if baseline else []), mark)
    console.print(table)
