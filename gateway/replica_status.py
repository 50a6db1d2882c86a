"""A replica's read-only HTTP for its operators: ``/healthz`` for a container's healthcheck
and ``/stats`` (leases held, partitions read, the desk, cameras) for operators and tests.

It binds to loopback unless ``cluster.status.host`` says otherwise, and answers only GETs
on these paths. Evidence links, which platforms reach, have a listener of their own
(gateway/evidence_server.py): however many readers hold it, ``/healthz`` still answers,
and opening it to platforms opens nothing of this one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.http_deadline import DeadlineH11Protocol


class StatusSettings(BaseModel):
    """Where a replica serves its status (off unless configured)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)


def status_app(
    stats: Callable[[], dict[str, Any]],
    last_tick: Callable[[], float],
    stale_s: float,
) -> FastAPI:
    """``/healthz`` is 200 while the replica's loop ticked its leases within the last
    ``stale_s`` (a lease's time: past it the replica holds nothing), 503 otherwise (a
    loop stuck, the database away). The handlers run on the replica's loop, which owns
    what ``stats`` reads."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        age = time.monotonic() - last_tick()
        fresh = age <= stale_s
        return JSONResponse({"ok": fresh, "tick_age_s": round(age, 3)}, 200 if fresh else 503)

    @app.get("/stats")
    async def read_stats() -> dict[str, Any]:
        return stats()

    return app


def status_server(settings: StatusSettings, app: FastAPI) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level="warning", log_config=None,
            lifespan="off", server_header=False, timeout_keep_alive=5, limit_concurrency=64,
            http=DeadlineH11Protocol,
        )
    )  # fmt: skip
