"""The one backoff and the one Retry-After parser every room uses (``domain/retry.py``)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.retry import MAX_RETRY_AFTER_S, Backoff, backoff_ceiling_s, parse_retry_after

NOW_S = datetime(2026, 11, 21, 8, 0, tzinfo=UTC).timestamp()


def test_ceiling_doubles_to_the_cap_and_delays_stay_in_its_upper_half() -> None:
    backoff = Backoff(initial_s=1.0, max_s=30.0, rng=random.Random(5))
    ceilings, delays = [], []
    for _ in range(8):
        ceilings.append(backoff.ceiling_s())
        delays.append(backoff.next_delay())
    assert ceilings == [1, 2, 4, 8, 16, 30, 30, 30]
    assert all(c / 2 <= d <= c for c, d in zip(ceilings, delays, strict=True))
    assert len(set(delays)) == 8  # jittered: no two equal
    backoff.reset()
    assert backoff.ceiling_s() == 1
    assert 0.5 <= backoff.next_delay() <= 1


def test_same_seed_same_delays() -> None:
    first = Backoff(0.5, 15.0, random.Random(9))
    second = Backoff(0.5, 15.0, random.Random(9))
    assert [first.next_delay() for _ in range(6)] == [second.delay_s(n) for n in range(6)]


def test_attempts_in_the_billions_wait_the_cap() -> None:
    backoff = Backoff(0.2, 2.0, random.Random(1))
    assert backoff.ceiling_s(10**12) == 2.0
    assert backoff_ceiling_s(-5, 0.2, 2.0) == 0.2
    for _ in range(2000):
        backoff.next_delay()
    assert backoff.attempt == 1000  # stops counting where it cannot matter any more
    assert 1.0 <= backoff.next_delay() <= 2.0


def test_a_longer_retry_after_wins_up_to_15_minutes() -> None:
    backoff = Backoff(0.5, 15.0, random.Random(2))
    assert backoff.delay_s(0, retry_after_s=120.0) == 120.0
    assert backoff.delay_s(0, retry_after_s=86_400.0) == 900.0
    assert 0.25 <= backoff.delay_s(0, retry_after_s=0.0) <= 0.5  # shorter: the backoff


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_backoff_refuses_non_positive_or_non_finite_settings(bad: float) -> None:
    with pytest.raises(ValueError, match="initial_s must be a positive"):
        Backoff(bad, 10.0)
    with pytest.raises(ValueError, match="max_s must be a positive"):
        Backoff(1.0, bad)


@settings(max_examples=300, deadline=None)
@given(
    initial_s=st.floats(1e-6, 1e6),
    max_s=st.floats(1e-6, 1e7),
    attempt=st.integers(-(2**70), 2**70),
    seed=st.integers(0, 2**32),
)
def test_any_attempt_gives_a_finite_delay_within_the_cap(
    initial_s: float, max_s: float, attempt: int, seed: int
) -> None:
    backoff = Backoff(initial_s, max_s, random.Random(seed))
    ceiling = backoff.ceiling_s(attempt)
    assert ceiling == min(max_s, ceiling)
    assert ceiling >= min(initial_s, max_s)
    delay = backoff.delay_s(attempt)
    assert math.isfinite(delay)
    assert ceiling / 2 <= delay <= ceiling


def http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("86400", 86400.0),
        ("86401", None),  # more than a day: broken, not honoured
        (http_date(datetime.fromtimestamp(NOW_S + 90, UTC)), 90.0),
        ("Sat, 21 Nov 2026 08:00:30 -0000", 30.0),  # zone unknown: UTC
        (http_date(datetime.fromtimestamp(NOW_S - 600, UTC)), 0.0),  # past: now
        (http_date(datetime.fromtimestamp(NOW_S + 2 * 86400, UTC)), None),
        (None, None),
        ("", None),
        ("-5", None),
        ("1.5", None),
        ("nan", None),
        ("inf", None),
        ("1e3", None),
        ("٣", None),  # an Arabic-Indic digit is not delta-seconds
        ("9" * 5000, None),
        ("tomorrow", None),
        ("Sat, 99 Nov 2026 08:00:00 GMT", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW_S) == expected


def test_parse_retry_after_takes_a_tighter_bound() -> None:
    assert parse_retry_after("900", NOW_S, max_s=900) == 900.0
    assert parse_retry_after("901", NOW_S, max_s=900) is None


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=80), st.binary(max_size=40).map(repr)))
def test_any_header_gives_none_or_seconds_within_a_day(header: str | None) -> None:
    seconds = parse_retry_after(header, NOW_S)
    assert seconds is None or (math.isfinite(seconds) and 0 <= seconds <= MAX_RETRY_AFTER_S)


@settings(max_examples=200, deadline=None)
@given(st.integers(-(10**6), 10**6))
def test_an_http_date_says_how_far_ahead_it_is(offset_s: int) -> None:
    moment = datetime.fromtimestamp(NOW_S, UTC) + timedelta(seconds=offset_s)
    assert parse_retry_after(http_date(moment), NOW_S) == (
        None if offset_s > MAX_RETRY_AFTER_S else max(0.0, float(offset_s))
    )
