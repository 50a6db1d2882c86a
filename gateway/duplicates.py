"""Suspected duplicates (疑似重复) as the store keeps them: read for the API, decided by
operators.

The incident book files a new incident whose likeness to an open one falls between the
two cut-offs as a case of its own and hands the pair over (``take_suspects``); the pipeline
stores it, open, in the commit of the incidents (``store.write_suspects``). An operator then
merges the pair (``merged``: one case is attached to the other and the duplicate voided on
the platform, gateway/pipeline.py ``merge_duplicate``) or dismisses it (``dismissed``: two
problems, two cases). A decision is final: ``decide`` changes only a pair still open, so two
operators deciding the same pair at once cannot both succeed.

A pair is ``open`` only while both its incidents are: once either closes (its case closed
on the platform, or it was merged into a third incident) there is nothing left to merge,
and the pair is ``moot``, listed with the incident that closed and why (``moot_because``);
it cannot be merged or dismissed. Moot is read, not stored: every read joins the pair with
its incidents' rows in the store's state table. Incidents close on many paths (platform
sync, clearing, another merge) in files that do not know about pairs, and a stored status
would be one more write each of them must make in step; the join is always right, costs two
primary-key lookups a pair, and leaves the table's stored status to operators' decisions.
An incident the store no longer holds (retention) counts as closed.

Retention (gateway/retention.py) removes decided pairs (merged, dismissed) once their
decision is older than the closed-incident retention, and moot ones with the closed
incident that made them moot (``expire``).

What a listing shows of each incident is bounded (``MAX_EVIDENCE_SHOWN`` of its sources'
latest alerts, each summary cut to ``SUMMARY_CHARS``), as is a page (``MAX_PAGE``).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Literal

from case_bridge import outbox
from gateway.listings import BadCursor, Page

Status = Literal["open", "moot", "merged", "dismissed"]
Decision = Literal["merged", "dismissed"]
MAX_PAGE = 500
MAX_EVIDENCE_SHOWN = 20
SUMMARY_CHARS = 200
# Each pair with the status and closed reason of both incidents (NULL: not in the store).
_SELECT = (
    "SELECT d.rowid, d.id, d.incident_id, d.other_incident_id, d.score, d.reasons_json, d.ts,"
    " d.status, d.decided_by, d.decided_at, d.reason,"
    " json_extract(a.value, '$.status'), json_extract(a.value, '$.closed_reason'),"
    " json_extract(b.value, '$.status'), json_extract(b.value, '$.closed_reason')"
    " FROM suspected_duplicates d"
    " LEFT JOIN state a ON a.ns = 'incident' AND a.key = d.incident_id"
    " LEFT JOIN state b ON b.ns = 'incident' AND b.key = d.other_incident_id"
)
_BOTH_OPEN = (
    "coalesce(json_extract(a.value, '$.status') = 'open'"
    " AND json_extract(b.value, '$.status') = 'open', FALSE)"
)
# The WHERE clause of each status as shown.
_SHOWN = {
    "open": f"d.status = 'open' AND {_BOTH_OPEN}",
    "moot": f"d.status = 'open' AND NOT {_BOTH_OPEN}",
    "merged": "d.status = 'merged'",
    "dismissed": "d.status = 'dismissed'",
}


class UnknownPair(LookupError):
    """No suspected-duplicate pair has this id."""


def page(conn: sqlite3.Connection, status: Status | None, limit: int, cursor: str | None) -> Page:
    """Pairs newest first (as stored), keyset-paged by row id like the API's other lists."""
    clauses, args = [], []
    if status is not None:
        clauses.append(_SHOWN[status])
    if cursor is not None:
        if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
            raise BadCursor(cursor)
        clauses.append("d.rowid < ?")
        args.append(int(cursor))
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(
        f"{_SELECT}{where} ORDER BY d.rowid DESC LIMIT ?", [*args, min(limit, MAX_PAGE) + 1]
    ).fetchall()
    shown = rows[: min(limit, MAX_PAGE)]
    pairs = [view(conn, _pair(row)) for row in shown]
    return Page(pairs, str(shown[-1][0]) if len(rows) > len(shown) else None)


def get(conn: sqlite3.Connection, pair_id: str) -> dict[str, Any]:
    """The pair (without its incidents) with its status as shown; ``UnknownPair`` if there
    is none."""
    row = conn.execute(f"{_SELECT} WHERE d.id = ?", (pair_id,)).fetchone()
    if row is None:
        raise UnknownPair(f"no suspected duplicate {pair_id!r}")
    return _pair(row)


def undecidable(pair: dict[str, Any]) -> str | None:
    """Why the pair can no longer be merged or dismissed; None while it is open."""
    if pair["status"] == "moot":
        closed = "; ".join(
            f"incident {c['incident_id']} is "
            + ("no longer kept" if c["status"] == "unknown" else c["status"])
            + (f" ({c['closed_reason']})" if c["closed_reason"] else "")
            for c in pair["moot_because"]
        )
        return f"suspected duplicate {pair['id']} is moot: {closed}"
    if pair["status"] != "open":
        return f"suspected duplicate {pair['id']} is {pair['status']} already"
    return None


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
    conn: sqlite3.Connection, pair_id: str, status: Decision, who: str, reason: str, at_ms: int
) -> bool:
    """Mark an open pair ``status`` (inside the caller's transaction); False when it was
    decided already or is moot."""
    changed = conn.execute(
        "UPDATE suspected_duplicates SET status = ?, decided_by = ?, decided_at = ?, reason = ?"
        " WHERE id = ? AND status = 'open' AND (SELECT count(*) FROM state WHERE"
        " ns = 'incident' AND key IN (incident_id, other_incident_id)"
        " AND json_extract(value, '$.status') = 'open') = 2",
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


def expire(conn: sqlite3.Connection, before_ms: int, batch_rows: int) -> int:
    """One batch (inside the caller's transaction) of pairs past retention: decided before
    ``before_ms``, or moot by an incident that is gone from the store or closed with its
    last alert before ``before_ms`` (the closed incident's own retention); how many."""
    gone_or_old = (
        "a.value IS NULL OR b.value IS NULL"
        " OR (json_extract(a.value, '$.status') != 'open'"
        " AND CAST(json_extract(a.value, '$.last_ts') AS BIGINT) < ?1)"
        " OR (json_extract(b.value, '$.status') != 'open'"
        " AND CAST(json_extract(b.value, '$.last_ts') AS BIGINT) < ?1)"
    )
    return conn.execute(
        "DELETE FROM suspected_duplicates WHERE rowid IN (SELECT d.rowid FROM"
        " suspected_duplicates d"
        " LEFT JOIN state a ON a.ns = 'incident' AND a.key = d.incident_id"
        " LEFT JOIN state b ON b.ns = 'incident' AND b.key = d.other_incident_id"
        " WHERE (d.status IN ('merged', 'dismissed') AND d.decided_at < ?1)"
        f" OR (d.status = 'open' AND ({gone_or_old})) LIMIT ?2)",
        (before_ms, batch_rows),
    ).rowcount


def _pair(row: tuple) -> dict[str, Any]:
    """A row of ``_SELECT`` as the API shows it: an undecided pair is ``open`` while both
    incidents are, ``moot`` otherwise, with each incident that is not (``moot_because``)."""
    _, pair_id, incident_id, other_id, score, reasons, ts, status, by, at, reason = row[:11]
    closed = []
    if status == "open":
        for side, shown, why in ((incident_id, *row[11:13]), (other_id, *row[13:15])):
            if shown != "open":
                closed.append({"incident_id": side, "status": shown or "unknown",
                               "closed_reason": why or ""})  # fmt: skip
    return {
        "id": pair_id,
        "incident_id": incident_id,
        "other_incident_id": other_id,
        "score": score,
        "reasons": json.loads(reasons),
        "ts": ts,
        "status": "moot" if closed else status,
        "moot_because": closed,
        "decided_by": by,
        "decided_at": at,
        "reason": reason,
    }
