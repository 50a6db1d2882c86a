"""One platform behind its rate limit and circuit breaker, whatever the adapter.

The gateway wraps its adapter once and hands the wrapper to both the outbox dispatcher and
status sync, so everything either sends to the platform (filing, uploads, evidence,
lookups, status listings, voids) goes through the same bucket (``case_bridge/rate_limit.py``)
and counts towards the same breaker (``case_bridge/breaker.py``).

The rate limit counts HTTP requests, as a platform's quota does: the wrapper hooks the
adapter's HTTP client (``guard_requests``), so each request takes a token before it is
sent, however many one call makes (a lookup that pages, a filing with its uploads, an
Open311 token resolved after the post, service discovery at start-up). The breaker counts
calls: one call is one verdict on whether the platform is there.

Evidence links are signed when an alert is recorded and live ``evidence.link_lifetime_s``
(7 days by default), while a command may wait in the outbox much longer. With
``fresh_link``, the wrapper signs every media link of a body afresh as it is sent
(``platform.with_fresh_links``), whichever adapter sends it: the platform gets links
valid for the full lifetime from the send, not from the alert.

It also times each call that reaches the adapter, less its waits for tokens (a call the
breaker refused is not timed), and counts its failures by kind, per call: the platform's
latency and errors for ``/metrics``, kept as cumulative histogram counts since a scrape
cannot rebuild a distribution from totals.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict

from case_bridge.breaker import BreakerSettings, CircuitBreaker
from case_bridge.platform import (
    CasePage,
    CasePlatform,
    Failure,
    FreshLink,
    PlatformError,
    RequestHook,
    with_fresh_links,
)
from case_bridge.rate_limit import RateLimitSettings, TokenBucket

T = TypeVar("T")

# The seconds the current call (its task's context) has waited for tokens so far.
_WAITED_S: ContextVar[list[float] | None] = ContextVar("waited_s", default=None)

# ``EvidenceLookup.find_evidence``: whether a case holds a body's evidence (None: cannot say).
FindEvidence = Callable[[str, dict[str, Any]], Awaitable[bool | None]]

# Upper bounds of the latency histogram's buckets, in seconds (a platform's timeout is 5-120 s).
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class DeliverySettings(BaseModel):
    """How hard the bridge may press one platform (``case_platform.delivery``).

    ``evidence_after_unclear``: on a platform that ignores idempotency keys and cannot be
    asked whether it has a piece of evidence, what follows a send of it that got no clear
    answer: ``resend`` (the default; the platform may then hold it twice, counted as
    ``evidence_resent_unclear``) or ``park`` (an operator looks and resolves it).
    """

    model_config = ConfigDict(extra="forbid")
    breaker: BreakerSettings = BreakerSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    evidence_after_unclear: Literal["resend", "park"] = "resend"


class GuardedPlatform:
    """A ``CasePlatform`` that rate-limits and breaks the circuit for ``inner``."""

    def __init__(
        self,
        inner: CasePlatform,
        settings: DeliverySettings,
        fresh_link: FreshLink | None = None,
        may_send: Callable[[], str | None] | None = None,
    ) -> None:
        """``fresh_link``: signs a media link of ours afresh (``EvidenceLinks.refreshed``);
        every body filed or added as evidence then carries links valid from its send.
        ``may_send``: asked before every call, None to go on, else why not (a replica's
        desk whose lease may have lapsed: gateway/replica.py); a refusal is a transient
        failure that sent nothing, and the breaker does not count it."""
        self._inner = inner
        self._may_send = may_send
        # Optional in ``CasePlatform`` (``EvidenceLookup``): absent on most adapters.
        self._find_evidence: FindEvidence | None = getattr(inner, "find_evidence", None)
        self._fresh_link = fresh_link
        self.breaker = CircuitBreaker(settings.breaker)
        self.bucket = TokenBucket(settings.rate_limit)
        self.calls: dict[str, CallFigures] = {}
        inner.guard_requests(self._take_token)

    @property
    def honours_idempotency_key(self) -> bool:
        return self._inner.honours_idempotency_key

    @property
    def platform_id(self) -> str:
        return self._inner.platform_id

    async def open_case(self, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        body = self._fresh(body)
        return await self._guarded(
            "open_case", lambda: self._inner.open_case(body, idempotency_key)
        )

    async def find_case(self, external_key: str, body: dict[str, Any]) -> str | None:
        return await self._guarded("find_case", lambda: self._inner.find_case(external_key, body))

    @property
    def find_evidence(self) -> FindEvidence | None:
        """The adapter's evidence lookup (``EvidenceLookup``) behind the breaker and the
        rate limit; None where the adapter has none, as a bare adapter lacks the method,
        so the outbox tells a platform it cannot ask from one it asks."""
        find = self._find_evidence
        if find is None:
            return None

        async def guarded(case_id: str, body: dict[str, Any]) -> bool | None:
            return await self._guarded("find_evidence", lambda: find(case_id, body))

        return guarded

    async def add_evidence(
        self, case_id: str, body: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        body = self._fresh(body)
        return await self._guarded(
            "add_evidence", lambda: self._inner.add_evidence(case_id, body, idempotency_key)
        )

    async def void_case(self, case_id: str, reason: str, idempotency_key: str) -> dict[str, Any]:
        return await self._guarded(
            "void_case", lambda: self._inner.void_case(case_id, reason, idempotency_key)
        )

    async def changed_cases(self, since: str | None, after: str | None) -> CasePage:
        return await self._guarded("changed_cases", lambda: self._inner.changed_cases(since, after))

    def guard_requests(self, hook: RequestHook) -> None:
        self._inner.guard_requests(hook)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def _fresh(self, body: dict[str, Any]) -> dict[str, Any]:
        return body if self._fresh_link is None else with_fresh_links(body, self._fresh_link)

    async def _take_token(self, _: httpx.Request) -> None:
        """Before each HTTP request the adapter sends: a token, waited for if need be."""
        waited = await self.bucket.acquire()
        if (cell := _WAITED_S.get()) is not None:
            cell[0] += waited

    def stats(self) -> dict[str, Any]:
        """For the gateway's stats and /metrics: ``breaker_state`` is a name, the rest are
        counters (``breaker_opened``, ``breaker_rejected``, ``rate_limit_waits``) and the
        seconds waited for tokens (``rate_limit_wait_s``); ``calls`` holds each call's
        latency histogram and failures (``CallFigures.snapshot``)."""
        return {
            "breaker_state": str(self.breaker.state),
            "breaker_opened": self.breaker.opened,
            "breaker_rejected": self.breaker.rejected,
            "rate_limit_waits": self.bucket.waits,
            "rate_limit_wait_s": round(self.bucket.waited_s, 3),
            "calls": {name: figures.snapshot() for name, figures in self.calls.items()},
        }

    async def _guarded(self, name: str, call: Callable[[], Awaitable[T]]) -> T:
        """The breaker's leave (or ``CircuitOpen``), then the call (each of its requests
        takes its token), whose outcome the breaker learns and whose time, less its
        waits for tokens, ``calls[name]`` keeps."""
        if self._may_send is not None and (why := self._may_send()) is not None:
            raise PlatformError(why, Failure.TRANSIENT, may_have_acted=False)
        self.breaker.admit()
        figures = self.calls.setdefault(name, CallFigures())
        waited = [0.0]
        context = _WAITED_S.set(waited)
        started = time.perf_counter()
        try:
            result = await call()
        except PlatformError as exc:
            figures.observe(time.perf_counter() - started - waited[0], exc.failure)
            if exc.failure is Failure.TRANSIENT:
                self.breaker.failed()
            else:
                self.breaker.succeeded()
            raise
        except BaseException:
            self.breaker.abandoned()
            raise
        finally:
            _WAITED_S.reset(context)
        figures.observe(time.perf_counter() - started - waited[0])
        self.breaker.succeeded()
        return result


class CallFigures:
    """One kind of call's latency (counts per ``LATENCY_BUCKETS_S`` bucket, not cumulative;
    one more for slower calls) and its failures by kind."""

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.sum_s = 0.0
        self.failures: Counter[str] = Counter()

    def observe(self, seconds: float, failure: Failure | None = None) -> None:
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.sum_s += seconds
        if failure is not None:
            self.failures[str(failure)] += 1

    def snapshot(self) -> dict[str, Any]:
        """``buckets``: counts per bucket, the last one past the highest bound."""
        return {
            "buckets": list(self.buckets),
            "sum_s": round(self.sum_s, 6),
            "failures": dict(self.failures),
        }
