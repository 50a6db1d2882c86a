"""What stands in front of every /api/v1 request: fault injection, bearer auth, then a
limit on the body's size.

Fault injection and auth are one middleware so the order is fixed: a platform that is
"down" answers 503 before it looks at credentials, as a real outage in front of a gateway
would. The body limit comes after auth (nobody without the token makes the platform buffer
anything) and before routing: FastAPI reads a whole body into memory before it validates
it, so a body over ``MAX_BODY_BYTES`` is refused with 413 as soon as its declared length or
the bytes streamed so far exceed the limit, without reading the rest.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_PREFIX = "/api/v1"
# The largest request body read: a case or an evidence batch is a few kilobytes.
MAX_BODY_BYTES = 1024 * 1024


class BodyLimit:
    """ASGI middleware: buffer at most ``max_bytes`` of an HTTP request body, else 413.

    The body is read here (at most the limit) and replayed to the app, so the app never
    sees a byte more than the limit, whether the client declared a length or streamed
    chunks without one.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self._app = app
        self._max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and (len(declared) > 18 or int(declared) > self._max_bytes):
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self._app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self._app(scope, _replay([body], receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self._max_bytes} bytes"},
            status_code=413,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` first, then what the client sends next (its
    disconnect)."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _bearer_matches(header: str | None, token: str) -> bool:
    if header is None:
        return False
    scheme, _, presented = header.partition(" ")
    # compare_digest so response time does not leak how much of the token was right.
    return scheme.lower() == "bearer" and secrets.compare_digest(
        presented.strip().encode(), token.encode()
    )


def install_guards(app: FastAPI, token: str, unavailable_for: float) -> None:
    """Refuse /api/v1 with 503 for ``unavailable_for`` s from now, and without the token 401.

    The outage window starts when the app is built; ``serve`` builds it just before uvicorn
    starts listening, so that is the server start a resilience test sees.
    """
    if not token:
        raise ValueError("token must not be empty")
    started = time.monotonic()

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            if time.monotonic() - started < unavailable_for:
                return JSONResponse(
                    {"detail": "platform unavailable (injected fault)"},
                    status_code=503,
                    headers={"Retry-After": "1"},
                )
            if not _bearer_matches(request.headers.get("authorization"), token):
                return JSONResponse(
                    {"detail": "missing or invalid bearer token"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await call_next(request)
