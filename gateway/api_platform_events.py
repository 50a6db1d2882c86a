"""``POST /platform/events``: case status pushed by the platform (webhooks), beside polling.

Status sync polls, so a closed case re-arms its devices only at the next pass; a platform
that posts each change lets it happen at once. Polling stays: a webhook that never
arrives, or one refused here, is caught by the next pass.

The route takes no bearer token (a platform must not hold the token that reads every
route); each request proves itself with an HMAC-SHA256 signature, keyed by the secret in
``case_platform.webhook``, over ``"<X-Citygw-Timestamp>." + body`` in
``X-Citygw-Signature: sha256=<hex>`` (the bundled platform's format,
``simulators/platform/webhooks.py``). Without that setting the route is not mounted at all.

Checked in this order, cheapest and least trusting first, each refusal counted by reason
and none a 5xx: a body over ``max_body_bytes`` (413, not read past the limit); a missing
or malformed timestamp or signature header (401 ``unsigned``); a signature that does not
match (401 ``bad_signature``); a timestamp more than ``tolerance_s`` from now (401
``stale``: a recorded request played again later); then, only for a signed body, JSON
that does not parse (422 ``malformed_json``), fields missing or out of bounds (422
``bad_fields``), and an ``event_id`` already taken (409 ``replayed``: a recorded request
played again within the window, or the platform's retry of an event it did not see
acknowledged, which the 409 ends). An event the gateway's handler fails on is answered
503 and not remembered, so the platform's retry is taken.

Handlers are ``async`` and run on the gateway's loop, so the status handler, which writes
the store, keeps it single-user.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from case_bridge.platform_settings import WebhookSettings

log = logging.getLogger(__name__)

EVENTS_PATH = "/platform/events"
TIMESTAMP_HEADER = "x-citygw-timestamp"
SIGNATURE_HEADER = "x-citygw-signature"
REASONS = (
    "too_large",
    "unsigned",
    "bad_signature",
    "stale",
    "malformed_json",
    "bad_fields",
    "replayed",
)
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # up to year 33658: no int() of a long string
_SIGNATURE = re.compile(r"sha256=([0-9a-f]{64})")

CaseStatusHandler = Callable[[str, str, str], None]
"""``on_case_status(case_id, status, updated_at)``, called on the loop for each event."""


def _printable(text: str) -> str:
    if not text.isprintable():
        raise ValueError("must not hold control characters")
    return text


def _zoned_time(text: str) -> str:
    """The text as sent (a cursor compares it as text), once it reads as a zoned time."""
    with contextlib.suppress(ValueError):
        if datetime.fromisoformat(text).tzinfo is not None:
            return text
    raise ValueError("must be an ISO 8601 time with its zone")


class CaseStatusEvent(BaseModel):
    """One event's body; unknown fields are ignored, so a platform may add its own."""

    model_config = ConfigDict(strict=True, extra="ignore")
    case_id: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_printable)]
    status: Annotated[str, Field(min_length=1, max_length=32), AfterValidator(_printable)]
    updated_at: Annotated[str, Field(min_length=10, max_length=40), AfterValidator(_zoned_time)]
    event_id: str = Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")


class Refused(Exception):
    def __init__(self, reason: str, status: int, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.status = status


class PlatformEvents:
    """Checks signed status events and hands the good ones to ``on_case_status``.

    ``stats()``: ``accepted``, ``refused`` by reason (every reason, zeros included) and
    ``handler_errors``. The ids of accepted events are kept for twice the tolerance (an
    event signed at the window's far edge) and at most ``remembered_events`` of them; a
    flood past that forgets the oldest early.
    """

    def __init__(
        self,
        settings: WebhookSettings,
        on_case_status: CaseStatusHandler,
        now_s: Callable[[], float] = time.time,
    ) -> None:
        self._secret = settings.secret.get_secret_value().encode()
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

    def refuse(self, reason: str, status: int, detail: str) -> JSONResponse:
        self.refused[reason] += 1
        return JSONResponse({"detail": detail, "reason": reason}, status_code=status)

    def receive(self, headers: Mapping[str, str], body: bytes) -> JSONResponse:
        """The answer to one request whose body (at most ``max_body_bytes``) is ``body``."""
        try:
            event = self._checked(headers, body)
        except Refused as refusal:
            return self.refuse(refusal.reason, refusal.status, str(refusal))
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
        return JSONResponse({"accepted": event.event_id})

    def _checked(self, headers: Mapping[str, str], body: bytes) -> CaseStatusEvent:
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        signed = _SIGNATURE.fullmatch(headers.get(SIGNATURE_HEADER, ""))
        if not (_TIMESTAMP.fullmatch(timestamp) and signed):
            raise Refused(
                "unsigned",
                401,
                "X-Citygw-Timestamp (unix seconds) and X-Citygw-Signature (sha256=<hex>)"
                " are required",
            )
        message = timestamp.encode() + b"." + body
        expected = hmac.new(self._secret, message, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signed.group(1), expected):
            raise Refused("bad_signature", 401, "the signature does not match")
        tolerance_s = self._settings.tolerance_s
        if abs(self._now_s() - int(timestamp)) > tolerance_s:
            raise Refused("stale", 401, f"signed more than {tolerance_s} s from now")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
            raise Refused("malformed_json", 422, "the body is not JSON") from None
        try:
            event = CaseStatusEvent.model_validate(payload)
        except ValidationError as exc:
            raise Refused("bad_fields", 422, _fields(exc)) from None
        if event.event_id in self._seen:
            raise Refused("replayed", 409, f"event {event.event_id} was already received")
        return event

    def _remember(self, event_id: str) -> None:
        now = self._now_s()
        horizon = now - 2 * self._settings.tolerance_s
        seen = self._seen
        while seen and (len(seen) >= self._settings.remembered_events or _first(seen) < horizon):
            seen.popitem(last=False)
        seen[event_id] = now


def _first(seen: OrderedDict[str, float]) -> float:
    return next(iter(seen.values()))


def _fields(exc: ValidationError) -> str:
    """Which fields are wrong and why, without the values (they came from outside)."""
    errors = exc.errors(include_url=False, include_input=False)
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['msg']}" for e in errors[:5]
    )


def platform_events_router(events: PlatformEvents) -> APIRouter:
    router = APIRouter()

    @router.post(EVENTS_PATH)
    async def platform_event(request: Request) -> JSONResponse:
        limit = events.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
            return events.refuse("too_large", 413, f"body larger than {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return events.refuse("too_large", 413, f"body larger than {limit} bytes")
        return events.receive(request.headers, bytes(body))

    return router
