"""The InfluxDB export: the real influxdb-client, over real sockets, into a strict stand-in
for InfluxDB 2's write endpoint (see simulators/influxdb_stand_in.py for why a stand-in), reading
forward from a real SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from case_bridge.settings import RetryPolicy
from domain import Reading
from gateway import history, store
from gateway.history import InfluxSettings
from gateway.influx_sink import InfluxSink
from simulators.influxdb_stand_in import InfluxV2StandIn, LinePoint

GATEWAY = "gw-test"
KINDS = {"MH-001": "manhole_cover", "BIN-001": "bin", "WL-001": "water_level"}


def settings(stand_in: InfluxV2StandIn, **overrides: object) -> InfluxSettings:
    values: dict = {
        "url": stand_in.url,
        "org": stand_in.org,
        "bucket": stand_in.bucket,
        "token": stand_in.token,
        "flush_interval_s": 0.05,
        "timeout_s": 5,
        "retry": RetryPolicy(initial_s=0.05, max_s=0.2),
        "park_retry_s": 0.3,
    }
    return InfluxSettings.model_validate({**values, **overrides})


def save(conn: sqlite3.Connection, readings: list[Reading]) -> None:
    """Commit readings exactly as the pipeline does: one transaction per batch."""
    batch = store.Batch()
    batch.readings.extend((r.device_id, r.ts, r.seq, json.dumps(r.values), 0) for r in readings)
    store.commit(conn, batch)


def level(i: int, device: str = "WL-001") -> Reading:
    return Reading(device, "water_level", 1_700_000_000_000 + i * 1000, {"level_cm": i + 0.5}, i)


def as_point(r: Reading) -> LinePoint:
    tags = {"device_id": r.device_id, "gateway_id": GATEWAY}
    if r.device_id in KINDS:
        tags["kind"] = KINDS[r.device_id]
    fields = {k: v if isinstance(v, bool) else float(v) for k, v in r.values.items()}
    return LinePoint("readings", tags, fields, r.ts)


def typed(points: list[LinePoint]) -> list[tuple]:
    """Points with each field's type beside its value: in Python ``True == 1 == 1.0``, but
    not in InfluxDB, where a field's type is fixed by its first write."""
    return [
        (p.measurement, p.tags, {k: (type(v).__name__, v) for k, v in p.fields.items()}, p.ts)
        for p in points
    ]


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = store.connect(tmp_path / "gateway.db", "NORMAL")
    yield connection
    connection.close()


@pytest.fixture
def stand_in() -> Iterator[InfluxV2StandIn]:
    with InfluxV2StandIn() as server:
        yield server


@contextlib.asynccontextmanager
async def running(sink: InfluxSink):
    task = asyncio.create_task(sink.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: Callable[[], bool], what: str, task: asyncio.Task, timeout_s: float = 10):
    deadline = time.monotonic() + timeout_s
    while not check():
        if task.done():
            task.result()  # the sink crashed: show why
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


@pytest.mark.parametrize("gzip", [True, False])
def test_known_readings_become_exact_points(conn, stand_in, gzip):
    readings = [
        Reading("MH-001", "manhole_cover", 1_700_000_000_123, {"tilt_deg": 3.0, "open": True}, 7),
        Reading("BIN-001", "bin", 1_700_000_000_456, {"fill_pct": 42.5, "battery_v": 3}),
        Reading("odd id,1=x", "unknown", 1_700_000_000_789, {"flow rate": -0.25}),
    ]
    save(conn, readings)

    async def scenario() -> None:
        sink = InfluxSink(conn, settings(stand_in, gzip=gzip), GATEWAY, KINDS)
        async with running(sink) as task:
            await until(lambda: sink.stats()["pending"] == 0, "export", task)
        assert sink.stats() == {
            "state": "idle",
            "exported": 3,
            "pending": 0,
            "oldest_pending_ms": None,
            "cursor": 3,
            "lost_to_retention": 0,
            "last_error": "",
            "failures": {},
        }

    run(scenario)
    assert typed(stand_in.points) == typed(
        [
            LinePoint(
                "readings",
                {"device_id": "MH-001", "gateway_id": GATEWAY, "kind": "manhole_cover"},
                {"open": True, "tilt_deg": 3.0},
                1_700_000_000_123,
            ),
            LinePoint(
                "readings",
                {"device_id": "BIN-001", "gateway_id": GATEWAY, "kind": "bin"},
                # an integer from a device is still a float field: no type conflict later
                {"battery_v": 3.0, "fill_pct": 42.5},
                1_700_000_000_456,
            ),
            LinePoint(
                "readings",
                {"device_id": "odd id,1=x", "gateway_id": GATEWAY},
                {"flow rate": -0.25},
                1_700_000_000_789,
            ),
        ]
    )
    [request] = stand_in.requests
    assert (request.status, request.lines, request.gzipped) == (204, 3, gzip)
    assert request.query == {"org": ["city"], "bucket": ["telemetry"], "precision": ["ms"]}
    assert request.headers["authorization"] == "Token secret-token"


def test_influxdb_down_then_up_every_reading_arrives_once_in_order(conn, stand_in):
    readings = [level(i) for i in range(40)]
    stand_in.stop()  # connection refused

    async def scenario() -> None:
        sink = InfluxSink(conn, settings(stand_in, batch_size=7), GATEWAY, KINDS)
        async with running(sink) as task:
            for chunk in range(4):  # ingest goes on while InfluxDB is away
                save(conn, readings[chunk * 10 : chunk * 10 + 10])
                sink.notify()
                await asyncio.sleep(0.1)
            await until(lambda: sink.failures["connection"] >= 2, "connection failures", task)
            assert sink.stats()["pending"] == 40
            stand_in.fail(503, times=1, retry_after="1")
            stand_in.fail(429, times=1, retry_after="1")
            stand_in.start()
            await until(lambda: sink.stats()["pending"] == 0, "the backlog exported", task)
        assert sink.exported == 40
        assert sink.failures["http_503"] == sink.failures["http_429"] == 1
        assert sink.last_error.startswith("http_429")

    run(scenario)
    assert typed(stand_in.points) == typed([as_point(r) for r in readings])
    requests = stand_in.requests
    assert [r.status for r in requests] == [503, 429] + [204] * 6  # 40 readings, 7 a batch
    for refused, retry in itertools.pairwise(requests[:3]):
        assert retry.at - refused.at >= 0.95, "Retry-After: 1 was not honoured"


def test_a_restarted_gateway_resumes_from_the_cursor_without_duplicates(tmp_path, stand_in):
    path = tmp_path / "gateway.db"
    first_conn = store.connect(path)
    save(first_conn, [level(i) for i in range(10)])

    async def export_all(connection: sqlite3.Connection) -> InfluxSink:
        sink = InfluxSink(connection, settings(stand_in), GATEWAY, KINDS)
        async with running(sink) as task:
            await until(lambda: sink.stats()["pending"] == 0, "export", task)
        return sink

    first = asyncio.run(export_all(first_conn))
    assert first.exported == 10
    save(first_conn, [level(i) for i in range(10, 25)])  # stored while the sink is gone
    first_conn.close()

    second_conn = store.connect(path)
    second = asyncio.run(export_all(second_conn))
    assert (second.exported, second.stats()["cursor"]) == (15, 25)
    second_conn.close()
    assert typed(stand_in.points) == typed([as_point(level(i)) for i in range(25)])


@pytest.mark.parametrize(
    ("override", "reason", "message"),
    [
        ({"token": "wrong"}, "http_401", "unauthorized access"),
        ({"bucket": "nope"}, "http_404", 'bucket "nope" not found'),
    ],
)
def test_a_refusal_parks_the_export_loudly_and_retries_slowly(
    conn, stand_in, override, reason, message
):
    save(conn, [level(i) for i in range(5)])

    async def scenario() -> None:
        sink = InfluxSink(conn, settings(stand_in, **override), GATEWAY, KINDS)
        async with running(sink) as task:
            await until(lambda: sink.failures[reason] >= 2, "a retry after parking", task)
            stats = sink.stats()
        assert (stats["state"], stats["exported"], stats["pending"]) == ("parked", 0, 5)
        assert stats["last_error"] == f"{reason}: {message}"
        assert set(stats["failures"]) == {reason}

    started = time.monotonic()
    run(scenario)
    assert stand_in.points == []
    requests = stand_in.requests
    assert requests[1].at - requests[0].at >= 0.25, "a parked export must retry slowly"
    assert time.monotonic() - started < 5


def test_ingest_never_waits_for_a_hung_influxdb(conn, stand_in):
    save(conn, [level(0)])
    stand_in.hang()

    async def scenario() -> None:
        sink = InfluxSink(conn, settings(stand_in), GATEWAY, KINDS)
        async with running(sink) as task:
            await until(lambda: stand_in.held == 1, "a write held by the server", task)
            worst_commit = worst_notify = worst_lag = 0.0
            for i in range(1, 21):
                began = time.perf_counter()
                save(conn, [level(i)])
                committed = time.perf_counter()
                sink.notify()
                notified = time.perf_counter()
                await asyncio.sleep(0.01)
                lag = time.perf_counter() - notified - 0.01
                worst_commit = max(worst_commit, committed - began)
                worst_notify = max(worst_notify, notified - committed)
                worst_lag = max(worst_lag, lag)
            assert (sink.state, stand_in.held, stand_in.requests) == ("sending", 1, [])
            assert worst_notify < 0.01
            assert worst_commit < 0.25
            assert worst_lag < 0.25, "the event loop was blocked by the export"
            stand_in.release()
            await until(lambda: sink.stats()["pending"] == 0, "export after release", task)

    run(scenario)
    assert typed(stand_in.points) == typed([as_point(level(i)) for i in range(21)])


def test_readings_folded_before_export_are_counted_as_lost(conn, stand_in):
    sink_settings = settings(stand_in)
    history_settings = history.HistorySettings(raw_retention_days=1, downsampled_retention_days=2)
    sink = InfluxSink(conn, sink_settings, GATEWAY, KINDS)  # cursor 0: nothing stored yet
    now = 1_700_000_000_000 + 10 * 86_400_000
    save(conn, [level(i) for i in range(6)])  # ten days old
    save(conn, [Reading("WL-001", "water_level", now, {"level_cm": 1.0})])
    assert history.upkeep(conn, history_settings, now, pause_s=0)["folded"] == 6

    async def scenario() -> None:
        async with running(sink) as task:
            await until(lambda: sink.stats()["pending"] == 0, "export", task)

    run(scenario)
    assert (sink.exported, sink.lost_to_retention) == (1, 6)
    assert [p.ts for p in stand_in.points] == [now]


def test_the_stand_in_refuses_what_influxdb_refuses(stand_in):
    """The stand-in must be able to fail a test: it refuses bad requests and bad lines."""
    good = {"org": "city", "bucket": "telemetry", "precision": "ms"}
    auth = {"Authorization": "Token secret-token", "Content-Type": "text/plain; charset=utf-8"}

    def post(body: str, params: dict = good, headers: dict = auth) -> httpx.Response:
        return httpx.post(f"{stand_in.url}/api/v2/write", params=params, headers=headers,
                          content=body.encode())  # fmt: skip

    assert post("m,t=a f=1i,g=true,h=2.5 1").status_code == 204
    bad_lines = {
        "m f=1 1\nm,t=a f=": "invalid field value ''",
        "m,t=a": "missing fields",
        "m f=1 12.5": "bad timestamp",
        "m,t=a,t=b f=1": "duplicate tag",
        "m time=1": "reserved",
        'm f="open': "unterminated string",
        "m f=NaN": "invalid field value",
        "m f=1 99999999999999999": "out of range",
    }
    for body, reason in bad_lines.items():
        response = post(body)
        assert response.status_code == 400, body
        assert response.json()["code"] == "invalid"
        assert response.json()["message"].startswith("unable to parse 'm")
        assert reason in response.json()["message"], body
    bearer = {**auth, "Authorization": "Bearer secret-token"}
    assert post("m f=1", headers=bearer).status_code == 401
    assert post("m f=1", params={**good, "precision": "ns"}).status_code == 400
    assert post("m f=1", params={**good, "bucket": "other"}).status_code == 404
    assert post("m f=1", headers={**auth, "Content-Type": "application/json"}).status_code == 400
    assert [p.fields for p in stand_in.points] == [{"f": 1, "g": True, "h": 2.5}]
