"""The circuit breaker's states and the token bucket's pace, on a clock the test steps, and
their settings as the config file gives them.

Over HTTP these are in ``tests/test_delivery_failure_modes.py``; here every transition and
every wait is exact.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from case_bridge.breaker import (
    PROBE_PENDING_RETRY_S,
    BreakerSettings,
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
)
from case_bridge.guarded_platform import DeliverySettings, GuardedPlatform
from case_bridge.platform import Failure, PlatformError
from case_bridge.rate_limit import RateLimitSettings, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused(breaker: CircuitBreaker) -> CircuitOpen:
    with pytest.raises(CircuitOpen) as caught:
        breaker.admit()
    return caught.value


# --- breaker -----------------------------------------------------------------------------


def test_the_breaker_opens_after_the_threshold_probes_after_the_cool_down_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=3, cooldown_s=10), clock)
    for _ in range(2):
        breaker.admit()
        breaker.failed()
    breaker.admit()
    breaker.succeeded()  # an answer: the count starts again
    for _ in range(3):
        breaker.admit()
        breaker.failed()
    assert (breaker.state, breaker.opened) == (BreakerState.OPEN, 1)

    clock.now += 4
    error = refused(breaker)
    assert (error.failure, error.retry_after_s, error.may_have_acted) == (
        Failure.TRANSIENT,
        6,
        False,
    )
    assert error.reason == "platform circuit open: next probe in 6.0 s"
    clock.now += 6
    breaker.admit()  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert refused(breaker).retry_after_s == PROBE_PENDING_RETRY_S  # one probe at a time
    breaker.failed()
    assert (breaker.state, breaker.opened) == (BreakerState.OPEN, 2)
    assert refused(breaker).retry_after_s == 10

    clock.now += 10
    breaker.admit()
    breaker.abandoned()  # the probe was cancelled: no verdict, another may go
    breaker.admit()
    breaker.succeeded()
    assert (breaker.state, breaker.opened, breaker.rejected) == (BreakerState.CLOSED, 2, 3)
    breaker.admit()
    breaker.admit()  # closed: no limit on requests in flight


def test_a_late_failure_of_a_request_sent_before_the_breaker_opened_changes_nothing() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=1, cooldown_s=10), clock)
    breaker.admit()
    breaker.admit()
    breaker.failed()
    breaker.failed()  # the second, answered after the first opened the breaker
    assert (breaker.state, breaker.opened) == (BreakerState.OPEN, 1)
    clock.now += 9.5
    assert refused(breaker).retry_after_s == pytest.approx(0.5)


outcomes = st.sampled_from(["succeeded", "failed", "abandoned"])
steps = st.lists(st.tuples(st.floats(0, 30), outcomes), max_size=60)


@settings(max_examples=200, deadline=None)
@given(threshold=st.integers(1, 5), cooldown_s=st.floats(0.5, 20), steps=steps)
def test_a_breaker_lets_one_request_through_per_cool_down_once_open(
    threshold: int, cooldown_s: float, steps: list[tuple[float, str]]
) -> None:
    """Whatever the answers and their timing: the breaker opens at the threshold-th
    transient failure in a row, and once open, sends nothing for a cool-down and then one
    probe at a time."""
    clock = Clock()
    breaker_settings = BreakerSettings(failure_threshold=threshold, cooldown_s=cooldown_s)
    breaker = CircuitBreaker(breaker_settings, clock)
    in_a_row = 0
    opened_at: float | None = None
    for wait_s, outcome in steps:
        clock.now += wait_s
        was = breaker.state
        try:
            breaker.admit()
        except CircuitOpen as exc:
            assert was is not BreakerState.CLOSED
            assert exc.retry_after_s is not None and 0 < exc.retry_after_s <= cooldown_s + 1e-9
            continue
        if was is not BreakerState.CLOSED:
            assert opened_at is not None and clock.now - opened_at >= cooldown_s - 1e-9
            assert breaker.state is BreakerState.HALF_OPEN
            with pytest.raises(CircuitOpen):  # the probe goes alone
                breaker.admit()
        getattr(breaker, outcome)()
        if outcome == "failed":
            in_a_row = in_a_row + 1 if was is BreakerState.CLOSED else threshold
        elif outcome == "succeeded":
            in_a_row = 0
        if breaker.state is BreakerState.OPEN:
            assert in_a_row >= threshold
            opened_at, in_a_row = clock.now, 0
        else:
            assert in_a_row < threshold


# --- token bucket ------------------------------------------------------------------------


class SteppedSleep:
    """Sleeps on the test's clock: records each wait and moves the clock past it."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.now += seconds


def test_a_burst_goes_at_once_then_requests_wait_their_turn() -> None:
    clock = Clock()
    sleep = SteppedSleep(clock)
    bucket = TokenBucket(RateLimitSettings(requests_per_s=4, burst=3), clock, sleep)

    async def take(n: int) -> list[float]:
        return [await bucket.acquire() for _ in range(n)]

    assert asyncio.run(take(5)) == [0, 0, 0, 0.25, 0.25]
    clock.now += 10  # idle: the bucket refills to its burst, no more
    assert asyncio.run(take(4)) == [0, 0, 0, 0.25]
    assert (bucket.waits, bucket.waited_s) == (3, 0.75)


def test_concurrent_callers_are_served_in_turn_and_a_cancelled_one_gives_its_token_back() -> None:
    clock = Clock()

    async def scenario() -> list[Any]:
        bucket = TokenBucket(RateLimitSettings(requests_per_s=1000, burst=1), clock)
        first = await bucket.acquire()
        waiting = [asyncio.create_task(bucket.acquire()) for _ in range(3)]
        await asyncio.sleep(0)  # each has reserved its turn
        waiting[1].cancel()
        done = await asyncio.gather(*waiting, return_exceptions=True)
        after = await bucket.acquire()  # the cancelled one's token: no extra wait
        return [first, *done, after]

    first, a, b, c, after = asyncio.run(scenario())
    assert first == 0
    assert (a, c) == (pytest.approx(0.001), pytest.approx(0.003))
    assert isinstance(b, asyncio.CancelledError)
    assert after == pytest.approx(0.003)  # the clock stood still: 3 reserved, 1 given back


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.5, 100),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=60),
)
def test_no_window_holds_more_than_the_burst_and_the_rate_allow(
    rate: float, burst: int, gaps: list[float]
) -> None:
    """Requests arriving one by one at any times: over any stretch of time, the requests
    that went out number at most ``burst + rate * stretch``, and none waited longer than
    that bound needs."""
    clock = Clock()
    sleep = SteppedSleep(clock)
    bucket = TokenBucket(RateLimitSettings(requests_per_s=rate, burst=burst), clock, sleep)
    sent: list[float] = []

    async def arrive() -> None:
        for gap in gaps:
            clock.now += gap
            await bucket.acquire()
            sent.append(clock.now)

    asyncio.run(arrive())
    for i, start in enumerate(sent):
        for j in range(i, len(sent)):
            assert j - i + 1 <= burst + rate * (sent[j] - start) + 1e-6
    assert all(0 < wait <= 1 / rate + 1e-9 for wait in sleep.waits)


# --- settings ----------------------------------------------------------------------------


def test_the_defaults_are_the_documented_ones() -> None:
    assert DeliverySettings().model_dump() == {
        "breaker": {"failure_threshold": 5, "cooldown_s": 15.0},
        "rate_limit": {"requests_per_s": 20.0, "burst": 40},
        "evidence_after_unclear": "resend",
    }


FIELDS = {
    ("breaker", "failure_threshold"): (1, 1000),
    ("breaker", "cooldown_s"): (0.01, 3600),
    ("rate_limit", "requests_per_s"): (0.01, 10_000),
    ("rate_limit", "burst"): (1, 10_000),
}


@settings(max_examples=150, deadline=None)
@given(
    field=st.sampled_from(sorted(FIELDS)),
    value=st.one_of(
        st.integers(-10, 20_000),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=5),
        st.none(),
    ),
)
def test_a_delivery_setting_out_of_bounds_is_refused_by_name(
    field: tuple[str, str], value: object
) -> None:
    group, name = field
    low, high = FIELDS[field]
    integral = name in ("failure_threshold", "burst")
    try:
        parsed = DeliverySettings.model_validate({group: {name: value}})
    except ValidationError as exc:
        assert [error["loc"] for error in exc.errors()] == [(group, name)]
        return
    got = getattr(getattr(parsed, group), name)
    assert low <= got <= high
    assert isinstance(got, int) if integral else isinstance(got, float)


def test_an_unknown_delivery_setting_is_refused_by_name() -> None:
    with pytest.raises(ValidationError) as caught:
        DeliverySettings.model_validate({"breaker": {"cooldown": 3}})
    assert [error["loc"] for error in caught.value.errors()] == [("breaker", "cooldown")]


def test_a_call_the_owner_says_may_not_go_is_refused_before_anything_is_sent() -> None:
    """A replica's desk whose lease may have lapsed sends nothing: the wrapper refuses each
    call as a transient failure that did not act, without asking the adapter or telling
    the breaker; once the owner says go, calls go."""
    asked: list[str] = []

    class Adapter:
        honours_idempotency_key = True
        platform_id = "test"

        def guard_requests(self, hook) -> None:
            pass

        async def open_case(self, body, idempotency_key):
            asked.append(idempotency_key)
            return {"id": "C-1"}

    why: list[str | None] = ["the desk lease was last renewed 9.0 s ago"]
    guarded = GuardedPlatform(Adapter(), DeliverySettings(), may_send=lambda: why[0])
    for _ in range(10):  # past the breaker's threshold, had it counted them
        with pytest.raises(PlatformError) as refused:
            asyncio.run(guarded.open_case({}, "k"))
        assert refused.value.failure is Failure.TRANSIENT
        assert refused.value.may_have_acted is False
    assert asked == []
    why[0] = None
    assert asyncio.run(guarded.open_case({}, "k")) == {"id": "C-1"}
    assert asked == ["k"]
