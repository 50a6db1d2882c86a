"""Pages of the API's lists: at most ``limit`` rows and a cursor to the next page.

No list endpoint returns a whole table: a gateway that has refused a million junk messages
keeps a million dead letters until retention drops them. Pages are keyset pages (``WHERE
id < cursor``), not OFFSET ones, so every page costs the same and a row written while an
operator pages through is neither skipped nor repeated. Cursors are opaque strings: clients
pass back ``next_cursor`` as ``cursor`` until it is null.

Dead letters and outbox commands come newest first (the operator's question is "what went
wrong lately"); incidents in id order, as the state table keeps no time column to sort on.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Any

from case_bridge import outbox
from gateway import history


class BadCursor(ValueError):
    """A cursor this API did not hand out."""


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None


def dead_letters(
    conn: sqlite3.Connection, reason: str | None, limit: int, cursor: str | None
) -> Page:
    select = "SELECT id, received_ms, topic, device_id, reason, detail, payload FROM dead_letters"
    return _newest_first(conn, select, "id", {"reason": reason}, limit, cursor)


def outbox_commands(
    conn: sqlite3.Connection, state: str | None, limit: int, cursor: str | None
) -> Page:
    before = None if cursor is None else _row_id(cursor)
    rows = outbox.listing(conn, state, limit + 1, before_seq=before)
    return Page(rows[:limit], str(rows[limit - 1]["seq"]) if len(rows) > limit else None)


def incidents(conn: sqlite3.Connection, status: str | None, limit: int, cursor: str | None) -> Page:
    """Incidents from the store (closed ones are not kept in memory), with their case id
    and the case's latest status from the platform (``case_of``)."""
    query = "SELECT key, value FROM state WHERE ns = 'incident'"
    args: list[Any] = []
    if status is not None:
        query += " AND json_extract(value, '$.status') = ?"
        args.append(status)
    if cursor is not None:
        query += " AND key > ?"
        args.append(cursor)
    rows = conn.execute(query + " ORDER BY key LIMIT ?", (*args, limit + 1)).fetchall()
    page = [
        {**json.loads(value), **case_of(conn, incident_id)} for incident_id, value in rows[:limit]
    ]
    return Page(page, rows[limit - 1][0] if len(rows) > limit else None)


def case_of(conn: sqlite3.Connection, incident_id: str) -> dict[str, Any]:
    """The incident's ``case_id`` (None: not filed yet) and ``platform_status``, the latest
    status the platform gave for it (``status``, the platform's ``updated_at``, ``seen_ms``
    when the gateway learnt it, ``source`` poll or webhook; None: none yet)."""
    case_id = outbox.case_for(conn, incident_id)
    latest = None if case_id is None else outbox.latest_status(conn, case_id)
    return {"case_id": case_id, "platform_status": latest}


def _newest_first(
    conn: sqlite3.Connection,
    select: str,
    key: str,
    filters: dict[str, str | None],
    limit: int,
    cursor: str | None,
) -> Page:
    clauses = [(f"{column} = ?", value) for column, value in filters.items() if value is not None]
    if cursor is not None:
        clauses.append((f"{key} < ?", _row_id(cursor)))
    where = " WHERE " + " AND ".join(sql for sql, _ in clauses) if clauses else ""
    args = [value for _, value in clauses]
    result = conn.execute(f"{select}{where} ORDER BY {key} DESC LIMIT ?", (*args, limit + 1))
    names = [d[0] for d in result.description]
    rows = [dict(zip(names, row, strict=True)) for row in result.fetchall()]
    more = len(rows) > limit
    return Page(rows[:limit], str(rows[limit - 1][key]) if more else None)


def _row_id(cursor: str) -> int:
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
        raise BadCursor(cursor)
    return int(cursor)


# -- one device's telemetry: raw readings and downsampled buckets, each list paged ---------

_READINGS_CURSOR = re.compile(r"(?:(\d{1,16})\.(\d{1,9})|-):(?:(\d{1,16})\.(\d{1,12})|-)")


@dataclass(frozen=True)
class TelemetryPage:
    readings: list[dict[str, Any]]
    downsampled: list[dict[str, Any]]
    next_cursor: str | None


def telemetry(
    conn: sqlite3.Connection,
    device_id: str,
    since_ms: int,
    until_ms: int,
    limit: int,
    cursor: str | None,
) -> TelemetryPage:
    """One page of each of the two lists of ``[since_ms, until_ms]``, oldest first.

    The cursor holds a position in each list: for raw readings ``(ts, n)``, meaning every
    reading before ``ts`` and the first ``n`` at ``ts`` (by insertion) were returned; for
    buckets the ``(start, bucket_ms)`` of the last one returned; ``-`` for a list that is
    done. A reading that upkeep folds into a bucket between two pages may be missed from
    the raw list; it is counted in its bucket."""
    if cursor is None:
        raw_at: tuple[int, int] | None = (since_ms, 0)
        bucket_after: tuple[int, int] | None = None
    else:
        match = _READINGS_CURSOR.fullmatch(cursor)
        if match is None:
            raise BadCursor(cursor)
        ts, n, start, size = match.groups()
        raw_at = (int(ts), int(n)) if ts is not None else None
        bucket_after = (int(start), int(size)) if start is not None else None
        if raw_at is None and bucket_after is None:
            raise BadCursor(cursor)
    raw: list[dict[str, Any]] = []
    next_raw = None
    if raw_at is not None:
        raw, next_raw = _raw_page(conn, device_id, raw_at, until_ms, limit)
    buckets: list[dict[str, Any]] = []
    next_buckets = None
    if cursor is None or bucket_after is not None:
        buckets, next_buckets = _bucket_page(
            conn, device_id, since_ms, until_ms, limit, bucket_after
        )
    if next_raw is None and next_buckets is None:
        return TelemetryPage(raw, buckets, None)
    position = "{}.{}".format
    return TelemetryPage(
        raw,
        buckets,
        f"{position(*next_raw) if next_raw else '-'}:"
        f"{position(*next_buckets) if next_buckets else '-'}",
    )


def _raw_page(
    conn: sqlite3.Connection, device_id: str, at: tuple[int, int], until_ms: int, limit: int
) -> tuple[list[dict[str, Any]], tuple[int, int] | None]:
    ts, seen = at
    # A forged cursor may claim any n: never skip more rows than there are at ts, or one
    # small page would read the device's whole history on the event loop.
    seen = min(seen, history.count_at(conn, device_id, ts))
    rows = history.readings_between(conn, device_id, ts, until_ms, limit + seen + 1)
    skip = 0
    while skip < min(seen, len(rows)) and rows[skip]["ts"] == ts:
        skip += 1
    rows = rows[skip:]
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    last = page[-1]["ts"]
    at_last = sum(1 for row in page if row["ts"] == last) + (seen if last == ts else 0)
    return page, (last, at_last)


def _bucket_page(
    conn: sqlite3.Connection,
    device_id: str,
    since_ms: int,
    until_ms: int,
    limit: int,
    after: tuple[int, int] | None,
) -> tuple[list[dict[str, Any]], tuple[int, int] | None]:
    """Buckets overlapping ``[since_ms, until_ms]`` (first page), or those after ``after``
    in (start, size) order: fetched from ``after``'s start, which also returns the few
    longer buckets that began earlier and overlap it; those are dropped and made up for."""
    if after is None:
        buckets = history.downsampled_between(conn, device_id, since_ms, until_ms, limit + 1)
    else:
        earlier = 0
        while True:
            fetched = history.downsampled_between(
                conn, device_id, after[0], until_ms, limit + 1 + earlier
            )
            buckets = [b for b in fetched if (b["start"], b["bucket_s"] * 1000) > after]
            if len(fetched) < limit + 1 + earlier or len(buckets) > limit:
                break
            earlier = len(fetched) - len(buckets)
    if len(buckets) <= limit:
        return buckets, None
    last = buckets[limit - 1]
    return buckets[:limit], (last["start"], last["bucket_s"] * 1000)
