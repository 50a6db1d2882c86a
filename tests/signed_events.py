"""Status webhooks as the tests sign and read them: the wire format written out here again,
apart from both the platform's sender and the gateway's check, so that a change to either
side's format fails a test instead of passing through both."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

SECRET = "webhook-secret-0123456789abcdef"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``"<timestamp>." + body``."""
    message = timestamp.encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(body: bytes, at_s: float | None = None, secret: str = SECRET) -> dict[str, str]:
    timestamp = str(int(time.time() if at_s is None else at_s))
    return {
        "Content-Type": "application/json",
        "X-Citygw-Timestamp": timestamp,
        "X-Citygw-Signature": signature(secret, timestamp, body),
    }


def event_body(**fields: Any) -> bytes:
    """A valid event's body, with ``fields`` replacing or adding to its own."""
    event = {
        "case_id": "C20261121-000001",
        "status": "closed",
        "updated_at": "2026-11-21T08:00:00.000000+00:00",
        "event_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        **fields,
    }
    return json.dumps(event, ensure_ascii=False).encode()
