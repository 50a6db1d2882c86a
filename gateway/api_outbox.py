"""``/api/v1/outbox/{seq}/…``: an operator's way out for one parked case command.

A command sent to a platform that keeps no idempotency keys, without a clear answer, is
marked ``maybe_filed`` and looked up before it is sent again (``case_bridge/dispatcher.py``).
Where the platform cannot be asked (a mapping without ``find_case``, a refused lookup, a
possible match, evidence under ``evidence_after_unclear: park``), the command parks with
its mark, and a requeue parks it again: only a person who looks at the platform can say.

- ``POST /api/v1/outbox/{seq}/resolve`` — ``{"case_id", "reason"}``: the operator found it
  on the platform (the case an open filed, or the case holding the evidence): the case is
  linked to the incident and the command ends delivered, as a delivered send would, and
  the incident's commands that waited for the case pend again
  (``outbox.requeue_caseless``). A case another incident already holds is refused (409
  naming that incident): two incidents on one case would leave the second never closed
  and its evidence on the first's case; two incidents of one problem are merged on the
  duplicates desk instead. ``{"not_filed": true, "reason"}``: it is not there: the
  mark is cleared and the command pends, so its next send posts. Only for a parked command
  carrying the mark.
- ``POST /api/v1/outbox/{seq}/requeue`` — ``{"reason"}``: one parked command back to
  pending (its mark kept), beside ``POST /api/v1/outbox/requeue`` for all of them.

400 names the field of a body that cannot be honoured (never echoing a value), 404 an
unknown command, 409 a command in no state for it (with its state). Writes need the
operator role (the app's guard: every non-read method does). Each change commits with its
audit entry (``gateway/audit.py``) in one transaction; a store that refuses any read or
write of it changes nothing (503). Handlers are ``async``: they run on the gateway's loop,
which orders every write, as the dispatcher does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from case_bridge import outbox
from case_bridge.platform import usable_case_id
from gateway.api_bodies import json_body
from gateway.audit import MAX_REASON_CHARS, AuditTrail, refused_as_503
from gateway.clock import wall_ms
from gateway.store import in_transaction

MAX_BODY_BYTES = 2048
MAX_SEQ = 2**63 - 1
Seq = Annotated[int, Path(ge=1, le=MAX_SEQ)]
# What a 503 says the store refused: the command's read, its change or its audit entry.
STORE_WORK = "the command's change"
Reason = Annotated[str, Field(min_length=1, max_length=MAX_REASON_CHARS, pattern=r"\S")]


class ResolveRequest(BaseModel):
    """Exactly one of ``case_id`` (found on the platform) and ``not_filed`` (true)."""

    model_config = ConfigDict(extra="forbid")
    case_id: str | None = Field(None, max_length=64)
    not_filed: Literal[True] | None = None
    reason: Reason

    @field_validator("case_id")
    @classmethod
    def _a_case_id(cls, value: str | None) -> str | None:
        if value is not None and usable_case_id(value) is None:
            raise ValueError("not a case id (letters, digits and _.:- , at most 64)")
        return value

    @model_validator(mode="after")
    def _one_answer(self) -> ResolveRequest:
        if (self.case_id is None) == (self.not_filed is None):
            raise ValueError("give either case_id or not_filed: true")
        return self


class RequeueRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason


def outbox_router(
    conn: sqlite3.Connection,
    audit: AuditTrail,
    wake: Callable[[], None],
    now_ms: Callable[[], int] = wall_ms,
) -> APIRouter:
    """``wake``: the dispatcher's, so a command made pending goes at once."""
    router = APIRouter(prefix="/api/v1/outbox")

    @router.post("/{seq}/resolve")
    async def resolve(seq: Seq, http: Request) -> dict[str, Any]:
        body = await json_body(http, ResolveRequest, MAX_BODY_BYTES)
        at = now_ms()

        def resolve_audited(row: dict[str, Any]) -> bool:
            if body.case_id is not None:
                _goes_to(row, body.case_id)  # in the transaction: no link can come between
                done = outbox.resolve_found(conn, seq, row["incident_id"], body.case_id, at)
                if done and row["kind"] == "open":
                    outbox.requeue_caseless(conn, row["incident_id"])
                after = {"state": "delivered", "case_id": body.case_id}
            else:
                done = outbox.resolve_not_filed(conn, seq)
                after = {"state": "pending", "maybe_filed": False}
            if done:
                audit.entry(http, "outbox.resolve", f"outbox:{seq}", _state(row), after,
                            body.reason)  # fmt: skip
            return done

        with refused_as_503(STORE_WORK):
            row = _marked_parked(seq)
            if not in_transaction(conn, lambda: resolve_audited(row)):
                raise HTTPException(409, f"command {seq} changed meanwhile")
        return _changed(seq)

    @router.post("/{seq}/requeue")
    async def requeue_one(seq: Seq, http: Request) -> dict[str, Any]:
        body = await json_body(http, RequeueRequest, MAX_BODY_BYTES)

        def requeue_audited(row: dict[str, Any]) -> bool:
            done = outbox.requeue_one(conn, seq)
            if done:
                audit.entry(http, "outbox.requeue", f"outbox:{seq}", _state(row),
                            {"state": "pending"}, body.reason)  # fmt: skip
            return done

        with refused_as_503(STORE_WORK):
            row = _row(seq)
            if row["state"] != "parked":
                raise HTTPException(
                    409, f"command {seq} is {row['state']}: only a parked one pends again"
                )
            if not in_transaction(conn, lambda: requeue_audited(row)):
                raise HTTPException(409, f"command {seq} changed meanwhile")
        return _changed(seq)

    def _changed(seq: int) -> dict[str, Any]:
        """After the commit: the dispatcher woken, and the command as it now is."""
        wake()
        with refused_as_503("reading the command back", "the change was made"):
            return {"command": outbox.command_row(conn, seq)}

    def _row(seq: int) -> dict[str, Any]:
        row = outbox.command_row(conn, seq)
        if row is None:
            raise HTTPException(404, f"no case command {seq}")
        return row

    def _marked_parked(seq: int) -> dict[str, Any]:
        row = _row(seq)
        if row["state"] != "parked" or not row["maybe_filed"]:
            raise HTTPException(
                409,
                f"command {seq} is {row['state']}"
                f"{'' if row['maybe_filed'] else ', sent with a clear answer'}: only a parked"
                " command whose send was unclear is resolved",
            )
        return row

    def _goes_to(row: dict[str, Any], case_id: str) -> None:
        """The incident's case, if it has one, is the only case its command can be on; an
        open's case is no other incident's."""
        incident = row["incident_id"]
        linked = outbox.case_for(conn, incident)
        if linked is None and row["kind"] != "open":
            raise HTTPException(409, f"incident {incident} has no case yet")
        if linked is not None and linked != case_id:
            raise HTTPException(
                409, f"incident {incident} is filed as case {linked}, not that case"
            )
        holder = outbox.incident_for(conn, case_id)
        if linked is None and holder is not None:
            raise HTTPException(
                409,
                f"case {case_id} is incident {holder}'s: if incident {incident} is the same"
                " problem, merge the two on the duplicates desk (/api/v1/duplicates)",
            )

    return router


def _state(row: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of a command before the change."""
    keys = ("command_id", "incident_id", "kind", "state", "maybe_filed", "last_error")
    return {key: row[key] for key in keys}
