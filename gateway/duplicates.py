"""Suspected duplicates (疑似重复) as the store keeps them: read for the API, decided by
operators.

The incident book files a new incident whose likeness to an open one falls between the
two cut-offs as a case of its own and hands the pair over (``take_suspects``); the pipeline
stores it, open, in the commit of the incidents (``store.write_suspects``). An operator then
merges the pair (``merged``: one case is attached to the other and the duplicate voided on
the platform, gateway/pipeline.py ``merge_duplicate``) or dismisses it (``dismissed``: two
problems, two cases). A decision is final: ``decide`` changes only a pair still open, so two
operators deciding the same pair at once cannot both succeed.

What a listing shows of each incident is bounded (``MAX_EVIDENCE_SHOWN`` of its sources'
latest alerts, each summary cut to ``SUMMARY_CHARS``), as is a page (``MAX_PAGE``).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Literal

from case_bridge import outbox
from gateway.listings import BadCursor, Page

Status = Literal["open", "merged", "dismissed"]
MAX_PAGE = 500
MAX_EVIDENCE_SHOWN = 20
SUMMARY_CHARS = 200
_COLUMNS = (
    "rowid, id, incident_id, other_incident_id, score, reasons_json, ts, status, decided_by,"
    " decided_at, reason"
)


class UnknownPair(LookupError):
    """No suspected-duplicate pair has this id."""


def page(conn: sqlite3.Connection, status: Status | None, limit: int, cursor: str | None) -> Page:
    """Pairs newest first (as stored), keyset-paged by row id like the API's other lists."""
    clauses, args = [], []
    if status is not None:
        clauses.append("status = ?")
        args.append(status)
    if cursor is not None:
        if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
            raise BadCursor(cursor)
        clauses.append("rowid < ?")
        args.append(int(cursor))
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM suspected_duplicates{where} ORDER BY rowid DESC LIMIT ?",
        [*args, min(limit, MAX_PAGE) + 1],
    ).fetchall()
    shown = rows[: min(limit, MAX_PAGE)]
    pairs = [view(conn, _pair(row)) for row in shown]
    return Page(pairs, str(shown[-1][0]) if len(rows) > len(shown) else None)


def get(conn: sqlite3.Connection, pair_id: str) -> dict[str, Any]:
    """The stored pair (without its incidents); ``UnknownPair`` if there is none."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM suspected_duplicates WHERE id = ?", (pair_id,)
    ).fetchone()
    if row is None:
        raise UnknownPair(f"no suspected duplicate {pair_id!r}")
    return _pair(row)


def view(conn: sqlite3.Connection, pair: dict[str, Any]) -> dict[str, Any]:
    """The pair with both incidents as an operator compares them."""
    return {
        **pair,
        "incident": incident_view(conn, pair["incident_id"]),
        "other": incident_view(conn, pair["other_incident_id"]),
    }


def incident_view(conn: sqlite3.Connection, incident_id: str) -> dict[str, Any]:
    """One incident's case id, class, place, status and its sources' latest alerts; an
    incident the store no longer holds (retention) shows as ``unknown``."""
    row = conn.execute(
        "SELECT value FROM state WHERE ns = 'incident' AND key = ?", (incident_id,)
    ).fetchone()
    case_id = outbox.case_for(conn, incident_id)
    if row is None:
        return {"id": incident_id, "status": "unknown", "case_id": case_id}
    incident = json.loads(row[0])
    firing = list((incident.get("firing") or {}).values())
    evidence = [
        {
            "key": alert.get("key"),
            "source_id": alert.get("source_id"),
            "origin": alert.get("origin"),
            "class_code": alert.get("class_code"),
            "ts": alert.get("ts"),
            "summary": str(alert.get("summary", ""))[:SUMMARY_CHARS],
        }
        for alert in firing[-MAX_EVIDENCE_SHOWN:]
    ]
    return {
        "id": incident_id,
        "status": incident.get("status"),
        "closed_reason": incident.get("closed_reason", ""),
        "case_id": case_id,
        "class_code": incident.get("class_code"),
        "priority": incident.get("priority"),
        "location": incident.get("location"),
        "opened_ts": incident.get("opened_ts"),
        "last_ts": incident.get("last_ts"),
        "sources": len(incident.get("alert_keys") or ()),
        "evidence": evidence,
    }


def decide(
    conn: sqlite3.Connection, pair_id: str, status: Status, who: str, reason: str, at_ms: int
) -> bool:
    """Mark an open pair ``status`` (inside the caller's transaction); False when it was
    decided already."""
    changed = conn.execute(
        "UPDATE suspected_duplicates SET status = ?, decided_by = ?, decided_at = ?, reason = ?"
        " WHERE id = ? AND status = 'open'",
        (status, who, at_ms, reason, pair_id),
    ).rowcount
    return changed == 1


def mark_merged(
    conn: sqlite3.Connection, incident_id: str, into_id: str, who: str, reason: str, at_ms: int
) -> int:
    """Every open pair of these two incidents, either way round, is merged (inside the
    caller's transaction: the merge's commit); how many."""
    return conn.execute(
        "UPDATE suspected_duplicates SET status = 'merged', decided_by = ?, decided_at = ?,"
        " reason = ? WHERE status = 'open' AND ((incident_id = ? AND other_incident_id = ?)"
        " OR (incident_id = ? AND other_incident_id = ?))",
        (who, at_ms, reason, incident_id, into_id, into_id, incident_id),
    ).rowcount


def _pair(row: tuple) -> dict[str, Any]:
    _, pair_id, incident_id, other_id, score, reasons, ts, status, by, at, reason = row
    return {
        "id": pair_id,
        "incident_id": incident_id,
        "other_incident_id": other_id,
        "score": score,
        "reasons": json.loads(reasons),
        "ts": ts,
        "status": status,
        "decided_by": by,
        "decided_at": at,
        "reason": reason,
    }
