"""Reconnect delays: exponential backoff with full jitter."""

from __future__ import annotations

import random


class Backoff:
    """Delays of ``uniform(0, min(max_s, initial_s * 2**n))`` for the n-th retry in a row.

    Full jitter, so that a hundred cameras behind one switch that reboots do not all retry
    in the same second; ``reset()`` after a success starts again from ``initial_s``.
    """

    def __init__(
        self, initial_s: float = 1.0, max_s: float = 30.0, rng: random.Random | None = None
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def cap_s(self) -> float:
        """The longest delay the next retry may get."""
        return min(self.max_s, self.initial_s * 2 ** min(self.attempt, 32))

    def next_delay(self) -> float:
        delay = self._rng.uniform(0, self.cap_s())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
