"""The stand-in eGova-style intake (``tests/egova_intake.py``) that also pushes each state
change to a subscriber, as such platforms do: one JSON object per change in the platform's
own shape, signed as ``deploy/platforms/egova-webhook.yaml`` describes.

The signing is written out here again, apart from the gateway's check
(``case_bridge/webhook_auth.py``), so that a change to either side fails a test instead of
passing through both: base64 of HMAC-SHA256 keyed by the shared secret over the
``X-Egova-Timestamp`` value (Unix ms), a line feed, and the body's bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
from typing import Any

import httpx
from egova_intake import EgovaIntakeFake

WEBHOOK_SECRET = "gulou-push-secret-0123456789"


def push_headers(body: bytes, at_ms: int | None = None, secret: str = WEBHOOK_SECRET) -> dict:
    timestamp = str(int(time.time() * 1000) if at_ms is None else at_ms)
    digest = hmac.new(secret.encode(), timestamp.encode() + b"\n" + body, hashlib.sha256)
    return {
        "Content-Type": "application/json; charset=utf-8",
        "X-Egova-Timestamp": timestamp,
        "X-Egova-Signature": base64.b64encode(digest.digest()).decode(),
    }


def push_body(event_id: str, state_id: str, update_time: str, msg_id: str) -> bytes:
    """A state change as the example platform pushes it."""
    push = {
        "msgID": msg_id,
        "pushType": "stateChange",
        "data": {"eventID": event_id, "stateID": state_id, "updateTime": update_time},
    }
    return json.dumps(push, ensure_ascii=False).encode()


class EgovaPushingFake(EgovaIntakeFake):
    """``set_state`` moves an event on and pushes the change to ``push_url`` (when set),
    returning the subscriber's answer; every push sent is in ``pushed``."""

    def __init__(self, push_url: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.push_url = push_url
        self.pushed: list[tuple[bytes, int]] = []  # body, the answer's status
        self._msg_ids = itertools.count(1)
        self._push = httpx.Client(timeout=5)

    def __exit__(self, *exc: object) -> None:
        self._push.close()
        super().__exit__(*exc)

    def set_state(self, event_id: str, state_id: str) -> httpx.Response | None:  # type: ignore[override]
        super().set_state(event_id, state_id)
        if self.push_url is None:
            return None
        return self.push(self.state_body(event_id))

    def state_body(self, event_id: str, state_id: str | None = None) -> bytes:
        """The push for the event's current state (or ``state_id``), with a new msgID."""
        with self._lock:
            event = self.events[event_id]
            state, update_time = state_id or event["stateID"], event["updateTime"]
        return push_body(event_id, state, update_time, f"PUSH-{next(self._msg_ids):06d}")

    def push(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        assert self.push_url is not None
        answer = self._push.post(self.push_url, content=body, headers=headers or push_headers(body))
        self.pushed.append((body, answer.status_code))
        return answer
