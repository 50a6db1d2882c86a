"""Who handles a case and by when: the responsible unit (责任单位) by class and grid, and
the priority and time limit (处置时限) by class, from data files rather than per rule.

- ``data/responsible_units.tsv`` (``class_code	grid	unit``): ``class_code`` is a
  5-digit code or ``*``; ``grid`` is a grid code, a prefix ending in ``*`` (``350102001*``:
  every grid of that street or community) or ``*``. The most specific row wins: a row of
  the exact class beats a ``*`` class row; among rows of the same class the exact grid
  beats the longest prefix, which beats ``*``. No row: the settings' ``fallback_unit``.
- ``data/class_policy.tsv`` (``class_code	priority	deadline_h	working_hours``): a
  class's priority (特急/紧急/一般/低 or critical/urgent/normal/low), its time limit in
  hours and whether the limit counts working hours only (``working_calendar.tsv``). A case
  at its class's priority gets the class's limit; a class not listed, or a case at another
  priority (a rule escalated it, or it is a device's own problem), takes the plain hours of
  ``CaseSettings.deadlines_h`` for its priority.

``CaseDispatch.enrich`` is what the gateway applies to every alert before the incidents
see it: a location without a grid code gets it from the grid map (the registry's or
zone's stays) and the priority rises to its class's when that is higher (a rule's higher
stage stays), so merging, storms and escalation all work on the final values. An alert that
never merges (``merge`` false: a device's silence or battery, which carries its cover's
class code, or an area roll-up with its own configured priority) keeps its rule's priority.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from case_bridge import tsv
from case_bridge.grids import GRID_CODE, GridFileError, GridMap
from case_bridge.settings import CaseSettings
from case_bridge.working_time import MAX_COUNTED_DAYS, WorkingCalendar
from domain import Alert, Priority

UNIT_COLUMNS = ("class_code", "grid", "unit")
POLICY_COLUMNS = ("class_code", "priority", "deadline_h", "working_hours")
MAX_DEADLINE_H = 24 * 366
_CLASS = re.compile(r"[0-9]{5}")
_GRID_PREFIX = re.compile(r"[0-9]{1,14}\*")
_PRIORITY_WORDS = {**{str(p): p for p in Priority}, **{p.chinese: p for p in Priority}}
_YES_NO = {"yes": True, "no": False}

log = logging.getLogger(__name__)


class DispatchFileError(ValueError):
    """A dispatch data file refused; the message names the setting and the file."""


class ResponsibleUnits:
    """The unit table: ``unit(class_code, grid_code)`` by the most specific row."""

    def __init__(self, rows: dict[tuple[str, str], str]) -> None:
        self._rows = rows
        self._prefix_lengths = sorted(
            {len(grid) - 1 for _, grid in rows if grid.endswith("*") and grid != "*"},
            reverse=True,
        )

    @classmethod
    def from_tsv(cls, path: Path | str) -> ResponsibleUnits:
        path = Path(path)
        return cls.from_rows(tsv.rows(path, UNIT_COLUMNS), str(path))

    @classmethod
    def from_rows(cls, rows, source: str) -> ResponsibleUnits:
        table: dict[tuple[str, str], str] = {}
        for number, (class_code, grid, unit) in rows:
            where = f"{source}:{number}"
            if class_code != "*" and not _CLASS.fullmatch(class_code):
                raise tsv.TableError(f"{where}: class_code {class_code!r} is not 5 digits or *")
            if not (grid == "*" or _GRID_PREFIX.fullmatch(grid) or GRID_CODE.fullmatch(grid)):
                raise tsv.TableError(
                    f"{where}: grid {grid!r} is not a 6-15 digit code, a digit prefix* or *"
                )
            if not unit:
                raise tsv.TableError(f"{where}: no unit")
            if (class_code, grid) in table:
                raise tsv.TableError(f"{where}: {class_code} {grid} is listed twice")
            table[class_code, grid] = unit
        return cls(table)

    def unit(self, class_code: str, grid_code: str) -> str | None:
        """The most specific row's unit, ``None`` when no row matches."""
        for klass in (class_code, "*"):
            if grid_code and (found := self._rows.get((klass, grid_code))):
                return found
            for length in self._prefix_lengths:
                prefix = grid_code[:length] + "*"
                if length <= len(grid_code) and (found := self._rows.get((klass, prefix))):
                    return found
            if found := self._rows.get((klass, "*")):
                return found
        return None


@dataclass(frozen=True, slots=True)
class ClassPolicy:
    priority: Priority
    deadline_h: float
    working_hours: bool


def class_policies(path: Path | str) -> dict[str, ClassPolicy]:
    path = Path(path)
    return class_policies_from_rows(tsv.rows(path, POLICY_COLUMNS), str(path))


def class_policies_from_rows(rows, source: str) -> dict[str, ClassPolicy]:
    policies: dict[str, ClassPolicy] = {}
    for number, (class_code, priority, hours, working) in rows:
        where = f"{source}:{number}"
        if not _CLASS.fullmatch(class_code):
            raise tsv.TableError(f"{where}: class_code {class_code!r} is not 5 digits")
        if class_code in policies:
            raise tsv.TableError(f"{where}: {class_code} is listed twice")
        if priority not in _PRIORITY_WORDS:
            raise tsv.TableError(
                f"{where}: priority {priority!r} is not one of {', '.join(_PRIORITY_WORDS)}"
            )
        try:
            deadline_h = float(hours)
        except ValueError:
            deadline_h = float("nan")
        if not 0 < deadline_h <= MAX_DEADLINE_H:
            raise tsv.TableError(
                f"{where}: deadline_h {hours!r} is not a number of hours in (0, {MAX_DEADLINE_H}]"
            )
        if working not in _YES_NO:
            raise tsv.TableError(f"{where}: working_hours {working!r} is not yes or no")
        policies[class_code] = ClassPolicy(_PRIORITY_WORDS[priority], deadline_h, _YES_NO[working])
    return policies


class CaseDispatch:
    """Grid, priority, deadline and responsible unit of a case, from the data files."""

    def __init__(
        self,
        settings: CaseSettings,
        units: ResponsibleUnits,
        policies: dict[str, ClassPolicy],
        calendar: WorkingCalendar,
        grids: GridMap | None = None,
    ) -> None:
        self._settings = settings
        self._units = units
        self._policies = policies
        self._calendar = calendar
        self.grids = grids
        self.stats: Counter[str] = Counter()
        self._plain_hours_logged: set[str] = set()

    def enrich(self, alert: Alert) -> Alert:
        """The alert with its grid filled in and its priority raised to its class's; the
        same object when neither changes."""
        location = alert.location
        grids = self.grids
        if not location.grid_code and grids and (grid := grids.grid_at(location.lat, location.lon)):
            location = replace(location, grid_code=grid)
        priority = alert.priority
        wanted = self.class_priority(alert.class_code) if alert.merge else None
        if wanted and wanted.rank > priority.rank:
            priority = wanted
        if location is alert.location and priority is alert.priority:
            return alert
        return replace(alert, location=location, priority=priority)

    def class_priority(self, class_code: str) -> Priority | None:
        policy = self._policies.get(class_code)
        return policy.priority if policy else None

    def responsible_unit(self, class_code: str, grid_code: str) -> str:
        return self._units.unit(class_code, grid_code) or self._settings.fallback_unit

    def parent_of(self, grid_code: str) -> str:
        """The grid's parent ("" without a grid map): ``IncidentBook``'s ``grid_parent``."""
        return self.grids.parent_of(grid_code) if self.grids is not None else ""

    def deadline_ms(self, ts_ms: int, class_code: str, priority: Priority) -> int:
        """When a case seen at ``ts_ms`` is due: its class's limit (in working time where
        the class says so) when the case is at its class's priority, else the plain hours
        of the case's priority."""
        policy = self._policies.get(class_code)
        if policy is None or priority is not policy.priority:
            return ts_ms + round(self._settings.deadlines_h[priority] * 3_600_000)
        limit_ms = round(policy.deadline_h * 3_600_000)
        if policy.working_hours:
            try:
                return self._calendar.add_working(ts_ms, limit_ms)
            except (ValueError, OverflowError) as exc:
                self._counted_in_plain_hours(class_code, exc)
        return ts_ms + limit_ms

    def _counted_in_plain_hours(self, class_code: str, exc: Exception) -> None:
        """The calendar could not count a limit (``load_dispatch`` refuses the calendars
        that may not; this is the defence should one still fail): the case is filed with
        the limit in plain hours rather than held as an error and never filed. Counted
        each time, logged once per class."""
        self.stats["deadline_in_plain_hours"] += 1
        if class_code not in self._plain_hours_logged:
            self._plain_hours_logged.add(class_code)
            log.warning("class %s: working-hours deadline counted in plain hours: %s",
                        class_code, exc)  # fmt: skip

    def deadline_iso(self, ts_ms: int, class_code: str, priority: Priority) -> str:
        """``deadline_ms`` as ISO 8601 in the city's zone (``2026-12-07T10:30:00+08:00``)."""
        due = datetime.fromtimestamp(self.deadline_ms(ts_ms, class_code, priority) / 1000, tz=UTC)
        return due.astimezone(self._calendar.zone).isoformat(timespec="seconds")


def load_dispatch(settings: CaseSettings, timezone: str) -> CaseDispatch:
    """The dispatch data the settings name, read and checked now (at start-up), so that a
    bad file stops the gateway with the setting and the file named, not a case later: a
    working-hours limit the calendar may not count within ``MAX_COUNTED_DAYS`` too."""
    step = "units_file"
    try:
        units = ResponsibleUnits.from_tsv(settings.units_file)
        step = "class_policy_file"
        policies = class_policies(settings.class_policy_file)
        step = "calendar_file"
        calendar = WorkingCalendar.from_tsv(settings.calendar_file, timezone)
        step = "grids_file"
        grids = GridMap.from_geojson(settings.grids_file) if settings.grids_file else None
    except (tsv.TableError, GridFileError) as exc:
        raise DispatchFileError(f"cases.{step}: {exc}") from None
    _check_countable(settings, policies, calendar)
    return CaseDispatch(settings, units, policies, calendar, grids)


def _check_countable(
    settings: CaseSettings, policies: dict[str, ClassPolicy], calendar: WorkingCalendar
) -> None:
    """Refuse a working-hours limit the calendar may take too long to count (a calendar of
    one minute a week and a limit of a year), so that no case fails at filing time."""
    for class_code, policy in sorted(policies.items()):
        if not policy.working_hours:
            continue
        days = calendar.days_to_count(round(policy.deadline_h * 3_600_000))
        if days > MAX_COUNTED_DAYS:
            raise DispatchFileError(
                f"cases.class_policy_file: {settings.class_policy_file}: class {class_code}:"
                f" {policy.deadline_h:g} working hours may need {days} days of the calendar"
                f" {settings.calendar_file} to count, more than {MAX_COUNTED_DAYS}: give the"
                " calendar more working periods, or the class a shorter limit or plain hours"
                " (working_hours no)"
            )
