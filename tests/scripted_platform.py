"""A fake case platform: scripted replies, because the outbox's reactions to exact replies
must be tested in-process.

The bundled platform answers only what a well-behaved platform answers. To see what the
case bridge does with a 2xx that is not JSON, a case without an id, a 409 that does not say
why or a ``Retry-After`` date, the test scripts the platform's replies one by one. The HTTP
is real (``loopback_server.LoopbackServer``: a server on a loopback port, in a thread), so
the real adapter (``case_bridge.platform.BundledPlatform``) reads every reply exactly as it
would read a real platform's. When the script runs out, it answers like a well-behaved
platform.

Besides replies, the script may hold two ways of not answering: ``HANG`` holds the request
unanswered until the client gives up (a timeout after the request was sent) and ``CUT``
closes the connection without a word (a connection cut before the answer).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from loopback_server import LoopbackServer

TOKEN = "scripted-token"


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a status, raw body bytes (a dict or list is sent as JSON) and
    headers."""

    status: int
    body: bytes | dict | list = b""
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body, ensure_ascii=False).encode()


@dataclass(frozen=True)
class NoAnswer:
    """A scripted silence: ``hold`` the request until the fake stops (the client times out
    first), or close the connection at once."""

    hold: bool


HANG = NoAnswer(hold=True)
CUT = NoAnswer(hold=False)
# The longest a HANG holds a handler thread if the fake is not stopped first.
HANG_LIMIT_S = 60.0
Answer = Reply | NoAnswer


@dataclass(frozen=True)
class Request:
    """What the fake received: enough to assert order, keys and bodies exactly, and when
    (``time.monotonic()`` on arrival)."""

    method: str
    path: str
    query: dict[str, str]
    key: str | None
    body: Any
    at: float = field(default_factory=time.monotonic)


class ScriptedPlatformFake:
    """Answers each request with the next scripted ``Reply``; then like a good platform."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[Request] = []
        self._script: deque[Any] = deque()
        self._lock = threading.Lock()
        self._stopped = threading.Event()  # releases held requests
        self._ids = itertools.count(1)
        self._http = LoopbackServer(self._handler(), port=port)
        self.url = self._http.url

    def script(self, *replies: Answer) -> None:
        with self._lock:
            self._script.extend(replies)

    def keys(self) -> list[str | None]:
        return [request.key for request in self.requests]

    def __enter__(self) -> ScriptedPlatformFake:
        self._http.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopped.set()  # first: a held request would keep its handler thread
        self._http.stop()

    def _next(self, request: Request) -> Answer:
        with self._lock:
            self.requests.append(request)
            if self._script:
                return self._script.popleft()
        return self._well_behaved(request)

    def _well_behaved(self, request: Request) -> Reply:
        if request.method == "GET":
            return Reply(200, {"cases": [], "count": 0, "next": None})
        if request.path == "/api/v1/cases":
            return Reply(201, {"id": f"C20261121-{next(self._ids):06d}", "status": "accepted"})
        case_id = request.path.split("/")[4]
        return Reply(200, {"id": case_id, "status": "accepted"})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without this, each answer waits
            # ~40 ms for the client's delayed ACK (Nagle).
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                request = Request(
                    self.command,
                    url.path,
                    {k: v[-1] for k, v in parse_qs(url.query).items()},
                    self.headers.get("Idempotency-Key"),
                    json.loads(raw) if raw else None,
                )
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    reply = Reply(401, {"detail": "missing or invalid bearer token"})
                else:
                    reply = fake._next(request)
                if isinstance(reply, NoAnswer):
                    if reply.hold:
                        fake._stopped.wait(HANG_LIMIT_S)
                    self.close_connection = True
                    return
                body = reply.encoded()
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve

            def log_message(self, *_: object) -> None:
                pass

        return Handler
