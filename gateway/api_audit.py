"""``GET /api/v1/audit``: the audit log (gateway/audit.py), newest first, paged and filtered.

Query: ``actor`` (exact), ``action`` (exact, or a group: ``silence`` for every
``silence.*``), ``target`` (exact, e.g. ``silence:12``, ``user:alice``), ``since`` and
``until`` (epoch ms or ISO 8601 with a zone, inclusive), ``limit`` (1-1000, default 100) and
``cursor`` (the previous page's ``next_cursor``). Each entry: ``id, ts`` (ISO UTC),
``actor, role, kind, action, target, before, after, reason``. Readable by every role; no
route writes or removes entries.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query

from gateway import audit
from gateway.api_params import instant_ms
from gateway.audit import MAX_TARGET_CHARS, AuditTrail
from gateway.listings import BadCursor

MAX_FILTER_CHARS = MAX_TARGET_CHARS


def audit_router(trail: AuditTrail) -> APIRouter:
    router = APIRouter(prefix="/api/v1/audit")

    @router.get("")
    async def entries(
        actor: str | None = Query(None, max_length=MAX_FILTER_CHARS),
        action: str | None = Query(None, max_length=MAX_FILTER_CHARS),
        target: str | None = Query(None, max_length=MAX_FILTER_CHARS),
        since: str | None = Query(None, max_length=40),
        until: str | None = Query(None, max_length=40),
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = Query(None, max_length=40),
    ) -> dict[str, Any]:
        since_ms = None if since is None else instant_ms("since", since, 0)
        until_ms = None if until is None else instant_ms("until", until, 0)
        try:
            page = audit.page(trail.conn, limit, cursor, actor, action, target, since_ms,
                              until_ms)  # fmt: skip
        except BadCursor:
            raise HTTPException(400, "cursor: not one this API handed out") from None
        return {"entries": page.rows, "count": len(page.rows), "next_cursor": page.next_cursor}

    return router
