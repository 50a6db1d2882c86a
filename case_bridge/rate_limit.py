"""A rate limit per platform: a token bucket that makes requests wait, never fail.

City platforms publish quotas ("10 requests per second per key") and answer 429 past them;
after an outage the outbox has a backlog it would otherwise send as fast as the platform
answers. Every request the bridge makes to a platform takes one token first: ``burst``
tokens at most, refilled at ``requests_per_s``.

Tokens are reserved in the order asked: a request that finds the bucket empty takes a
token on credit (the count goes negative) and sleeps until its token has been refilled, so
waiters go in turn with one sleep each, and a burst of callers cannot starve one of them.
A caller cancelled while waiting gives its token back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from pydantic import BaseModel, ConfigDict, Field


class RateLimitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests_per_s: float = Field(20.0, ge=0.01, le=10_000)
    burst: int = Field(40, ge=1, le=10_000)


class TokenBucket:
    """``clock`` and ``sleep`` are injectable so tests can step time exactly."""

    def __init__(
        self,
        settings: RateLimitSettings,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._rate = settings.requests_per_s
        self._burst = float(settings.burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self._burst
        self._at = clock()
        self.waits = 0  # requests that had to wait for a token
        self.waited_s = 0.0  # their waits, summed

    async def acquire(self) -> float:
        """Take one token, waiting for it if need be; return the seconds waited."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        self._tokens -= 1
        if self._tokens >= 0:
            return 0.0
        wait_s = -self._tokens / self._rate
        self.waits += 1
        self.waited_s += wait_s
        try:
            await self._sleep(wait_s)
        except asyncio.CancelledError:
            self._tokens += 1
            raise
        return wait_s
