"""Exponential backoff with full jitter, shared by the channel, the sync worker and the reporter.

Full jitter (a uniform draw in ``[0, min(cap, base * 2**attempt)]``) spreads the retries of many
agents that lost the server at the same moment, so a restarted server is not hit by all of them
in one instant (AWS architecture blog, "Exponential Backoff And Jitter").
"""

from __future__ import annotations

import random


class Backoff:
    """Delays for successive retries of one thing; ``reset()`` after a success."""

    def __init__(
        self, base: float = 0.2, cap: float = 10.0, rng: random.Random | None = None
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The largest delay the next draw may return."""
        # min() before the power would overflow for a long outage; cap the exponent instead.
        return min(self.cap, self.base * 2.0 ** min(self.attempt, 62))

    def next(self) -> float:
        """The delay before the next retry; each call widens the window up to ``cap``."""
        delay = self._rng.uniform(0.0, self.ceiling())
        self.attempt += 1
        return delay

    def long(self) -> float:
        """A delay for a refusal (bad token, VTEP taken): between cap/2 and cap, so a refused
        agent neither hammers the server nor waits long once the operator fixed it."""
        self.attempt += 1
        return self._rng.uniform(self.cap / 2, self.cap)

    def reset(self) -> None:
        self.attempt = 0
