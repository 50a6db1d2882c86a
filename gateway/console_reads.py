"""What the operations console reads: devices with their state, alerts with what held them,
an incident's timeline, the map's layers. Read-only, on the gateway's loop (like every
API handler), and bounded: no answer reads a whole table. The one exception to the loop is
``map_answer``, which touches no gateway state and runs in a worker thread.

- **Device state**: ``offline`` and ``suspect`` from device health; ``alerting`` when a
  business alert of the device still fires, filed in an open incident (the incident book's
  ``persisting``) or held by the alert flow (a silence, an inhibition: its ``gate`` state in
  the store, one row per alert it holds), with ``muted`` saying what holds it; else
  ``normal``. Health's own alerts (a flat battery, the offline alert itself) do not make a
  device ``alerting``: health says that.
- **Alert pages** are keyset pages over the alerts table, newest first, that look at no
  more than ``scan`` rows each: the table has no index on device or hold, so a filter that
  matches rarely must not read a year of alerts to fill one page. A page that stops at its
  scan bound says where it stopped (``next_cursor``), and the client asks on.
- **A camera's last analysed frame** is listed as the rules were given it (its observations,
  in and outside zones, occluded static objects included), from the same ``CameraStep`` that
  keeps the frame the console draws them on; a crowd lists its first
  ``MAX_LISTED_OBSERVATIONS`` (those in zones first) and says how many there were.
- **Unit grids** are drawn as their polygons when ``cases.grids_file`` gives them
  (gateway/grid_outlines.py; ``extent: "polygon"``): those that meet the area of the map's
  devices, zones and incidents, grown by ``GRID_MARGIN_M``. A grid the file lacks, or every
  grid without a file, is drawn as the box around what stands in it (devices, camera
  zones), grown to at least a 单元网格's ~100 m, and says so (``extent: "members"``).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from case_bridge import outbox
from detectors.config import ZoneSettings
from gateway import listings
from gateway.clock import wall_ms
from gateway.grid_outlines import GridOutlines, compact_json
from gateway.silences import UnknownSilence

if TYPE_CHECKING:
    from gateway.service import Gateway

DeviceState = Literal["normal", "alerting", "suspect", "offline"]
HEALTH_KEY = "/health/"  # device health's alert keys: <device>/health/<rule>
ALERT_SCAN_ROWS = 20_000  # alert rows one page may look at
TIMELINE_ROWS = 500  # alerts, and commands, one timeline shows at most
MAX_LISTED_OBSERVATIONS = 50  # of one analysed frame, beside its picture
GRID_MIN_M = 100.0  # a unit grid (单元网格) is ~10,000 m²
GRID_MARGIN_M = 200.0  # around what the map shows, grids drawn as polygons
_M_PER_DEG_LAT = 111_320.0


def _state(health: dict[str, Any], alerting: bool) -> DeviceState:
    if health.get("offline"):
        return "offline"
    if health.get("suspect"):
        return "suspect"
    return "alerting" if alerting else "normal"


def alerting_sources(gw: Gateway) -> dict[str, list[str]]:
    """Source id → the open incidents in which one of its business alerts still fires."""
    found: dict[str, list[str]] = {}
    for incident_id in gw.incidents.open_ids():
        for alert in gw.incidents.persisting(incident_id):
            if HEALTH_KEY not in alert.key:
                found.setdefault(alert.source_id, []).append(incident_id)
    return found


def held_sources(gw: Gateway) -> dict[str, list[str]]:
    """Source id → what holds its firing business alerts (``silence:<id>``, …), from the
    alert flow's memory (rules/flow.py), not a read of its whole store namespace."""
    found: dict[str, list[str]] = {}
    for alert, held_by in gw.flow.held_alerts():
        if HEALTH_KEY not in alert.key:
            found.setdefault(alert.source_id, []).append(held_by)
    return found


def latest_reading(conn: sqlite3.Connection, device_id: str) -> dict[str, Any] | None:
    """The device's newest raw reading still kept (one index lookup)."""
    row = conn.execute(
        "SELECT ts, values_json, suspect FROM readings WHERE device_id = ?"
        " ORDER BY ts DESC, rowid DESC LIMIT 1",
        (device_id,),
    ).fetchone()
    if row is None:
        return None
    return {"ts": row[0], "values": json.loads(row[1]), "suspect": bool(row[2])}


@dataclass(frozen=True)
class DeviceFilter:
    kind: str | None = None
    grid: str | None = None
    state: DeviceState | None = None
    text: str | None = None  # in the id or the address


def device_page(gw: Gateway, chosen: DeviceFilter, limit: int, cursor: str | None) -> listings.Page:
    """Devices in id order after ``cursor`` (a device id), with state, health, latest
    reading and open incidents; the filters run in memory, the readings only for the page."""
    alerting, held = alerting_sources(gw), held_sources(gw)
    health = gw.health.snapshot()
    page: list[dict[str, Any]] = []
    for device_id in sorted(gw.registry):
        if cursor is not None and device_id <= cursor:
            continue
        device = gw.registry[device_id]
        where = device.location
        state = _state(health.get(device_id, {}), device_id in alerting or device_id in held)
        if (
            (chosen.kind is not None and device.kind != chosen.kind)
            or (chosen.grid is not None and where.grid_code != chosen.grid)
            or (chosen.state is not None and state != chosen.state)
            or (chosen.text is not None and chosen.text not in f"{device_id} {where.address}")
        ):
            continue
        if len(page) == limit:
            return listings.Page(page, page[-1]["id"])
        page.append(_summary(gw, device_id, state, health, alerting, held))
    return listings.Page(page, None)


def device_summary(gw: Gateway, device_id: str) -> dict[str, Any]:
    """One registered device as the device list shows it."""
    alerting, held = alerting_sources(gw), held_sources(gw)
    health = gw.health.snapshot()
    state = _state(health.get(device_id, {}), device_id in alerting or device_id in held)
    return _summary(gw, device_id, state, health, alerting, held)


def _summary(
    gw: Gateway,
    device_id: str,
    state: DeviceState,
    health: dict[str, dict[str, Any]],
    alerting: dict[str, list[str]],
    held: dict[str, list[str]],
) -> dict[str, Any]:
    return {
        **device_place(gw, device_id),
        "state": state,
        "muted": held.get(device_id, []),
        "health": health.get(device_id, {}),
        "latest": latest_reading(gw.conn, device_id),
        "open_incidents": alerting.get(device_id, []),
    }


def device_place(gw: Gateway, device_id: str) -> dict[str, Any]:
    device = gw.registry[device_id]
    where = device.location
    return {
        "id": device_id,
        "kind": device.kind,
        "lat": where.lat,
        "lon": where.lon,
        "address": where.address,
        "grid": where.grid_code,
        "part_code": device.part_code,
    }


# -- alerts -----------------------------------------------------------------------------

Held = Literal["any", "held", "filed"]


@dataclass(frozen=True)
class AlertFilter:
    device: str | None = None
    incident: str | None = None
    held: Held = "any"


@dataclass(frozen=True)
class AlertPage:
    rows: list[dict[str, Any]]
    next_cursor: str | None
    scanned_to: int  # the smallest alert id this page looked at (1: the whole table)


def alert_page(
    gw: Gateway,
    chosen: AlertFilter,
    limit: int,
    cursor: str | None,
    scan: int = ALERT_SCAN_ROWS,
) -> AlertPage:
    """Alerts newest first, matching ``chosen``, older than ``cursor``, looking at no more
    than ``scan`` rows (see the module docstring)."""
    conn = gw.conn
    if cursor is None:
        top = conn.execute("SELECT coalesce(max(id), 0) FROM alerts").fetchone()[0] + 1
    else:
        top = _row_id(cursor)
    floor = max(1, top - scan)
    clauses, args = ["id < ?", "id >= ?"], [top, floor]
    if chosen.device is not None:
        # keys are "<device>/<rule>": the range of every key under "<device>/"
        clauses.append("alert_key >= ? AND alert_key < ?")
        args += [chosen.device + "/", chosen.device + "0"]
    if chosen.incident is not None:
        clauses.append("incident_id = ?")
        args.append(chosen.incident)
    if chosen.held == "held":
        clauses.append("held_by IS NOT NULL")
    elif chosen.held == "filed":
        clauses.append("held_by IS NULL")
    rows = conn.execute(
        "SELECT id, alert_key, state, ts, incident_id, body, held_by FROM alerts"
        f" WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT ?",
        (*args, limit + 1),
    ).fetchall()
    shown = alert_rows(gw, rows[:limit])
    if len(rows) > limit:
        return AlertPage(shown, str(rows[limit - 1][0]), rows[limit - 1][0])
    return AlertPage(shown, str(floor) if floor > 1 else None, floor)


def alert_rows(gw: Gateway, rows: Iterable[tuple]) -> list[dict[str, Any]]:
    """Stored alert rows as the console shows them, each with what held it, if anything."""
    holders: dict[str, dict[str, Any] | None] = {}
    shown = []
    for row_id, key, state, ts, incident_id, body, held_by in rows:
        alert = json.loads(body)
        if held_by is not None and held_by not in holders:
            holders[held_by] = holder(gw, held_by)
        shown.append(
            {
                "id": row_id,
                "key": key,
                "state": state,
                "ts": ts,
                "incident_id": incident_id,
                "source_id": alert.get("source_id", ""),
                "rule_id": alert.get("rule_id", ""),
                "kind": alert.get("kind", ""),
                "zone": alert.get("zone", ""),
                "class_code": alert.get("class_code", ""),
                "priority": alert.get("priority", ""),
                "summary": alert.get("summary", ""),
                "values": alert.get("values", {}),
                "location": alert.get("location", {}),
                "origin": alert.get("origin", ""),
                "media": [evidence_name(m) for m in alert.get("media", [])],
                "held_by": held_by,
                "holder": holders.get(held_by) if held_by is not None else None,
            }
        )
    return shown


def holder(gw: Gateway, held_by: str) -> dict[str, Any] | None:
    """What ``held_by`` names: the silence (as it is now, ended or not), the inhibit rule
    of the config, or the health confirmation; None for a silence since deleted."""
    what, _, name = held_by.partition(":")
    if what == "silence":
        if not (name.isascii() and name.isdigit() and len(name) <= 18):
            return None
        try:
            silence = gw.silences.get(int(name))
        except UnknownSilence:
            return None
        return {"type": "silence", "silence": silence.to_dict(wall_ms())}
    if what == "inhibited":
        rules = gw.config.alerting.inhibit_rules
        rule = next((r for r in rules if r.name == name), None)
        return {"type": "inhibition", "rule": rule.model_dump(mode="json") if rule else None}
    if what == "confirm":
        # The settings the device-health rules hold now: a threshold version's on the
        # embedded gateway, the config files' on a desk that keeps no versions.
        return {"type": "confirm", "confirm_s": gw.engine.settings.kinds.health.confirm_s}
    return {"type": what}


def evidence_name(media: str) -> str:
    """A picture's name from its media entry (a signed link with a hash fragment)."""
    path = media.split("#", 1)[0].split("?", 1)[0]
    return path.rsplit("/", 1)[-1]


# -- one incident -----------------------------------------------------------------------


def incident_summary(conn: sqlite3.Connection, incident_id: str) -> dict[str, Any] | None:
    """The incident as stored (without its firing alerts' bodies), with its case id and
    the case's latest status from the platform (``listings.case_of``)."""
    found = conn.execute(
        "SELECT value FROM state WHERE ns = 'incident' AND key = ?", (incident_id,)
    ).fetchone()
    if found is None:
        return None
    incident = json.loads(found[0])
    incident.pop("firing", None)
    return {**incident, **listings.case_of(conn, incident_id)}


def incident_timeline(gw: Gateway, incident_id: str) -> dict[str, Any] | None:
    """The incident as stored, its case, and what happened to it in order: alerts (a new
    key joining is a merge), the commands made for its case and the platform's answers,
    the statuses the platform gave for the case (when the gateway learnt each), closure
    checks and the closing. None for an unknown incident."""
    conn = gw.conn
    incident = incident_summary(conn, incident_id)
    if incident is None:
        return None
    alerts = conn.execute(
        "SELECT id, alert_key, state, ts, incident_id, body, held_by FROM alerts"
        " WHERE incident_id = ? ORDER BY id LIMIT ?",
        (incident_id, TIMELINE_ROWS + 1),
    ).fetchall()
    commands = conn.execute(
        "SELECT seq, command_id, kind, body, state, attempts, last_error, created_ms,"
        " delivered_ms FROM outbox WHERE incident_id = ? ORDER BY seq LIMIT ?",
        (incident_id, TIMELINE_ROWS + 1),
    ).fetchall()
    filed = conn.execute(
        "SELECT filed_ms FROM case_links WHERE incident_id = ?", (incident_id,)
    ).fetchone()
    shown_alerts = alert_rows(gw, alerts[:TIMELINE_ROWS])
    events = _alert_events(shown_alerts) + _command_events(commands[:TIMELINE_ROWS])
    if filed is not None:
        events.append({"type": "case_filed", "at_ms": filed[0], "case_id": incident["case_id"]})
        for kept in outbox.case_statuses(conn, incident["case_id"]):  # MAX_STATUSES_PER_CASE
            events.append({"type": "platform_status", "at_ms": kept["seen_ms"], **kept})
    for check in incident.get("closure_checks", []):
        events.append({"type": "closure_check", "at_ms": check.get("at_ms"), **check})
    events.sort(key=lambda e: (e["at_ms"] is None, e["at_ms"] or 0))
    return {
        "incident": incident,
        "events": events,
        "evidence": _evidence(shown_alerts),
        "truncated": len(alerts) > TIMELINE_ROWS or len(commands) > TIMELINE_ROWS,
    }


def _alert_events(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    events, seen = [], set()
    for alert in alerts:
        joined = bool(seen) and alert["key"] not in seen
        seen.add(alert["key"])
        kind = "merge" if joined else "alert"
        events.append({"type": kind, "at_ms": alert["ts"], "alert": alert})
    return events


def _command_events(rows: Iterable[tuple]) -> list[dict[str, Any]]:
    """Each command when it was made, and the platform's answer when it came (delivered),
    or what stands in for one (the last error of a command still retried or parked)."""
    events = []
    for seq, command_id, kind, body, state, attempts, last_error, created_ms, delivered_ms in rows:
        command = json.loads(body)
        made = {
            "type": "escalation" if kind == "escalate" else "command",
            "at_ms": created_ms,
            "seq": seq,
            "command_id": command_id,
            "kind": kind,
            "priority": command.get("priority", ""),
            "alert_key": command.get("alert", {}).get("key", ""),
        }
        events.append(made)
        answer = {"type": "platform", "seq": seq, "command_id": command_id, "state": state,
                  "attempts": attempts, "last_error": last_error}  # fmt: skip
        if delivered_ms is not None:
            events.append({**answer, "at_ms": delivered_ms})
        elif last_error or state != "pending":
            events.append({**answer, "at_ms": None})  # no answer time kept: listed last
    return events


def _evidence(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The incident's pictures: each alert's annotated frame with its "before" frame. A
    sensor excerpt (``…_excerpt_<hash>.json``, gateway/sensor_excerpts.py) is no picture:
    the alert's ``media`` names it."""
    pictures = []
    for alert in alerts:
        names = [name for name in alert["media"] if name.endswith(".jpg")]
        if not names:
            continue
        before = next((n for n in names if n.endswith("_before.jpg")), None)
        annotated = next((n for n in names if not n.endswith("_before.jpg")), None)
        pictures.append(
            {"alert_id": alert["id"], "ts": alert["ts"], "key": alert["key"],
             "annotated": annotated, "before": before}
        )  # fmt: skip
    return pictures


# -- the map ----------------------------------------------------------------------------


def grid_boxes(places: Iterable[tuple[str, float, float]]) -> list[dict[str, Any]]:
    """Per grid code, the box around its members ``(grid, lat, lon)``, at least
    ``GRID_MIN_M`` on each side, centred on them."""
    members: dict[str, list[tuple[float, float]]] = {}
    for grid, lat, lon in places:
        if grid:
            members.setdefault(grid, []).append((lat, lon))
    boxes = []
    for grid, points in sorted(members.items()):
        lats, lons = [p[0] for p in points], [p[1] for p in points]
        mid_lat, mid_lon = (min(lats) + max(lats)) / 2, (min(lons) + max(lons)) / 2
        half_lat = max((max(lats) - min(lats)) / 2, GRID_MIN_M / 2 / _M_PER_DEG_LAT)
        lon_m = _M_PER_DEG_LAT * max(math.cos(math.radians(mid_lat)), 1e-6)
        half_lon = max((max(lons) - min(lons)) / 2, GRID_MIN_M / 2 / lon_m)
        boxes.append(
            {"code": grid, "members": len(points), "extent": "members",
             "south": mid_lat - half_lat, "north": mid_lat + half_lat,
             "west": mid_lon - half_lon, "east": mid_lon + half_lon}
        )  # fmt: skip
    return boxes


def unit_grids_json(places: list[tuple[str, float, float]], outlines: GridOutlines | None) -> str:
    """The grids of ``places`` (grid, lat, lon) as a JSON array: with ``outlines``, every
    outlined grid near them as its polygon (from the text each keeps, ``drawn_json``); the
    others as boxes (``grid_boxes``)."""
    found = []
    if outlines is not None and places:
        lats, lons = [p[1] for p in places], [p[2] for p in places]
        grow_lat = GRID_MARGIN_M / _M_PER_DEG_LAT
        grow_lon = grow_lat / max(math.cos(math.radians((min(lats) + max(lats)) / 2)), 1e-6)
        found = outlines.meeting(min(lats) - grow_lat, min(lons) - grow_lon,
                                 max(lats) + grow_lat, max(lons) + grow_lon)  # fmt: skip
    members: dict[str, int] = {}
    for grid, _, _ in places:
        members[grid] = members.get(grid, 0) + 1
    codes = {outline.code for outline in found}
    boxes = grid_boxes(place for place in places if place[0] not in codes)
    drawn = [outline.drawn_json(members.get(outline.code, 0)) for outline in found]
    return f"[{','.join([*drawn, *map(compact_json, boxes)])}]"


def map_answer(layers: dict[str, Any], outlines: GridOutlines | None) -> bytes:
    """The map's answer as JSON: ``map_layers`` and the grids under them. Geometry and
    encoding only, no gateway state: for a worker thread."""
    grids = unit_grids_json(map_places(layers), outlines)
    return f'{{"grids":{grids},{compact_json(layers)[1:]}'.encode()


def map_layers(gw: Gateway, max_devices: int, max_incidents: int) -> dict[str, Any]:
    """Devices with their state, cameras with their zones, open incidents: what the map
    reads of the gateway's memory and store, on its loop. The grids under them are drawn
    apart (``map_answer``), where the loop is not held."""
    health, alerting, held = gw.health.snapshot(), alerting_sources(gw), held_sources(gw)
    ids = sorted(gw.registry)
    devices = [
        {
            **device_place(gw, d),
            "state": _state(health.get(d, {}), d in alerting or d in held),
            "muted": held.get(d, []),
        }
        for d in ids[:max_devices]
    ]
    incidents = listings.incidents(gw.conn, "open", max_incidents, None)
    return {
        "devices": devices,
        "devices_truncated": len(ids) > max_devices,
        "cameras": camera_places(gw),
        "incidents": incidents.rows,
        "incidents_truncated": incidents.next_cursor is not None,
    }


def map_places(layers: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(grid, lat, lon) of what stands on the map: ``map_layers``' devices and zones."""
    return [(d["grid"], d["lat"], d["lon"]) for d in layers["devices"]] + [
        (z["grid"], z["lat"], z["lon"]) for c in layers["cameras"] for z in c["zones"]
    ]


def camera_figures(gw: Gateway) -> dict[str, dict[str, Any]]:
    """Each running camera's figures (status, frames, lag, …) by id."""
    return gw.video.snapshot()["cameras"] if gw.video is not None else {}


def camera_places(
    gw: Gateway, statuses: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Each configured camera with its zones (polygon in the picture, place on the map)
    and its stream status (from ``statuses``, the caller's ``camera_figures``, if given)."""
    statuses = camera_figures(gw) if statuses is None else statuses
    return [
        {
            "id": camera.id,
            "status": statuses.get(camera.id, {}).get("status", "not running"),
            "zones": [_zone(zone) for zone in camera.zones],
        }
        for camera in gw.config.video.cameras
    ]


def last_analysed(gw: Gateway, camera_id: str) -> dict[str, Any] | None:
    """The observations of the camera's last analysed frame (None before its first): its
    event time, how many, and the first ``MAX_LISTED_OBSERVATIONS`` of them, those in a
    zone before those outside every zone."""
    if gw.video is None or camera_id not in gw.video.steps:
        return None
    analysed = gw.video.steps[camera_id].analysed
    if analysed is None:
        return None
    # A crowd walking past outside every zone must not push out what the rules look at.
    zoned_first = sorted(analysed.observations, key=lambda obs: not obs.zone_id)
    listed = [
        {
            "label": obs.label,
            "category": str(obs.category),
            "track_id": obs.track_id,
            "zone": obs.zone_id,
            "box": [round(v) for v in obs.box],
            "score": round(obs.score, 2),
            "stationary_s": obs.stationary_ms // 1000,
            "occluded": obs.occluded,
        }
        for obs in zoned_first[:MAX_LISTED_OBSERVATIONS]
    ]
    return {"ts": analysed.ts_ms, "count": len(analysed.observations), "observations": listed}


def _zone(zone: ZoneSettings) -> dict[str, Any]:
    return {
        "id": zone.id,
        "type": zone.type,
        "polygon": [list(point) for point in zone.polygon],
        "lat": zone.lat,
        "lon": zone.lon,
        "address": zone.address,
        "grid": zone.grid_code,
    }


def _row_id(cursor: str) -> int:
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
        raise listings.BadCursor(cursor)
    return int(cursor)
