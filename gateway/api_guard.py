"""The gate in front of every route of the gateway's API: request bounds, who is asking, and
whether their role allows it.

A pure ASGI middleware rather than a FastAPI dependency, so that it covers every path the
server answers (a route added later, an unknown path, the docs) and refuses before any
routing, parsing or body reading happens. In order:

- a URL (path and query) longer than ``max_url_bytes``: 414;
- a ``Content-Length`` above ``max_body_bytes``: 413; a chunked body, whose size nobody
  knows before reading it: 411 (no route takes a stream; uvicorn holds a body to its
  declared length);
- the public paths (exact, or under a public prefix such as the signed evidence links'
  ``/evidence/``, which carry their own proof, or the console's static files) and
  ``POST /api/v1/session`` (signing in) pass without credentials;
- every other request needs a principal (gateway/principals.py), else 401 with
  ``WWW-Authenticate: Bearer``:
  ``Authorization: Bearer <token>`` is the configured machine token (compared in constant
  time; admin, named ``api-token``) or a live client token (gateway/client_tokens.py);
  without that header, the ``citygw_session`` cookie names a live session
  (gateway/sessions.py), and then an unsafe method also needs ``X-CSRF-Token`` equal to
  the session's (403 otherwise). A header that is present but wrong is refused, never
  passed over for the cookie;
- the principal's role must reach what the method and path require (``required_role``),
  else 403 ``{"detail", "required_role"}``;
- more than ``max_in_flight`` requests being answered at once: 503. Handlers run on the
  gateway's loop beside ingest, so their number is bounded; ``/healthz`` is exempt, so a
  liveness probe never fails because of a busy API.

The principal goes to ``scope["state"]["principal"]`` (``request.state.principal``) and a
cookie's session to ``scope["state"]["session"]``. Refusals are counted by reason in
``refused`` (busy, url_too_long, chunked, bad_length, body_too_large, no_credentials,
invalid_token, session_ended, csrf, role).
"""

from __future__ import annotations

import hmac
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field

from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api_session import SESSION_PATH
from gateway.client_tokens import ClientTokens
from gateway.principals import API_TOKEN, Principal, Role
from gateway.sessions import COOKIE, CSRF_HEADER, Session, Sessions

REALM = "citygw"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ADMIN_PREFIXES = ("/api/v1/users", "/api/v1/tokens", "/api/v1/config")


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    body: dict[str, str]
    reason: str  # what ``refused`` counts
    headers: dict[str, str] = field(default_factory=dict)


def required_role(method: str, path: str) -> Role | None:
    """The least role that may make this request; None: anyone (signing in)."""
    if path == SESSION_PATH:
        return None if method == "POST" else "viewer"
    if any(path == prefix or path.startswith(prefix + "/") for prefix in ADMIN_PREFIXES):
        return "admin"
    return "viewer" if method in SAFE_METHODS else "operator"


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
        tokens: ClientTokens | None = None,
        sessions: Sessions | None = None,
        refused: Counter[str] | None = None,
    ) -> None:
        """Without ``tokens`` and ``sessions`` only the machine token is taken. ``refused``:
        where refusals are counted by reason (the app's, for its metrics)."""
        self.app = app
        self.expected = token.encode() if token is not None else None
        self.public_paths = frozenset(public_paths)
        self.public_prefixes = public_prefixes
        self.max_url_bytes = max_url_bytes
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.tokens = tokens
        self.sessions = sessions
        self.in_flight = 0
        self.refused: Counter[str] = Counter() if refused is None else refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        busy = self.in_flight >= self.max_in_flight and scope["path"] != "/healthz"
        if refusal is None and busy:
            refusal = _refused(
                503, "too many requests at once; retry", "busy", {"Retry-After": "1"}
            )
        if refusal is not None:
            self.refused[refusal.reason] += 1
            answer = JSONResponse(refusal.body, refusal.status, refusal.headers)
            await answer(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _refusal(self, scope: Scope) -> Refusal | None:
        url_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(
            scope["query_string"]
        )
        if url_bytes > self.max_url_bytes:
            return _refused(414, f"URL longer than {self.max_url_bytes} bytes", "url_too_long")
        headers = dict(scope["headers"])  # the last of repeated headers: enough for these
        if b"transfer-encoding" in headers:  # no route takes a stream: bound it up front
            return _refused(411, "send the body with a Content-Length", "chunked")
        length = headers.get(b"content-length")
        if length is not None:
            if not (length.isdigit() and len(length) <= 18):
                return _refused(400, "Content-Length is not a number", "bad_length")
            if int(length) > self.max_body_bytes:
                return _refused(
                    413, f"body larger than {self.max_body_bytes} bytes", "body_too_large"
                )
        path, method = scope["path"], scope["method"]
        required = required_role(method, path)
        public = path in self.public_paths or path.startswith(self.public_prefixes)
        if public or required is None:
            return None
        found = self._identify(headers, method)
        if isinstance(found, Refusal):
            return found
        state = scope.setdefault("state", {})
        if isinstance(found, Session):
            state["session"] = found
            found = found.principal
        if not found.may(required):
            detail = f"{method} {path} needs the {required} role"
            return Refusal(403, {"detail": detail, "required_role": required}, "role")
        state["principal"] = found
        return None

    def _identify(self, headers: dict[bytes, bytes], method: str) -> Principal | Session | Refusal:
        """Who the credentials name (a cookie's session with its principal), or the
        refusal."""
        challenge = {"www-authenticate": f'Bearer realm="{REALM}"'}
        authorization = headers.get(b"authorization")
        if authorization is not None:
            scheme, _, presented = authorization.partition(b" ")
            if scheme.lower() != b"bearer":
                return _refused(401, "a bearer token is required", "no_credentials", challenge)
            presented = presented.strip()
            if self.expected is not None and hmac.compare_digest(presented, self.expected):
                return API_TOKEN
            client = self.tokens.principal(presented) if self.tokens is not None else None
            if client is not None:
                return client
            if self.expected is None:
                return self._unconfigured(challenge)
            challenge = {"www-authenticate": f'Bearer realm="{REALM}", error="invalid_token"'}
            return _refused(401, "the bearer token is not valid", "invalid_token", challenge)
        session_id = cookie_parser(headers.get(b"cookie", b"").decode("latin-1")).get(COOKIE)
        if session_id is None or self.sessions is None:
            if self.expected is None:
                return self._unconfigured(challenge)
            return _refused(401, "a bearer token is required", "no_credentials", challenge)
        session = self.sessions.find(session_id, int(time.time() * 1000))
        if session is None:
            return _refused(401, "the session has ended: sign in again", "session_ended", challenge)
        if method not in SAFE_METHODS and not _csrf_matches(session, headers):
            return _refused(403, "X-CSRF-Token is missing or not this session's", "csrf")
        return session

    def _unconfigured(self, challenge: dict[str, str]) -> Refusal:
        detail = "this gateway has no API token configured: only /healthz is served"
        if self.sessions is not None:
            detail = "this gateway has no API token configured: sign in, or use a client token"
        return _refused(401, detail, "no_credentials", challenge)


def _csrf_matches(session: Session, headers: dict[bytes, bytes]) -> bool:
    presented = headers.get(CSRF_HEADER.encode(), b"")
    return hmac.compare_digest(presented, session.csrf.encode())


def _refused(
    status: int, detail: str, reason: str, headers: dict[str, str] | None = None
) -> Refusal:
    return Refusal(status, {"detail": detail}, reason, headers or {})
