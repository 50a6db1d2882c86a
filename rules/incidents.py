"""Incidents: one real-world problem behind one or more alerts — one incident, one case.

Dedup and merge (查重与并案) happen here:
- a repeat of an alert already bound to an open incident adds evidence, never a new case;
- an alert of the same class within ``merge_radius_m`` of an open incident's first alert,
  and within ``merge_window_ms`` of its last activity, joins that incident (three full bins
  at one collection point are one case);
- a higher-priority alert escalates the incident's case instead of opening another;
- a closed case (status synced back from the platform) closes the incident and re-arms its
  alerts, so the next occurrence files a new case;
- each incident remembers the latest alert of each of its keys that has not cleared
  (``persisting``): what its sensors and cameras still see. The closure check
  (gateway/closure_check.py) asks it when the case reaches verification or is closed, and
  ``flag`` records the check on the incident and makes the evidence commands for its case;
- an alert may be absorbed into a given open incident (``absorb``: the alert flow's
  inhibition, e.g. a single gauge joining its grid's area-wide flood case) whatever its
  class or distance.

The merge search looks only at open incidents of the alert's class near it
(:class:`_MergeIndex`, a grid of cells at least the radius wide), not at every open
incident: a city has thousands open at once, and a backtest feeds a week of alerts. Of
several incidents at the same smallest distance the one with the smallest id is taken.

Each change yields CaseCommands whose ids are derived from the incident and a per-incident
counter: replaying the same alerts after a crash produces the same ids, which the case
bridge uses as idempotency keys.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from domain import Alert, AlertState, CaseCommand, CommandKind, Location, Priority

# Closure checks an incident keeps for operators (the API shows them), latest last.
MAX_CHECKS_KEPT = 10


@dataclass(frozen=True, slots=True)
class MergePolicy:
    radius_m: float = 50.0
    window_ms: int = 24 * 3600 * 1000


class IncidentBook:
    def __init__(self, policy: MergePolicy) -> None:
        self._policy = policy
        self._incidents: dict[str, dict[str, Any]] = {}
        self._open_by_key: dict[str, str] = {}
        self._keys_bound: dict[str, int] = {}  # open incident id → keys in _open_by_key
        self._merge_index = _MergeIndex(policy.radius_m)
        self._dirty: set[str] = set()

    def load(self, incident: dict[str, Any]) -> None:
        """Put back an open incident after a restart (closed ones are not kept in memory)."""
        if incident["status"] != "open":
            return
        self._incidents[incident["id"]] = incident
        for key in incident["alert_keys"]:
            self._map_key(key, incident["id"])

    def handle(self, alert: Alert) -> list[CaseCommand]:
        incident_id = self._open_by_key.get(alert.key)
        if incident_id is None:
            if alert.state is AlertState.CLEARED:
                return []  # a clear for an alert whose case is already closed
            incident_id = self._find_merge_target(alert)
            if incident_id is None:
                return [self._open(alert)]
            self._bind(incident_id, alert.key)
        return [self._update(self._incidents[incident_id], alert)]

    def open_ids(self) -> list[str]:
        """The ids of the open incidents."""
        return [i for i, incident in self._incidents.items() if incident["status"] == "open"]

    def incident_of(self, key: str) -> str | None:
        """The open incident this alert key is bound to, if any."""
        return self._open_by_key.get(key)

    def persisting(self, incident_id: str) -> list[Alert]:
        """The latest alert of each of the open incident's keys whose last transition was
        not a clear, in key order: what its sources still see. Empty for an incident that
        is not open, or one stored before the book kept this (its alerts count as cleared,
        as every closed case was taken before)."""
        incident = self._incidents.get(incident_id)
        if incident is None or incident["status"] != "open":
            return []
        firing = incident.get("firing", {})
        return [Alert.from_dict(firing[key]) for key in sorted(firing)]

    def flag_of(self, incident_id: str) -> str:
        """The case status at which the open incident's standing closure flag was raised
        ("" when none stands)."""
        incident = self._incidents.get(incident_id)
        if incident is None or incident["status"] != "open":
            return ""
        return incident.get("flag", "")

    def flag(
        self, incident_id: str, status: str, evidence: list[Alert], at_ms: int
    ) -> list[CaseCommand]:
        """Raise a closure flag on the open incident: its case reached ``status`` while
        ``evidence`` (one alert per source still seeing the problem) says it persists.
        Recorded on the incident (``flag`` and the latest ``closure_checks``); returns the
        evidence commands for its case, numbered like every other command of the incident,
        so the ids are stable idempotency keys."""
        incident = self._incidents.get(incident_id)
        if incident is None or incident["status"] != "open":
            return []
        incident["flag"] = status
        check = {"status": status, "at_ms": at_ms, "summaries": [a.summary for a in evidence]}
        incident["closure_checks"] = [*incident.get("closure_checks", []), check][-MAX_CHECKS_KEPT:]
        self._dirty.add(incident_id)
        priority = Priority(incident["priority"])
        commands = []
        for alert in evidence:
            incident["commands"] += 1
            commands.append(
                CaseCommand(f"{incident_id}/{incident['commands']}", incident_id,
                            CommandKind.ATTACH, alert, priority)
            )  # fmt: skip
        return commands

    def unflag(self, incident_id: str) -> bool:
        """Take the open incident's standing flag down (its case was sent back to be
        handled again: the next verification is checked afresh); whether one stood."""
        if not self.flag_of(incident_id):
            return False
        self._incidents[incident_id]["flag"] = ""
        self._dirty.add(incident_id)
        return True

    def absorb(self, alert: Alert, incident_id: str) -> list[CaseCommand]:
        """Bind ``alert`` to the open incident ``incident_id`` and add it there as evidence
        (escalating the case if the alert is worse); an alert already bound elsewhere, or
        an incident no longer open, is handled as usual."""
        incident = self._incidents.get(incident_id)
        if alert.key in self._open_by_key or incident is None or incident["status"] != "open":
            return self.handle(alert)
        self._bind(incident_id, alert.key)
        return [self._update(incident, alert)]

    def close(self, incident_id: str, reason: str) -> list[str]:
        """Close an open incident; return its alert keys for the rule engine to re-arm."""
        incident = self._incidents.get(incident_id)
        if incident is None or incident["status"] != "open":
            return []
        incident["status"] = "closed"
        incident["closed_reason"] = reason
        for key in incident["alert_keys"]:
            if key in self._open_by_key:
                self._unmap_key(key)
        self._dirty.add(incident_id)
        return list(incident["alert_keys"])

    def take_dirty(self) -> dict[str, dict[str, Any]]:
        """Incidents changed since the last call, for the caller to persist. A closed
        incident is handed over one last time and then forgotten: it can take no more
        alerts, and memory must not grow with every case a city ever had."""
        changed = {i: self._incidents[i] for i in self._dirty}
        self._dirty.clear()
        for incident_id, incident in changed.items():
            if incident["status"] != "open":
                del self._incidents[incident_id]
        return changed

    def _find_merge_target(self, alert: Alert) -> str | None:
        """The nearest open incident of the alert's class within the radius and window;
        of several at the same distance, the smallest id."""
        if not alert.merge:
            return None
        best: tuple[float, str] | None = None
        for incident_id, where in self._merge_index.near(alert.class_code, alert.location):
            incident = self._incidents[incident_id]
            if alert.ts - incident["last_ts"] > self._policy.window_ms:
                continue
            found = (where.distance_m(alert.location), incident_id)
            if found[0] <= self._policy.radius_m and (best is None or found < best):
                best = found
        return best[1] if best else None

    def _map_key(self, key: str, incident_id: str) -> None:
        """Bind ``key`` to an open incident; an incident with its first bound key becomes
        a merge candidate (an alert can only merge into an incident some key is bound to)."""
        was = self._open_by_key.get(key)
        if was == incident_id:
            return
        if was is not None:
            self._unmap_key(key)
        self._open_by_key[key] = incident_id
        count = self._keys_bound.get(incident_id, 0)
        self._keys_bound[incident_id] = count + 1
        incident = self._incidents[incident_id]
        if count == 0 and incident.get("merge", True):
            self._merge_index.add(incident_id, incident["class_code"], incident["location"])

    def _unmap_key(self, key: str) -> None:
        incident_id = self._open_by_key.pop(key)
        count = self._keys_bound.pop(incident_id) - 1
        if count:
            self._keys_bound[incident_id] = count
        else:
            self._merge_index.discard(incident_id)

    def _bind(self, incident_id: str, key: str) -> None:
        incident = self._incidents[incident_id]
        if key not in incident["alert_keys"]:
            incident["alert_keys"].append(key)
        self._map_key(key, incident_id)

    def _open(self, alert: Alert) -> CaseCommand:
        digest = hashlib.sha1(f"{alert.key}@{alert.ts}".encode()).hexdigest()[:12]
        incident = {
            "id": f"INC-{digest}",
            "status": "open",
            "class_code": alert.class_code,
            "priority": str(alert.priority),
            "location": {
                "lat": alert.location.lat,
                "lon": alert.location.lon,
                "address": alert.location.address,
                "grid_code": alert.location.grid_code,
            },
            "opened_ts": alert.ts,
            "last_ts": alert.ts,
            "alert_keys": [alert.key],
            "commands": 1,
            "closed_reason": "",
            "merge": alert.merge,
            "firing": {},
        }
        _track(incident, alert)
        self._incidents[incident["id"]] = incident
        self._map_key(alert.key, incident["id"])
        self._dirty.add(incident["id"])
        return CaseCommand(
            command_id=f"{incident['id']}/1",
            incident_id=incident["id"],
            kind=CommandKind.OPEN,
            alert=alert,
            priority=alert.priority,
        )

    def _update(self, incident: dict[str, Any], alert: Alert) -> CaseCommand:
        current = Priority(incident["priority"])
        kind = CommandKind.ATTACH
        if alert.state is not AlertState.CLEARED and alert.priority.rank > current.rank:
            kind = CommandKind.ESCALATE
            incident["priority"] = str(alert.priority)
        incident["last_ts"] = max(incident["last_ts"], alert.ts)
        _track(incident, alert)
        incident["commands"] += 1
        self._dirty.add(incident["id"])
        return CaseCommand(
            command_id=f"{incident['id']}/{incident['commands']}",
            incident_id=incident["id"],
            kind=kind,
            alert=alert,
            priority=Priority(incident["priority"]),
        )


def _track(incident: dict[str, Any], alert: Alert) -> None:
    """Keep the alert as its key's latest while it fires; forget the key when it clears.
    Its pictures are left out: a closure check takes its own."""
    firing = incident.setdefault("firing", {})
    if alert.state is AlertState.CLEARED:
        firing.pop(alert.key, None)
    else:
        firing[alert.key] = {**alert.to_dict(), "media": []}


_EARTH_RADIUS_M = 6_371_008.8  # as Location.distance_m
_MARGIN = 1.01  # cells a little wider than the bound: rounding never loses a neighbour
_MAX_CELL_DEG = 30.0  # wider longitude cells (near a pole, a huge radius): scan instead


class _MergeIndex:
    """Merge candidates (open incidents that take merges) by class code and cell.

    A cell is ``lat_step`` high and, in its row, ``lon_step(row)`` wide, both at least the
    radius: two places within the radius of each other are in the same or neighbouring
    rows (the great-circle distance is at least R·|Δlat|), and with haversine's
    ``hav(d/R) ≥ cos φ1 cos φ2 hav(Δλ)`` a row's width is set from the smallest cosine of
    the rows either side of it, so they are in the same or neighbouring columns of the
    incident's row too. Where a cell cannot be exact — near a pole (the width would be
    huge), within a cell of the antimeridian (longitudes wrap), a coordinate that is not
    a finite WGS-84 one — the incident is kept aside and always looked at, and an alert
    there looks at every candidate of its class."""

    def __init__(self, radius_m: float) -> None:
        radius_deg = math.degrees(radius_m / _EARTH_RADIUS_M) if radius_m > 0 else 0.0
        self._radius_rad = radius_m / _EARTH_RADIUS_M if radius_m > 0 else 0.0
        self._lat_step = max(radius_deg * _MARGIN, 1e-9)
        self._usable = math.isfinite(radius_deg) and radius_deg * _MARGIN < _MAX_CELL_DEG
        self._cells: dict[tuple[str, int, int], dict[str, Location]] = {}
        self._aside: dict[str, dict[str, Location]] = {}  # class → incidents kept aside
        self._by_class: dict[str, dict[str, Location]] = {}
        self._where: dict[str, tuple[str, tuple[int, int] | None]] = {}
        self._widths: dict[int, float | None] = {}

    def add(self, incident_id: str, class_code: str, location: dict[str, Any]) -> None:
        where = Location(location["lat"], location["lon"])
        cell = self._cell(where.lat, where.lon)
        self._by_class.setdefault(class_code, {})[incident_id] = where
        if cell is None:
            self._aside.setdefault(class_code, {})[incident_id] = where
        else:
            self._cells.setdefault((class_code, *cell), {})[incident_id] = where
        self._where[incident_id] = (class_code, cell)

    def discard(self, incident_id: str) -> None:
        found = self._where.pop(incident_id, None)
        if found is None:
            return
        class_code, cell = found
        _drop(self._by_class, class_code, incident_id)
        if cell is None:
            _drop(self._aside, class_code, incident_id)
        else:
            _drop(self._cells, (class_code, *cell), incident_id)

    def near(self, class_code: str, location: Location) -> list[tuple[str, Location]]:
        """Every candidate of ``class_code`` that may be within the radius of
        ``location`` (a superset of those that are; more where no cell is exact)."""
        cell = self._cell(location.lat, location.lon, neighbours=True)
        if cell is None:
            return list(self._by_class.get(class_code, {}).items())
        row, lon = cell
        found = list(self._aside.get(class_code, {}).items())
        for r in (row - 1, row, row + 1):
            width = self._width(r)  # not None: _cell checked the neighbouring rows
            column = math.floor(lon / width)
            for c in (column - 1, column, column + 1):
                found.extend(self._cells.get((class_code, r, c), {}).items())
        return found

    def _cell(self, lat: float, lon: float, neighbours: bool = False) -> tuple | None:
        """(row, column) of an incident; with ``neighbours``, (row, lon) of an alert whose
        neighbouring rows all have exact cells. None where the grid cannot be exact."""
        if not (self._usable and math.isfinite(lat) and math.isfinite(lon)):
            return None
        if abs(lat) > 90 or abs(lon) > 180:
            return None
        row = math.floor(lat / self._lat_step)
        rows = (row - 1, row, row + 1) if neighbours else (row,)
        widths = [self._width(r) for r in rows]
        if any(w is None or abs(lon) > 180 - w for w in widths):
            return None
        return (row, lon) if neighbours else (row, math.floor(lon / widths[0]))

    def _width(self, row: int) -> float | None:
        """The longitude step of ``row`` in degrees (None: too wide to be useful)."""
        if row in self._widths:
            return self._widths[row]
        step = self._lat_step
        highest = max(abs((row - 1) * step), abs((row + 2) * step)) + step
        width = None
        if highest < 90:
            sine = math.sin(self._radius_rad / 2) / math.cos(math.radians(highest))
            if sine < 1:
                width = math.degrees(2 * math.asin(sine)) * _MARGIN + 1e-9
                width = width if width < _MAX_CELL_DEG else None
        self._widths[row] = width
        return width


def _drop(table: dict, key: Any, incident_id: str) -> None:
    members = table.get(key)
    if members is not None:
        members.pop(incident_id, None)
        if not members:
            del table[key]
