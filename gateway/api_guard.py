"""The gate in front of every route of the gateway's API: request bounds, then the token.

A pure ASGI middleware rather than a FastAPI dependency, so that it covers every path the
server answers (a route added later, an unknown path, the docs) and refuses before any
routing, parsing or body reading happens. In order:

- a URL (path and query) longer than ``max_url_bytes``: 414;
- a ``Content-Length`` above ``max_body_bytes``: 413; a chunked body, whose size nobody
  knows before reading it: 411 (no route takes a stream; uvicorn holds a body to its
  declared length);
- any path but the public ones (exact, or under a public prefix such as the signed
  evidence links' ``/evidence/``, which carry their own proof) without
  ``Authorization: Bearer <token>``: 401 with ``WWW-Authenticate: Bearer``, the token
  compared in constant time. Without a configured token nothing but the public paths is
  served;
- more than ``max_in_flight`` requests being answered at once: 503. Handlers run on the
  gateway's loop beside ingest, so their number is bounded; ``/healthz`` is exempt, so a
  liveness probe never fails because of a busy API.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

REALM = "citygw"


class ApiGuard:
    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        public_paths: Collection[str],
        max_url_bytes: int,
        max_body_bytes: int,
        max_in_flight: int = 64,
        public_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.expected = token.encode() if token is not None else None
        self.public_paths = frozenset(public_paths)
        self.public_prefixes = public_prefixes
        self.max_url_bytes = max_url_bytes
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        busy = self.in_flight >= self.max_in_flight and scope["path"] != "/healthz"
        if refusal is None and busy:
            refusal = 503, "too many requests at once; retry", {"Retry-After": "1"}
        if refusal is not None:
            status, detail, headers = refusal
            await JSONResponse({"detail": detail}, status, headers)(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _refusal(self, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        url_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(
            scope["query_string"]
        )
        if url_bytes > self.max_url_bytes:
            return 414, f"URL longer than {self.max_url_bytes} bytes", {}
        headers = dict(scope["headers"])  # the last of repeated headers: enough for these two
        if b"transfer-encoding" in headers:  # no route takes a stream: bound it up front
            return 411, "send the body with a Content-Length", {}
        length = headers.get(b"content-length")
        if length is not None:
            if not (length.isdigit() and len(length) <= 18):
                return 400, "Content-Length is not a number", {}
            if int(length) > self.max_body_bytes:
                return 413, f"body larger than {self.max_body_bytes} bytes", {}
        path = scope["path"]
        if path in self.public_paths or path.startswith(self.public_prefixes):
            return None
        challenge = {"www-authenticate": f'Bearer realm="{REALM}"'}
        if self.expected is None:
            return (
                401,
                "this gateway has no API token configured: only /healthz is served",
                challenge,
            )
        scheme, _, presented = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer":
            return 401, "a bearer token is required", challenge
        if not hmac.compare_digest(presented.strip(), self.expected):
            challenge = f'Bearer realm="{REALM}", error="invalid_token"'
            return 401, "the bearer token is not valid", {"www-authenticate": challenge}
        return None
