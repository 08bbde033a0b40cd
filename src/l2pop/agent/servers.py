"""The agent's server list: ``--server URL1,URL2,...`` names replicas of one deployment (ADR
21), and the agent fails over between them.

``parse_servers`` validates the list: every entry an http:// or https:// URL with a host, none
empty, none twice; ``ServerListError`` (a ``ValueError``) is one line naming ``--server``.

``ServerRotation`` is which replica an agent uses now: it starts at a random entry (so the
agents of a swarm, or of a data centre, spread over the replicas) and ``advance()`` moves to
the next one, wrapping around, after every end of a session. The delay between attempts is
the channel's ``Backoff`` (full jitter), not this module's business.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from urllib.parse import urlsplit

#: the option the errors name
OPTION = "--server"


class ServerListError(ValueError):
    """A ``--server`` value that is no list of http(s) URLs; the message is one line."""


def parse_servers(text: str | Sequence[str], option: str = OPTION) -> tuple[str, ...]:
    """The URLs of ``text`` (comma-separated, or already a sequence), stripped of blanks and
    of a trailing ``/``, in order. Raises ``ServerListError`` for an empty list, an empty
    entry (``a,,b``), an entry that is not ``http(s)://host[:port][/path]`` or one given
    twice."""
    entries = text.split(",") if isinstance(text, str) else list(text)
    urls: list[str] = []
    for i, raw in enumerate(entries, start=1):
        url = raw.strip().rstrip("/")
        if not url:
            raise ServerListError(f"{option}: entry {i} is empty (give URL[,URL...])")
        try:
            parts = urlsplit(url)
            port = parts.port  # raises for a port that is no number or out of range
        except ValueError as exc:
            raise ServerListError(f"{option}: {url!r} is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServerListError(
                f"{option}: {url!r} is not an http:// or https:// URL with a host"
            )
        if parts.query or parts.fragment or port == 0:
            raise ServerListError(f"{option}: {url!r} must be http(s)://host[:port][/path]")
        if url in urls:
            raise ServerListError(f"{option}: {url!r} is given twice")
        urls.append(url)
    if not urls:
        raise ServerListError(f"{option}: no server URL given")
    return tuple(urls)


class ServerRotation:
    """The replica one agent uses: ``current``, then ``advance()`` to the next, round."""

    def __init__(self, urls: Sequence[str], rng: random.Random | None = None) -> None:
        """``urls``: validated (``parse_servers``), at least one. The first is drawn from
        ``rng`` (default: a fresh ``random.Random``)."""
        if not urls:
            raise ValueError("ServerRotation needs at least one URL")
        self.urls = tuple(urls)
        self._index = (rng or random.Random()).randrange(len(self.urls))

    @property
    def current(self) -> str:
        """The URL to use now."""
        return self.urls[self._index]

    def advance(self) -> str:
        """Move to the next URL (wrapping; the same one with a single URL) and return it."""
        self._index = (self._index + 1) % len(self.urls)
        return self.current
