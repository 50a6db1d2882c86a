"""``/api/v1/session``: signing in and out of the console.

- ``POST`` ``{"username", "password"}`` as ``application/json`` → 200 ``{"user", "role",
  "csrf"}`` and the ``citygw_session`` cookie (HttpOnly, SameSite=Strict, Path=/, Secure
  unless ``api.cookie_secure`` is false, Max-Age the session's lifetime). Reachable without
  credentials. Any other content type is 415: a page of another site can post a form, but
  not JSON without this origin's consent, so nobody is signed in to another's account
  behind their back. A wrong password, an unknown name and a disabled account all get the same
  401, after the same argon2 work; past the failure limits (gateway/sign_in_limits.py) 429
  with ``Retry-After``, without checking the password.
- ``GET`` → the signed-in session's ``{"user", "role", "csrf"}`` (how the console, after a
  reload, learns its CSRF token), or 401 when the request is not a session's.
- ``DELETE`` → 204: the session ends in the store and the cookie is cleared.

Sign-ins and sign-outs go to the audit log, each in the transaction that starts or ends
the session (a store that refuses the entry leaves no session, or the session standing:
503); a refused one names the name tried only if it is a valid user name (people type
passwords into the wrong field), and never a password.
Refusals for the rate limit are counted, not logged, so a flood cannot grow the log.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.api_bodies import json_body
from gateway.audit import AuditTrail, wall_ms
from gateway.principals import NAME
from gateway.sessions import COOKIE, Session, Sessions
from gateway.sign_in_limits import SignInLimits
from gateway.store import in_transaction
from gateway.users import MAX_PASSWORD_CHARS, PasswordWork, Users, needs_rehash

SESSION_PATH = "/api/v1/session"
MAX_BODY_BYTES = 4096
WRONG = "wrong user name or password"


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


def session_router(
    users: Users,
    sessions: Sessions,
    limits: SignInLimits,
    passwords: PasswordWork,
    audit: AuditTrail,
    cookie_secure: bool,
) -> APIRouter:
    router = APIRouter()

    @router.post(SESSION_PATH)
    async def sign_in(request: Request) -> JSONResponse:
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":  # a form on another site cannot send JSON
            raise HTTPException(415, "send the credentials as application/json")
        body = await json_body(request, SignIn, MAX_BODY_BYTES)
        name = body.username
        address = request.client.host if request.client else "unknown"
        wait_s = limits.retry_after_s(name, address, wall_ms())
        if wait_s is not None:
            raise HTTPException(
                429, "too many failed sign-ins: wait and retry", {"Retry-After": str(wait_s)}
            )
        account = users.sign_in_hash(name) if NAME.fullmatch(name) else None
        ok = await passwords.matches(account[1] if account else None, body.password)
        target = f"user:{name}" if NAME.fullmatch(name) else "user:(not a user name)"
        if account is None or not ok:
            limits.failed(name, address, wall_ms())
            audit.write(request, "session.sign_in_failed", target, after={"address": address})
            raise HTTPException(401, WRONG)
        user, stored_hash = account
        # The hasher's parameters were raised since: the new hash commits with the session.
        rehashed = await passwords.hash(body.password) if needs_rehash(stored_hash) else None
        request.state.principal = user.principal()  # this request now acts as the user

        def start() -> tuple[str, str]:
            if rehashed is not None:
                users.set_password_hash(user.name, rehashed, wall_ms())
            started = sessions.start(user.id, wall_ms())
            audit.entry(request, "session.sign_in", target, after={"address": address})
            return started

        session_id, csrf = in_transaction(audit.conn, start)
        limits.succeeded(name)
        answer = JSONResponse({"user": user.name, "role": user.role, "csrf": csrf})
        answer.set_cookie(
            COOKIE,
            session_id,
            max_age=sessions.lifetime_ms // 1000,
            path="/",
            secure=cookie_secure,
            httponly=True,
            samesite="strict",
        )
        return answer

    @router.get(SESSION_PATH)
    async def current(request: Request) -> dict[str, Any]:
        session = _session(request)
        return {
            "user": session.principal.name,
            "role": session.principal.role,
            "csrf": session.csrf,
        }

    @router.delete(SESSION_PATH, status_code=204)
    async def sign_out(request: Request) -> Response:
        session = _session(request)

        def end() -> None:
            sessions.end(session)
            audit.entry(request, "session.sign_out", f"user:{session.principal.name}")

        in_transaction(audit.conn, end)
        answer = Response(status_code=204)
        answer.delete_cookie(
            COOKIE, path="/", secure=cookie_secure, httponly=True, samesite="strict"
        )
        return answer

    return router


def _session(request: Request) -> Session:
    session = getattr(request.state, "session", None)
    if session is None:
        raise HTTPException(401, "not signed in: this request is not a session's")
    return session
