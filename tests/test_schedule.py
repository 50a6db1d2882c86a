"""The shared Schedule: windows in local time, days, midnight, accepted forms, bad input."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import Schedule

SHANGHAI = ZoneInfo("Asia/Shanghai")
UTC = ZoneInfo("UTC")


def at(day_offset: int, hhmm: str, tz=SHANGHAI) -> int:
    """Epoch ms of ``hhmm`` local time on Friday 2025-11-21 plus ``day_offset`` days."""
    hours, minutes = (int(p) for p in hhmm.split(":"))
    local = datetime(2025, 11, 21, hours, minutes, tzinfo=tz) + timedelta(days=day_offset)
    return int(local.timestamp() * 1000)


def test_no_windows_and_all_days_is_always():
    assert Schedule().always is True
    assert Schedule(windows=["08:00-08:00"]).always is True
    assert Schedule(windows=["08:00-09:00"]).always is False
    assert Schedule(days=["mon"]).always is False


def test_window_start_inclusive_end_exclusive():
    s = Schedule(windows=["07:00-22:00"])
    assert [s.in_force(at(0, t), SHANGHAI) for t in ("06:59", "07:00", "21:59", "22:00")] == [
        False,
        True,
        True,
        False,
    ]


def test_judged_in_the_given_time_zone():
    s = Schedule(windows=["07:00-22:00"])
    assert s.in_force(at(0, "07:30"), SHANGHAI) is True
    assert s.in_force(at(0, "07:30"), UTC) is False  # 23:30 UTC the day before


def test_a_window_over_midnight_belongs_to_the_day_it_starts():
    s = Schedule(windows=["22:00-06:00"], days=["fri"])
    checks = [(-1, "23:00"), (0, "02:00"), (0, "21:59"), (0, "22:00"), (1, "05:59"), (1, "06:00")]
    # Thursday 23:00 no; Friday 02:00 belongs to Thursday's window: no; Friday 22:00 yes;
    # Saturday 05:59 is still Friday's window; 06:00 not.
    assert [s.in_force(at(d, t), SHANGHAI) for d, t in checks] == [
        False,
        False,
        False,
        True,
        True,
        False,
    ]


def test_days_without_windows_are_whole_days():
    s = Schedule(days=["sat", "sun"])
    assert [s.in_force(at(d, "12:00"), SHANGHAI) for d in (0, 1, 2, 3)] == [
        False,
        True,
        True,
        False,
    ]


def test_accepted_forms_are_the_same_schedule():
    full = Schedule(windows=["07:00-12:00", "14:00-22:00"])
    assert Schedule.model_validate(["07:00-12:00", "14:00-22:00"]) == full
    assert Schedule.model_validate("07:00-12:00, 14:00-22:00") == full
    assert Schedule.model_validate('["07:00-12:00", "14:00-22:00"]') == full
    as_json = '{"windows": ["07:00-12:00", "14:00-22:00"]}'
    assert Schedule.model_validate(as_json) == full
    assert Schedule.model_validate(full.model_dump(mode="json")) == full


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["24:00-01:00"], "schedule window '24:00-01:00' is not HH:MM-HH:MM"),
        (["7:00-8:00"], "is not HH:MM-HH:MM"),
        ("07:00-08:60", "is not HH:MM-HH:MM"),
        ({"days": ["mon", "mon"]}, "schedule days must not repeat"),
        ({"days": []}, "at least 1 item"),
        ({"days": ["monday"]}, "days.0"),
        ({"windows": ["07:00-08:00"] * 25}, "at most 24 items"),
        ("{not json", "schedule is not valid JSON"),
        ({"windows": [], "hours": 3}, "hours"),
        ([7], "windows.0"),
    ],
)
def test_bad_schedules_are_refused_naming_the_problem(value, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        Schedule.model_validate(value)


HHMM = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))
WINDOWS = st.lists(st.builds(lambda a, b: f"{a}-{b}", HHMM, HHMM), max_size=4)
DAYS = st.lists(
    st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
    min_size=1,
    max_size=7,
    unique=True,
)


def reference(windows: list[str], days: list[str], ts_ms: int, tz) -> bool:
    """The documented meaning, written the slow way: minute by minute of the week."""
    names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    local = datetime.fromtimestamp(ts_ms / 1000, tz)
    minute = local.hour * 60 + local.minute
    today = names[local.weekday()] in days
    yesterday = names[(local.weekday() - 1) % 7] in days
    if not windows:
        return today
    for window in windows:
        a, b = window.split("-")
        start = int(a[:2]) * 60 + int(a[3:])
        end = int(b[:2]) * 60 + int(b[3:])
        if start == end and today:
            return True
        if start < end and today and start <= minute < end:
            return True
        if start > end and ((today and minute >= start) or (yesterday and minute < end)):
            return True
    return False


@settings(max_examples=150, deadline=None)
@given(
    windows=WINDOWS,
    days=DAYS,
    ts_ms=st.integers(1_600_000_000_000, 1_900_000_000_000),
    tz=st.sampled_from([SHANGHAI, UTC, ZoneInfo("America/New_York")]),
)
def test_in_force_matches_the_documented_meaning(windows, days, ts_ms, tz):
    s = Schedule(windows=windows, days=days)
    assert s.in_force(ts_ms, tz) is reference(windows, days, ts_ms, tz)
    assert Schedule.model_validate(s.model_dump(mode="json")) == s


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=30), st.lists(st.text(max_size=12), max_size=3)))
def test_any_input_is_a_schedule_or_a_validation_error(value):
    try:
        s = Schedule.model_validate(value)
    except pydantic.ValidationError:
        return
    assert all(len(w) == 11 for w in s.windows)
