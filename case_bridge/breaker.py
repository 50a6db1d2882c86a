"""A circuit breaker per platform: a platform that is down is asked once per cool-down, not
once per pending command.

The outbox backs off per command, but a queue of a thousand commands still has a thousand
first retries, and status sync polls on its own timer. The breaker counts transient
failures in a row across every request to one platform (filing, evidence, lookups, status
sync). After ``failure_threshold`` of them it opens: requests fail at once with
``CircuitOpen`` and nothing is sent. After ``cooldown_s`` one request goes through as a
probe (half-open) while the others still fail at once; the probe's answer closes the
breaker, or its transient failure opens it for another cool-down. Any answer that is not a
transient failure (a case, a refusal, an unreadable reply) shows the platform is up and
resets the count: the breaker guards against an absent platform, not a wrong request.

``CircuitOpen`` is a transient failure the platform certainly did not act on, with the
wait until the next probe as its ``retry_after_s``; the outbox holds the whole queue that
long without counting an attempt against any command.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from case_bridge.platform import Failure, PlatformError

# While a probe is out, others are told to come back after this long (or the cool-down,
# if shorter): the probe's answer is usually due well within it.
PROBE_PENDING_RETRY_S = 1.0


class BreakerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    failure_threshold: int = Field(5, ge=1, le=1000)  # transient failures in a row
    cooldown_s: float = Field(15.0, ge=0.01, le=3600)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(PlatformError):
    """The breaker refused the request: nothing was sent."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(
            f"platform circuit open: next probe in {retry_after_s:.1f} s",
            Failure.TRANSIENT,
            retry_after_s=retry_after_s,
            may_have_acted=False,
        )


class CircuitBreaker:
    """Closed → open → half-open → closed or open; see the module docstring.

    Call ``admit()`` before a request (it raises ``CircuitOpen`` or lets it through), then
    exactly one of ``succeeded()``, ``failed()`` (a transient failure) or ``abandoned()``
    (no verdict: cancelled, or a bug in the gateway). ``clock`` is injectable for tests.
    """

    def __init__(
        self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self.state = BreakerState.CLOSED
        self._failures = 0  # transient failures in a row while closed
        self._open_until = 0.0
        self._probe_out = False
        self.opened = 0  # times the breaker opened (again after a failed probe too)
        self.rejected = 0  # requests refused while open or while a probe was out

    def admit(self) -> None:
        if self.state is BreakerState.OPEN:
            wait = self._open_until - self._clock()
            if wait > 0:
                self._reject(wait)
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN:
            if self._probe_out:
                self._reject(min(PROBE_PENDING_RETRY_S, self._settings.cooldown_s))
            self._probe_out = True

    def succeeded(self) -> None:
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._probe_out = False

    def failed(self) -> None:
        if self.state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures < self._settings.failure_threshold:
                return
        elif self.state is BreakerState.OPEN:  # a request admitted before another opened it
            return
        self._open()

    def abandoned(self) -> None:
        self._probe_out = False

    def _open(self) -> None:
        self.state = BreakerState.OPEN
        self._open_until = self._clock() + self._settings.cooldown_s
        self._failures = 0
        self._probe_out = False
        self.opened += 1

    def _reject(self, wait_s: float) -> None:
        self.rejected += 1
        raise CircuitOpen(wait_s)
