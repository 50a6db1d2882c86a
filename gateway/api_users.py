"""``/api/v1/users`` and ``/api/v1/tokens``: admins manage who may sign in and which clients
may call the API. Every route here is admin-only (the guard refuses viewers and operators
with 403, reads included), and every write goes to the audit log with its reason.

- ``GET /api/v1/users`` → ``{"users": [...], "count"}`` (name, role, created/changed,
  disabled; never a hash);
- ``POST /api/v1/users`` ``{"name", "role", "password", "reason"?}`` → 201 the user;
- ``PUT /api/v1/users/{name}/role`` ``{"role", "reason"?}``;
- ``PUT /api/v1/users/{name}/password`` ``{"password", "reason"?}``: ends the user's sessions;
- ``PUT /api/v1/users/{name}/disabled`` ``{"disabled": bool, "reason"?}``: disabling ends
  them too;
- ``GET /api/v1/tokens`` → ``{"tokens": [...], "count"}``, newest first;
- ``POST /api/v1/tokens`` ``{"name", "role", "reason"?}`` → 201 the token's row and
  ``"token"``, the only time the token is shown;
- ``DELETE /api/v1/tokens/{id}?reason=`` → the revoked token's row.

400 names the field (bodies are parsed without echoing values: they may hold a password),
404 an unknown user or token, 409 a name taken, a limit reached, or a change that would
leave no enabled admin. A change that changes nothing (the role a user has, revoking a
revoked token) answers 200 and writes no audit entry. A change, the sessions it ends and
its audit entry commit in one transaction (the stores' own transactions join it): a store
that refuses the entry undoes the change (503).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from gateway.api_bodies import json_body
from gateway.audit import MAX_REASON_CHARS, AuditTrail, wall_ms
from gateway.client_tokens import ClientTokens, TokenConflict, TokenError, UnknownToken
from gateway.principals import MAX_NAME_CHARS, Role
from gateway.sessions import Sessions
from gateway.store import in_transaction
from gateway.users import (
    MAX_PASSWORD_CHARS,
    MIN_PASSWORD_CHARS,
    PasswordWork,
    UnknownUser,
    UserConflict,
    UserError,
    Users,
    check_name,
)

T = TypeVar("T")
MAX_BODY_BYTES = 4096
UserName = Annotated[str, Path(min_length=1, max_length=MAX_NAME_CHARS)]
TokenId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Reason = Annotated[str, Field(max_length=MAX_REASON_CHARS)]
Password = Annotated[str, Field(min_length=MIN_PASSWORD_CHARS, max_length=MAX_PASSWORD_CHARS)]


class _Body(BaseModel):
    """Every write says why, optionally, for the audit log."""

    model_config = ConfigDict(extra="forbid")
    reason: Reason = ""


class NewUser(_Body):
    name: str = Field(max_length=MAX_NAME_CHARS)
    role: Role
    password: Password


class RoleChange(_Body):
    role: Role


class PasswordChange(_Body):
    password: Password


class DisabledChange(_Body):
    disabled: StrictBool


class NewToken(_Body):
    name: str = Field(max_length=MAX_NAME_CHARS)
    role: Role


def users_router(
    users: Users, sessions: Sessions, passwords: PasswordWork, audit: AuditTrail
) -> APIRouter:
    router = APIRouter(prefix="/api/v1/users")

    @router.get("")
    async def list_users() -> dict[str, Any]:
        found = [user.shown() for user in users.all()]
        return {"users": found, "count": len(found)}

    @router.post("", status_code=201)
    async def create_user(request: Request) -> dict[str, Any]:
        body = await json_body(request, NewUser, MAX_BODY_BYTES)
        _answer(lambda: check_name(body.name))
        password_hash = await passwords.hash(body.password)

        def create() -> dict[str, Any]:
            shown = users.create(body.name, body.role, password_hash, wall_ms()).shown()
            audit.entry(request, "user.create", f"user:{shown['name']}", None, shown, body.reason)
            return shown

        return _audited(audit, create)

    @router.put("/{name}/role")
    async def change_role(name: UserName, request: Request) -> dict[str, Any]:
        body = await json_body(request, RoleChange, MAX_BODY_BYTES)

        def change() -> dict[str, Any]:
            before, after = users.set_role(name, body.role, wall_ms())
            if before.role != after.role:
                audit.entry(request, "user.role", f"user:{name}", {"role": before.role},
                            {"role": after.role}, body.reason)  # fmt: skip
            return after.shown()

        return _audited(audit, change)

    @router.put("/{name}/password")
    async def change_password(name: UserName, request: Request) -> dict[str, Any]:
        body = await json_body(request, PasswordChange, MAX_BODY_BYTES)
        _answer(lambda: users.get(name))  # 404 before the slow hash
        password_hash = await passwords.hash(body.password)

        def change() -> dict[str, Any]:
            user = users.set_password_hash(name, password_hash, wall_ms())
            ended = sessions.end_all(user.id)
            audit.entry(request, "user.password", f"user:{name}", None,
                        {"sessions_ended": ended}, body.reason)  # fmt: skip
            return user.shown()

        return _audited(audit, change)

    @router.put("/{name}/disabled")
    async def change_disabled(name: UserName, request: Request) -> dict[str, Any]:
        body = await json_body(request, DisabledChange, MAX_BODY_BYTES)

        def change() -> dict[str, Any]:
            before, after = users.set_disabled(name, body.disabled, wall_ms())
            was_disabled = before.disabled_ms is not None
            if was_disabled != body.disabled:
                ended = sessions.end_all(after.id) if body.disabled else 0
                action = "user.disable" if body.disabled else "user.enable"
                audit.entry(request, action, f"user:{name}", {"disabled": was_disabled},
                            {"disabled": body.disabled, "sessions_ended": ended},
                            body.reason)  # fmt: skip
            return after.shown()

        return _audited(audit, change)

    return router


def tokens_router(tokens: ClientTokens, audit: AuditTrail) -> APIRouter:
    router = APIRouter(prefix="/api/v1/tokens")

    @router.get("")
    async def list_tokens() -> dict[str, Any]:
        found = [token.shown() for token in tokens.all()]
        return {"tokens": found, "count": len(found)}

    @router.post("", status_code=201)
    async def create_token(request: Request) -> dict[str, Any]:
        body = await json_body(request, NewToken, MAX_BODY_BYTES)
        creator = request.state.principal.name

        def create() -> dict[str, Any]:
            row, token = tokens.create(body.name, body.role, creator, wall_ms())
            shown = row.shown()
            audit.entry(request, "token.create", f"token:{row.id}", None, shown, body.reason)
            return {**shown, "token": token}

        return _audited(audit, create)

    @router.delete("/{token_id}")
    async def revoke_token(
        token_id: TokenId, request: Request, reason: str = Query("", max_length=MAX_REASON_CHARS)
    ) -> dict[str, Any]:
        def revoke() -> dict[str, Any]:
            before, after = tokens.revoke(token_id, wall_ms())
            if before.revoked_ms is None:
                audit.entry(request, "token.revoke", f"token:{token_id}", before.shown(),
                            after.shown(), reason)  # fmt: skip
            return after.shown()

        return _audited(audit, revoke)

    return router


def _audited(audit: AuditTrail, change: Callable[[], T]) -> T:
    """Run a change with its audit entry in one transaction; a refusal as ``_answer``'s."""
    return _answer(lambda: in_transaction(audit.conn, change))


def _answer(action: Callable[[], T]) -> T:
    """Run a change; its refusal as the HTTP error that says why."""
    try:
        return action()
    except (UnknownUser, UnknownToken) as exc:
        raise HTTPException(404, str(exc)) from None
    except (UserConflict, TokenConflict) as exc:
        raise HTTPException(409, str(exc)) from None
    except (UserError, TokenError) as exc:
        raise HTTPException(400, str(exc)) from None
