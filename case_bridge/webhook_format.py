"""A status webhook's body read as a case's status change, in the format the settings name.

``citygw``: the gateway's own fields, checked strictly (``CaseStatusEvent``); the status
is the platform's word as sent and ``updated_at`` a zoned ISO 8601 time kept as sent.
``mapped``: a platform's own shape (``webhook_settings.MappedWebhook``): each field found
at its dotted path, the status code translated through the mapping's table, the change
time normalised to zoned ISO 8601 (so the kept statuses of a case order by it, as the
gateway's own format's do), and an event without an id of its own known by its case,
status and time. Values come from outside: each is bounded, and a refusal names the field
and why, never the value, except a status code the table lacks (bounded, and what the
operator must add).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from case_bridge.mapped_rest import lookup
from case_bridge.mapped_rest_nearby import item_time_ms
from case_bridge.platform import MAX_FIELD_CHARS, parse_zoned, usable_case_id
from case_bridge.webhook_auth import CITYGW_SIGNATURE, WebhookAuth, WebhookRefusal
from case_bridge.webhook_settings import MappedWebhook, WebhookSettings

EVENT_ID = r"[A-Za-z0-9._:-]{1,64}"
_EVENT_ID = re.compile(EVENT_ID)
LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the last time datetime holds


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """What the gateway takes from an event: our status name, a zoned ISO 8601 time."""

    case_id: str
    status: str
    updated_at: str
    event_id: str


def _printable(text: str) -> str:
    if not text.isprintable():
        raise ValueError("must not hold control characters")
    return text


def _zoned_time(text: str) -> str:
    """The text as sent (a cursor compares it as text), once it reads as a zoned time."""
    try:
        parse_zoned(text)
    except ValueError:
        raise ValueError("must be an ISO 8601 time with its zone") from None
    return text


class CaseStatusEvent(BaseModel):
    """One event's body in the gateway's own format; unknown fields are ignored, so a
    platform may add its own."""

    model_config = ConfigDict(strict=True, extra="ignore")
    case_id: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_printable)]
    status: Annotated[str, Field(min_length=1, max_length=32), AfterValidator(_printable)]
    updated_at: Annotated[str, Field(min_length=10, max_length=40), AfterValidator(_zoned_time)]
    event_id: str = Field(pattern=f"^{EVENT_ID}$")


def read_citygw(payload: Any) -> StatusEvent:
    try:
        event = CaseStatusEvent.model_validate(payload)
    except ValidationError as exc:
        raise WebhookRefusal("bad_fields", _fields(exc)) from None
    return StatusEvent(event.case_id, event.status, event.updated_at, event.event_id)


def _fields(exc: ValidationError) -> str:
    """Which fields are wrong and why, without the values (they came from outside)."""
    errors = exc.errors(include_url=False, include_input=False)
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['msg']}" for e in errors[:5]
    )


class MappedReader:
    """Reads a platform's own event body by its mapping (``read``)."""

    def __init__(self, mapping: MappedWebhook) -> None:
        self._mapping = mapping
        self._tz = ZoneInfo(mapping.timezone)

    def read(self, payload: Any) -> StatusEvent:
        m = self._mapping
        if not isinstance(payload, dict):
            raise WebhookRefusal("bad_fields", "body: must be a JSON object")
        case_id = usable_case_id(_text(lookup(payload, m.case_id)))
        if case_id is None:
            raise WebhookRefusal("bad_fields", f"{m.case_id}: no usable case id")
        code = _text(lookup(payload, m.status))
        if code is None:
            raise WebhookRefusal("bad_fields", f"{m.status}: no status code (text or integer)")
        status = m.statuses.get(code)
        if status is None:
            raise WebhookRefusal("unknown_status", f"{m.status}: {code!r} is not in statuses")
        updated_at = self._time(lookup(payload, m.updated_at))
        if m.event_id is None:
            key = f"{case_id}\n{status}\n{updated_at}".encode()
            return StatusEvent(case_id, status, updated_at, hashlib.sha256(key).hexdigest())
        event_id = _text(lookup(payload, m.event_id))
        if event_id is None or not _EVENT_ID.fullmatch(event_id):
            raise WebhookRefusal("bad_fields", f"{m.event_id}: no usable event id")
        return StatusEvent(case_id, status, updated_at, event_id)

    def _time(self, value: object) -> str:
        """The change time as zoned ISO 8601 in the mapping's zone; a time that zone cannot
        write (the last instants of year 9999 east of UTC) is refused like any other."""
        moment_ms = item_time_ms(value, self._mapping.time_format, self._tz)
        if moment_ms is not None and 0 <= moment_ms <= LAST_MS:
            with contextlib.suppress(OverflowError, ValueError, OSError):
                return datetime.fromtimestamp(moment_ms / 1000, self._tz).isoformat()
        how = f"text in {self._mapping.time_format!r}" if self._mapping.time_format else ""
        raise WebhookRefusal(
            "bad_fields",
            f"{self._mapping.updated_at}: not a time ({how or 'ISO 8601'} or epoch ms)",
        )

    def reply(self, event: StatusEvent) -> dict[str, Any]:
        return dict(self._mapping.reply) if self._mapping.reply else {"accepted": event.event_id}


def _text(value: object) -> str | None:
    """Ids and codes as text: platforms send them as text or as integers."""
    if isinstance(value, str) and 0 < len(value) <= MAX_FIELD_CHARS and value.isprintable():
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**18:
        return str(value)
    return None


class WebhookFormat:
    """One format's checks: ``auth`` (who sent it), ``read`` (the body, parsed JSON, as a
    status event) and ``reply`` (the answer to an accepted event)."""

    def __init__(self, settings: WebhookSettings) -> None:
        secret = settings.secret.get_secret_value()
        mapping = settings.mapped
        if mapping is None:
            self.auth = WebhookAuth(CITYGW_SIGNATURE, secret)
            self.read = read_citygw
            self.reply = _citygw_reply
        else:
            reader = MappedReader(mapping)
            self.auth = WebhookAuth(mapping.auth, secret)
            self.read = reader.read
            self.reply = reader.reply


def _citygw_reply(event: StatusEvent) -> dict[str, Any]:
    return {"accepted": event.event_id}
