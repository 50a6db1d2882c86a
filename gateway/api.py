"""The gateway's HTTP API: health, counters, dead letters, incidents and the outbox.

Operators use it to see why a message was refused or a case has not arrived yet; tests
and the demo use it to know when the gateway has caught up. Handlers are ``async`` on
purpose: they run on the gateway's event loop, never in a thread pool, so the store keeps
its single user.

Closed by default (gateway/api_guard.py): every route but ``/healthz`` needs a principal
(the machine bearer token, a client token or a signed-in session) whose role allows it,
requests are bounded in size, every list is paged (gateway/listings.py), and the docs are
off. Evidence pictures are served by name from their own folder only; signed links to them
(gateway/api_evidence.py) need no token, nor do the platform's status webhooks, which are
signed too (gateway/api_platform_events.py, mounted only when ``case_platform.webhook`` is
configured), nor the console's static files under ``/console/``. Every write goes to the
audit log (gateway/audit.py), listed at ``/api/v1/audit``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from case_bridge import outbox
from gateway import listings
from gateway.api_audit import audit_router
from gateway.api_backtests import backtests_router
from gateway.api_console import CONSOLE_PREFIX, console_router
from gateway.api_duplicates import duplicates_router
from gateway.api_errors import install_validation_errors
from gateway.api_evidence import evidence_router
from gateway.api_guard import ApiGuard
from gateway.api_health import READYZ_PATH, readiness_router
from gateway.api_outbox import outbox_router
from gateway.api_params import instant_ms
from gateway.api_platform_events import EVENTS_PATH, PlatformEvents, platform_events_router
from gateway.api_session import session_router
from gateway.api_silences import silences_router
from gateway.api_thresholds import thresholds_router
from gateway.api_users import tokens_router, users_router
from gateway.audit import MAX_REASON_CHARS, AuditTrail
from gateway.backtest import backtest_from_config
from gateway.client_tokens import ClientTokens
from gateway.evidence import media_type, read_evidence
from gateway.evidence_links import SIGNED_PREFIX
from gateway.sessions import Sessions
from gateway.sign_in_limits import SignInLimits
from gateway.store import in_transaction
from gateway.users import PasswordWork, Users

if TYPE_CHECKING:
    from gateway.service import Gateway


log = logging.getLogger(__name__)
T = TypeVar("T")

DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")


def create_api(gw: Gateway, platform_events: PlatformEvents | None = None) -> FastAPI:
    """The API of ``gw``; with ``platform_events`` (built when ``case_platform.webhook`` is
    configured) also ``POST /platform/events``, which takes signed status webhooks instead
    of the bearer token."""
    settings = gw.config.api
    token = settings.token()
    if token is None:
        log.warning(
            "API: no token in api.token_file or $%s: only /healthz%s is served",
            settings.token_env,
            " and /metrics" if settings.metrics_public else "",
        )
    if not _is_loopback(settings.host):
        log.warning(
            "API: listening on %s, not loopback: anyone who reaches port %d can try tokens;"
            " keep it behind a firewall or a TLS proxy",
            settings.host,
            settings.port,
        )
    docs = settings.docs
    app = FastAPI(
        title="citygw gateway",
        version="1",
        docs_url=DOCS_PATHS[0] if docs else None,
        redoc_url=DOCS_PATHS[2] if docs else None,
        openapi_url=DOCS_PATHS[3] if docs else None,
    )
    public = {
        "/healthz",
        READYZ_PATH,  # fixed reasons only, for probes (gateway/api_health.py)
        CONSOLE_PREFIX.rstrip("/"),
        *(["/metrics"] if settings.metrics_public else []),
        *(DOCS_PATHS if docs else []),
        *([EVENTS_PATH] if platform_events is not None else []),
    }
    users, tokens = Users(gw.conn), ClientTokens(gw.conn)
    sessions = Sessions(gw.conn, settings.session_lifetime_s)
    audit, passwords, sign_ins = AuditTrail(gw.conn), PasswordWork(), SignInLimits()
    # For the metrics: sign-ins by outcome, and the guard's refusals by reason.
    app.state.sign_ins, app.state.api_refused = sign_ins, Counter()
    app.add_middleware(
        ApiGuard,
        token=token,
        public_paths=public,
        public_prefixes=(SIGNED_PREFIX, CONSOLE_PREFIX),
        max_url_bytes=settings.max_url_bytes,
        max_body_bytes=settings.max_body_bytes,
        tokens=tokens,
        sessions=sessions,
        refused=app.state.api_refused,
    )

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        connected = bool(gw.ingest and gw.ingest.connected)
        return {"status": "ok" if connected else "degraded", "mqtt_connected": connected}

    @app.get("/api/v1/stats")
    async def stats() -> dict[str, Any]:
        return gw.stats()

    @app.get("/api/v1/dead-letters")
    async def dead_letters(
        reason: str | None = None,
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Newest first."""
        page = _paged(listings.dead_letters, gw.conn, reason, limit, cursor)
        return {"dead_letters": page.rows, "count": len(page.rows), "next_cursor": page.next_cursor}

    @app.get("/api/v1/incidents")
    async def incidents(
        status: str | None = None,
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """In incident id order, with the case each one was filed as."""
        page = _paged(listings.incidents, gw.conn, status, limit, cursor)
        return {"incidents": page.rows, "count": len(page.rows), "next_cursor": page.next_cursor}

    @app.get("/api/v1/outbox")
    async def outbox_rows(
        state: str | None = None,
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Newest first."""
        page = _paged(listings.outbox_commands, gw.conn, state, limit, cursor)
        return {"commands": page.rows, "count": len(page.rows), "next_cursor": page.next_cursor}

    @app.post("/api/v1/outbox/requeue")
    async def requeue(
        request: Request, reason: str = Query("", max_length=MAX_REASON_CHARS)
    ) -> dict[str, int]:
        """Parked commands back to pending; ``reason`` goes to the audit log, in the same
        transaction."""

        def requeue_audited() -> int:
            requeued = outbox.requeue_parked(gw.conn)
            audit.entry(request, "outbox.requeue", "outbox", None, {"requeued": requeued}, reason)
            return requeued

        requeued = in_transaction(gw.conn, requeue_audited)
        gw.dispatcher.wake()
        return {"requeued": requeued}

    @app.get("/api/v1/devices/{device_id}/readings")
    async def device_readings(
        device_id: str,
        since: str | None = None,
        until: str | None = None,
        limit: int = Query(1000, ge=1, le=10_000),
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One device's telemetry in ``[since, until]`` (default: the last 24 h), oldest
        first. ``readings`` are the raw samples still kept; ``downsampled`` are the buckets
        that readings older than raw retention were folded into. A sample is in exactly one
        of the two. Each list holds at most ``limit``; ``truncated`` says that one of them
        goes on, on the page that ``next_cursor`` (passed as ``cursor``, with the same
        ``since`` and ``until``) asks for."""
        if device_id not in gw.registry:
            raise HTTPException(404, f"device {device_id} is not in the registry")
        until_ms = instant_ms("until", until, default=int(time.time() * 1000))
        since_ms = instant_ms("since", since, default=until_ms - 86_400_000)
        if since_ms > until_ms:
            raise HTTPException(400, f"since ({since_ms}) is after until ({until_ms})")
        page = _paged(listings.telemetry, gw.conn, device_id, since_ms, until_ms, limit, cursor)
        return {
            "device_id": device_id,
            "since": since_ms,
            "until": until_ms,
            "readings": page.readings,
            "downsampled": page.downsampled,
            "truncated": page.next_cursor is not None,
            "next_cursor": page.next_cursor,
        }

    @app.get("/api/v1/evidence/{name}")
    async def evidence(name: str) -> Response:
        picture = await asyncio.to_thread(read_evidence, gw.evidence_dir, name)
        if picture is None:
            raise HTTPException(404, "no such evidence file")
        return Response(picture, media_type=media_type(name))

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(gw.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    install_validation_errors(app)
    app.include_router(readiness_router(gw))
    assert gw.threshold_versions is not None  # a cluster's desk serves no API
    app.include_router(thresholds_router(gw.threshold_versions, gw.apply_settings, audit))
    app.include_router(silences_router(gw.silences, audit=audit))
    app.include_router(duplicates_router(gw.conn, gw.merge_duplicate, audit))
    app.include_router(outbox_router(gw.conn, audit, gw.dispatcher.wake))
    app.include_router(backtests_router(backtest_from_config(gw.config), audit))
    app.include_router(evidence_router(gw.evidence_dir, gw.evidence.links))
    app.include_router(
        session_router(users, sessions, sign_ins, passwords, audit, settings.cookie_secure)
    )
    app.include_router(users_router(users, sessions, passwords, audit))
    app.include_router(tokens_router(tokens, audit))
    app.include_router(audit_router(audit))
    app.include_router(console_router(gw))  # pages public, their reads under /api/v1
    if platform_events is not None:
        app.include_router(platform_events_router(platform_events))
    return app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _paged(query: Callable[..., T], *args: Any) -> T:
    try:
        return query(*args)
    except listings.BadCursor:
        raise HTTPException(400, "cursor: not one this API handed out") from None
