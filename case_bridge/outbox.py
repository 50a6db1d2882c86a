"""The durable outbox: every CaseCommand is a row before anything is sent.

The caller writes commands in the same SQLite transaction as the readings and rule state
that produced them, so a crash either loses both or keeps both. Delivery marks rows done
only after the platform answered; a crash between send and mark re-sends the same command
with the same idempotency key, which the platform answers with the case it already has.
A platform that ignores the key would file it twice, so before an open command goes to
one, its row is marked ``maybe_filed`` (committed before the send), and the mark is
cleared only by an answer that says the platform did not act. A row found marked (after a
timeout, a cut connection, an unreadable reply, or a crash between send and answer) is
looked up on the platform before it is sent again (``case_bridge/dispatcher.py``).

A row ends ``delivered``, ``parked`` (refused; an operator may requeue it), or, evidence for
a case that was already final, ``refiled`` (its alert was handed back to be filed as a new
case, so requeueing it would file twice) or ``refused_closed`` (the platform refused it and
nothing was filed again: a closure flag's evidence, or a clear, stays with the gateway's
incident). Only a pending row changes state.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from domain import CaseCommand

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id TEXT NOT NULL UNIQUE,
    incident_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending delivered parked refiled refused_closed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    delivered_ms INTEGER,
    maybe_filed INTEGER NOT NULL DEFAULT 0  -- an open sent without a clear answer since
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(state, seq);
CREATE INDEX IF NOT EXISTS outbox_incident ON outbox(incident_id, seq);  -- a timeline's commands
CREATE TABLE IF NOT EXISTS case_links (
    incident_id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL,
    filed_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS case_links_case ON case_links(case_id);
"""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A pending command; ``command`` is None (and ``problem`` says why) when its stored
    body no longer decodes, so that one bad row is parked instead of stopping delivery."""

    seq: int
    command_id: str
    incident_id: str
    attempts: int
    next_attempt_ms: int
    command: CaseCommand | None
    problem: str = ""
    maybe_filed: bool = False


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}
    if "maybe_filed" not in columns:  # an outbox from before lookups
        conn.execute("ALTER TABLE outbox ADD COLUMN maybe_filed INTEGER NOT NULL DEFAULT 0")


def enqueue(conn: sqlite3.Connection, command: CaseCommand, now_ms: int) -> None:
    """Add a command (inside the caller's transaction). A replayed command id is ignored."""
    conn.execute(
        "INSERT OR IGNORE INTO outbox (command_id, incident_id, kind, body, created_ms)"
        " VALUES (?, ?, ?, ?, ?)",
        (
            command.command_id,
            command.incident_id,
            str(command.kind),
            json.dumps(command.to_dict(), ensure_ascii=False),
            now_ms,
        ),
    )


def pending(conn: sqlite3.Connection, after_seq: int = 0, limit: int = 200) -> list[OutboxRow]:
    """Undelivered commands after ``after_seq`` in the order they were made (which is
    per-incident order); page on with the last row's ``seq``."""
    rows = conn.execute(
        "SELECT seq, command_id, incident_id, attempts, next_attempt_ms, body, maybe_filed"
        " FROM outbox WHERE state = 'pending' AND seq > ? ORDER BY seq LIMIT ?",
        (after_seq, limit),
    ).fetchall()
    return [_row(*row) for row in rows]


def _row(
    seq: int,
    command_id: str,
    incident_id: str,
    attempts: int,
    next_ms: int,
    body: str,
    maybe_filed: int,
) -> OutboxRow:
    try:
        command = CaseCommand.from_dict(json.loads(body))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
        return OutboxRow(
            seq, command_id, incident_id, attempts, next_ms, None, problem, bool(maybe_filed)
        )
    return OutboxRow(
        seq, command_id, incident_id, attempts, next_ms, command, maybe_filed=bool(maybe_filed)
    )


def mark_maybe_filed(conn: sqlite3.Connection, seq: int, maybe: bool) -> None:
    """Set before an open command goes to a platform that ignores idempotency keys (and
    committed before the send); cleared only when its answer says the platform did not
    act. While set, the case is looked up before the command is sent again."""
    with conn:
        conn.execute(
            "UPDATE outbox SET maybe_filed = ? WHERE seq = ? AND state = 'pending'",
            (int(maybe), seq),
        )


def mark_delivered(conn: sqlite3.Connection, seq: int, now_ms: int) -> None:
    with conn:
        conn.execute(
            "UPDATE outbox SET state = 'delivered', delivered_ms = ?, attempts = attempts + 1,"
            " last_error = '', maybe_filed = 0 WHERE seq = ? AND state = 'pending'",
            (now_ms, seq),
        )


def schedule_retry(conn: sqlite3.Connection, seq: int, at_ms: int, error: str) -> None:
    with conn:
        conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?, last_error = ?"
            " WHERE seq = ? AND state = 'pending'",
            (at_ms, error[:500], seq),
        )


def park(conn: sqlite3.Connection, seq: int, error: str) -> None:
    """Stop retrying a command the platform refuses; kept and visible for an operator."""
    with conn:
        conn.execute(
            "UPDATE outbox SET state = 'parked', attempts = attempts + 1, last_error = ?"
            " WHERE seq = ? AND state = 'pending'",
            (error[:500], seq),
        )


def mark_case_final(
    conn: sqlite3.Connection, seq: int, refiled: bool, reason: str, now_ms: int
) -> None:
    """The case was final on the platform: the row ends ``refiled`` when its alert was
    handed back to be filed anew, ``refused_closed`` when nothing was filed again.
    ``delivered_ms`` records when the row left the queue, as for a delivered one."""
    with conn:
        conn.execute(
            "UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = ?,"
            " delivered_ms = ? WHERE seq = ? AND state = 'pending'",
            ("refiled" if refiled else "refused_closed", reason[:500], now_ms, seq),
        )


def requeue_parked(conn: sqlite3.Connection) -> int:
    """An operator fixed the cause (mapping, token): try parked commands again."""
    with conn:
        return conn.execute(
            "UPDATE outbox SET state = 'pending', next_attempt_ms = 0 WHERE state = 'parked'"
        ).rowcount


def link_case(conn: sqlite3.Connection, incident_id: str, case_id: str, now_ms: int) -> None:
    with conn:
        conn.execute(
            "INSERT OR IGNORE INTO case_links (incident_id, case_id, filed_ms) VALUES (?, ?, ?)",
            (incident_id, case_id, now_ms),
        )


def case_for(conn: sqlite3.Connection, incident_id: str) -> str | None:
    row = conn.execute(
        "SELECT case_id FROM case_links WHERE incident_id = ?", (incident_id,)
    ).fetchone()
    return row[0] if row else None


def incident_for(conn: sqlite3.Connection, case_id: str) -> str | None:
    row = conn.execute(
        "SELECT incident_id FROM case_links WHERE case_id = ?", (case_id,)
    ).fetchone()
    return row[0] if row else None


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall()
    every = ("pending", "delivered", "parked", "refiled", "refused_closed")
    return {**dict.fromkeys(every, 0), **dict(rows)}


def oldest_pending_ms(conn: sqlite3.Connection) -> int | None:
    """When the oldest pending command was written (None: none pends), for the outbox's age
    on /metrics: a queue that is short but old means one incident's cases are stuck. The
    first pending row by ``seq`` (rows are written in time order), found on the index."""
    row = conn.execute(
        "SELECT created_ms FROM outbox WHERE state = 'pending' ORDER BY seq LIMIT 1"
    ).fetchone()
    return row[0] if row else None


def listing(
    conn: sqlite3.Connection, state: str | None, limit: int, before_seq: int | None = None
) -> list[dict]:
    """Commands newest first, at most ``limit``, older than ``before_seq`` when given (the
    caller pages with the last row's ``seq``)."""
    query = (
        "SELECT seq, command_id, incident_id, kind, state, attempts, last_error, created_ms,"
        " delivered_ms FROM outbox WHERE (? IS NULL OR state = ?) AND (? IS NULL OR seq < ?)"
        " ORDER BY seq DESC LIMIT ?"
    )
    cursor = conn.execute(query, (state, state, before_seq, before_seq, limit))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
