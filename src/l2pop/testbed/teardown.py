"""Undo a testbed run, whatever happened: the steps every part registers as it goes.

Design note: each part pushes the step that undoes what it just did (stop this pid, delete
these namespaces by name, close this relay) the moment it did it, so a run that fails
halfway is undone as far as it got. Steps run last-in first-out: captures and agents stop
before the server, the server before the namespaces are deleted, the namespaces before the
run record goes. Every step runs even when another one fails, with SIGINT/SIGTERM ignored;
``run()`` is idempotent and also runs at exit and on SIGTERM/SIGHUP (``arm()``).
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from l2pop.testbed.netns import signals_ignored

Step = Callable[[], None]


class Teardown:
    """The undo steps of one run (see the module docstring)."""

    def __init__(self, log: Callable[[str], None] | None = None) -> None:
        self.log = log or (lambda _msg: None)
        self._steps: list[Step] = []
        self._lock = threading.Lock()
        self._done = False
        self._armed = False
        self._old_handlers: dict[int, Any] = {}

    def push(self, step: Step) -> None:
        """Run ``step`` at teardown, before every step pushed earlier."""
        self._steps.append(step)

    def arm(self) -> None:
        """Also run at interpreter exit and when SIGTERM/SIGHUP arrives (main thread only,
        and only where no handler of the application's own is installed)."""
        if self._armed:
            return
        self._armed = True
        atexit.register(self.run)
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, _frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                self._old_handlers[sig] = signal.signal(sig, handler)

    @property
    def done(self) -> bool:
        return self._done

    def run(self) -> None:
        """Every step, newest first; each one runs whatever the others did. Idempotent."""
        with self._lock:
            if self._done:
                return
            self._done = True
        with signals_ignored():
            for step in reversed(self._steps):
                try:
                    step()
                except Exception as exc:
                    self.log(f"teardown: {exc}")
        self._disarm()

    def _disarm(self) -> None:
        if not self._armed:
            return
        with contextlib.suppress(Exception):
            atexit.unregister(self.run)
        if threading.current_thread() is threading.main_thread():
            for sig, old in self._old_handlers.items():
                signal.signal(sig, old)
