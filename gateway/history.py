"""Telemetry history in the embedded store: range reads, and the upkeep that keeps it bounded.

Every accepted reading lands in ``readings`` (one row per sample, values as JSON). A gateway
that runs for years cannot keep them all, and nobody needs second-by-second tilt from last
spring, so ``upkeep`` folds raw readings older than ``raw_retention_days`` into
``readings_downsampled`` (per device, field and UTC-aligned bucket: count, sum, min, max and
the last value; a boolean counts its true samples in ``v_sum``) and deletes them, then drops
buckets older than ``downsampled_retention_days``. A reading is therefore always in exactly
one of the two tables, and a range read returns both parts.

Upkeep must never starve ingest, so it works in small transactions of at most
``batch_rows`` rows, pausing between them; each transaction deletes its rows with
``RETURNING`` and folds exactly what it deleted, so a crash at any point loses nothing and
counts nothing twice, and a re-run simply goes on. It leaves the newest reading in place
whatever its age: SQLite hands out ``max(rowid) + 1``, so emptying the table would reuse
rowids and fool the InfluxDB export cursor (gateway/influx_sink.py) into skipping rows.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, model_validator

from case_bridge.settings import RetryPolicy
from gateway import store

DAY_MS = 86_400_000


class InfluxSettings(BaseModel):
    """Where gateway/influx_sink.py exports and how hard it tries (kept here, with no
    influxdb-client import, so that loading the config stays cheap). The token needs write
    access to the bucket."""

    model_config = ConfigDict(extra="forbid")
    url: HttpUrl
    org: str = Field(min_length=1)
    bucket: str = Field(min_length=1)
    token: SecretStr = Field(min_length=1)  # never shown when the settings are printed
    batch_size: int = Field(5000, ge=1, le=50_000)  # InfluxDB's advice: 5000 lines a write
    # A part batch waits this long for more readings before it is sent.
    flush_interval_s: float = Field(1.0, gt=0)
    timeout_s: float = Field(10.0, gt=0)
    gzip: bool = True
    retry: RetryPolicy = RetryPolicy(initial_s=1.0, max_s=60.0)
    # After a 4xx other than 429 (a person has to fix something): try again this often.
    park_retry_s: float = Field(300.0, gt=0)


class HistorySettings(BaseModel):
    """How long telemetry stays in the embedded store, and where else it goes."""

    model_config = ConfigDict(extra="forbid")
    raw_retention_days: float = Field(14.0, gt=0)
    # UTC-aligned: 3600 gives hour buckets; 86400 gives days starting 00:00 UTC.
    downsample_bucket_s: int = Field(3600, ge=1)
    downsampled_retention_days: float = Field(730.0, gt=0)
    # Upkeep is cheap when caught up (two short queries); run it this often.
    upkeep_every_s: float = Field(600.0, gt=0)
    influxdb: InfluxSettings | None = None

    @model_validator(mode="after")
    def _buckets_outlive_raw(self) -> Self:
        if self.downsampled_retention_days < self.raw_retention_days:
            raise ValueError(
                "downsampled_retention_days must be at least raw_retention_days"
                " (buckets are made from readings once they leave raw retention)"
            )
        return self


def readings_between(
    conn: sqlite3.Connection, device_id: str, since_ms: int, until_ms: int, limit: int
) -> list[dict[str, Any]]:
    """Raw readings of one device with ``since_ms <= ts <= until_ms``, oldest first."""
    rows = conn.execute(
        "SELECT ts, seq, values_json, suspect FROM readings"
        " WHERE device_id = ? AND ts BETWEEN ? AND ? ORDER BY ts, rowid LIMIT ?",
        (device_id, since_ms, until_ms, limit),
    )
    return [
        {"ts": ts, "seq": seq, "values": json.loads(values), "suspect": bool(suspect)}
        for ts, seq, values, suspect in rows
    ]


def count_at(conn: sqlite3.Connection, device_id: str, ts: int) -> int:
    """How many raw readings of the device have exactly this timestamp (index lookup)."""
    query = "SELECT count(*) FROM readings WHERE device_id = ? AND ts = ?"
    return conn.execute(query, (device_id, ts)).fetchone()[0]


def downsampled_between(
    conn: sqlite3.Connection, device_id: str, since_ms: int, until_ms: int, limit: int
) -> list[dict[str, Any]]:
    """Buckets of one device overlapping ``[since_ms, until_ms]``, oldest first, at most
    ``limit`` of them, each with its fields' aggregates."""
    rows = conn.execute(
        "SELECT bucket_start, bucket_ms, field, is_bool, n, v_sum, v_min, v_max, last_value"
        " FROM readings_downsampled"
        " WHERE device_id = ? AND bucket_start <= ? AND bucket_start + bucket_ms > ?"
        " ORDER BY bucket_start, bucket_ms, field",
        (device_id, until_ms, since_ms),
    )
    buckets: list[dict[str, Any]] = []
    current: tuple[int, int] | None = None
    for start, bucket_ms, name, is_bool, n, v_sum, v_min, v_max, last in rows:
        if (start, bucket_ms) != current:
            if len(buckets) == limit:
                break
            current = (start, bucket_ms)
            buckets.append({"start": start, "bucket_s": bucket_ms // 1000, "fields": {}})
        if is_bool:
            summary = {"count": n, "true": int(v_sum), "last": bool(last)}
        else:
            summary = {"count": n, "min": v_min, "max": v_max, "mean": v_sum / n, "last": last}
        buckets[-1]["fields"][name] = summary
    return buckets


def upkeep(
    conn: sqlite3.Connection,
    settings: HistorySettings,
    now_ms: int,
    batch_rows: int = 500,
    pause_s: float = 0.02,
) -> dict[str, int]:
    """Fold raw readings past retention into buckets, then expire old buckets.

    Run it off the event loop with a connection of its own (``store.connect``), e.g. every
    ``settings.upkeep_every_s`` as ``asyncio.to_thread(upkeep, conn, settings, now_ms)``:
    each transaction holds SQLite's write lock for at most ``batch_rows`` rows, and the
    ``pause_s`` between transactions lets a waiting ingest commit take the lock instead of
    losing it again to the next fold. The SQL is portable: in cluster mode the same call
    takes a connection of the cluster's PostgreSQL store (``pg_store.connect``).
    """
    bucket_ms = settings.downsample_bucket_s * 1000
    # Whole buckets only, so that a bucket is normally folded once, complete.
    raw_cutoff = (now_ms - int(settings.raw_retention_days * DAY_MS)) // bucket_ms * bucket_ms
    bucket_cutoff = now_ms - int(settings.downsampled_retention_days * DAY_MS)
    report = {"folded": 0, "buckets_written": 0, "buckets_expired": 0, "transactions": 0}
    while True:
        folded, written = _fold_batch(conn, raw_cutoff, bucket_ms, batch_rows)
        if not folded:
            break
        report["folded"] += folded
        report["buckets_written"] += written
        report["transactions"] += 1
        time.sleep(pause_s)

    def expire() -> int:
        return _expire_batch(conn, bucket_cutoff, batch_rows)

    while expired := store.in_transaction(conn, expire):
        report["buckets_expired"] += expired
        report["transactions"] += 1
        time.sleep(pause_s)
    return report


@dataclass(slots=True)
class _Bucket:
    """One field's aggregate within one bucket, as folded from one batch of rows."""

    is_bool: bool
    n: int
    total: float
    low: float
    high: float
    last_ts: int
    last: float

    def add(self, ts: int, value: float) -> None:
        self.n += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        if ts >= self.last_ts:  # rows come in rowid order: on a tie the later one wins
            self.last_ts, self.last = ts, value


def _expire_batch(conn: sqlite3.Connection, cutoff_ms: int, batch_rows: int) -> int:
    """One batch of buckets past retention, picked by their unique key (the cluster's
    PostgreSQL table has no rowid): on SQLite each is a lookup in that key's index."""
    return conn.execute(
        f"DELETE FROM readings_downsampled WHERE ({_KEY}) IN (SELECT {_KEY}"
        " FROM readings_downsampled WHERE bucket_start < ? LIMIT ?)",
        (cutoff_ms, batch_rows),
    ).rowcount


_KEY = "device_id, bucket_start, bucket_ms, field"


def _fold_batch(
    conn: sqlite3.Connection, cutoff_ms: int, bucket_ms: int, batch_rows: int
) -> tuple[int, int]:
    """Delete up to ``batch_rows`` raw readings older than the cutoff and fold exactly those
    into their buckets, in one transaction; return (rows folded, bucket rows written).

    Only the oldest ``batch_rows`` rowids are looked at: readings arrive roughly in time
    order, so that window is where the old ones are, and it costs O(batch) rather than a
    scan of the whole table. A reading that arrived late with an old timestamp is folded
    once the rows before it are (at most one raw retention after it arrived).
    """

    def fold() -> tuple[int, int]:
        deleted = conn.execute(
            "DELETE FROM readings WHERE rowid IN (SELECT rowid FROM readings"
            " WHERE rowid < (SELECT max(rowid) FROM readings) ORDER BY rowid LIMIT ?)"
            " AND ts < ? RETURNING rowid, device_id, ts, values_json",
            (batch_rows, cutoff_ms),
        ).fetchall()
        buckets: dict[tuple[str, int, str], _Bucket] = {}
        for _rowid, device_id, ts, values_json in sorted(deleted):
            start = ts // bucket_ms * bucket_ms
            for name, value in json.loads(values_json).items():
                number = float(value)
                bucket = buckets.get((device_id, start, name))
                if bucket is None:
                    buckets[(device_id, start, name)] = _Bucket(
                        isinstance(value, bool), 1, number, number, number, ts, number
                    )
                else:
                    bucket.add(ts, number)
        conn.executemany(_UPSERT, _upsert_rows(buckets.items(), bucket_ms))
        return len(deleted), len(buckets)

    return store.in_transaction(conn, fold)


# Portable SQL, for SQLite and the cluster's PostgreSQL alike: the old row's columns named
# with their table (unqualified they are ambiguous there), CASE for the two-value min and max.
_OLD = "readings_downsampled"
_UPSERT = f"""
INSERT INTO readings_downsampled
    (device_id, bucket_start, bucket_ms, field, is_bool, n, v_sum, v_min, v_max, last_ts,
     last_value)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device_id, bucket_start, bucket_ms, field) DO UPDATE SET
    n = {_OLD}.n + excluded.n,
    v_sum = {_OLD}.v_sum + excluded.v_sum,
    v_min = CASE WHEN excluded.v_min < {_OLD}.v_min THEN excluded.v_min ELSE {_OLD}.v_min END,
    v_max = CASE WHEN excluded.v_max > {_OLD}.v_max THEN excluded.v_max ELSE {_OLD}.v_max END,
    last_value = CASE WHEN excluded.last_ts >= {_OLD}.last_ts THEN excluded.last_value
                      ELSE {_OLD}.last_value END,
    last_ts = CASE WHEN excluded.last_ts > {_OLD}.last_ts THEN excluded.last_ts
                   ELSE {_OLD}.last_ts END
"""


def _upsert_rows(
    buckets: Iterable[tuple[tuple[str, int, str], _Bucket]], bucket_ms: int
) -> Iterable[tuple[Any, ...]]:
    for (device_id, start, name), b in buckets:
        yield (device_id, start, bucket_ms, name, int(b.is_bool), b.n, b.total, b.low, b.high,
               b.last_ts, b.last)  # fmt: skip
