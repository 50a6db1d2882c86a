"""The merge search's spatial index: open incidents (or sites) by group and cell, so that
a new alert looks only at those that may be within the radius, not at every one open.

A city has thousands of incidents open at once and a backtest feeds a week of alerts; a
scan of all of them for every alert is what this replaces (bench/incidents.py measures
both). The incident book (rules/incidents.py) keeps one index per radius in use.
"""

from __future__ import annotations

import math
from typing import Any

from domain import Location

_EARTH_RADIUS_M = 6_371_008.8  # as Location.distance_m
_MARGIN = 1.01  # cells a little wider than the bound: rounding never loses a neighbour
_MAX_CELL_DEG = 30.0  # wider longitude cells (near a pole, a huge radius): scan instead


class MergeIndex:
    """Merge candidates (open incidents that take merges) by group (a class code, or a
    family of classes) and cell.

    A cell is ``lat_step`` high and, in its row, ``lon_step(row)`` wide, both at least the
    radius: two places within the radius of each other are in the same or neighbouring
    rows (the great-circle distance is at least R·|Δlat|), and with haversine's
    ``hav(d/R) ≥ cos φ1 cos φ2 hav(Δλ)`` a row's width is set from the smallest cosine of
    the rows either side of it, so they are in the same or neighbouring columns of the
    incident's row too. Where a cell cannot be exact — near a pole (the width would be
    huge), within a cell of the antimeridian (longitudes wrap), a coordinate that is not
    a finite WGS-84 one — the incident is kept aside and always looked at, and an alert
    there looks at every candidate of its group. Widths are computed when asked (a few
    trigonometric calls), not cached: a tiny radius has more rows than memory should
    hold."""

    def __init__(self, radius_m: float) -> None:
        radius_deg = math.degrees(radius_m / _EARTH_RADIUS_M) if radius_m > 0 else 0.0
        self._radius_rad = radius_m / _EARTH_RADIUS_M if radius_m > 0 else 0.0
        self._lat_step = max(radius_deg * _MARGIN, 1e-9)
        self._usable = math.isfinite(radius_deg) and radius_deg * _MARGIN < _MAX_CELL_DEG
        self._cells: dict[tuple[str, int, int], dict[str, Location]] = {}
        self._aside: dict[str, dict[str, Location]] = {}  # group → incidents kept aside
        self._by_group: dict[str, dict[str, Location]] = {}
        self._where: dict[str, tuple[str, tuple[int, int] | None]] = {}

    def add(self, incident_id: str, group: str, location: dict[str, Any]) -> None:
        where = Location(location["lat"], location["lon"])
        rows = self._rows(where.lat, where.lon, neighbours=False)
        self._by_group.setdefault(group, {})[incident_id] = where
        if rows is None:
            self._aside.setdefault(group, {})[incident_id] = where
            cell = None
        else:
            [(row, width)] = rows
            cell = (row, math.floor(where.lon / width))
            self._cells.setdefault((group, *cell), {})[incident_id] = where
        self._where[incident_id] = (group, cell)

    def discard(self, incident_id: str) -> None:
        found = self._where.pop(incident_id, None)
        if found is None:
            return
        group, cell = found
        _drop(self._by_group, group, incident_id)
        if cell is None:
            _drop(self._aside, group, incident_id)
        else:
            _drop(self._cells, (group, *cell), incident_id)

    def candidates(self, group: str) -> list[tuple[str, Location]]:
        """Every candidate of ``group``, wherever it is (what a scan looks at)."""
        return list(self._by_group.get(group, {}).items())

    def near(self, group: str, location: Location) -> list[tuple[str, Location]]:
        """Every candidate of ``group`` (a class, or every class of a family) that may be
        within the radius of ``location`` (a superset of those that are; more where no
        cell is exact)."""
        rows = self._rows(location.lat, location.lon, neighbours=True)
        if rows is None:
            return self.candidates(group)
        found = list(self._aside.get(group, {}).items())
        for row, width in rows:
            column = math.floor(location.lon / width)
            for c in (column - 1, column, column + 1):
                found.extend(self._cells.get((group, row, c), {}).items())
        return found

    def _rows(self, lat: float, lon: float, neighbours: bool) -> list[tuple[int, float]] | None:
        """(row, width) of the place's row, and with ``neighbours`` of the rows either
        side; None where the grid cannot be exact there."""
        if not (self._usable and math.isfinite(lat) and math.isfinite(lon)):
            return None
        if abs(lat) > 90 or abs(lon) > 180:
            return None
        row = math.floor(lat / self._lat_step)
        rows = []
        for r in (row - 1, row, row + 1) if neighbours else (row,):
            width = self._width(r)
            if width is None or abs(lon) > 180 - width:
                return None
            rows.append((r, width))
        return rows

    def _width(self, row: int) -> float | None:
        """The longitude step of ``row`` in degrees (None: too wide to be useful)."""
        step = self._lat_step
        highest = max(abs((row - 1) * step), abs((row + 2) * step)) + step
        if highest >= 90:
            return None
        sine = math.sin(self._radius_rad / 2) / math.cos(math.radians(highest))
        if sine >= 1:
            return None
        width = math.degrees(2 * math.asin(sine)) * _MARGIN + 1e-9
        return width if width < _MAX_CELL_DEG else None


def _drop(table: dict, key: Any, incident_id: str) -> None:
    members = table.get(key)
    if members is not None:
        members.pop(incident_id, None)
        if not members:
            del table[key]
