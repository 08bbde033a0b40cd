"""Progress of a running benchmark on stderr, so that stdout carries only its result."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO


class Reporter:
    """Progress on stderr: a rich spinner (or bar, with ``total``) on a terminal, plain
    ``[  12.3s] message`` lines otherwise. Call it with a message; ``advance()`` moves the
    bar."""

    def __init__(self, title: str, total: int | None = None, stream: TextIO | None = None):
        self.title = title
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.monotonic()
        self._progress: Any = None
        self._task: Any = None

    @property
    def tty(self) -> bool:
        return hasattr(self.stream, "isatty") and self.stream.isatty()

    def __enter__(self) -> Reporter:
        self.started = time.monotonic()
        if self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
            if self.total is not None:
                columns += [BarColumn(), MofNCompleteColumn()]
            columns.append(TimeElapsedColumn())
            self._progress = Progress(
                *columns,
                console=Console(file=self.stream, highlight=False, emoji=False),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.title, total=self.total)
        else:
            self._line(self.title)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
        took = time.monotonic() - self.started
        if exc_type is None:
            self._line(f"done in {took:.1f} s", printed=True)
        elif not issubclass(exc_type, KeyboardInterrupt):
            self._line(f"failed after {took:.1f} s: {exc}", printed=True)

    def _line(self, message: str, printed: bool = False) -> None:
        elapsed = time.monotonic() - self.started
        text = f"[{elapsed:7.1f}s] {message}"
        if self._progress is not None and not printed:
            self._progress.console.print(text, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def __call__(self, message: str) -> None:
        self._line(message)
        if self._progress is not None:
            label = self.title.split(":", 1)[0]
            self._progress.update(self._task, description=f"{label}: {message}")

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)
