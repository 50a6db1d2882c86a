"""Retention for everything the gateway keeps besides telemetry: alerts, dead letters,
delivered case commands, closed incidents, decided suspected duplicates and evidence
pictures.

A gateway on a street runs for years, and junk traffic is the one thing anybody outside can
make it keep (a device spraying 10 KB ids once cost +335 MB of store in 10,000 messages).
Each kind of record therefore has an age limit, and dead letters and evidence also a size
limit, applied by ``upkeep`` in small transactions like the telemetry's (gateway/history.py),
so ingest commits get through in between. What is expired:

- ``alerts``: rows whose event time is older than ``alerts_days``;
- ``dead_letters``: older than ``dead_letters_days``, and beyond the newest
  ``dead_letters_max_rows``; the per-reason totals shown to operators stay
  (``rejection_totals``);
- ``outbox``: delivered (and re-filed) commands older than ``delivered_outbox_days``
  (pending and parked ones are never expired: they are work still to do);
- closed incidents whose last alert is older than ``closed_incidents_days``, with their
  case links (a late status for such a case is ignored, as for any closed incident);
- suspected-duplicate pairs no longer waiting for anybody, as long as closed incidents:
  merged and dismissed ones decided before that age, moot ones with the closed incident
  that made them moot (gateway/duplicates.py ``expire``); open pairs stay;
- evidence JPEGs older than ``evidence_days``, then the oldest until the folder is within
  ``evidence_max_mb`` (a case's picture URL then answers 404: platforms that keep evidence
  copy it when the case is filed); and drafts (``.NAME.PID.HEX.draft``, a file or link
  secret being written whole, gateway/evidence.py) older than an hour: a process killed
  mid-write leaves its draft, which nothing else would ever remove. Evidence is written in
  milliseconds, so a draft an hour old belongs to no live writer.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from gateway import duplicates, store

DAY_MS = 86_400_000
# Evidence files retention expires: pictures, and sensor excerpts (gateway/sensor_excerpts.py).
KEPT = (".jpg", ".json")
# A draft of gateway/evidence.py's _put or gateway/evidence_links.py's secret, and its age
# past which its writer is gone.
DRAFT = re.compile(r"\..+\.[0-9]+\.[0-9a-f]{16}\.draft")
DRAFT_MAX_AGE_S = 3600.0


class RetentionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alerts_days: float = Field(180.0, gt=0)
    dead_letters_days: float = Field(30.0, gt=0)
    # About 2 KB a row at most (payload, topic and detail are clipped): 200 MB.
    dead_letters_max_rows: int = Field(100_000, ge=100)
    delivered_outbox_days: float = Field(90.0, gt=0)
    closed_incidents_days: float = Field(365.0, gt=0)
    evidence_days: float = Field(90.0, gt=0)
    evidence_max_mb: float = Field(2048.0, gt=0)
    # Dead letters can arrive at line rate: trim this often.
    every_s: float = Field(60.0, gt=0)


def upkeep(
    conn: sqlite3.Connection,
    settings: RetentionSettings,
    evidence_dir: Path,
    now_ms: int,
    batch_rows: int = 1000,
    pause_s: float = 0.02,
) -> dict[str, int]:
    """Expire what is past retention; return how many of each were removed."""

    def cutoff(days: float) -> int:
        return now_ms - int(days * DAY_MS)

    steps = {
        "alerts": (_ALERTS, (cutoff(settings.alerts_days),)),
        "dead_letters": (_DEAD_LETTERS, (cutoff(settings.dead_letters_days),)),
        "dead_letters_over_cap": (_DEAD_LETTERS_OVER_CAP, (settings.dead_letters_max_rows,)),
        "outbox": (_DELIVERED, (cutoff(settings.delivered_outbox_days),)),
        "refiled_markers": (_REFILED_MARKERS, (cutoff(settings.delivered_outbox_days),)),
    }
    report = dict.fromkeys(steps, 0)
    for name, (sql, args) in steps.items():
        report[name] = _in_batches(
            conn, lambda sql=sql, args=args: conn.execute(sql, (*args, batch_rows)).rowcount,
            batch_rows, pause_s,
        )  # fmt: skip
    incidents_cutoff = cutoff(settings.closed_incidents_days)
    report["incidents"] = _in_batches(
        conn, lambda: _expire_incidents(conn, incidents_cutoff, batch_rows), batch_rows, pause_s
    )
    report["duplicates"] = _in_batches(
        conn, lambda: duplicates.expire(conn, incidents_cutoff, batch_rows), batch_rows, pause_s
    )
    evidence_cutoff_s = cutoff(settings.evidence_days) / 1000
    report["evidence"] = expire_evidence(
        evidence_dir, evidence_cutoff_s, int(settings.evidence_max_mb * 2**20),
        drafts_before_s=now_ms / 1000 - DRAFT_MAX_AGE_S,
    )  # fmt: skip
    return report


# Each deletes at most ``batch_rows`` (the last parameter) rows.
# Alerts arrive roughly in event-time order: look at the oldest rows only, O(batch).
_ALERTS = "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts ORDER BY id LIMIT ?2) AND ts < ?1"
_DEAD_LETTERS = (
    "DELETE FROM dead_letters WHERE id IN"
    " (SELECT id FROM dead_letters ORDER BY id LIMIT ?2) AND received_ms < ?1"
)
_DEAD_LETTERS_OVER_CAP = (
    "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters"
    " WHERE id <= (SELECT max(id) FROM dead_letters) - ?1 ORDER BY id LIMIT ?2)"
)
# Commands for a case already final left the queue too (re-filed as a new case, or refused
# with nothing filed again); all three kinds record when in delivered_ms.
_DELIVERED = (
    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE state IN"
    " ('delivered', 'refiled', 'refused_closed') AND delivered_ms < ?1 ORDER BY seq LIMIT ?2)"
)
# The markers that make a re-filing happen once (gateway/pipeline.py) live as long. Times
# read from JSON are cast: the cluster's json_extract gives text (gateway/pg_store.py).
_REFILED_MARKERS = (
    "DELETE FROM state WHERE ns = 'refiled' AND key IN (SELECT key FROM state WHERE"
    " ns = 'refiled' AND CAST(json_extract(value, '$.ms') AS BIGINT) < ?1 LIMIT ?2)"
)


def _in_batches(
    conn: sqlite3.Connection, delete_batch: Callable[[], int], batch_rows: int, pause_s: float
) -> int:
    """Run ``delete_batch`` in its own transactions until it removes less than a batch."""
    removed = 0
    while True:
        n = store.in_transaction(conn, delete_batch)
        removed += n
        if n < batch_rows:
            return removed
        time.sleep(pause_s)


def _expire_incidents(conn: sqlite3.Connection, before_ms: int, batch_rows: int) -> int:
    """One batch of closed incidents past retention, with their case links."""
    keys = [
        (key,)
        for (key,) in conn.execute(
            "SELECT key FROM state WHERE ns = 'incident'"
            " AND json_extract(value, '$.status') != 'open'"
            " AND CAST(json_extract(value, '$.last_ts') AS BIGINT) < ? LIMIT ?",
            (before_ms, batch_rows),
        )
    ]
    conn.executemany("DELETE FROM case_links WHERE incident_id = ?", keys)
    conn.executemany("DELETE FROM state WHERE ns = 'incident' AND key = ?", keys)
    return len(keys)


def expire_evidence(
    folder: Path, older_than_s: float, max_bytes: int, drafts_before_s: float | None = None
) -> int:
    """Delete pictures older than ``older_than_s`` (epoch seconds, by mtime), then the
    oldest until the folder holds at most ``max_bytes``, and drafts last changed before
    ``drafts_before_s`` (an hour ago by default); return how many were deleted."""
    try:
        entries = [e for e in os.scandir(folder) if e.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return 0
    if drafts_before_s is None:
        drafts_before_s = time.time() - DRAFT_MAX_AGE_S
    drafts = [e.path for e in entries if DRAFT.fullmatch(e.name) and _mtime(e) < drafts_before_s]
    for path in drafts:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    pictures = sorted(
        ((e.stat(follow_symlinks=False), e.path) for e in entries if e.name.endswith(KEPT)),
        key=lambda item: item[0].st_mtime,
    )
    total = sum(st.st_size for st, _ in pictures)
    deleted = len(drafts)
    for st, path in pictures:
        if st.st_mtime >= older_than_s and total <= max_bytes:
            break
        with contextlib.suppress(FileNotFoundError):  # removed by someone meanwhile
            os.unlink(path)
        total -= st.st_size
        deleted += 1
    return deleted


def _mtime(entry: os.DirEntry[str]) -> float:
    """When ``entry`` last changed; never, for one gone since the folder was read (a draft
    its writer just moved into place)."""
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return float("inf")
