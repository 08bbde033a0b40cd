"""Which agents hold a live channel session right now (in memory: it is per server process)."""

from __future__ import annotations

import threading


class SessionRegistry:
    """host name -> live session count; ``connected`` is true while one is open."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[str, int] = {}

    def opened(self, host: str) -> None:
        with self._lock:
            self._live[host] = self._live.get(host, 0) + 1

    def closed(self, host: str) -> None:
        with self._lock:
            left = self._live.get(host, 0) - 1
            if left > 0:
                self._live[host] = left
            else:
                self._live.pop(host, None)

    def connected(self, host: str) -> bool:
        with self._lock:
            return host in self._live

    def count(self) -> int:
        with self._lock:
            return len(self._live)
