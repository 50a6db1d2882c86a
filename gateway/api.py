"""The gateway's HTTP API: health, counters, dead letters, incidents and the outbox.

Operators use it to see why a message was refused or a case has not arrived yet; tests
and the demo use it to know when the gateway has caught up. Handlers are ``async`` on
purpose: they run on the gateway's event loop, never in a thread pool, so the store keeps
its single user.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, PlainTextResponse

from case_bridge import outbox
from gateway import store

if TYPE_CHECKING:
    from gateway.service import Gateway


def create_api(gw: Gateway) -> FastAPI:
    app = FastAPI(title="citygw gateway", version="1")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        connected = bool(gw.ingest and gw.ingest.connected)
        return {"status": "ok" if connected else "degraded", "mqtt_connected": connected}

    @app.get("/api/v1/stats")
    async def stats() -> dict[str, Any]:
        return collect_stats(gw)

    @app.get("/api/v1/dead-letters")
    async def dead_letters(
        reason: str | None = None, limit: int = Query(100, ge=1, le=1000)
    ) -> dict[str, Any]:
        rows = store.dead_letters(gw.conn, reason, limit)
        return {"dead_letters": rows, "count": len(rows)}

    @app.get("/api/v1/incidents")
    async def incidents(status: str | None = None) -> dict[str, Any]:
        rows = [
            {**incident, "case_id": outbox.case_for(gw.conn, incident_id)}
            for incident_id, incident in store.load_states(gw.conn, "incident")
            if status is None or incident["status"] == status
        ]
        return {"incidents": rows, "count": len(rows)}

    @app.get("/api/v1/outbox")
    async def outbox_rows(
        state: str | None = None, limit: int = Query(100, ge=1, le=1000)
    ) -> dict[str, Any]:
        rows = outbox.listing(gw.conn, state, limit)
        return {"commands": rows, "count": len(rows)}

    @app.post("/api/v1/outbox/requeue")
    async def requeue() -> dict[str, int]:
        requeued = outbox.requeue_parked(gw.conn)
        gw.dispatcher.wake()
        return {"requeued": requeued}

    @app.get("/api/v1/evidence/{name}")
    async def evidence(name: str) -> FileResponse:
        path = gw.evidence_dir / name
        if "/" in name or not name.endswith(".jpg") or not path.is_file():
            raise HTTPException(404, "no such evidence picture")
        return FileResponse(path, media_type="image/jpeg")

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:
        return render_prometheus(collect_stats(gw))

    return app


def collect_stats(gw: Gateway) -> dict[str, Any]:
    ingest = gw.ingest
    return {
        "mqtt": {
            "connected": bool(ingest and ingest.connected),
            "connects": ingest.connects if ingest else 0,
            "received": ingest.received if ingest else 0,
        },
        "readings_stored": store.count_rows(gw.conn, "readings"),
        "alerts": store.count_rows(gw.conn, "alerts"),
        "rejected": store.rejection_counts(gw.conn),
        "outbox": outbox.counts(gw.conn),
        "delivery": dict(gw.dispatcher.stats),
        "last_delivery_error": gw.dispatcher.last_error,
        "status_sync_failures": gw.status_sync.failures,
        "video": _video_stats(gw),
    }


def _video_stats(gw: Gateway) -> dict[str, Any]:
    if gw.video is None:
        return {}
    cameras = {
        s.camera_id: {"status": s.status, "last_error": s.last_error, **s.stats}
        for s in gw.video.supervisors
    }
    return {"cameras": cameras, **gw.video.stats}


def render_prometheus(stats: dict[str, Any]) -> str:
    lines = [
        f"citygw_mqtt_connected {int(stats['mqtt']['connected'])}",
        f"citygw_mqtt_received_total {stats['mqtt']['received']}",
        f"citygw_readings_stored_total {stats['readings_stored']}",
        f"citygw_alerts_total {stats['alerts']}",
    ]
    lines += [f'citygw_rejected_total{{reason="{r}"}} {n}' for r, n in stats["rejected"].items()]
    lines += [f'citygw_outbox{{state="{s}"}} {n}' for s, n in stats["outbox"].items()]
    lines += [f'citygw_delivery_total{{result="{k}"}} {n}' for k, n in stats["delivery"].items()]
    return "\n".join(lines) + "\n"
