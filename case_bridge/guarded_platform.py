"""One platform behind its rate limit and circuit breaker, whatever the adapter.

The gateway wraps its adapter once and hands the wrapper to both the outbox dispatcher and
status sync, so every call either makes to the platform (filing, evidence, lookups,
status listings) takes a token from the same bucket (``case_bridge/rate_limit.py``) and
counts towards the same breaker (``case_bridge/breaker.py``). The wrapper works per call:
an adapter call that makes several HTTP requests (a lookup that pages, an Open311 token
resolved after the post) takes one token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from case_bridge.breaker import BreakerSettings, CircuitBreaker
from case_bridge.platform import CasePage, CasePlatform, Failure, PlatformError
from case_bridge.rate_limit import RateLimitSettings, TokenBucket

T = TypeVar("T")


class DeliverySettings(BaseModel):
    """How hard the bridge may press one platform (``case_platform.delivery``)."""

    model_config = ConfigDict(extra="forbid")
    breaker: BreakerSettings = BreakerSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()


class GuardedPlatform:
    """A ``CasePlatform`` that rate-limits and breaks the circuit for ``inner``."""

    def __init__(self, inner: CasePlatform, settings: DeliverySettings) -> None:
        self._inner = inner
        self.breaker = CircuitBreaker(settings.breaker)
        self.bucket = TokenBucket(settings.rate_limit)

    @property
    def honours_idempotency_key(self) -> bool:
        return self._inner.honours_idempotency_key

    async def open_case(self, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        return await self._guarded(lambda: self._inner.open_case(body, idempotency_key))

    async def find_case(self, external_key: str, body: dict[str, Any]) -> str | None:
        return await self._guarded(lambda: self._inner.find_case(external_key, body))

    async def add_evidence(
        self, case_id: str, body: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        return await self._guarded(lambda: self._inner.add_evidence(case_id, body, idempotency_key))

    async def changed_cases(self, since: str | None, after: str | None) -> CasePage:
        return await self._guarded(lambda: self._inner.changed_cases(since, after))

    async def aclose(self) -> None:
        await self._inner.aclose()

    def stats(self) -> dict[str, Any]:
        """For the gateway's stats and /metrics: ``breaker_state`` is a name, the rest are
        counters (``breaker_opened``, ``breaker_rejected``, ``rate_limit_waits``) and the
        seconds waited for tokens (``rate_limit_wait_s``)."""
        return {
            "breaker_state": str(self.breaker.state),
            "breaker_opened": self.breaker.opened,
            "breaker_rejected": self.breaker.rejected,
            "rate_limit_waits": self.bucket.waits,
            "rate_limit_wait_s": round(self.bucket.waited_s, 3),
        }

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        """A token first (waiting for it), then the breaker's leave (or ``CircuitOpen``),
        then the call, whose outcome the breaker learns."""
        await self.bucket.acquire()
        self.breaker.admit()
        try:
            result = await call()
        except PlatformError as exc:
            if exc.failure is Failure.TRANSIENT:
                self.breaker.failed()
            else:
                self.breaker.succeeded()
            raise
        except BaseException:
            self.breaker.abandoned()
            raise
        self.breaker.succeeded()
        return result
