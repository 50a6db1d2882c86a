"""The operations console: its static pages at ``/console/`` and the reads they need.

``console_router(gw)`` gives the routes; the gateway's app includes it. The pages
(gateway/console/: plain ES modules, CSS and SVG, no build step, nothing fetched from
outside) are served from memory, read once from the package folder: only files that are
there are answered, so no path can reach elsewhere, and each answer carries a strict
Content-Security-Policy (scripts, styles and connections to this origin only).
``/console/`` is public in the API guard; everything under ``/api/v1`` is not, and the
pages call it with the session cookie.

Reads (all ``GET``, bounded, paged where a list can grow; gateway/console_reads.py):

- ``/api/v1/console/map`` — unit grids (their polygons from ``cases.grids_file``, read and
  drawn once, in a worker thread, at the first map asked for; picked for each map in a
  worker thread too), devices by state, cameras and zones, open incidents;
- ``/api/v1/console/devices?kind=&grid=&state=&q=&limit=&cursor=`` — state, health, latest
  reading and open incidents per device, in id order;
- ``/api/v1/console/devices/{id}`` — one device, its latest alerts and their incidents;
- ``/api/v1/console/alerts?device=&incident=&held=&limit=&cursor=`` — newest first, each
  with the silence, inhibition or confirmation that held it;
- ``/api/v1/console/alerts/stream`` — the same rows live, as Server-Sent Events
  (gateway/console_stream.py; ``Last-Event-ID`` resumes);
- ``/api/v1/console/incidents/{id}`` — an incident's timeline and evidence pictures;
- ``/api/v1/console/cameras`` and ``/api/v1/console/cameras/{id}/frame.jpg`` — stream
  status, frame rate, the last analysed frame's observations, and that frame with its zones
  and the boxes in them drawn as a case's evidence draws them (404 before the first frame).

The admins' config page reads ``/api/v1/config`` (gateway/api_config.py), included here
with the console's other reads.
"""

from __future__ import annotations

import asyncio
from pathlib import Path as FilePath
from typing import TYPE_CHECKING, Annotated, Any

import cv2
from fastapi import APIRouter, Header, HTTPException, Path, Query
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from gateway import console_reads, listings
from gateway.api_config import config_router
from gateway.console_reads import AlertFilter, DeviceFilter, DeviceState, Held
from gateway.console_stream import AlertHub, Rows, TooManyStreams
from gateway.grid_outlines import OutlinesOnce

if TYPE_CHECKING:
    from gateway.service import Gateway

CONSOLE_DIR = FilePath(__file__).with_name("console")
CONSOLE_PREFIX = "/console/"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
MAX_FILES = 200
MAX_FILE_BYTES = 1_000_000
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:;"
        " connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated each time: an upgrade shows at once
}
MAX_DEVICE_PAGE = 500
MAX_MAP_DEVICES = 5000
MAX_MAP_INCIDENTS = 1000
MAX_ALERT_PAGE = 500
DEVICE_ALERTS = 50
Text = Annotated[str | None, Query(max_length=200)]
Cursor = Annotated[str | None, Query(max_length=200)]


MAX_ROW_ID = 2**63 - 1  # SQLite's largest integer


def console_router(gw: Gateway, hub: AlertHub | None = None) -> APIRouter:
    """The console's pages and reads for ``gw``; ``hub`` (tests set its bounds) carries
    the live alert stream."""
    router = APIRouter()
    files = console_files(CONSOLE_DIR)
    hub = hub or alert_hub(gw)
    router.include_router(config_router(gw.config, lambda: _thresholds_version(gw)))

    @router.get("/console", include_in_schema=False)
    async def console_root() -> Response:
        return RedirectResponse(CONSOLE_PREFIX, status_code=308)

    @router.get(CONSOLE_PREFIX + "{name:path}", include_in_schema=False)
    async def console_file(name: str) -> Response:
        found = files.get(name or "index.html")
        if found is None:
            raise HTTPException(404, "no such console file")
        body, media_type = found
        return Response(body, media_type=media_type, headers=SECURITY_HEADERS)

    outlines = OutlinesOnce(gw.config.cases.grids_file)

    @router.get("/api/v1/console/map")
    async def map_layers(
        max_devices: int = Query(MAX_MAP_DEVICES, ge=1, le=MAX_MAP_DEVICES),
    ) -> Response:
        # The gateway's state is read on its loop (its store connection and memory are the
        # loop's); the grids, geometry only, and the encoding in a worker thread.
        layers = console_reads.map_layers(gw, max_devices, MAX_MAP_INCIDENTS)
        body = await asyncio.to_thread(console_reads.map_answer, layers, await outlines.get())
        return Response(body, media_type="application/json")

    @router.get("/api/v1/console/devices")
    async def devices(
        kind: Text = None,
        grid: Text = None,
        state: DeviceState | None = None,
        q: Text = None,
        limit: int = Query(100, ge=1, le=MAX_DEVICE_PAGE),
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        chosen = DeviceFilter(kind, grid, state, q or None)
        page = console_reads.device_page(gw, chosen, limit, cursor)
        return {"devices": page.rows, "count": len(page.rows), "next_cursor": page.next_cursor}

    @router.get("/api/v1/console/devices/{device_id}")
    async def device(device_id: str) -> dict[str, Any]:
        if device_id not in gw.registry:
            raise HTTPException(404, "no such device in the registry")
        shown = console_reads.device_summary(gw, device_id)
        alerts = _alerts(gw, AlertFilter(device=device_id), DEVICE_ALERTS, None)
        named = {a["incident_id"] for a in alerts["alerts"] if a["incident_id"]}
        named.update(shown["open_incidents"])
        incidents = [console_reads.incident_summary(gw.conn, i) for i in sorted(named)]
        return {
            "device": shown,
            "alerts": alerts,
            "incidents": [i for i in incidents if i is not None],
        }

    @router.get("/api/v1/console/alerts")
    async def alerts(
        device: Text = None,
        incident: Text = None,
        held: Held = "any",
        limit: int = Query(100, ge=1, le=MAX_ALERT_PAGE),
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        return _alerts(gw, AlertFilter(device, incident, held), limit, cursor)

    @router.get("/api/v1/console/alerts/stream")
    async def alert_stream(
        last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    ) -> StreamingResponse:
        last_id = None
        if last_event_id:
            # An alert row id: digits within SQLite's integer range (a larger one would
            # fail in the store, not here).
            if (
                not (last_event_id.isascii() and last_event_id.isdigit())
                or int(last_event_id) > MAX_ROW_ID
            ):
                raise HTTPException(400, "Last-Event-ID: an alert id this stream sent")
            last_id = int(last_event_id)
        try:
            sub = hub.subscribe(last_id)
        except TooManyStreams as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(hub.events(sub), media_type="text/event-stream", headers=headers)

    @router.get("/api/v1/console/incidents/{incident_id}")
    async def incident(incident_id: Annotated[str, Path(max_length=200)]) -> dict[str, Any]:
        timeline = console_reads.incident_timeline(gw, incident_id)
        if timeline is None:
            raise HTTPException(404, "no such incident")
        return timeline

    @router.get("/api/v1/console/cameras")
    async def cameras() -> dict[str, Any]:
        shown = console_reads.camera_figures(gw)
        rows = console_reads.camera_places(gw, shown)
        for row in rows:
            figures = shown.get(row["id"], {})
            row["figures"] = figures
            row["fps"] = figures.get("fps")  # the runtime's rates: there at the first ask
            row["analysed_fps"] = figures.get("analysed_fps")
            row["last_error"] = figures.get("last_error", "")
            row["analysed"] = console_reads.last_analysed(gw, row["id"])
            row["frame_url"] = f"/api/v1/console/cameras/{row['id']}/frame.jpg"
        return {"cameras": rows, "count": len(rows)}

    @router.get("/api/v1/console/cameras/{camera_id}/frame.jpg")
    async def camera_frame(camera_id: str) -> Response:
        picture = await asyncio.to_thread(last_frame, gw, camera_id)
        if picture is None:
            raise HTTPException(404, "no analysed frame of this camera")
        return Response(picture, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    return router


def _thresholds_version(gw: Gateway) -> int | None:
    versions = gw.threshold_versions
    return versions.current().version if versions is not None else None


def _alerts(gw: Gateway, chosen: AlertFilter, limit: int, cursor: str | None) -> dict[str, Any]:
    try:
        page = console_reads.alert_page(gw, chosen, limit, cursor)
    except listings.BadCursor:
        raise HTTPException(400, "cursor: not one this API handed out") from None
    return {
        "alerts": page.rows,
        "count": len(page.rows),
        "next_cursor": page.next_cursor,
        "scanned_to": page.scanned_to,
    }


def alert_hub(gw: Gateway, **bounds: Any) -> AlertHub:
    """The stream's hub reading ``gw``'s alerts table (``bounds``: AlertHub's limits)."""

    def read_rows(after: int, up_to: int | None, limit: int, newest_first: bool) -> Rows:
        query = "SELECT id, alert_key, state, ts, incident_id, body, held_by FROM alerts"
        query += " WHERE id > ? AND (? IS NULL OR id <= ?)"
        query += f" ORDER BY id {'DESC' if newest_first else 'ASC'} LIMIT ?"
        rows = gw.conn.execute(query, (after, up_to, up_to, limit)).fetchall()
        return console_reads.alert_rows(gw, rows)

    def newest_id() -> int:
        return gw.conn.execute("SELECT coalesce(max(id), 0) FROM alerts").fetchone()[0]

    return AlertHub(read_rows, newest_id, **bounds)


def console_files(folder: FilePath) -> dict[str, tuple[bytes, str]]:
    """Relative name → (bytes, media type) of the console's files, read once."""
    found: dict[str, tuple[bytes, str]] = {}
    for path in sorted(folder.rglob("*")):
        media_type = MEDIA_TYPES.get(path.suffix)
        if not path.is_file() or media_type is None:
            continue
        if len(found) == MAX_FILES:
            raise ValueError(f"{folder}: more than {MAX_FILES} console files")
        body = path.read_bytes()
        if len(body) > MAX_FILE_BYTES:
            raise ValueError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        found[path.relative_to(folder).as_posix()] = (body, media_type)
    return found


def last_frame(gw: Gateway, camera_id: str) -> bytes | None:
    """The camera's last analysed frame with every zone and the observations in it drawn,
    as JPEG; None before the first frame. In a worker thread: the step's lock is held only
    to take the frame and its observations, never while drawing or encoding."""
    if gw.video is None or camera_id not in gw.video.steps:
        return None
    step = gw.video.steps[camera_id]
    latest = step.latest()
    if latest is None:
        return None
    drawn, analysed = latest
    observations = list(analysed.observations)
    for zone in step.analyser.zones:
        drawn = step.analyser.draw_evidence(drawn, observations, zone.id)
    ok, encoded = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return encoded.tobytes() if ok else None
