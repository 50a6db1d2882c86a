"""``GET /readyz``: whether the gateway is ready for traffic now, beside ``/healthz``.

``/healthz`` says the process and its event loop answer (if not, restart it). ``/readyz``
says whether the gateway does its job at this moment, for a load balancer, an orchestrator's
readiness probe or the compose healthcheck. Three checks, each for a reason:

- ``store``: the last commit was taken. Readings are acknowledged to the broker only after
  their commit, so while the store refuses (disk full, an I/O error, a read-only file) the
  gateway keeps the batches and accepts nothing new (gateway/pipeline.py).
- ``mqtt``: connected, and the broker granted the subscriptions. A connection alone is not
  enough: a message published before the SUBACK reaches no one.
- ``platform``: the case platform's circuit breaker is not open. While it is open no case
  reaches the city's platform; commands wait in the outbox (none is lost), but the work is
  not done. Half-open is ready: a probe is on its way.

The answer is 200 ``{"status": "ready", "checks": {...}}`` or 503 with ``"not_ready"``; a
failing check has a fixed ``reason``, never an exception's text, since ``/readyz`` is served
without a token. It reads only state in memory, on the loop: cheap enough for a probe a
second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from case_bridge.breaker import BreakerState

if TYPE_CHECKING:
    from gateway.service import Gateway

READYZ_PATH = "/readyz"


def readiness_router(gw: Gateway) -> APIRouter:
    """``GET /readyz`` over ``gw``'s pipeline, MQTT ingest and guarded platform."""
    router = APIRouter()

    @router.get(READYZ_PATH)
    async def readyz() -> JSONResponse:
        ingest = gw.ingest
        checks = readiness(
            store_refusing=gw.pipeline.unsaved,
            mqtt_connected=bool(ingest and ingest.connected),
            mqtt_subscribed=bool(ingest and ingest.subscribed),
            breaker=gw.platform.breaker.state,
        )
        ready = all(check["ok"] for check in checks.values())
        body = {"status": "ready" if ready else "not_ready", "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503)

    return router


def readiness(
    store_refusing: bool, mqtt_connected: bool, mqtt_subscribed: bool, breaker: BreakerState
) -> dict[str, dict[str, Any]]:
    """Each check's verdict, with the reason of a failing one."""
    mqtt_reason = "not connected" if not mqtt_connected else "subscriptions not granted"
    return {
        "store": _check(not store_refusing, "commits refused; batches kept for retry"),
        "mqtt": _check(mqtt_connected and mqtt_subscribed, mqtt_reason),
        "platform": _check(breaker is not BreakerState.OPEN, "circuit breaker open"),
    }


def _check(ok: bool, reason: str) -> dict[str, Any]:
    return {"ok": True} if ok else {"ok": False, "reason": reason}
