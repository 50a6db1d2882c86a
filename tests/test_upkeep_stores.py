"""Retention (gateway/retention.py) and telemetry downsampling (gateway/history.py) on both
stores: the same records of known ages on the embedded SQLite store and on the cluster's
PostgreSQL (gateway/pg_store.py), one upkeep each, and exactly the same rows removed, kept
and written on both. Batches of two rows, so every step runs over several transactions and
stops where a batch comes back short."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import store_backends

from gateway import history, retention
from gateway.history import HistorySettings
from gateway.retention import RetentionSettings

DAY = 86_400_000
HOUR = 3_600_000
MINUTE = 60_000
T0 = 488_000 * HOUR  # an hour boundary, the oldest raw readings' bucket
NOW = T0 + 5 * DAY + 30 * MINUTE

server = store_backends.server  # fixtures: a store of either kind
conn = store_backends.conn


def ago(days: float) -> int:
    return NOW - int(days * DAY)


def fill(conn: Any, rows: dict[str, list[tuple]]) -> None:
    """Insert ``rows`` (table: rows of all its columns but the key) in one transaction."""
    columns = {
        "alerts": "alert_key, state, ts, incident_id, body",
        "dead_letters": "received_ms, topic, device_id, reason, detail, payload",
        "outbox": "command_id, incident_id, kind, body, state, created_ms, delivered_ms",
        "state": "ns, key, value",
        "case_links": "incident_id, case_id, filed_ms",
        "case_statuses": "case_id, status, updated_at, seen_ms, source",
        "suspected_duplicates": "id, incident_id, other_incident_id, score, reasons_json, ts,"
        " status, decided_at",
        "readings": "device_id, ts, seq, values_json",
        "readings_downsampled": "device_id, bucket_start, bucket_ms, field, is_bool, n, v_sum,"
        " v_min, v_max, last_ts, last_value",
    }
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        for table, values in rows.items():
            marks = ", ".join("?" * len(values[0]))
            sql = f"INSERT INTO {table} ({columns[table]}) VALUES ({marks})"
            for row in values:  # one at a time: rowids in the order given
                conn.execute(sql, row)


def select(conn: Any, sql: str) -> list[tuple]:
    return [tuple(row) for row in conn.execute(sql).fetchall()]


def incident(key: str, status: str, last_days: float) -> tuple[str, str, str]:
    """An incident's state row: only what retention reads of it."""
    return "incident", key, json.dumps({"status": status, "last_ts": ago(last_days)})


def test_retention_removes_the_same_records_on_both_stores(conn: Any, tmp_path: Path) -> None:
    settings = RetentionSettings(
        alerts_days=10, dead_letters_days=5, dead_letters_max_rows=100,
        delivered_outbox_days=3, closed_incidents_days=20, evidence_days=30,
    )  # fmt: skip
    alert_days = [11, 12, 1, 2, 15, 1]  # the 15-day-old one came late: behind newer ids
    dead_days = [6, 6, 6] + [1] * 102
    outbox = [("delivered", 4), ("refiled", 5), ("refused_closed", 10), ("delivered", 1),
              ("pending", None), ("parked", None), ("delivered", 2)]  # fmt: skip
    pairs = [("D1", "INC-3", "INC-2", "merged", ago(25)),  # decided long ago
             ("D2", "INC-3", "INC-2", "dismissed", ago(5)),
             ("D3", "INC-3", "INC-2", "open", None),  # INC-2 closed, but recently
             ("D4", "INC-3", "INC-1", "open", None),  # INC-1 expires first
             ("D5", "INC-9", "INC-3", "open", None)]  # INC-9 is gone already  # fmt: skip
    fill(conn, {
        "alerts": [(f"k{i}", "firing", ago(d), "INC-1", "{}") for i, d in enumerate(alert_days)],
        "dead_letters": [(ago(d), "t", "dev", "bad_json", "", "x") for d in dead_days],
        "outbox": [(f"cmd-{i}", "INC-1", "open", "{}", state, ago(30),
                    None if days is None else ago(days))
                   for i, (state, days) in enumerate(outbox)],
        "state": [("refiled", "r1", json.dumps({"ms": ago(4)})),
                  ("refiled", "r2", json.dumps({"ms": ago(1)})),
                  ("refiled", "r3", json.dumps({"ms": ago(10)})),
                  incident("INC-1", "closed", 25), incident("INC-2", "closed", 5),
                  incident("INC-3", "open", 30), incident("INC-5", "closed", 40)],
        "case_links": [("INC-1", "C-1", ago(50)), ("INC-5", "C-1", ago(50)),
                       ("INC-2", "C-2", ago(9)), ("INC-3", "C-3", ago(30))],
        "case_statuses": [(case, "accepted", "2025-01-01T00:00:00Z", ago(9), "poll")
                          for case in ("C-1", "C-2", "C-3")],
        "suspected_duplicates": [(pair_id, a, b, 0.9, "[]", ago(30), status, decided)
                                 for pair_id, a, b, status, decided in pairs],
    })  # fmt: skip
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    for name, days in (("old.jpg", 31), ("new.jpg", 1), ("old.txt", 31)):
        (evidence / name).write_bytes(b"x")
        os.utime(evidence / name, (ago(days) / 1000, ago(days) / 1000))

    report = retention.upkeep(conn, settings, evidence, NOW, batch_rows=2, pause_s=0)

    assert report == {
        "alerts": 2, "dead_letters": 3, "dead_letters_over_cap": 2, "outbox": 3,
        "refiled_markers": 2, "incidents": 2, "duplicates": 3, "evidence": 1,
    }  # fmt: skip
    assert select(conn, "SELECT id FROM alerts ORDER BY id") == [(3,), (4,), (5,), (6,)]
    assert select(conn, "SELECT count(*), min(id), max(id) FROM dead_letters") == [(100, 6, 105)]
    assert select(conn, "SELECT seq, state FROM outbox ORDER BY seq") == [
        (4, "delivered"), (5, "pending"), (6, "parked"), (7, "delivered")]  # fmt: skip
    assert select(conn, "SELECT ns, key FROM state ORDER BY ns, key") == [
        ("incident", "INC-2"), ("incident", "INC-3"), ("refiled", "r2")]  # fmt: skip
    assert select(conn, "SELECT incident_id, case_id FROM case_links ORDER BY incident_id") == [
        ("INC-2", "C-2"), ("INC-3", "C-3")]  # fmt: skip
    assert select(conn, "SELECT case_id FROM case_statuses ORDER BY case_id") == [
        ("C-2",), ("C-3",)]  # fmt: skip
    assert select(conn, "SELECT id FROM suspected_duplicates ORDER BY id") == [("D2",), ("D3",)]
    assert sorted(p.name for p in evidence.iterdir()) == ["new.jpg", "old.txt"]
    # Caught up: a second run removes nothing.
    again = retention.upkeep(conn, settings, evidence, NOW, batch_rows=2, pause_s=0)
    assert set(again.values()) == {0}


def test_history_folds_and_expires_the_same_rows_on_both_stores(conn: Any) -> None:
    settings = HistorySettings(
        raw_retention_days=1, downsample_bucket_s=3600, downsampled_retention_days=10
    )
    fill(conn, {
        "readings": [
            ("A", T0 + 10 * MINUTE, 1, json.dumps({"tilt": 2.0, "open": True})),
            ("A", T0 + 20 * MINUTE, 2, json.dumps({"tilt": 4.0, "open": False})),
            ("B", T0 + HOUR + 5 * MINUTE, 1, json.dumps({"tilt": -1.5})),
            ("A", T0 + 5 * MINUTE, 3, json.dumps({"tilt": 3.0})),  # late: not the bucket's last
            ("A", T0 + 4 * DAY + 10 * MINUTE, 4, json.dumps({"tilt": 9.0})),  # in retention
            ("A", T0 + 30 * MINUTE, 5, json.dumps({"tilt": 1.0})),  # old, but the newest row
        ],
        "readings_downsampled": [  # a bucket folded before, its expired and kept neighbours
            ("A", T0, HOUR, "tilt", 0, 2, 10.0, 2.5, 3.5, T0 + 15 * MINUTE, 5.0),
            ("A", T0, HOUR, "open", 1, 1, 1.0, 1.0, 1.0, T0 + 50 * MINUTE, 1.0),
            ("C", T0 - 20 * DAY, HOUR, "x", 0, 1, 1.0, 1.0, 1.0, T0 - 20 * DAY, 1.0),
            ("C", T0 - 8 * DAY, HOUR, "x", 0, 1, 2.0, 2.0, 2.0, T0 - 8 * DAY, 2.0),
            ("C", T0 - 2 * DAY, HOUR, "x", 0, 1, 3.0, 3.0, 3.0, T0 - 2 * DAY, 3.0),
        ],
    })  # fmt: skip

    report = history.upkeep(conn, settings, NOW, batch_rows=2, pause_s=0)

    assert report == {"folded": 4, "buckets_written": 4, "buckets_expired": 2, "transactions": 3}
    assert select(conn, "SELECT device_id, ts, seq FROM readings ORDER BY rowid") == [
        ("A", T0 + 4 * DAY + 10 * MINUTE, 4), ("A", T0 + 30 * MINUTE, 5)]  # fmt: skip
    assert select(
        conn,
        "SELECT device_id, bucket_start, bucket_ms, field, is_bool, n, v_sum, v_min, v_max,"
        " last_ts, last_value FROM readings_downsampled ORDER BY device_id, bucket_start, field",
    ) == [
        ("A", T0, HOUR, "open", 1, 3, 2.0, 0.0, 1.0, T0 + 50 * MINUTE, 1.0),
        ("A", T0, HOUR, "tilt", 0, 5, 19.0, 2.0, 4.0, T0 + 20 * MINUTE, 4.0),
        ("B", T0 + HOUR, HOUR, "tilt", 0, 1, -1.5, -1.5, -1.5, T0 + HOUR + 5 * MINUTE, -1.5),
        ("C", T0 - 2 * DAY, HOUR, "x", 0, 1, 3.0, 3.0, 3.0, T0 - 2 * DAY, 3.0),
    ]  # fmt: skip
    assert history.upkeep(conn, settings, NOW, batch_rows=2, pause_s=0) == {
        "folded": 0, "buckets_written": 0, "buckets_expired": 0, "transactions": 0}  # fmt: skip
