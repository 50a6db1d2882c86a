"""Storm control per grid: past ``per_hour`` new incidents of one class in one grid (or its
parent grid) within an hour, further ones join one storm incident for that grid.

A downpour that floods forty underpasses in one street office's grids is one event for the
dispatch desk, not forty pages. This module counts and knows which storm is open for
which class and grid (:class:`StormDesk`); the incident book (rules/incidents.py) opens the
storm incident, binds each site's key to it and keeps the sites' states
(rules/incident_record.py), so each site still clears on its own. At most one storm is
open for a class in a grid or its parent: a grid past its bound joins the storm already
open for its grid or its parent grid before one is opened for it.

Counting is by event time (the alert's ``ts``), in a sliding hour: a would-be new incident
counts whether it became its own incident or a storm's site, so a storm goes on while
problems keep coming at the storm's rate, and an hour after the burst new ones are their
own again. Only the newest ``per_hour`` times of each (class, grid) are kept: that is all
the question "were there already ``per_hour`` in the hour before?" needs.

After a restart the counts are rebuilt from the open incidents the book loads (their
``opened_ts``; a storm's listed sites' ``ts``, the newest 1000 of them). What a restart can
change: incidents closed within that hour are no longer in memory and no longer count, nor
do a storm's sites beyond its newest 1000 (only with ``per_hour`` above 1000), so a count
can come back lower — a restart can delay a storm, never start one that was not due. What
it cannot change: an open storm is again the one of its class and grid (new sites join it),
every site's key stays bound to the incident it joined, and each site still clears there.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rules.incident_record import arrivals
from rules.merge_settings import Storms

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class StormCall:
    """A would-be new incident past the bound: join ``storm_id`` ("": open a storm for
    ``grid``, the grid or parent grid that went past the bound)."""

    storm_id: str
    grid: str


class StormDesk:
    """The open storms (one per class and grid) and the counts that decide when one is
    due."""

    def __init__(self, settings: Storms, grid_parent: Callable[[str], str] | None) -> None:
        self.per_hour = settings.per_hour
        self._counts = StormCounts(settings, grid_parent)
        self._open: dict[tuple[str, str], str] = {}  # (class, grid) → open storm id

    def load(self, incident: dict[str, Any]) -> None:
        """Take an open incident back after a restart: a storm is again the one open for
        its class and grid, and what it stood for counts again (see the module's
        docstring for what that can change)."""
        storm = incident.get("storm")
        if storm:
            self._open[(storm["class_code"], storm["grid"])] = incident["id"]
        for class_code, grid, ts in arrivals(incident):
            self._counts.count(class_code, grid, ts)

    def call(self, class_code: str, grid: str, ts: int) -> StormCall | None:
        """Count a would-be new incident of ``class_code`` in ``grid`` at ``ts``; past the
        bound, the storm it joins (the one open for its grid, else its parent's) or the
        grid to open one for; None while not past."""
        past = self._counts.past(class_code, grid, ts)
        self._counts.count(class_code, grid, ts)
        if past is None:
            return None
        for scope in self._counts.scopes(grid):
            storm_id = self._open.get((class_code, scope))
            if storm_id is not None:
                return StormCall(storm_id, scope)
        return StormCall("", past)

    def opened(self, class_code: str, grid: str, storm_id: str) -> None:
        self._open[(class_code, grid)] = storm_id

    def closed(self, incident: dict[str, Any]) -> None:
        """The incident closed: a storm's grid is free for the next one."""
        storm = incident.get("storm")
        if storm and self._open.get((storm["class_code"], storm["grid"])) == incident["id"]:
            del self._open[(storm["class_code"], storm["grid"])]


class StormCounts:
    def __init__(self, settings: Storms, grid_parent: Callable[[str], str] | None) -> None:
        self._per_hour = settings.per_hour
        self._parent = grid_parent if settings.parent_grids else None
        self._times: dict[tuple[str, str], list[int]] = {}

    def scopes(self, grid: str) -> list[str]:
        """The grid and, with parent grids on, its parent (when it has one)."""
        parent = self._parent(grid) if self._parent and grid else ""
        return [grid, parent] if parent and parent != grid else [grid]

    def past(self, class_code: str, grid: str, ts: int) -> str | None:
        """The first scope (the grid, then its parent) that already had ``per_hour`` new
        incidents of ``class_code`` in the hour up to ``ts``; None if neither had."""
        for scope in self.scopes(grid):
            times = self._times.get((class_code, scope), [])
            # ``times`` is sorted (``count`` inserts in order): the hour is two bisections.
            in_hour = bisect_right(times, ts) - bisect_right(times, ts - HOUR_MS)
            if in_hour >= self._per_hour:
                return scope
        return None

    def count(self, class_code: str, grid: str, ts: int) -> None:
        """Count one new incident (its own or a storm's site) at ``ts`` in every scope."""
        for scope in self.scopes(grid):
            times = self._times.setdefault((class_code, scope), [])
            insort(times, ts)
            del times[: max(len(times) - self._per_hour, 0)]
