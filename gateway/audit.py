"""The audit log: every write made through the API (and ``citygw users``), who made it, with
what role, to what, the state before and after, and the reason given.

Kept in the store's ``audit`` table, append-only by the store itself: SQLite triggers abort
any UPDATE or DELETE of a row, so no code path of the gateway (retention included) and no
mistaken query can edit or drop an entry. Nothing expires it; a row is a few hundred bytes,
and a write happens when a person acts.

An entry commits in the same transaction as the write it describes (``insert``, through
``AuditTrail.entry``): the silence and threshold stores take a hook that runs inside their
own transaction (gateway/silences.py, gateway/threshold_versions.py); the other routes
open the transaction themselves, and the stores' own transactions join it
(``store.in_transaction``: users, tokens, sessions, the outbox's requeue). So a
write is never kept without its entry, nor an entry without its write: if the store refuses
the entry, the write rolls back with it and the request is answered 503. Actions that
write nothing else to the store (a refused sign-in, a backtest started) get an entry in
its own transaction (``record``, ``AuditTrail.write``), made before the action so that a
refused entry stops it.

Passwords and tokens are never recorded: callers pass only names, roles and states.
``before``/``after`` longer than ``MAX_STATE_CHARS`` as JSON are kept as a marker of their
size rather than cut into invalid JSON.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException, Request

from gateway.clock import wall_ms
from gateway.listings import BadCursor, Page
from gateway.principals import Principal
from gateway.store import DatabaseError, in_transaction

log = logging.getLogger(__name__)

MAX_STATE_CHARS = 16_384
MAX_REASON_CHARS = 500
MAX_TARGET_CHARS = 200


def insert(
    conn: sqlite3.Connection,
    principal: Principal | None,
    action: str,
    target: str,
    before: Any = None,
    after: Any = None,
    reason: str = "",
    now_ms: int | None = None,
) -> int:
    """Append one entry inside the transaction the caller has open, so that it commits or
    rolls back with the write it describes; its id. Refused outside a transaction: an entry
    committed apart from its write is what this module exists to prevent. ``principal``
    None: nobody signed in (a refused sign-in), recorded as ``anonymous`` with role and
    kind ``none``."""
    if not conn.in_transaction:
        raise RuntimeError("an audit entry is inserted inside its write's transaction")
    if principal is None:
        actor, role, kind = "anonymous", "none", "none"
    else:
        actor, role, kind = principal.name, principal.role, principal.kind
    row = (
        wall_ms() if now_ms is None else now_ms,
        actor,
        role,
        kind,
        action,
        target[:MAX_TARGET_CHARS],
        _state_json(before),
        _state_json(after),
        reason[:MAX_REASON_CHARS],
    )

    cursor = conn.execute(
        "INSERT INTO audit (ts_ms, actor, role, kind, action, target, before_json,"
        " after_json, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        row,
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _state_json(state: Any) -> str | None:
    if state is None:
        return None
    text = json.dumps(state, ensure_ascii=False, sort_keys=True, default=str)
    if len(text) > MAX_STATE_CHARS:
        return json.dumps({"truncated": True, "chars": len(text)})
    return text


class AuditTrail:
    """The audit log as the API's routers write to it: the store, and the principal the
    guard put on each request. A store that refuses an entry is answered 503 (nothing was
    changed: the write rolled back with it, or the action was not started)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def entry(
        self,
        request: Request,
        action: str,
        target: str,
        before: Any = None,
        after: Any = None,
        reason: str = "",
    ) -> int:
        """An entry inside the write's open transaction (``insert``)."""
        principal = getattr(request.state, "principal", None)
        with refused_as_503("the audit entry"):
            return insert(self.conn, principal, action, target, before, after, reason)

    def write(self, request: Request, *entry: Any, **named: Any) -> int:
        """``entry`` (the same arguments) in a transaction of its own, for an action that
        writes nothing else to the store: made before the action, so that a refused entry
        stops it."""
        with refused_as_503("the audit entry"):
            return in_transaction(self.conn, lambda: self.entry(request, *entry, **named))


@contextmanager
def refused_as_503(what: str, outcome: str = "nothing was changed; retry") -> Iterator[None]:
    """A store error inside becomes 503 naming ``what`` the store refused and the
    ``outcome`` (by default: the write it was part of rolled back), never the store's own
    words, which may quote a row."""
    try:
        yield
    except DatabaseError as exc:
        log.error("the store refused %s: %s", what, exc)
        raise HTTPException(503, f"the store refused {what}: {outcome}") from None


def iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def page(
    conn: sqlite3.Connection,
    limit: int,
    cursor: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> Page:
    """Entries newest first, keyset-paged like the API's other lists. ``action`` matches an
    action exactly or as its group: ``silence`` matches ``silence.create`` and the rest."""
    clauses: list[str] = []
    args: dict[str, Any] = {"limit": limit + 1}
    if actor is not None:
        clauses.append("actor = :actor")
        args["actor"] = actor
    if action is not None:
        clauses.append("(action = :action OR substr(action, 1, length(:action) + 1)"
                       " = :action || '.')")  # fmt: skip
        args["action"] = action
    if target is not None:
        clauses.append("target = :target")
        args["target"] = target
    if since_ms is not None:
        clauses.append("ts_ms >= :since")
        args["since"] = since_ms
    if until_ms is not None:
        clauses.append("ts_ms <= :until")
        args["until"] = until_ms
    if cursor is not None:
        if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
            raise BadCursor(cursor)
        clauses.append("id < :cursor")
        args["cursor"] = int(cursor)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(
        "SELECT id, ts_ms, actor, role, kind, action, target, before_json, after_json, reason"
        f" FROM audit{where} ORDER BY id DESC LIMIT :limit",
        args,
    ).fetchall()
    entries = [_entry(row) for row in rows[:limit]]
    return Page(entries, str(entries[-1]["id"]) if len(rows) > limit else None)


def _entry(row: tuple) -> dict[str, Any]:
    entry_id, ts_ms, actor, role, kind, action, target, before, after, reason = row
    return {
        "id": entry_id,
        "ts": iso_utc(ts_ms),
        "actor": actor,
        "role": role,
        "kind": kind,
        "action": action,
        "target": target,
        "before": None if before is None else json.loads(before),
        "after": None if after is None else json.loads(after),
        "reason": reason,
    }
