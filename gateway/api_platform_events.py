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

Handlers are ``async`` and run on the gateway's loop, so the status handler, which writes
the store, keeps it single-user.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from case_bridge.platform_settings import WebhookSettings
from case_bridge.webhook_auth import WebhookRefusal
from case_bridge.webhook_format import StatusEvent, WebhookFormat

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
    ``remembered_events`` of them; a flood past that forgets the oldest early.
    """

    def __init__(
        self,
        settings: WebhookSettings,
        on_case_status: CaseStatusHandler,
        now_s: Callable[[], float] = time.time,
    ) -> None:
        self._format = WebhookFormat(settings)
        self._settings = settings
        self._on_case_status = on_case_status
        self._now_s = now_s
        self._seen: OrderedDict[str, float] = OrderedDict()
        self.accepted = 0
        self.handler_errors = 0
        self.refused: Counter[str] = Counter(dict.fromkeys(REASONS, 0))

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
            return JSONResponse(
                {"detail": "the gateway could not take this event now; retry"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        self._remember(event.event_id)
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

    def _remember(self, event_id: str) -> None:
        now = self._now_s()
        # Without a signed time a replay can come at any age: only the count bounds it.
        horizon = now - 2 * self._settings.tolerance_s if self._format.auth.signs_time else None
        seen = self._seen
        while seen and (
            len(seen) >= self._settings.remembered_events
            or (horizon is not None and _first(seen) < horizon)
        ):
            seen.popitem(last=False)
        seen[event_id] = now


def _first(seen: OrderedDict[str, float]) -> float:
    return next(iter(seen.values()))


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
