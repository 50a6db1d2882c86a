"""Working time: the clock a 数字城管 time limit runs on when its class counts working hours.

A calendar (``data/working_calendar.tsv`` by default) lists the working periods of each
weekday (Mon-Fri 08:30-12:00 and 13:30-17:30 as shipped), public holidays (no work even on a
weekday) and make-up working days (调休: a Saturday or Sunday that is worked, with its own
periods). ``add_working`` moves a start forward by a limit counted only inside working
periods, so such a deadline never falls at night, on a weekend or on a holiday: a case seen
at 22:00 on a Friday before a holiday with a 2 h limit is due 2 h into the next working
period. Periods are wall-clock times in the city's zone; the arithmetic is in epoch
milliseconds, so a DST change (where a zone has one) neither adds nor loses time.

Rows (tab-separated, ``kind	day	periods``):
    weekday	mon	08:30-12:00,13:30-17:30     a weekday not listed is not worked
    holiday	2026-10-01
    workday	2026-10-10	08:30-12:00,13:30-17:30
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from case_bridge import tsv

DEFAULT_CALENDAR = Path(__file__).with_name("data") / "working_calendar.tsv"
COLUMNS = ("kind", "day", "periods")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_PERIODS_PER_DAY = 12
# How far ``add_working`` looks; a limit the calendar may need more than half of this for
# is refused at load (``days_to_count``), so the rest is margin for days a DST change
# shortens.
MAX_SEARCH_DAYS = 25_000
MAX_COUNTED_DAYS = MAX_SEARCH_DAYS // 2
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PERIOD = re.compile(r"([01][0-9]|2[0-4]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])")

Periods = tuple[tuple[int, int], ...]  # (start, end) minutes after midnight, sorted, disjoint


class WorkingCalendar:
    """Working periods per day in one zone; ``add_working`` counts a limit inside them."""

    def __init__(
        self,
        weekdays: dict[int, Periods],
        holidays: set[date],
        workdays: dict[date, Periods],
        zone: ZoneInfo,
    ) -> None:
        if not any(weekdays.values()):
            raise ValueError("the working calendar has no weekday with working periods")
        self._weekdays = weekdays
        self._holidays = holidays
        self._workdays = workdays
        self.zone = zone

    @classmethod
    def from_tsv(
        cls, path: Path | str = DEFAULT_CALENDAR, zone: str = "Asia/Shanghai"
    ) -> WorkingCalendar:
        path = Path(path)
        return cls.from_rows(tsv.rows(path, COLUMNS, optional=1), str(path), zone)

    @classmethod
    def from_text(
        cls, text: str, source: str = "calendar", zone: str = "Asia/Shanghai"
    ) -> WorkingCalendar:
        return cls.from_rows(tsv.parse(text, source, COLUMNS, optional=1), source, zone)

    @classmethod
    def from_rows(cls, rows, source: str, zone: str) -> WorkingCalendar:
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise tsv.TableError(f"{source}: unknown time zone {zone[:60]!r}") from None
        weekdays: dict[int, Periods] = {}
        holidays: set[date] = set()
        workdays: dict[date, Periods] = {}
        for number, (kind, day, periods) in rows:
            where = f"{source}:{number}"
            if kind == "weekday":
                if day not in WEEKDAYS:
                    raise tsv.TableError(
                        f"{where}: day {day!r} is not one of {', '.join(WEEKDAYS)}"
                    )
                if WEEKDAYS.index(day) in weekdays:
                    raise tsv.TableError(f"{where}: {day} is listed twice")
                weekdays[WEEKDAYS.index(day)] = _periods(periods, where)
            elif kind in ("holiday", "workday"):
                when = _date(day, where)
                if when in holidays or when in workdays:
                    raise tsv.TableError(f"{where}: {day} is listed twice")
                if kind == "holiday":
                    if periods:
                        raise tsv.TableError(f"{where}: a holiday has no working periods")
                    holidays.add(when)
                else:
                    if not periods:
                        raise tsv.TableError(f"{where}: a make-up working day needs its periods")
                    workdays[when] = _periods(periods, where)
            else:
                raise tsv.TableError(f"{where}: kind {kind!r} is not weekday, holiday or workday")
        try:
            return cls(weekdays, holidays, workdays, tz)
        except ValueError as exc:
            raise tsv.TableError(f"{source}: {exc}") from None

    def periods_on(self, day: date) -> Periods:
        """The day's working periods: a make-up day's own, none on a holiday, else its
        weekday's."""
        if day in self._workdays:
            return self._workdays[day]
        if day in self._holidays:
            return ()
        return self._weekdays.get(day.weekday(), ())

    def add_working(self, start_ms: int, limit_ms: int) -> int:
        """The instant when ``limit_ms`` of working time have passed since ``start_ms``.
        A deadline that lands exactly on a period's end stays there (17:30, not 13:30 next
        day); time before, between and after periods does not count."""
        left = limit_ms
        day = datetime.fromtimestamp(start_ms / 1000, tz=self.zone).date()
        for _ in range(MAX_SEARCH_DAYS):
            for begin, end in self._instants(day):
                begin = max(begin, start_ms)
                if end <= begin:
                    continue
                if left <= end - begin:
                    return begin + left
                left -= end - begin
            day += timedelta(days=1)
        raise ValueError(f"no working time within {MAX_SEARCH_DAYS} days of {start_ms}")

    def days_to_count(self, limit_ms: int) -> int:
        """At most how many days, the start's included, ``add_working`` looks through to
        count ``limit_ms`` from any start. Any 7 days in a row hold each weekday once, so
        after the start's day enough whole weeks do, counting every listed holiday and
        every make-up day shorter than its weekday as time lost (wherever they fall)."""
        weekly = sum(_length(periods) for periods in self._weekdays.values())
        lost = sum(_length(self._weekdays.get(day.weekday(), ())) for day in self._holidays)
        lost += sum(
            max(0, _length(self._weekdays.get(day.weekday(), ())) - _length(periods))
            for day, periods in self._workdays.items()
        )
        return 1 + 7 * -(-(limit_ms + lost) // weekly)

    def _instants(self, day: date) -> list[tuple[int, int]]:
        return [(self._ms(day, begin), self._ms(day, end)) for begin, end in self.periods_on(day)]

    def _ms(self, day: date, minutes: int) -> int:
        # Adding to an aware datetime is wall-clock arithmetic: 24:00 is the next midnight.
        wall = datetime.combine(day, time(0), tzinfo=self.zone) + timedelta(minutes=minutes)
        return int(wall.timestamp()) * 1000


def _length(periods: Periods) -> int:
    """Working time in a day's periods, in ms (a day a DST change shortens has less)."""
    return sum(end - begin for begin, end in periods) * 60_000


def _date(text: str, where: str) -> date:
    """A calendar date written ``YYYY-MM-DD`` only: ``fromisoformat`` would also read ISO
    week dates (``2026-W01-1`` is 2025-12-29), which no one means in a holiday list."""
    try:
        if _DATE.fullmatch(text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    raise tsv.TableError(f"{where}: day {text!r} is not a date YYYY-MM-DD")


def _periods(text: str, where: str) -> Periods:
    """``08:30-12:00,13:30-17:30`` as sorted, disjoint minute ranges; empty for no work."""
    if not text:
        return ()
    parts = text.split(",")
    if len(parts) > MAX_PERIODS_PER_DAY:
        raise tsv.TableError(f"{where}: more than {MAX_PERIODS_PER_DAY} periods")
    periods: list[tuple[int, int]] = []
    for part in parts:
        match = _PERIOD.fullmatch(part.strip())
        if not match:
            raise tsv.TableError(f"{where}: period {part.strip()!r} is not HH:MM-HH:MM")
        h1, m1, h2, m2 = (int(group) for group in match.groups())
        begin, end = h1 * 60 + m1, h2 * 60 + m2
        if not begin < end <= 24 * 60:
            raise tsv.TableError(f"{where}: period {part.strip()!r} does not end after it starts")
        periods.append((begin, end))
    periods.sort()
    for (_, end), (begin, _) in pairwise(periods):
        if begin < end:
            raise tsv.TableError(f"{where}: periods {text!r} overlap")
    return tuple(periods)
