"""Silences kept in the store: made, listed, extended and removed by operators.

The ``silences`` table (gateway/store.py) survives restarts and keeps every silence after
it ends, as the history of who silenced what and why; removing one ends it now rather than
deleting it. Each change is written in its own transaction and then handed to
``on_change`` (the gateway gives it to the alert flow, whose releases commit with the next
batch): a crash in between loses nothing, as the flow reloads the silences at start and a
held alert keeps its own release time. A change's ``audit`` hook runs inside that
transaction with the silence as changed, so its audit entry (gateway/audit.py) commits with
it, and a hook that raises undoes the change.

At most ``SilenceLimits.max_in_force`` silences are in force (active or pending) at once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from gateway import store
from rules.alerting import SilenceLimits
from rules.silences import MAX_MS, Extension, NewSilence, Silence, SilenceError, Status

_COLUMNS = (
    "id, matchers_json, author, reason, starts_ms, ends_ms, created_ms, removed_ms, changes_json"
)
# Keyset pages of the history, newest first; the status is a condition on now.
_STATUS_SQL = {
    "pending": "removed_ms IS NULL AND starts_ms > :now AND ends_ms > :now",
    "active": "removed_ms IS NULL AND starts_ms <= :now AND ends_ms > :now",
    "expired": "(removed_ms IS NOT NULL OR ends_ms <= :now)",
}


# Runs inside a change's transaction with the silence as changed (its audit entry).
Audit = Callable[[Silence], object]


class TooManySilences(SilenceError):
    """The limit of silences in force is reached."""


class UnknownSilence(LookupError):
    pass


class SilenceStore:
    def __init__(
        self,
        conn: sqlite3.Connection,
        limits: SilenceLimits,
        on_change: Callable[[Silence, int], object],
    ) -> None:
        self._conn = conn
        self._limits = limits
        self._on_change = on_change

    def create(self, request: NewSilence, now_ms: int, audit: Audit | None = None) -> Silence:
        starts, ends = request.window(now_ms, self._limits)

        def insert() -> Silence:
            in_force = self._conn.execute(
                "SELECT count(*) FROM silences WHERE removed_ms IS NULL AND ends_ms > ?", (now_ms,)
            ).fetchone()[0]
            if in_force >= self._limits.max_in_force:
                raise TooManySilences(
                    f"{in_force} silences are in force, the most allowed"
                    " (alerting.silences.max_in_force): remove one first"
                )
            cursor = self._conn.execute(
                "INSERT INTO silences (matchers_json, author, reason, starts_ms, ends_ms,"
                " created_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (json.dumps(request.matchers, ensure_ascii=False), request.author,
                 request.reason, starts, ends, now_ms),
            )  # fmt: skip
            assert cursor.lastrowid is not None
            made = Silence(cursor.lastrowid, dict(request.matchers), request.author,
                           request.reason, starts, ends, now_ms)  # fmt: skip
            if audit is not None:
                audit(made)
            return made

        silence = store.in_transaction(self._conn, insert)
        self._on_change(silence, now_ms)
        return silence

    def extend(
        self, silence_id: int, extension: Extension, now_ms: int, audit: Audit | None = None
    ) -> Silence:
        silence = self.get(silence_id)
        ends = extension.new_end(silence, now_ms, self._limits)
        change = {"ms": now_ms, "author": extension.author, "reason": extension.reason,
                  "action": "extend", "ends_ms": ends}  # fmt: skip
        return self._update(silence, ends, None, change, now_ms, audit)

    def remove(
        self, silence_id: int, author: str, reason: str, now_ms: int, audit: Audit | None = None
    ) -> Silence:
        """End the silence now (a pending one at its start: it never holds anything)."""
        silence = self.get(silence_id)
        if silence.status(now_ms) == "expired":
            raise SilenceError(f"silence {silence_id} has already ended")
        ends = max(now_ms, silence.starts_ms)
        change = {"ms": now_ms, "author": author, "reason": reason, "action": "remove"}
        return self._update(silence, ends, now_ms, change, now_ms, audit)

    def _update(
        self,
        silence: Silence,
        ends_ms: int,
        removed_ms: int | None,
        change: dict[str, Any],
        now_ms: int,
        audit: Audit | None,
    ) -> Silence:
        changes = (*silence.changes, change)
        changed = Silence(silence.id, silence.matchers, silence.author, silence.reason,
                          silence.starts_ms, ends_ms, silence.created_ms, removed_ms,
                          changes)  # fmt: skip

        def update() -> None:
            self._conn.execute(
                "UPDATE silences SET ends_ms = ?, removed_ms = ?, changes_json = ? WHERE id = ?",
                (ends_ms, removed_ms, json.dumps(changes, ensure_ascii=False), silence.id),
            )
            if audit is not None:
                audit(changed)

        store.in_transaction(self._conn, update)
        self._on_change(changed, now_ms)
        return changed

    def get(self, silence_id: int) -> Silence:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM silences WHERE id = ?", (silence_id,)
        ).fetchone()
        if row is None:
            raise UnknownSilence(f"no silence {silence_id}")
        return _silence(row)

    def page(
        self, status: Status | None, limit: int, before_id: int | None, now_ms: int
    ) -> tuple[list[Silence], int | None]:
        """Up to ``limit`` silences, newest first, and the id to page on from (or None)."""
        clauses = [_STATUS_SQL[status]] if status is not None else []
        if before_id is not None:
            clauses.append("id < :before")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM silences{where} ORDER BY id DESC LIMIT :limit",
            {"now": now_ms, "before": before_id, "limit": limit + 1},
        ).fetchall()
        found = [_silence(row) for row in rows[:limit]]
        return found, (found[-1].id if len(rows) > limit else None)


def overlapping(
    conn: sqlite3.Connection, since_ms: int, until_ms: int = MAX_MS
) -> Iterator[Silence]:
    """Silences in force at some time in ``[since_ms, until_ms)``, removed ones with the end
    their removal gave them: what the alert flow needs after a start (``since_ms`` = now)
    or for a replay of that period."""
    query = f"SELECT {_COLUMNS} FROM silences WHERE ends_ms > ? AND starts_ms < ? ORDER BY id"
    for row in conn.execute(query, (since_ms, until_ms)):
        yield _silence(row)


def _silence(row: tuple) -> Silence:
    silence_id, matchers, author, reason, starts, ends, created, removed, changes = row
    return Silence(silence_id, json.loads(matchers), author, reason, starts, ends, created,
                   removed, tuple(json.loads(changes)))  # fmt: skip
