"""``/api/v1/silences``: operators make, list, extend and remove silences over HTTP.

- ``GET /api/v1/silences?status=active|pending|expired&limit=&cursor=`` — newest first,
  paged (``next_cursor``);
- ``GET /api/v1/silences/{id}``;
- ``POST /api/v1/silences`` — ``{matchers, author, reason, starts_ms?, ends_ms | duration_s}``
  → 201 with the silence;
- ``PATCH /api/v1/silences/{id}`` — ``{author, reason, ends_ms | duration_s}``: a later end;
- ``DELETE /api/v1/silences/{id}?author=&reason=`` — ends it now, kept in the history.

``author`` is who signed in, for a session or a client token (gateway/api_author.py: a
different one sent is ignored, and may be left out); the machine token must say who acts.

A request that cannot be honoured gets 400 naming the field (422 for a body that does not
parse), 404 for an unknown id, 409 when the limit of silences in force is reached. The
router sits behind the app's guard like every route (writes need the operator role). Each
change goes to the audit log (``audit``) with the silence before and after and the reason
given, in the change's own transaction (503, and nothing changed, if the store refuses
the entry). Handlers are ``async``: they run on the gateway's loop, which orders every write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request

from gateway.api_author import recorded_author
from gateway.audit import AuditTrail
from gateway.clock import wall_ms
from gateway.silences import Audit, SilenceStore, TooManySilences, UnknownSilence
from rules.silences import Author, Extension, NewSilence, SilenceError, Status

MAX_ID = 2**63 - 1  # SQLite's largest integer: a larger one cannot even be looked up
SilenceId = Annotated[int, Path(ge=1, le=MAX_ID)]
AUDITED = ("status", "matchers", "starts_ms", "ends_ms", "removed_ms")
BODY_AUTHOR = ("body", "author")


class SilenceRequest(NewSilence):
    """``NewSilence`` whose author a signed-in principal may leave out."""

    author: Author | None = None  # type: ignore[assignment]


class ExtensionRequest(Extension):
    """``Extension`` whose author a signed-in principal may leave out."""

    author: Author | None = None  # type: ignore[assignment]


def silences_router(
    silences: SilenceStore,
    now_ms: Callable[[], int] = wall_ms,
    audit: AuditTrail | None = None,
) -> APIRouter:
    """``audit`` None: the changes are not recorded (a router served alone, in tests)."""
    router = APIRouter(prefix="/api/v1/silences")

    def audited(
        http: Request, action: str, before: dict | None, reason: str, now: int
    ) -> Audit | None:
        """The change's audit entry, made inside its transaction (gateway/silences.py)."""
        if audit is None:
            return None
        return lambda after: audit.entry(
            http, action, f"silence:{after.id}", _state(before), _state(after.to_dict(now)),
            reason,
        )  # fmt: skip

    @router.get("")
    async def list_silences(
        status: Status | None = None,
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = Query(None, max_length=19),
    ) -> dict[str, Any]:
        before = None
        if cursor is not None:
            if not (cursor.isascii() and cursor.isdigit()) or int(cursor) > MAX_ID:
                raise HTTPException(400, "cursor: not one this API handed out")
            before = int(cursor)
        now = now_ms()
        found, next_id = silences.page(status, limit, before, now)
        return {
            "silences": [s.to_dict(now) for s in found],
            "count": len(found),
            "next_cursor": None if next_id is None else str(next_id),
        }

    @router.get("/{silence_id}")
    async def get_silence(silence_id: SilenceId) -> dict[str, Any]:
        return _answer(lambda: silences.get(silence_id), now_ms())

    @router.post("", status_code=201)
    async def create_silence(body: SilenceRequest, http: Request) -> dict[str, Any]:
        request = body.model_copy(
            update={"author": recorded_author(http, body.author, BODY_AUTHOR)}
        )
        now = now_ms()
        entry = audited(http, "silence.create", None, request.reason, now)
        return _answer(lambda: silences.create(request, now, entry), now)

    @router.patch("/{silence_id}")
    async def extend_silence(
        silence_id: SilenceId, body: ExtensionRequest, http: Request
    ) -> dict[str, Any]:
        extension = body.model_copy(
            update={"author": recorded_author(http, body.author, BODY_AUTHOR)}
        )
        now = now_ms()
        before = _answer(lambda: silences.get(silence_id), now)
        entry = audited(http, "silence.extend", before, extension.reason, now)
        return _answer(lambda: silences.extend(silence_id, extension, now, entry), now)

    @router.delete("/{silence_id}")
    async def remove_silence(
        silence_id: SilenceId,
        http: Request,
        author: str | None = Query(None, min_length=1, max_length=64),
        reason: str = Query("", max_length=500),
    ) -> dict[str, Any]:
        who = recorded_author(http, author, ("query", "author")).strip()
        if not who:
            raise HTTPException(400, "author: who removes the silence is required")
        now = now_ms()
        before = _answer(lambda: silences.get(silence_id), now)
        entry = audited(http, "silence.remove", before, reason, now)
        return _answer(lambda: silences.remove(silence_id, who, reason, now, entry), now)

    return router


def _state(silence: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the audit log keeps of a silence: what it holds and when (its own history of
    changes is in the silence)."""
    if silence is None:
        return None
    return {key: silence[key] for key in AUDITED}


def _answer(action: Callable[[], Any], now: int) -> dict[str, Any]:
    try:
        return action().to_dict(now)
    except UnknownSilence as exc:
        raise HTTPException(404, str(exc)) from None
    except TooManySilences as exc:
        raise HTTPException(409, str(exc)) from None
    except SilenceError as exc:
        raise HTTPException(400, str(exc)) from None
