"""``POST /platform/events``: case status pushed by the platform (webhooks), beside polling.

Status sync polls, so a closed case re-arms its devices only at the next pass; a platform
that posts each change lets it happen at once. Polling stays: a webhook that never
arrives, or one refused here, is caught by the next pass.

The route takes no bearer token (a platform must not hold the token that reads every
route); each request proves itself by the platform's signature or shared token, checked
with the secret in ``case_platform.webhook``, in the format it names
(``case_bridge/webhook_format.py``): ``citygw``, the gateway's own (an HMAC-SHA256 over
``"<X-Citygw-Timestamp>." + body`` in ``X-Citygw-Signature: sha256=<hex>``, as the bundled
platform sends, ``simulators/platform/webhooks.py``), or ``mapped``, a platform's own body
and signature described in config (``deploy/platforms/egova-webhook.yaml``). Without that
setting the route is not mounted at all.

Checked in this order, cheapest and least trusting first, each refusal counted by reason
and none a 5xx: a body over ``max_body_bytes`` (413, not read past the limit); missing or
malformed credentials (401 ``unsigned``); a signature or token that does not match (401
``bad_signature``); a signed timestamp more than ``tolerance_s`` from now (401 ``stale``: a
recorded request played again later; a scheme that signs no time cannot tell); then, only
for an authenticated body, JSON that does not parse (422 ``malformed_json``), fields
missing or out of bounds (422 ``bad_fields``), a status code the mapping's table lacks
(422 ``unknown_status``), and an event id already taken (409 ``replayed``: a recorded
request played again, or the platform's retry of an event it did not see acknowledged,
which the 409 ends). An event the gateway's handler fails on is answered 503 and not
remembered, so the platform's retry is taken.

Accepted event ids are kept in the store (``webhook_events``), not only in memory: a
restart inside the tolerance must not open the window for a recorded request again. They are
read back when the route is made and written as each event is accepted; the route bounds
them itself, by count and age, deleting what it forgets. A store that refuses to keep an
id answers 503: the event was handled, and its retry is handled again (the status writes
are idempotent) and then remembered.

Handlers are ``async`` and run on the gateway's loop, so the status handler, which writes
the store, keeps it single-user.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from case_bridge.platform_settings import WebhookSettings
from case_bridge.webhook_auth import WebhookRefusal
from case_bridge.webhook_format import StatusEvent, WebhookFormat
from gateway.store import DatabaseError, in_transaction

log = logging.getLogger(__name__)

EVENTS_PATH = "/platform/events"
# Each refusal's reason and its HTTP status, in the order the checks run.
REFUSAL_STATUS = {
    "too_large": 413,
    "unsigned": 401,
    "bad_signature": 401,
    "stale": 401,
    "malformed_json": 422,
    "bad_fields": 422,
    "unknown_status": 422,
    "replayed": 409,
}
REASONS = tuple(REFUSAL_STATUS)

CaseStatusHandler = Callable[[str, str, str], None]
"""``on_case_status(case_id, status, updated_at)``, called on the loop for each event."""


class PlatformEvents:
    """Checks status events in the configured format and hands the good ones to
    ``on_case_status``.

    ``stats()``: ``accepted``, ``refused`` by reason (every reason, zeros included) and
    ``handler_errors``. The ids of accepted events are kept for twice the tolerance (an
    event signed at the window's far edge) when the scheme signs a time, and at most
    ``remembered_events`` of them; a flood past that forgets the oldest early. ``conn``:
    the store they are kept in across restarts (read back here); None keeps them in memory
    only (a route served without a store).
    """

    def __init__(
        self,
        settings: WebhookSettings,
        on_case_status: CaseStatusHandler,
        now_s: Callable[[], float] = time.time,
        conn: sqlite3.Connection | None = None,
    ) -> None:
        self._format = WebhookFormat(settings)
        self._settings = settings
        self._on_case_status = on_case_status
        self._now_s = now_s
        self._conn = conn
        self._seen: OrderedDict[str, float] = OrderedDict()
        self.accepted = 0
        self.handler_errors = 0
        self.refused: Counter[str] = Counter(dict.fromkeys(REASONS, 0))
        if conn is not None:
            self._recall(conn)

    @property
    def max_body_bytes(self) -> int:
        return self._settings.max_body_bytes

    def stats(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "refused": dict(self.refused),
            "handler_errors": self.handler_errors,
        }

    def refuse(self, reason: str, detail: str) -> JSONResponse:
        self.refused[reason] += 1
        return JSONResponse(
            {"detail": detail, "reason": reason}, status_code=REFUSAL_STATUS[reason]
        )

    def receive(self, headers: Mapping[str, str], body: bytes) -> JSONResponse:
        """The answer to one request whose body (at most ``max_body_bytes``) is ``body``."""
        try:
            event = self._checked(headers, body)
        except WebhookRefusal as refusal:
            return self.refuse(refusal.reason, str(refusal))
        try:
            self._on_case_status(event.case_id, event.status, event.updated_at)
        except Exception:  # the handler's failure is ours: the platform may try again
            self.handler_errors += 1
            log.exception("platform event for case %s: the handler failed", event.case_id)
            return _retry_later()
        try:
            self._remember(event.event_id)
        except DatabaseError as exc:
            self.handler_errors += 1
            log.error("platform event %s: the store refused its id: %s", event.event_id, exc)
            return _retry_later()
        self.accepted += 1
        return JSONResponse(self._format.reply(event))

    def _checked(self, headers: Mapping[str, str], body: bytes) -> StatusEvent:
        signed_at_s = self._format.auth.signed_at_s(headers, body)
        tolerance_s = self._settings.tolerance_s
        if signed_at_s is not None and abs(self._now_s() - signed_at_s) > tolerance_s:
            raise WebhookRefusal("stale", f"signed more than {tolerance_s} s from now")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
            raise WebhookRefusal("malformed_json", "the body is not JSON") from None
        event = self._format.read(payload)
        if event.event_id in self._seen:
            raise WebhookRefusal("replayed", f"event {event.event_id} was already received")
        return event

    def _horizon_s(self, now_s: float) -> float | None:
        """Ids seen before this are forgotten. Without a signed time a replay can come at
        any age: only the count bounds them."""
        return now_s - 2 * self._settings.tolerance_s if self._format.auth.signs_time else None

    def _recall(self, conn: sqlite3.Connection) -> None:
        """The ids the store kept that are still remembered, oldest first; older ones are
        deleted (past the horizon, or past the count if ``remembered_events`` shrank)."""
        horizon = self._horizon_s(self._now_s())
        since_ms = -(2**63) if horizon is None else _ms(horizon)
        limit = self._settings.remembered_events
        rows = conn.execute(
            "SELECT event_id, seen_ms FROM webhook_events WHERE seen_ms >= ?"
            " ORDER BY seen_ms DESC, event_id DESC LIMIT ?",
            (since_ms, limit),
        ).fetchall()
        for event_id, seen_ms in reversed(rows):
            self._seen[event_id] = seen_ms / 1000
        before_ms = rows[-1][1] if len(rows) == limit else since_ms
        in_transaction(
            conn,
            lambda: conn.execute("DELETE FROM webhook_events WHERE seen_ms < ?", (before_ms,)),
        )

    def _remember(self, event_id: str) -> None:
        """Keep ``event_id``, forgetting the oldest past the count or the horizon; in the
        store first, so that memory never holds what the store refused."""
        now = self._now_s()
        horizon = self._horizon_s(now)
        excess = len(self._seen) + 1 - self._settings.remembered_events
        forgotten: list[str] = []
        for seen_id, seen_s in self._seen.items():  # oldest first
            if len(forgotten) >= excess and (horizon is None or seen_s >= horizon):
                break
            forgotten.append(seen_id)
        if self._conn is not None:
            conn = self._conn
            in_transaction(conn, lambda: _keep(conn, event_id, _ms(now), forgotten))
        for seen_id in forgotten:
            del self._seen[seen_id]
        self._seen[event_id] = now


def _keep(conn: sqlite3.Connection, event_id: str, seen_ms: int, forgotten: list[str]) -> None:
    conn.execute(
        "INSERT INTO webhook_events (event_id, seen_ms) VALUES (?, ?)"
        " ON CONFLICT (event_id) DO UPDATE SET seen_ms = excluded.seen_ms",
        (event_id, seen_ms),
    )
    conn.executemany("DELETE FROM webhook_events WHERE event_id = ?", [(i,) for i in forgotten])


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _retry_later() -> JSONResponse:
    return JSONResponse(
        {"detail": "the gateway could not take this event now; retry"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


def platform_events_router(events: PlatformEvents) -> APIRouter:
    router = APIRouter()

    @router.post(EVENTS_PATH)
    async def platform_event(request: Request) -> JSONResponse:
        limit = events.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
            return events.refuse("too_large", f"body larger than {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return events.refuse("too_large", f"body larger than {limit} bytes")
        return events.receive(request.headers, bytes(body))

    return router
