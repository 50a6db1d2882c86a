"""Settings of status webhooks: what a platform posts to the gateway's ``POST
/platform/events``, and how it proves the post is its own.

Two formats. ``citygw``: the gateway's own (the bundled platform sends it): fields
``case_id``, ``status``, ``updated_at``, ``event_id``, signed ``X-Citygw-Signature:
sha256=<hex>`` over ``"<X-Citygw-Timestamp>." + body``. ``mapped``: a platform's own push,
described like the mapped-REST adapter describes requests (``mapped_rest_settings.py``):
dotted paths to the case id, status code, change time and event id in the JSON body, a
table from the platform's status codes to our statuses, and its signature scheme (an
HMAC-SHA256 over a configured canonical string, or a shared token in a header).
``deploy/platforms/egova-webhook.yaml`` is a worked example.

Everything that can be checked before the first event is checked when the settings load.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

from case_bridge.mapped_rest_settings import (
    CaseStatusName,
    HeaderName,
    ReplyPath,
    ShortText,
    _text_keys,
    whole,
)

# What a canonical string may hold besides its placeholders: printable ASCII and LF.
_LITERAL = re.compile(r"[ -~\n]*")
MAX_REPLY_FIELDS = 10


class WebhookHmac(BaseModel):
    """HMAC-SHA256, keyed by the shared ``secret``'s UTF-8 bytes, over ``message`` with
    ``{body}`` replaced by the body's bytes as received and ``{timestamp}`` by the
    ``timestamp_header``'s value (decimal Unix time in ``timestamp_unit``). The signature
    header carries ``prefix`` then the digest in ``encoding`` (hex in either case, or
    standard base64). Without a timestamp (``message: "{body}"``) an event cannot be
    refused as stale: replays are then stopped by the event ids remembered alone."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["hmac_sha256"]
    signature_header: HeaderName
    timestamp_header: HeaderName | None = None
    timestamp_unit: Literal["s", "ms"] = "s"
    message: str = Field("{timestamp}.{body}", min_length=6, max_length=128)
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = Field("", max_length=32, pattern=whole("[ -~]*"))

    @model_validator(mode="after")
    def _placeholders(self) -> WebhookHmac:
        literal = self.message.replace("{body}", "").replace("{timestamp}", "")
        if self.message.count("{body}") != 1 or self.message.count("{timestamp}") > 1:
            raise ValueError("message: give {body} once and {timestamp} at most once")
        if "{" in literal or "}" in literal or not _LITERAL.fullmatch(literal):
            raise ValueError(
                "message: besides {timestamp} and {body}, only printable ASCII and newlines"
            )
        if ("{timestamp}" in self.message) != (self.timestamp_header is not None):
            raise ValueError(
                "timestamp_header: give it exactly when message signs {timestamp}"
                " (a timestamp that is not signed proves nothing)"
            )
        return self


class WebhookToken(BaseModel):
    """A shared token in a header (``prefix`` then the secret, e.g. ``Bearer <secret>``):
    for a platform that cannot sign. It proves who sent an event, not when: replays are
    stopped by the event ids remembered alone."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["token"]
    header: HeaderName
    prefix: str = Field("", max_length=32, pattern=whole("[ -~]*"))


ReplyValue = Annotated[str, Field(max_length=64)] | int | float | bool | None


class MappedWebhook(BaseModel):
    """A platform's own status push (``format: mapped``), one JSON object per request.

    ``case_id``, ``status``, ``updated_at`` and ``event_id``: dotted paths into the body
    (digits index lists). The case id and status code are text or integers; the status
    code is translated by ``statuses`` (a code the table lacks is refused,
    ``unknown_status``: add it). ``updated_at`` is ISO 8601, epoch milliseconds, or text in
    ``time_format`` (strptime); one without a zone is in ``timezone``. Without
    ``event_id`` an event is known by its case, status and time. ``reply``: the JSON object
    an accepted event is answered with, for a platform that reads a result code
    (``{code: 0, msg: success}``); without it, ``{"accepted": <event id>}``."""

    model_config = ConfigDict(extra="forbid")
    case_id: ReplyPath
    status: ReplyPath
    updated_at: ReplyPath
    event_id: ReplyPath | None = None
    statuses: Annotated[
        dict[ShortText, CaseStatusName],
        BeforeValidator(_text_keys),
        Field(min_length=1, max_length=200),
    ]
    time_format: str | None = Field(None, min_length=2, max_length=64)
    timezone: str = "Asia/Shanghai"
    auth: WebhookHmac | WebhookToken = Field(discriminator="type")
    reply: Annotated[dict[ShortText, ReplyValue], Field(max_length=MAX_REPLY_FIELDS)] | None = None

    @model_validator(mode="after")
    def _known_zone(self) -> MappedWebhook:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: unknown time zone {self.timezone[:64]!r}") from None
        return self


class WebhookSettings(BaseModel):
    """Status changes the platform pushes to the gateway's ``POST /platform/events``,
    beside polling (which stays, and catches any webhook that never arrived).

    ``secret`` is shared with the platform: the HMAC key, or for ``auth: token`` the token
    itself; like other secrets it may be given as ``secret_file`` or ``secret_env``.
    ``format``: ``citygw`` (the gateway's own, which the bundled platform sends) or
    ``mapped`` (a platform's own shape and signature, described in ``mapped``). An event
    signed more than ``tolerance_s`` away from the gateway's clock is refused, and so is an
    event id among the last ``remembered_events`` accepted: together they stop a recorded
    request from being played again.
    """

    model_config = ConfigDict(extra="forbid")
    format: Literal["citygw", "mapped"] = "citygw"
    secret: SecretStr = Field(min_length=16, max_length=512)  # never shown
    tolerance_s: int = Field(300, ge=1, le=3600)
    max_body_bytes: int = Field(4096, ge=256, le=65_536)
    remembered_events: int = Field(10_000, ge=1, le=1_000_000)
    mapped: MappedWebhook | None = None

    @model_validator(mode="after")
    def _format_has_its_section(self) -> WebhookSettings:
        if (self.format == "mapped") != (self.mapped is not None):
            raise ValueError("give mapped exactly when format is mapped")
        return self
