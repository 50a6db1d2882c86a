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

Beside the mapping of incidents to cases (``case_links``), the store keeps what the platform
said of each filed case (``case_statuses``): every status learnt by status sync's poll or a
signed webhook, with the platform's ``updated_at``, when the gateway learnt it and how, for
the console's incident page. The same status seen again (by the other source, a later
pass, a retried webhook) adds nothing, and neither does an older change learnt late. At
most ``MAX_STATUSES_PER_CASE`` are kept per case (the oldest go), and a case's statuses go
with its link when retention drops the incident (a trigger).

Where status sync's next pass lists from is kept too (``sync_cursors``, written after each
pass read to its last page): a gateway restarted after a long outage lists from there, not
from an adapter's look-back of a first start, so a case closed meanwhile is never missed.
It lives here, beside the case links it serves, so that every outbox store (SQLite, the
cluster's PostgreSQL, a test's file) has it.

An operator settles a parked command whose send was unclear (``maybe_filed``) by what the
platform shows (``resolve_found``: the case is there, or the evidence is on it;
``resolve_not_filed``: it is not, so the next send posts), and may requeue one parked
command alone (``requeue_one``). Each is one statement, or two in the caller's
transaction, so the API commits it with its audit entry (``gateway/api_outbox.py``).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

import psycopg

from case_bridge.platform import MAX_FIELD_CHARS, parse_zoned
from domain import CaseCommand

# A store failure, embedded (SQLite) or in the cluster (PostgreSQL, gateway/pg_store.py);
# gateway/store.py names it too.
DatabaseError = (sqlite3.Error, psycopg.Error)

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
    maybe_filed INTEGER NOT NULL DEFAULT 0  -- sent without a clear answer since
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(state, seq);
CREATE INDEX IF NOT EXISTS outbox_incident ON outbox(incident_id, seq);  -- a timeline's commands
CREATE TABLE IF NOT EXISTS case_links (
    incident_id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL,
    filed_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS case_links_case ON case_links(case_id);
CREATE TABLE IF NOT EXISTS case_statuses (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_at TEXT NOT NULL,  -- the platform's time of the change, as it wrote it
    updated_ms INTEGER,  -- the same read as a zoned ISO 8601 time; NULL when it is not one
    seen_ms INTEGER NOT NULL,  -- when the gateway learnt it
    source TEXT NOT NULL CHECK (source IN ('poll', 'webhook')),
    UNIQUE (case_id, status, updated_at)
);
CREATE INDEX IF NOT EXISTS case_statuses_case ON case_statuses(case_id, seq);
CREATE TABLE IF NOT EXISTS sync_cursors (
    name TEXT PRIMARY KEY,
    since TEXT NOT NULL  -- as the platform wrote it
);
CREATE TRIGGER IF NOT EXISTS case_links_forget_statuses AFTER DELETE ON case_links
WHEN NOT EXISTS (SELECT 1 FROM case_links WHERE case_id = OLD.case_id)
BEGIN DELETE FROM case_statuses WHERE case_id = OLD.case_id; END;
"""
SOURCES = ("poll", "webhook")
# Why a command after an incident's parked open is parked too: it has no case to go to.
NO_CASE = "no case for this incident: its open command was parked"
# A command as the API lists it; ``maybe_filed`` 1: sent without a clear answer since.
_LISTED = (
    "seq, command_id, incident_id, kind, state, attempts, last_error, created_ms,"
    " delivered_ms, maybe_filed"
)
MAX_STATUSES_PER_CASE = 50


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
        "INSERT INTO outbox (command_id, incident_id, kind, body, created_ms)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
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
    """Set before an open (or evidence) command goes to a platform that ignores idempotency
    keys (and committed before the send); cleared only when its answer says the platform
    did not act. While set, the case (or the evidence) is looked up before the command is
    sent again, where the platform allows."""
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
    """An operator fixed the cause (mapping, token): try parked commands again. One
    statement, so it joins the caller's transaction when one is open: the API commits it
    with its audit entry (gateway/audit.py)."""
    return conn.execute(
        "UPDATE outbox SET state = 'pending', next_attempt_ms = 0 WHERE state = 'parked'"
    ).rowcount


def requeue_one(conn: sqlite3.Connection, seq: int) -> bool:
    """One parked command back to pending (its mark, if any, kept: an unclear send is
    still looked up first); whether it was parked. Joins the caller's transaction."""
    return bool(
        conn.execute(
            "UPDATE outbox SET state = 'pending', next_attempt_ms = 0"
            " WHERE seq = ? AND state = 'parked'",
            (seq,),
        ).rowcount
    )


def requeue_caseless(conn: sqlite3.Connection, incident_id: str) -> int:
    """The incident's commands parked for want of its case (``NO_CASE``) back to pending,
    now that its case is known (its open delivered, or resolved by an operator); how many.
    One statement: joins the caller's transaction."""
    return conn.execute(
        "UPDATE outbox SET state = 'pending', next_attempt_ms = 0"
        " WHERE incident_id = ? AND state = 'parked' AND last_error = ?",
        (incident_id, NO_CASE),
    ).rowcount


def resolve_found(
    conn: sqlite3.Connection, seq: int, incident_id: str, case_id: str, now_ms: int
) -> bool:
    """An operator found what a parked, marked command sent on the platform: an open's
    case is linked to its incident (a link already there stays), and the command ends
    delivered, as a delivered send would; whether the row was parked and marked. Two
    statements for the caller's transaction (with its audit entry)."""
    done = conn.execute(
        "UPDATE outbox SET state = 'delivered', delivered_ms = ?, last_error = '',"
        " maybe_filed = 0 WHERE seq = ? AND state = 'parked' AND maybe_filed = 1",
        (now_ms, seq),
    ).rowcount
    if done:
        conn.execute(
            "INSERT INTO case_links (incident_id, case_id, filed_ms) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (incident_id, case_id, now_ms),
        )
    return bool(done)


def resolve_not_filed(conn: sqlite3.Connection, seq: int) -> bool:
    """An operator saw that a parked, marked command's unclear send did not reach the
    platform: the mark is cleared and the command pends, so the next send posts it;
    whether the row was parked and marked. Joins the caller's transaction."""
    return bool(
        conn.execute(
            "UPDATE outbox SET state = 'pending', next_attempt_ms = 0, maybe_filed = 0"
            " WHERE seq = ? AND state = 'parked' AND maybe_filed = 1",
            (seq,),
        ).rowcount
    )


def command_row(conn: sqlite3.Connection, seq: int) -> dict | None:
    """One command's row as ``listing`` gives it, with ``maybe_filed``; None if unknown."""
    cursor = conn.execute(f"SELECT {_LISTED} FROM outbox WHERE seq = ?", (seq,))
    names = [d[0] for d in cursor.description]
    row = cursor.fetchone()
    return None if row is None else dict(zip(names, row, strict=True))


def sync_cursor(conn: sqlite3.Connection, name: str) -> str | None:
    """Where status sync ``name``'s next pass lists from, as last saved; None: never."""
    row = conn.execute("SELECT since FROM sync_cursors WHERE name = ?", (name,)).fetchone()
    return row[0] if row else None


def save_sync_cursor(conn: sqlite3.Connection, name: str, since: str) -> None:
    """Keep where status sync ``name``'s next pass lists from (after a whole pass)."""
    with conn:
        conn.execute(
            "INSERT INTO sync_cursors (name, since) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET since = excluded.since",
            (name, since[:MAX_FIELD_CHARS]),
        )


def link_case(conn: sqlite3.Connection, incident_id: str, case_id: str, now_ms: int) -> None:
    with conn:
        conn.execute(
            "INSERT INTO case_links (incident_id, case_id, filed_ms) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
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


def record_status(
    conn: sqlite3.Connection,
    case_id: str,
    status: str,
    updated_at: str,
    source: str,
    now_ms: int,
) -> bool:
    """Keep a status the platform gave for a filed case (``source``: ``poll`` or
    ``webhook``); whether it was new. Not new: the case's latest kept status is the same,
    or is of a later change (both times read as zoned ISO 8601), or this very change is
    kept already. The values come from outside: cut to ``MAX_FIELD_CHARS`` (the adapters'
    own bound). One insert, then the trim to ``MAX_STATUSES_PER_CASE``; a crash between
    the two leaves one status over the bound until the case's next one."""
    if source not in SOURCES:
        raise ValueError(f"source: one of {', '.join(SOURCES)}, not {source!r}")
    status, updated_at = status[:MAX_FIELD_CHARS], updated_at[:MAX_FIELD_CHARS]
    added = conn.execute(
        "INSERT INTO case_statuses (case_id, status, updated_at, updated_ms, seen_ms,"
        " source) SELECT :case, :status, :updated_at, :updated_ms, :now, :source"
        " WHERE NOT EXISTS (SELECT 1 FROM (SELECT status, updated_ms FROM case_statuses"
        " WHERE case_id = :case ORDER BY seq DESC LIMIT 1) AS latest"
        " WHERE latest.status = :status OR latest.updated_ms > :updated_ms)"
        " ON CONFLICT DO NOTHING",
        {"case": case_id, "status": status, "updated_at": updated_at,
         "updated_ms": _zoned_ms(updated_at), "now": now_ms, "source": source},
    ).rowcount  # fmt: skip
    if added:
        conn.execute(
            "DELETE FROM case_statuses WHERE case_id = :case AND seq <= (SELECT seq FROM"
            " case_statuses WHERE case_id = :case ORDER BY seq DESC LIMIT 1 OFFSET :keep)",
            {"case": case_id, "keep": MAX_STATUSES_PER_CASE},
        )
    return bool(added)


def case_statuses(conn: sqlite3.Connection, case_id: str) -> list[dict]:
    """The statuses kept for a case, oldest first (at most ``MAX_STATUSES_PER_CASE``), each
    ``status``, ``updated_at``, ``seen_ms`` and ``source``."""
    return _statuses(conn, case_id, "seq")


def latest_status(conn: sqlite3.Connection, case_id: str) -> dict | None:
    """The newest status kept for a case, or None."""
    found = _statuses(conn, case_id, "seq DESC LIMIT 1")
    return found[0] if found else None


def _statuses(conn: sqlite3.Connection, case_id: str, order: str) -> list[dict]:
    cursor = conn.execute(
        "SELECT status, updated_at, seen_ms, source FROM case_statuses WHERE case_id = ?"
        f" ORDER BY {order}",
        (case_id,),
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _zoned_ms(text: str) -> int | None:
    """A zoned ISO 8601 time in epoch ms; None for any other text (compared as nothing)."""
    try:
        return round(parse_zoned(text).timestamp() * 1000)
    except ValueError:
        return None


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
        f"SELECT {_LISTED} FROM outbox WHERE (? IS NULL OR state = ?) AND (? IS NULL OR seq < ?)"
        " ORDER BY seq DESC LIMIT ?"
    )
    cursor = conn.execute(query, (state, state, before_seq, before_seq, limit))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
