"""Status-change webhooks: the platform tells a subscriber (the gateway) when a case moves.

Polling finds a closed case only at the next pass; a webhook says so at once. So after a
status change has committed, the store hands the case to ``WebhookSender.notify``, which
only puts a small event on a bounded queue: the workflow request never waits for the
network. One background thread sends the queue in order, so a subscriber sees a case's
changes in the order they happened. When the queue is full an event is dropped and counted;
the subscriber's polling still finds that change.

The wire format (the gateway's ``gateway/api_platform_events.py`` checks it; neither side
imports the other, as two vendors' systems would not)::

    POST <url>
    Content-Type: application/json
    X-Citygw-Timestamp: <unix seconds>
    X-Citygw-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

    {"case_id": "...", "status": "closed", "updated_at": "...", "event_id": "<32 hex>"}

Signing the timestamp with the body lets a receiver refuse an old request replayed by
whoever recorded it. Each attempt is signed afresh (a retry after a long backoff still
falls inside the receiver's window) over the same body, so the same ``event_id``: a
receiver that took the first attempt refuses the retry as a replay, and that ends it.

An attempt that gets a 2xx delivers the event. A 5xx, 408 or 429, a connection refused or
cut and a timeout are tried again after ``domain.Backoff`` (or the receiver's longer
``Retry-After``), up to ``max_attempts`` attempts, then counted as given up; any other
answer is the receiver's final word (counted as refused, not retried).

Configured from the environment (the platform's CLIs take no more arguments):
``CITYGW_PLATFORM_WEBHOOK_URL`` and the shared secret in ``CITYGW_PLATFORM_WEBHOOK_SECRET``
or, kept out of the process environment, a file named by
``CITYGW_PLATFORM_WEBHOOK_SECRET_FILE``. Without a URL no webhook is sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from domain import Backoff, parse_retry_after

log = logging.getLogger(__name__)

URL_ENV = "CITYGW_PLATFORM_WEBHOOK_URL"
SECRET_ENV = "CITYGW_PLATFORM_WEBHOOK_SECRET"
SECRET_FILE_ENV = "CITYGW_PLATFORM_WEBHOOK_SECRET_FILE"
TIMESTAMP_HEADER = "X-Citygw-Timestamp"
SIGNATURE_HEADER = "X-Citygw-Signature"
MIN_SECRET_CHARS = 16
MAX_SECRET_CHARS = 512
MAX_URL_CHARS = 2048
# Answers below 500 that mean "later" rather than "no".
_RETRIED = frozenset({408, 429})


@dataclass(frozen=True)
class WebhookTarget:
    """Where events go and how hard the sender tries; the defaults suit a real subscriber,
    tests shorten the backoff."""

    url: str
    secret: bytes
    timeout_s: float = 5.0
    max_queue: int = 1000
    max_attempts: int = 8
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def __repr__(self) -> str:  # the secret never reaches a log line or a traceback
        return f"WebhookTarget(url={self.url!r}, secret=***)"


def target_from_environment(environ: Mapping[str, str] = os.environ) -> WebhookTarget | None:
    """The target the environment names, None without ``$CITYGW_PLATFORM_WEBHOOK_URL``;
    a ValueError names the variable at fault, never the secret."""
    url = environ.get(URL_ENV, "")
    if not url:
        return None
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"${URL_ENV}: longer than {MAX_URL_CHARS} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"${URL_ENV}: must be an http:// or https:// URL with a host")
    secret = _secret(environ)
    if not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS:
        raise ValueError(
            f"webhook secret: must be {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters"
            " (make one with `openssl rand -hex 32`)"
        )
    return WebhookTarget(url, secret.encode())


def _secret(environ: Mapping[str, str]) -> str:
    file = environ.get(SECRET_FILE_ENV, "")
    given = environ.get(SECRET_ENV, "")
    if file and given:
        raise ValueError(f"give ${SECRET_ENV} or ${SECRET_FILE_ENV}, not both")
    if not file:
        if not given:
            raise ValueError(f"${URL_ENV} is set: the secret is missing (${SECRET_ENV})")
        return given
    try:
        return Path(file).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or "not a readable UTF-8 file"
        raise ValueError(f"${SECRET_FILE_ENV}: cannot read: {reason}") from None


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Citygw-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookSender:
    """A bounded queue of status events and the one thread that sends them.

    ``notify`` may be called from any thread and never blocks; the thread starts with the
    first event and stops at ``close``. Counters: ``queued`` (taken by ``notify``),
    ``dropped`` (the queue was full), ``delivered``, ``retried`` (attempts after a
    failure), ``refused`` (a final 4xx), ``given_up`` (``max_attempts`` failures)."""

    def __init__(self, target: WebhookTarget, now_s: Callable[[], float] = time.time) -> None:
        self._target = target
        self._now_s = now_s
        self._queue: queue.Queue[bytes] = queue.Queue(target.max_queue)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._counts = dict.fromkeys(
            ("queued", "dropped", "delivered", "retried", "refused", "given_up"), 0
        )

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._counts, "waiting": self._queue.qsize()}

    def notify(self, case: Mapping[str, Any]) -> None:
        """Queue one event for the case's current status, or drop and count it."""
        event = {
            "case_id": case["id"],
            "status": case["status"],
            "updated_at": case["updated_at"],
            "event_id": uuid.uuid4().hex,
        }
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        with self._lock:
            if self._stop.is_set():
                return
            try:
                self._queue.put_nowait(body)
            except queue.Full:
                self._counts["dropped"] += 1
                return
            self._counts["queued"] += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="platform-webhooks", daemon=True
                )
                self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop after the attempt in progress; events still queued are not sent."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None:
            with contextlib.suppress(queue.Full):  # a full queue wakes the thread anyway
                self._queue.put_nowait(b"")  # wakes a thread waiting for work
            thread.join(timeout_s)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _run(self) -> None:
        with httpx.Client(timeout=self._target.timeout_s) as client:
            while not self._stop.is_set():
                body = self._queue.get()
                if self._stop.is_set():
                    return
                self._deliver(client, body)

    def _deliver(self, client: httpx.Client, body: bytes) -> None:
        backoff = Backoff(self._target.initial_backoff_s, self._target.max_backoff_s)
        for attempt in range(self._target.max_attempts):
            if attempt:
                self._count("retried")
            outcome, retry_after_s = self._attempt(client, body)
            if outcome is not None:
                self._count(outcome)
                return
            last = attempt == self._target.max_attempts - 1
            if last or self._stop.wait(backoff.delay_s(attempt, retry_after_s)):
                break
        if not self._stop.is_set():
            self._count("given_up")
            log.warning("webhook: gave up after %d attempts", self._target.max_attempts)

    def _attempt(self, client: httpx.Client, body: bytes) -> tuple[str | None, float | None]:
        """("delivered" or "refused", None), or (None, the receiver's Retry-After if any)
        when the event should be sent again."""
        timestamp = str(int(self._now_s()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(self._target.secret, timestamp, body),
        }
        try:
            answer = client.post(self._target.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.info("webhook: %s", type(exc).__name__)
            return None, None
        code = answer.status_code
        if 200 <= code < 300:
            return "delivered", None
        if code >= 500 or code in _RETRIED:
            return None, parse_retry_after(answer.headers.get("retry-after"), self._now_s())
        log.warning("webhook: the receiver refused an event with %d", code)
        return "refused", None
