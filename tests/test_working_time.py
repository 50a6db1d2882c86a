"""Working-time deadlines: the clock runs only inside working periods, so a limit never
ends at night, on a weekend or on a holiday, and a make-up Saturday is worked."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from case_bridge.tsv import TableError
from case_bridge.working_time import DEFAULT_CALENDAR, WEEKDAYS, WorkingCalendar

SHANGHAI = ZoneInfo("Asia/Shanghai")
HOUR_MS = 3_600_000
DAYS = "08:30-12:00,13:30-17:30"
# National Day week as a city might enter it (a test calendar, not the State Council's):
# Thu 1 Oct to Wed 7 Oct off, Saturday 10 Oct worked; Monday 7 Dec off as well.
CALENDAR = "\n".join(
    [
        "kind\tday\tperiods",
        *(f"weekday\t{day}\t{DAYS}" for day in ("mon", "tue", "wed", "thu", "fri")),
        *(f"holiday\t2026-10-0{n}" for n in range(1, 8)),
        "holiday\t2026-12-07",
        f"workday\t2026-10-10\t{DAYS}",
    ]
)


@pytest.fixture(scope="module")
def calendar() -> WorkingCalendar:
    return WorkingCalendar.from_text(CALENDAR, zone="Asia/Shanghai")


def ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=SHANGHAI).timestamp() * 1000)


def due(calendar: WorkingCalendar, start_ms: int, hours: float) -> datetime:
    return datetime.fromtimestamp(
        calendar.add_working(start_ms, round(hours * HOUR_MS)) / 1000, SHANGHAI
    )


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=SHANGHAI)


def test_over_a_night(calendar: WorkingCalendar) -> None:
    # Tuesday 17:00: half an hour today, the rest from 08:30 on Wednesday.
    assert due(calendar, ms(2026, 12, 1, 17, 0), 2) == at(2026, 12, 2, 10, 0)
    assert due(calendar, ms(2026, 12, 1, 22, 0), 2) == at(2026, 12, 2, 10, 30)


def test_over_a_weekend(calendar: WorkingCalendar) -> None:
    assert due(calendar, ms(2026, 11, 27, 22, 0), 2) == at(2026, 11, 30, 10, 30)  # Fri -> Mon


def test_a_friday_night_before_a_holiday_is_due_two_hours_into_the_next_working_period(
    calendar: WorkingCalendar,
) -> None:
    assert due(calendar, ms(2026, 12, 4, 22, 0), 2) == at(2026, 12, 8, 10, 30)  # Mon 7 off
    assert due(calendar, ms(2026, 9, 30, 22, 0), 2) == at(2026, 10, 8, 10, 30)  # a week off


def test_on_a_make_up_saturday(calendar: WorkingCalendar) -> None:
    assert due(calendar, ms(2026, 10, 9, 17, 0), 2) == at(2026, 10, 10, 10, 0)
    assert due(calendar, ms(2026, 10, 10, 17, 0), 2) == at(2026, 10, 12, 10, 0)  # Sat -> Mon
    assert due(calendar, ms(2026, 10, 17, 9, 0), 1) == at(2026, 10, 19, 9, 30)  # a plain Sat


def test_at_the_exact_boundaries_of_a_period(calendar: WorkingCalendar) -> None:
    assert due(calendar, ms(2026, 12, 1, 8, 30), 3.5) == at(2026, 12, 1, 12, 0)  # ends at 12:00
    assert due(calendar, ms(2026, 12, 1, 12, 0), 1) == at(2026, 12, 1, 14, 30)
    assert due(calendar, ms(2026, 12, 1, 8, 29), 1 / 60) == at(2026, 12, 1, 8, 31)
    assert due(calendar, ms(2026, 12, 1, 17, 30), 7.5) == at(2026, 12, 2, 17, 30)
    one_ms_late = calendar.add_working(ms(2026, 12, 1, 17, 30), 1)
    assert one_ms_late == ms(2026, 12, 2, 8, 30) + 1


def test_the_shipped_calendar_works_mon_to_fri() -> None:
    shipped = WorkingCalendar.from_tsv(DEFAULT_CALENDAR, "Asia/Shanghai")
    monday, saturday = date(2026, 12, 7), date(2026, 12, 12)
    assert shipped.periods_on(monday) == ((8 * 60 + 30, 12 * 60), (13 * 60 + 30, 17 * 60 + 30))
    assert shipped.periods_on(saturday) == ()


def test_epoch_arithmetic_across_a_dst_change() -> None:
    berlin = WorkingCalendar.from_text(
        "kind\tday\tperiods\nweekday\tsun\t00:00-24:00\nweekday\tmon\t08:00-12:00",
        zone="Europe/Berlin",
    )
    zone = ZoneInfo("Europe/Berlin")
    start = int(datetime(2026, 3, 29, 0, 0, tzinfo=zone).timestamp() * 1000)
    # Sunday 29 March 2026 has 23 hours: 24 h of working time end at 09:00 on Monday.
    deadline = berlin.add_working(start, 24 * HOUR_MS)
    assert deadline == int(datetime(2026, 3, 30, 9, 0, tzinfo=zone).timestamp() * 1000)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            "weekday\tmon\t08:30-12:00,11:00-13:00",
            "calendar:3: periods '08:30-12:00,11:00-13:00' overlap",
        ),
        ("weekday\tmon\t8:30-12:00", "calendar:3: period '8:30-12:00' is not HH:MM-HH:MM"),
        (
            "weekday\tmon\t12:00-08:30",
            "calendar:3: period '12:00-08:30' does not end after it starts",
        ),
        (
            "weekday\tmon\t23:00-24:30",
            "calendar:3: period '23:00-24:30' does not end after it starts",
        ),
        ("weekday\tfri\t08:30-12:00", "calendar:4: fri is listed twice"),
        ("weekday\tfriday\t08:30-12:00", "calendar:3: day 'friday' is not one of mon"),
        ("holiday\t2026-02-30", "calendar:3: day '2026-02-30' is not a date YYYY-MM-DD"),
        ("holiday\t20261001", "calendar:3: day '20261001' is not a date"),
        # An ISO week date fits in ten characters and fromisoformat reads it (2025-12-29).
        ("holiday\t2026-W01-1", "calendar:3: day '2026-W01-1' is not a date YYYY-MM-DD"),
        ("holiday\t2026-10-０1", "calendar:3: day '2026-10-０1' is not a date YYYY-MM-DD"),
        ("holiday\t2026-10-01\t08:30-12:00", "calendar:3: a holiday has no working periods"),
        ("workday\t2026-10-10", "calendar:3: a make-up working day needs its periods"),
        ("leave\t2026-10-10", "calendar:3: kind 'leave' is not weekday, holiday or workday"),
        (
            "weekday\tmon\t" + ",".join(f"{h:02d}:00-{h:02d}:30" for h in range(13)),
            "more than 12 periods",
        ),
        ("weekday", "calendar:3: 1 fields, expected 3"),
    ],
)
def test_calendar_rows_are_refused_with_their_line(row: str, expected: str) -> None:
    text = f"# a comment\nkind\tday\tperiods\n{row}\nweekday\tfri\t{DAYS}\n"
    with pytest.raises(TableError) as caught:
        WorkingCalendar.from_text(text)
    assert expected in str(caught.value)


def test_a_calendar_must_have_working_time_a_header_and_a_known_zone(tmp_path) -> None:
    with pytest.raises(TableError, match=r"^c: the working calendar has no weekday"):
        WorkingCalendar.from_text("kind\tday\tperiods\nweekday\tmon\t", "c")
    with pytest.raises(TableError, match=r"^c:1: header is not 'kind\\\\tday\\\\tperiods'"):
        WorkingCalendar.from_text("day\tkind\tperiods\n", "c")
    with pytest.raises(TableError, match=r"^c: no header line"):
        WorkingCalendar.from_text("# only a comment\n", "c")
    with pytest.raises(TableError, match=r"^c: unknown time zone 'Mars/Olympus'"):
        WorkingCalendar.from_text(CALENDAR, "c", zone="Mars/Olympus")
    latin1 = tmp_path / "cal.tsv"
    latin1.write_bytes("kind\tday\tperiods\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(TableError, match=r"cal\.tsv: not UTF-8"):
        WorkingCalendar.from_tsv(latin1)


def working_ms_between(calendar: WorkingCalendar, start: int, end: int) -> int:
    """The oracle: working time inside [start, end], summed period by period."""
    total = 0
    day = datetime.fromtimestamp(start / 1000, SHANGHAI).date()
    last = datetime.fromtimestamp(end / 1000, SHANGHAI).date()
    while day <= last:
        for begin, finish in calendar.periods_on(day):
            a = (
                int(datetime.combine(day, time(begin // 60, begin % 60), SHANGHAI).timestamp())
                * 1000
            )
            b = (
                int(datetime.combine(day, time(finish // 60, finish % 60), SHANGHAI).timestamp())
                * 1000
            )
            total += max(0, min(b, end) - max(a, start))
        day += timedelta(days=1)
    return total


START_2026 = ms(2026, 1, 1, 0, 0)


@settings(max_examples=50, deadline=None)
@given(
    offset=st.integers(0, 366 * 24 * HOUR_MS),
    limit=st.integers(1, 100 * HOUR_MS),
)
def test_working_time_from_start_to_deadline_is_the_limit_exactly(offset: int, limit: int) -> None:
    calendar = WorkingCalendar.from_text(CALENDAR)
    start = START_2026 + offset
    deadline = calendar.add_working(start, limit)
    assert deadline >= start
    assert working_ms_between(calendar, start, deadline) == limit
    assert working_ms_between(calendar, start, deadline - 1) == limit - 1  # not a ms later


def test_a_file_saved_with_a_byte_order_mark_reads_like_one_without(tmp_path) -> None:
    # Excel and WPS write "UTF-8" with a BOM; it must not become part of the header.
    marked = tmp_path / "calendar.tsv"
    marked.write_bytes(b"\xef\xbb\xbf" + CALENDAR.encode("utf-8"))
    calendar = WorkingCalendar.from_tsv(marked)
    assert calendar.periods_on(date(2026, 10, 1)) == ()
    assert calendar.periods_on(date(2026, 10, 10)) == ((510, 720), (810, 1050))
    assert due(calendar, ms(2026, 9, 30, 17, 0), 2) == at(2026, 10, 8, 10, 0)


def test_days_to_count_a_limit_counts_holidays_and_shorter_make_up_days_as_lost(
    calendar: WorkingCalendar,
) -> None:
    # 37.5 h a week; 1-7 Oct take five weekdays (37.5 h) and 7 Dec one (7.5 h); the make-up
    # Saturday adds time, so it takes none. 2 h + 45 h lost: two weeks after the start's day.
    assert calendar.days_to_count(2 * HOUR_MS) == 15
    assert calendar.days_to_count(30 * HOUR_MS) == 15  # 75 h: two weeks exactly
    assert calendar.days_to_count(30 * HOUR_MS + 1) == 22
    # A make-up Tuesday of one hour takes 6.5 h of its weekday's 7.5.
    short = WorkingCalendar.from_text(CALENDAR + "\nworkday\t2026-12-08\t08:30-09:30")
    assert short.days_to_count(30 * HOUR_MS) == 22
    assert short.days_to_count(1) == 15


PERIOD = st.tuples(st.integers(0, 23 * 60), st.integers(1, 60)).map(
    lambda p: f"{p[0] // 60:02d}:{p[0] % 60:02d}-{(p[0] + p[1]) // 60:02d}:{(p[0] + p[1]) % 60:02d}"
)
DAY_2026 = st.integers(0, 400).map(lambda n: date(2026, 1, 1) + timedelta(days=n))


@settings(max_examples=50, deadline=None)
@given(
    weekdays=st.dictionaries(st.sampled_from(WEEKDAYS), PERIOD, min_size=1),
    holidays=st.sets(DAY_2026, max_size=60),
    workdays=st.dictionaries(DAY_2026, PERIOD, max_size=20),
    offset=st.integers(0, 366 * 24 * HOUR_MS),
    limit=st.integers(1, 300 * HOUR_MS),
)
def test_a_deadline_never_takes_more_days_than_days_to_count_says(
    weekdays: dict[str, str],
    holidays: set[date],
    workdays: dict[date, str],
    offset: int,
    limit: int,
) -> None:
    rows = [f"weekday\t{day}\t{periods}" for day, periods in weekdays.items()]
    rows += [f"holiday\t{day}" for day in holidays - workdays.keys()]
    rows += [f"workday\t{day}\t{periods}" for day, periods in workdays.items()]
    calendar = WorkingCalendar.from_text("kind\tday\tperiods\n" + "\n".join(rows))
    start = START_2026 + offset
    deadline = calendar.add_working(start, limit)
    days = (
        datetime.fromtimestamp(deadline / 1000, SHANGHAI).date()
        - datetime.fromtimestamp(start / 1000, SHANGHAI).date()
    ).days + 1
    assert days <= calendar.days_to_count(limit)
