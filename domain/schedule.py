"""When a rule is in force: local-time windows on chosen weekdays, one type for every room.

Camera zones (stalls are allowed after 22:00) and sensor rules (a market's bins only
matter while it trades) share this type, so an operator writes a schedule the same way
everywhere and the time zone is one setting (the engines are given a ``tzinfo``).

- ``windows``: ``"HH:MM-HH:MM"`` local times, start inclusive, end exclusive. An end
  before its start crosses midnight (``"22:00-06:00"``); an end equal to its start is the
  whole day. No windows means all day.
- ``days``: ``mon`` … ``sun`` (all by default). A window belongs to the day it *starts*
  on: ``"22:00-06:00"`` on ``fri`` covers Friday 22:00 to Saturday 06:00.

Accepted forms (config, registry column, CLI, API): a mapping ``{windows, days}``, a plain
list of windows (today's camera-zone form), or a string of windows separated by commas
(``"07:00-12:00,14:00-22:00"``), or that mapping/list as a JSON string.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, tzinfo
from typing import Any, Literal, Self
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# The time zone engines fall back on when the caller names none (the project's first city).
DEFAULT_TZ = ZoneInfo("Asia/Shanghai")
MAX_WINDOWS = 24
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    windows: list[str] = Field(default_factory=list, max_length=MAX_WINDOWS)
    days: list[Day] = Field(default_factory=lambda: list(DAYS), min_length=1, max_length=7)
    # (start minute, end minute) per window, parsed once: in_force runs per reading.
    _minutes: tuple[tuple[int, int], ...] = PrivateAttr(default=())
    _weekdays: frozenset[int] = PrivateAttr(default=frozenset())
    _always: bool = PrivateAttr(default=True)

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, data: Any) -> Any:
        if isinstance(data, str):
            text = data.strip()
            if text.startswith(("{", "[")):
                try:
                    data = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"schedule is not valid JSON: {exc.msg}") from None
                except RecursionError:
                    raise ValueError("schedule is not valid JSON: nested too deep") from None
            else:
                data = [w.strip() for w in text.split(",") if w.strip()]
        if isinstance(data, list):
            return {"windows": data}
        return data

    @model_validator(mode="after")
    def _parsed(self) -> Self:
        minutes = []
        for window in self.windows:
            match = _WINDOW.match(window) if isinstance(window, str) else None
            if match is None:
                raise ValueError(f"schedule window {window!r} is not HH:MM-HH:MM")
            h1, m1, h2, m2 = (int(g) for g in match.groups())
            minutes.append((h1 * 60 + m1, h2 * 60 + m2))
        if len(set(self.days)) != len(self.days):
            raise ValueError("schedule days must not repeat")
        self._minutes = tuple(minutes)
        self._weekdays = frozenset(DAYS.index(day) for day in self.days)
        whole_day = not minutes or any(start == end for start, end in minutes)
        self._always = whole_day and len(self._weekdays) == 7
        return self

    @property
    def always(self) -> bool:
        """In force at every instant: engines skip the clock work for such a schedule."""
        return self._always

    def in_force(self, ts_ms: int, tz: tzinfo) -> bool:
        """Whether ``ts_ms`` (epoch ms, event time) falls in the schedule, in local time."""
        return self._always or _in_force(self._minutes, self._weekdays, ts_ms, tz)

    def checker(self, tz: tzinfo) -> ScheduleCheck:
        """``in_force`` for one time zone, made for the per-reading path."""
        return ScheduleCheck(self._minutes, self._weekdays, tz)


class ScheduleCheck:
    """A schedule's test for one time zone as a plain callable: no model attribute
    lookups per call, and the last minute's answer is remembered (a fleet's readings come
    in bursts within one minute, so most calls cost one comparison)."""

    __slots__ = ("_last_answer", "_last_minute", "_minutes", "_tz", "_weekdays")

    def __init__(
        self, minutes: tuple[tuple[int, int], ...], weekdays: frozenset[int], tz: tzinfo
    ) -> None:
        self._minutes = minutes
        self._weekdays = weekdays
        self._tz = tz
        self._last_minute = -1
        self._last_answer = False

    def __call__(self, ts_ms: int) -> bool:
        minute = ts_ms // 60_000
        if minute != self._last_minute:
            self._last_answer = _in_force(self._minutes, self._weekdays, ts_ms, self._tz)
            self._last_minute = minute
        return self._last_answer


def _in_force(
    minutes: tuple[tuple[int, int], ...], weekdays: frozenset[int], ts_ms: int, tz: tzinfo
) -> bool:
    local = datetime.fromtimestamp(ts_ms / 1000.0, tz)
    weekday = local.weekday()
    today = weekday in weekdays
    if not minutes:
        return today
    minute = local.hour * 60 + local.minute
    yesterday = (weekday - 1) % 7 in weekdays
    for start, end in minutes:
        if start == end:
            if today:
                return True
        elif start < end:
            if today and start <= minute < end:
                return True
        elif (today and minute >= start) or (yesterday and minute < end):
            return True
    return False
