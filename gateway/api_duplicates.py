"""``/api/v1/duplicates``: the suspected duplicates (疑似重复) desk.

- ``GET /api/v1/duplicates?status=open|moot|merged|dismissed&limit=&cursor=`` — newest
  first, paged (``next_cursor``), each pair with its score, reasons and both incidents (case
  id, class, place, evidence summaries: gateway/duplicates.py). ``open``: both incidents
  are open; ``moot``: one closed before anybody decided (``moot_because`` says which and
  why), so there is nothing left to merge;
- ``GET /api/v1/duplicates/{id}``;
- ``POST /api/v1/duplicates/{id}/merge`` — ``{"into": <incident id>, "reason"}``: ``into`` is
  the pair's incident that is kept; the other is attached to its case and voided on the
  platform (``merge``: the gateway's ``Pipeline.merge_duplicate``, whose commit holds the
  commands, the pair marked merged and the audit entry);
- ``POST /api/v1/duplicates/{id}/dismiss`` — ``{"reason"}``: two problems, two cases.

400 names the field of a body that cannot be honoured (never echoing a value), 404 an
unknown pair, 409 a pair already decided or moot (with the incident that closed and why).
Writes need the operator role (the app's guard: every non-read method does). A merge the
store refuses is kept by the pipeline and committed with its next batch, audit entry
included (503 says so); a dismissal the store refuses changes nothing (503). Handlers are
``async``: they run on the gateway's loop, which orders every write, as the pipeline does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from domain import CaseCommand
from gateway import audit as audit_log
from gateway import duplicates
from gateway.api_bodies import json_body
from gateway.audit import MAX_REASON_CHARS, AuditTrail
from gateway.clock import wall_ms
from gateway.listings import BadCursor
from gateway.pipeline import StoreUnavailable
from gateway.store import in_transaction

MAX_BODY_BYTES = 4096
MAX_INCIDENT_ID = 128
PairId = Annotated[str, Path(min_length=1, max_length=2 * MAX_INCIDENT_ID + 1)]
Write = Callable[[sqlite3.Connection], object]
# (duplicate incident id, kept incident id, who, reason, writes to commit with the merge)
# → the case commands committed; ValueError when either incident is not open.
MergeDuplicate = Callable[[str, str, str, str, float, Sequence[Write]], list[CaseCommand]]


class MergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    into: str = Field(min_length=1, max_length=MAX_INCIDENT_ID)
    reason: str = Field("", max_length=MAX_REASON_CHARS)


class DismissRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=MAX_REASON_CHARS)


def duplicates_router(
    conn: sqlite3.Connection,
    merge: MergeDuplicate,
    audit: AuditTrail | None = None,
    now_ms: Callable[[], int] = wall_ms,
) -> APIRouter:
    """``audit`` None: decisions are not recorded in the audit log (a router served alone)."""
    router = APIRouter(prefix="/api/v1/duplicates")

    @router.get("")
    async def list_pairs(
        status: duplicates.Status | None = None,
        limit: int = Query(100, ge=1, le=duplicates.MAX_PAGE),
        cursor: str | None = Query(None, max_length=19),
    ) -> dict[str, Any]:
        try:
            found = duplicates.page(conn, status, limit, cursor)
        except BadCursor:
            raise HTTPException(400, "cursor: not one this API handed out") from None
        return {
            "duplicates": found.rows,
            "count": len(found.rows),
            "next_cursor": found.next_cursor,
        }

    @router.get("/{pair_id}")
    async def get_pair(pair_id: PairId) -> dict[str, Any]:
        return duplicates.view(conn, _pair(pair_id))

    @router.post("/{pair_id}/merge")
    async def merge_pair(pair_id: PairId, http: Request) -> dict[str, Any]:
        body = await json_body(http, MergeRequest, MAX_BODY_BYTES)
        pair = _open_pair(pair_id)
        ids = (pair["incident_id"], pair["other_incident_id"])
        if body.into not in ids:
            raise HTTPException(400, "into: must be one of the pair's two incidents")
        duplicate = ids[1] if body.into == ids[0] else ids[0]
        after = {"status": "merged", "into": body.into, "voided": duplicate}
        writes = [] if audit is None else [_entry(http, pair, after, body.reason)]
        try:
            commands = merge(duplicate, body.into, _who(http), body.reason, pair["score"], writes)
        except ValueError as exc:
            raise HTTPException(409, f"cannot merge: {exc}") from None
        except StoreUnavailable:
            raise HTTPException(
                503, "the store refused the commit: the merge is kept and is committed with"
                " the gateway's next batch",
            ) from None  # fmt: skip
        return {**duplicates.view(conn, _pair(pair_id)), "commands": len(commands)}

    @router.post("/{pair_id}/dismiss")
    async def dismiss_pair(pair_id: PairId, http: Request) -> dict[str, Any]:
        body = await json_body(http, DismissRequest, MAX_BODY_BYTES)
        pair = _open_pair(pair_id)
        at = now_ms()

        def dismiss() -> bool:
            if not duplicates.decide(conn, pair_id, "dismissed", _who(http), body.reason, at):
                return False
            if audit is not None:
                audit.entry(http, "duplicate.dismiss", f"duplicate:{pair_id}",
                            _state(pair), {"status": "dismissed"}, body.reason)  # fmt: skip
            return True

        if not in_transaction(conn, dismiss):  # decided or moot meanwhile
            why = duplicates.undecidable(_pair(pair_id))
            raise HTTPException(409, why or f"suspected duplicate {pair_id} changed meanwhile")
        return duplicates.view(conn, _pair(pair_id))

    def _pair(pair_id: str) -> dict[str, Any]:
        try:
            return duplicates.get(conn, pair_id)
        except duplicates.UnknownPair as exc:
            raise HTTPException(404, str(exc)) from None

    def _open_pair(pair_id: str) -> dict[str, Any]:
        pair = _pair(pair_id)
        if (why := duplicates.undecidable(pair)) is not None:
            raise HTTPException(409, why)
        return pair

    return router


def _entry(http: Request, pair: dict[str, Any], after: dict[str, Any], reason: str) -> Write:
    """The merge's audit entry, inserted inside the merge's commit (a refused entry fails
    that commit, which the pipeline keeps and retries whole)."""
    principal = getattr(http.state, "principal", None)
    target = f"duplicate:{pair['id']}"
    return lambda conn: audit_log.insert(
        conn, principal, "duplicate.merge", target, _state(pair), after, reason
    )


def _state(pair: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of a pair before its decision."""
    keys = ("status", "incident_id", "other_incident_id", "score")
    return {key: pair[key] for key in keys}


def _who(http: Request) -> str:
    principal = getattr(http.state, "principal", None)
    return principal.name if principal is not None else "anonymous"
