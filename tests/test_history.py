"""Telemetry history: retention and downsampling on a real SQLite file, its safety when the
process dies mid-upkeep, and the readings route of the gateway's real API over HTTP."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from api_server import ServedApi, gateway_for_api

from domain import Reading
from gateway import history, store
from gateway.history import HistorySettings
from gateway.service import Gateway

API_TOKEN = "history-test-api-token"

ROOT = Path(__file__).resolve().parents[1]
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
NOW = 1_700_000_000_000 // HOUR * HOUR + 30 * MINUTE  # 2023-11-14T22:30Z
SETTINGS = HistorySettings(
    raw_retention_days=1, downsample_bucket_s=3600, downsampled_retention_days=3
)
RAW_CUTOFF = NOW - DAY - 30 * MINUTE  # retention, rounded down to a whole bucket


def save(conn: sqlite3.Connection, readings: list[Reading]) -> None:
    """Commit readings exactly as the pipeline does: one transaction per batch."""
    batch = store.Batch()
    batch.readings.extend((r.device_id, r.ts, r.seq, json.dumps(r.values), 0) for r in readings)
    store.commit(conn, batch)


def cover(ts: int, tilt: float, lid_open: bool, device: str = "MH-001") -> Reading:
    return Reading(device, "manhole_cover", ts, {"tilt_deg": tilt, "lid_open": lid_open})


@pytest.fixture
def conn(tmp_path: Path):
    connection = store.connect(tmp_path / "gateway.db", "NORMAL")
    yield connection
    connection.close()


def test_upkeep_folds_and_expires_with_exact_numbers(conn):
    a = RAW_CUTOFF - 5 * HOUR  # a bucket past raw retention, inside bucket retention
    b = RAW_CUTOFF - HOUR  # the last whole bucket past raw retention
    ancient = (NOW - 4 * DAY) // HOUR * HOUR  # past bucket retention too
    save(conn, [
        cover(ancient + MINUTE, 1, False),
        cover(ancient + 2 * MINUTE, 2, True),
        cover(a + MINUTE, 10, False),
        cover(a + 2 * MINUTE, 14, True),
        cover(a + 3 * MINUTE, 12, True),
        cover(a + 3 * MINUTE, 13, False),  # same instant, stored later: it is the last
        Reading("BIN-001", "bin", a + 4 * MINUTE, {"fill_pct": 55.5}),
        cover(RAW_CUTOFF - 1, 20, False),
        cover(RAW_CUTOFF + MINUTE, 21, False),  # over a day old, but its bucket is not whole
        cover(NOW - 1000, 30, True),
    ])  # fmt: skip

    report = history.upkeep(conn, SETTINGS, NOW, pause_s=0)

    assert report == {"folded": 8, "buckets_written": 7, "buckets_expired": 2, "transactions": 2}
    assert history.readings_between(conn, "MH-001", 0, NOW, 100) == [
        {
            "ts": RAW_CUTOFF + MINUTE,
            "seq": None,
            "values": {"tilt_deg": 21, "lid_open": False},
            "suspect": False,
        },
        {
            "ts": NOW - 1000,
            "seq": None,
            "values": {"tilt_deg": 30, "lid_open": True},
            "suspect": False,
        },
    ]
    bucket_a = {
        "start": a,
        "bucket_s": 3600,
        "fields": {
            "lid_open": {"count": 4, "true": 2, "last": False},
            "tilt_deg": {"count": 4, "min": 10.0, "max": 14.0, "mean": 12.25, "last": 13.0},
        },
    }
    bucket_b = {
        "start": b,
        "bucket_s": 3600,
        "fields": {
            "lid_open": {"count": 1, "true": 0, "last": False},
            "tilt_deg": {"count": 1, "min": 20.0, "max": 20.0, "mean": 20.0, "last": 20.0},
        },
    }
    assert history.downsampled_between(conn, "MH-001", 0, NOW, 100) == [bucket_a, bucket_b]
    assert history.downsampled_between(conn, "MH-001", 0, NOW, 1) == [bucket_a]
    # A range touching only the last instant of a bucket returns it; one between none.
    assert history.downsampled_between(conn, "MH-001", a + HOUR - 1, a + HOUR, 100) == [bucket_a]
    assert history.downsampled_between(conn, "MH-001", a + HOUR, b - 1, 100) == []
    assert history.downsampled_between(conn, "MH-001", RAW_CUTOFF, NOW, 100) == []
    [bin_bucket] = history.downsampled_between(conn, "BIN-001", 0, NOW, 100)
    assert bin_bucket["fields"] == {
        "fill_pct": {"count": 1, "min": 55.5, "max": 55.5, "mean": 55.5, "last": 55.5}
    }

    # Idempotent: nothing left to do at the same instant.
    assert history.upkeep(conn, SETTINGS, NOW, pause_s=0) == dict.fromkeys(report, 0)

    # A reading that arrives late for a folded bucket merges into it; it is not the last.
    save(conn, [cover(a + 30_000, 2, True), cover(NOW, 31, True)])
    assert history.upkeep(conn, SETTINGS, NOW, pause_s=0)["folded"] == 1
    assert history.downsampled_between(conn, "MH-001", a, a, 100)[0]["fields"] == {
        "lid_open": {"count": 5, "true": 3, "last": False},
        "tilt_deg": {"count": 5, "min": 2.0, "max": 14.0, "mean": 10.2, "last": 13.0},
    }


def test_the_newest_reading_is_kept_whatever_its_age(conn):
    """SQLite reuses rowids of an emptied table: the export cursor must never see that."""
    save(conn, [cover(NOW - 10 * DAY + i * MINUTE, i, False) for i in range(3)])
    assert history.upkeep(conn, SETTINGS, NOW, pause_s=0)["folded"] == 2
    assert store.count_rows(conn, "readings") == 3
    save(conn, [cover(NOW, 1, False)])
    assert history.upkeep(conn, SETTINGS, NOW, pause_s=0)["folded"] == 1
    assert conn.execute("SELECT rowid FROM readings").fetchall() == [(4,)]


def synthetic(count: int) -> list[Reading]:
    """Readings of four devices, 5 s apart, from 2.5 days ago: past raw retention, inside
    bucket retention. Integer values, so that sums are exact."""
    devices = ["MH-001", "MH-002", "MH-003", "WL-001"]
    start = NOW - 2 * DAY - 12 * HOUR
    return [cover(start + i * 5000, i % 37, i % 3 == 0, devices[i % 4]) for i in range(count)]


def expected_buckets(readings: list[Reading]) -> dict[tuple[str, int], dict]:
    """What the downsampled table must hold, computed independently of the SQL."""
    groups: dict[tuple[str, int], list[Reading]] = defaultdict(list)
    for r in readings:
        groups[(r.device_id, r.ts // HOUR * HOUR)].append(r)
    out = {}
    for key, rs in groups.items():
        tilts = [r.values["tilt_deg"] for r in rs]
        out[key] = {
            "lid_open": {
                "count": len(rs),
                "true": sum(bool(r.values["lid_open"]) for r in rs),
                "last": rs[-1].values["lid_open"],
            },
            "tilt_deg": {
                "count": len(rs),
                "min": float(min(tilts)),
                "max": float(max(tilts)),
                "mean": sum(tilts) / len(rs),
                "last": float(tilts[-1]),
            },
        }
    return out


def stored_buckets(conn: sqlite3.Connection) -> dict[tuple[str, int], dict]:
    out = {}
    for device in ("MH-001", "MH-002", "MH-003", "WL-001"):
        for bucket in history.downsampled_between(conn, device, 0, NOW, 10_000):
            out[(device, bucket["start"])] = bucket["fields"]
    return out


def test_upkeep_works_in_small_transactions_that_let_ingest_through(tmp_path, conn):
    old = synthetic(3000)
    save(conn, [*old, cover(NOW, 0, False)])
    upkeep_conn = store.connect(tmp_path / "gateway.db", "NORMAL")
    result: dict = {}
    worker = threading.Thread(
        target=lambda: result.update(
            history.upkeep(upkeep_conn, SETTINGS, NOW, batch_rows=100, pause_s=0.01)
        )
    )
    worker.start()
    latencies = []
    while worker.is_alive():  # ingest commits on its own connection meanwhile
        began = time.perf_counter()
        save(conn, [cover(NOW + len(latencies), 1, False, "BIN-001")])
        latencies.append(time.perf_counter() - began)
        time.sleep(0.005)
    worker.join()
    upkeep_conn.close()

    assert result == {"folded": 3000, "buckets_written": result["buckets_written"],
                      "buckets_expired": 0, "transactions": 30}  # fmt: skip
    assert len(latencies) >= 10, "ingest did not get in between the upkeep transactions"
    assert max(latencies) < 0.5
    assert stored_buckets(conn) == expected_buckets(old)


CRASHING_UPKEEP = """
import sys
from pathlib import Path
from gateway import history, store
conn = store.connect(Path(sys.argv[1]), "NORMAL")
settings = history.HistorySettings.model_validate_json(sys.argv[2])
history.upkeep(conn, settings, int(sys.argv[3]), batch_rows=50, pause_s=0.001)
"""


def test_a_crash_mid_upkeep_loses_nothing_and_counts_nothing_twice(tmp_path, conn):
    old = synthetic(20_000)
    save(conn, [*old, cover(NOW, 0, False)])
    args = [str(tmp_path / "gateway.db"), SETTINGS.model_dump_json(), str(NOW)]
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_UPKEEP, *args], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while _raw_count(conn) > 20_001 - 3000:
            assert proc.poll() is None, "upkeep ended before it could be killed"
            assert time.monotonic() < deadline, "upkeep made no progress"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # like a power cut of the process, mid-work
    finally:
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL

    raw_left = _raw_count(conn)
    folded = conn.execute(
        "SELECT sum(n) FROM readings_downsampled WHERE field = 'tilt_deg'"
    ).fetchone()[0]
    assert 0 < folded < 20_000
    assert raw_left + folded == 20_001  # every reading in exactly one of the two tables

    report = history.upkeep(conn, SETTINGS, NOW, pause_s=0)
    assert report["folded"] == raw_left - 1  # the newest reading stays raw
    assert stored_buckets(conn) == expected_buckets(old)


def _raw_count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM readings").fetchone()[0]


def test_settings_refuse_buckets_that_expire_before_raw_readings():
    with pytest.raises(ValueError, match="at least raw_retention_days"):
        HistorySettings(raw_retention_days=30, downsampled_retention_days=7)
    with pytest.raises(ValueError, match="extra"):
        HistorySettings.model_validate({"raw_retention": 3})


# -- GET /api/v1/devices/{device_id}/readings on the gateway's real API ------------------


@pytest.fixture
def gateway(tmp_path: Path):
    (tmp_path / "api-token").write_text(API_TOKEN)
    gw = gateway_for_api(tmp_path, {"token_file": "api-token"})
    yield gw
    gw.conn.close()


@pytest.fixture
def client(gateway: Gateway):
    """The API served by uvicorn on loopback, configured as the gateway serves it."""
    served = ServedApi(gateway, headers={"Authorization": f"Bearer {API_TOKEN}"})
    yield served.http
    served.close()


def iso(ms: int, hours: int) -> str:
    instant = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return instant.astimezone(timezone(timedelta(hours=hours))).isoformat()


def test_readings_route_defaults_to_the_last_day(gateway, client):
    now = int(time.time() * 1000)
    save(gateway.conn, [cover(now - 25 * HOUR, 1, False), cover(now - 2 * HOUR, 2, True),
                        cover(now - HOUR, 3, False)])  # fmt: skip
    before = int(time.time() * 1000)
    body = client.get("/api/v1/devices/MH-001/readings").json()
    after = int(time.time() * 1000)
    assert before <= body["until"] <= after
    assert body["since"] == body["until"] - DAY
    assert body["readings"] == [
        {
            "ts": now - 2 * HOUR,
            "seq": None,
            "values": {"tilt_deg": 2, "lid_open": True},
            "suspect": False,
        },
        {
            "ts": now - HOUR,
            "seq": None,
            "values": {"tilt_deg": 3, "lid_open": False},
            "suspect": False,
        },
    ]
    assert (body["device_id"], body["downsampled"], body["truncated"]) == ("MH-001", [], False)


def test_readings_route_accepts_epoch_ms_and_zoned_iso(gateway, client):
    save(gateway.conn, [cover(NOW - 2 * HOUR, 2, True), cover(NOW - HOUR, 3, False)])
    since, until = NOW - 2 * HOUR, NOW - HOUR - 1
    answers = [
        client.get("/api/v1/devices/MH-001/readings", params=params).json()
        for params in (
            {"since": str(since), "until": str(until)},
            {"since": iso(since, 0), "until": iso(until, 0).replace("+00:00", "Z")},
            {"since": iso(since, 8), "until": iso(until, 8)},
        )
    ]
    assert answers[0] == answers[1] == answers[2]
    assert (answers[0]["since"], answers[0]["until"]) == (since, until)
    assert [r["ts"] for r in answers[0]["readings"]] == [NOW - 2 * HOUR]
    limited = client.get("/api/v1/devices/MH-001/readings",
                         params={"since": since, "until": NOW, "limit": 1}).json()  # fmt: skip
    assert (len(limited["readings"]), limited["truncated"]) == (1, True)


def test_readings_route_returns_buckets_for_ranges_past_raw_retention(gateway, client):
    a = RAW_CUTOFF - 5 * HOUR
    save(gateway.conn, [cover(a + MINUTE, 10, False), cover(a + 2 * MINUTE, 14, True),
                        cover(NOW, 0, False)])  # fmt: skip
    history.upkeep(gateway.conn, SETTINGS, NOW, pause_s=0)
    body = client.get(
        "/api/v1/devices/MH-001/readings", params={"since": a - DAY, "until": NOW}
    ).json()
    assert [r["ts"] for r in body["readings"]] == [NOW]
    assert body["downsampled"] == [
        {
            "start": a,
            "bucket_s": 3600,
            "fields": {
                "lid_open": {"count": 2, "true": 1, "last": True},
                "tilt_deg": {"count": 2, "min": 10.0, "max": 14.0, "mean": 12.0, "last": 14.0},
            },
        }
    ]


@pytest.mark.parametrize(
    ("params", "status", "detail"),
    [
        ({"since": "yesterday"}, 400, "since: expected epoch milliseconds or ISO 8601"),
        ({"until": "2024-01-01T08:00:00"}, 400, "until: '2024-01-01T08:00:00' has no zone"),
        ({"since": "2024-01-01T08:00:00 08:00"}, 400, "send '+' in a URL as %2B"),
        ({"since": "2000", "until": "1000"}, 400, "since (2000) is after until (1000)"),
        ({"since": "99999999999999999"}, 400, "out of range"),
    ],
)
def test_readings_route_refuses_bad_ranges_clearly(client, params, status, detail):
    response = client.get("/api/v1/devices/MH-001/readings", params=params)
    assert response.status_code == status
    assert detail in response.json()["detail"]


def test_readings_route_404s_for_a_device_not_in_the_registry(client):
    response = client.get("/api/v1/devices/NOPE-1/readings")
    assert response.status_code == 404
    assert response.json() == {"detail": "device NOPE-1 is not in the registry"}
    assert client.get("/api/v1/devices/MH-001/readings?limit=0").status_code == 422
