"""The incident's dict: the one format the incident book keeps, the gateway persists as is
and ``IncidentBook.load`` reads back after a restart — built, changed and read here only.

Everything an incident must remember to be judged again after a restart lives in it: its
keys, the latest alert of each key still firing (``firing``, for the closure check), the
latest alert (``latest``), the classes and sources seen (what the duplicate likelihood
asks), its merge decisions, closure checks and, for a storm, its sites. Each list is
bounded (``MAX_*``): an incident open for weeks must not grow without limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from domain import Alert, AlertState

MAX_CHECKS_KEPT = 10  # closure checks an incident keeps for operators, latest last
MAX_DECISIONS_KEPT = 20  # merge decisions an incident keeps, latest last
MAX_SOURCES_KEPT = 64  # sources an incident remembers for the duplicate likelihood
MAX_CLASSES_KEPT = 32
MAX_STORM_SITES = 1000  # the newest sites a storm lists; older ones still clear there


def new_incident(
    incident_id: str, alert: Alert, class_code: str, class_reason: str, storm_grid: str = ""
) -> dict[str, Any]:
    """A new open incident for ``alert``, filed under ``class_code`` (for ``class_reason``);
    a storm when ``storm_grid`` is set (its location is the storm's grid)."""
    where = alert.location
    incident: dict[str, Any] = {
        "id": incident_id,
        "status": "open",
        "class_code": class_code,
        "class_reason": class_reason,
        "priority": str(alert.priority),
        "location": {
            "lat": where.lat,
            "lon": where.lon,
            "address": where.address,
            "grid_code": storm_grid or where.grid_code,
        },
        "opened_ts": alert.ts,
        "last_ts": alert.ts,
        "alert_keys": [alert.key],
        "commands": 1,
        "closed_reason": "",
        "merge": alert.merge and not storm_grid,
        "firing": {},
        "classes": [],
        "sources": {},
        "decisions": [],
    }
    if storm_grid:
        incident["storm"] = {"grid": storm_grid, "class_code": class_code, "sites": []}
    track(incident, alert)
    return incident


def record(
    incident: dict[str, Any],
    alert_key: str,
    outcome: str,
    other: str,
    score: float | None,
    reasons: tuple[str, ...],
) -> None:
    """Keep a merge decision about ``alert_key`` (``outcome`` "merged", "suspected", "new"
    or "storm"; ``other`` the incident merged into or compared with)."""
    entry = {"alert_key": alert_key, "score": score, "reasons": list(reasons),
             "outcome": outcome, "other": other}  # fmt: skip
    incident["decisions"] = [*incident.get("decisions", []), entry][-MAX_DECISIONS_KEPT:]


def check(incident: dict[str, Any], status: str, at_ms: int, summaries: list[str]) -> None:
    """Keep a closure check that raised the flag at case status ``status``."""
    entry = {"status": status, "at_ms": at_ms, "summaries": summaries}
    incident["closure_checks"] = [*incident.get("closure_checks", []), entry][-MAX_CHECKS_KEPT:]
    incident["flag"] = status


def track(incident: dict[str, Any], alert: Alert) -> None:
    """Keep the alert as its key's latest while it fires; forget the key when it clears.
    Its pictures are left out: a closure check takes its own. Also kept: the latest alert,
    the classes and sources seen, and a storm's site for the alert's key with its state."""
    kept = {**alert.to_dict(), "media": []}
    firing = incident.setdefault("firing", {})
    if alert.state is AlertState.CLEARED:
        firing.pop(alert.key, None)
    else:
        firing[alert.key] = kept
    incident["latest"] = kept
    remember(incident, alert.class_code, alert.source_id, alert.origin)
    storm = incident.get("storm")
    if storm is not None:
        _track_site(storm["sites"], alert)


def take_over(into: dict[str, Any], duplicate: dict[str, Any]) -> None:
    """``into`` takes what a merged duplicate saw: its firing keys, sources and classes."""
    for key, firing in duplicate.get("firing", {}).items():
        into.setdefault("firing", {})[key] = firing
    for source, origin in duplicate.get("sources", {}).items():
        remember(into, alert_class="", source=source, origin=origin)
    for code in duplicate.get("classes", []):
        remember(into, alert_class=code, source="", origin="")


def remember(incident: dict[str, Any], alert_class: str, source: str, origin: str) -> None:
    """Add a class and a source (each when given) to what the incident has seen, bounded."""
    classes = incident.setdefault("classes", [])
    if alert_class and alert_class not in classes and len(classes) < MAX_CLASSES_KEPT:
        classes.append(alert_class)
    sources = incident.setdefault("sources", {})
    if source and source not in sources and len(sources) < MAX_SOURCES_KEPT:
        sources[source] = origin


def latest(incident: dict[str, Any]) -> Alert:
    """The incident's latest alert (one stored before the book kept it: its latest firing
    one); ValueError when it has none."""
    data = incident.get("latest") or max(
        incident.get("firing", {}).values(), key=lambda a: a["ts"], default=None
    )
    if data is None:
        raise ValueError(f"incident {incident['id']} keeps no alert to merge")
    return Alert.from_dict(data)


def summarised(alert: Alert, what: str) -> Alert:
    """The alert with ``what`` put before its summary (a merge's, a void's reason)."""
    return replace(alert, summary=f"{what}: {alert.summary}" if alert.summary else what)


def arrivals(incident: dict[str, Any]) -> Iterator[tuple[str, str, int]]:
    """``(class, grid, ts)`` of each would-be new incident a stored open incident stands
    for, as the storm counts took them: a storm's listed sites, or the incident's own
    opening when it takes merges and has a grid."""
    storm = incident.get("storm")
    if storm:
        for site in storm["sites"]:
            yield storm["class_code"], site["location"].get("grid_code", ""), site["ts"]
    elif incident.get("merge", True) and incident["location"]["grid_code"]:
        yield incident["class_code"], incident["location"]["grid_code"], incident["opened_ts"]


def _track_site(sites: list[dict[str, Any]], alert: Alert) -> None:
    """Update the site's state, or list a new site; past ``MAX_STORM_SITES`` the oldest
    listed one makes room (its key stays bound to the storm): the newest are what the desk
    looks at and what the storm counts are rebuilt from after a restart."""
    for site in sites:
        if site["key"] == alert.key:
            site["state"] = str(alert.state)
            return
    del sites[: max(len(sites) - MAX_STORM_SITES + 1, 0)]
    where = alert.location
    sites.append({"key": alert.key, "source_id": alert.source_id,
                  "location": {"lat": where.lat, "lon": where.lon,
                               "address": where.address, "grid_code": where.grid_code},
                  "state": str(alert.state), "ts": alert.ts})  # fmt: skip
