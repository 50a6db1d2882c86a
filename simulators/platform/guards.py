"""What stands in front of every /api/v1 request: fault injection, then bearer auth.

Both are one middleware so the order is fixed: a platform that is "down" answers 503
before it looks at credentials, as a real outage in front of a gateway would.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

API_PREFIX = "/api/v1"


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
