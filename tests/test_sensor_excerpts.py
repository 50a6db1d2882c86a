"""Sensor excerpts (gateway/sensor_excerpts.py): the exact document for known readings on
SQLite and PostgreSQL alike, its bounds (count, window, size, the alert's own time), a
device with no readings, hostile stored values, refusals counted without touching the
alert, the file read back by the evidence reader, and uploaded as application/json to a
mapped-REST intake over loopback HTTP; under hypothesis, valid JSON within the size bound
whatever the store holds."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from egova_intake import EgovaIntakeFake
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_mapped_rest import Connect, adapters, case_body, example_data

from case_bridge.case_model import evidence_item
from domain import Alert, AlertState, Location, Priority
from gateway import pg_store, store
from gateway.evidence import EvidenceWriter, media_type
from gateway.evidence_links import EvidenceLinks
from gateway.evidence_settings import SensorExcerptSettings
from gateway.sensor_excerpts import SensorExcerpts, excerpt_name, rule_thresholds
from rules.settings import RuleSettings
from simulators.postgres import PostgresServer

NOW_S = 1_800_000_000
T = 1_795_226_400_000  # the alert's event time, ms
LINKS = EvidenceLinks(b"k" * 32, 3600, "https://gw.example.org")
KINDS = {"WL-001": "water_level", "MH-001": "manhole_cover"}
RULES = RuleSettings(devices={"WL-001": {"warning_cm": 30.0, "alarm_cm": 50.0}})
ALERT = Alert(
    key="WL-001/water_level",
    source_id="WL-001",
    rule_id="water_level",
    state=AlertState.FIRING,
    class_code="99101",
    priority=Priority.URGENT,
    location=Location(26.081, 119.303, "八一七北路东街口下穿通道", "350102002003001"),
    ts=T,
    values={"level_cm": 31.5, "battery_pct": 91.0},
    kind="water_level",
)
_databases = itertools.count()


# -- stores --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with PostgresServer() as pg:
        yield pg


@pytest.fixture(params=("sqlite", "postgres"))
def conn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh store of either kind: the excerpt's query is the same text on both."""
    if request.param == "sqlite":
        made: Any = store.connect(tmp_path / "gateway.db", "NORMAL")
    else:
        server = request.getfixturevalue("server")
        made = pg_store.connect(server.create_database(f"excerpts_{next(_databases)}"))
        pg_store.ensure_schema(made)
    yield made
    made.close()


@pytest.fixture
def sqlite_conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    made = store.connect(tmp_path / "gateway.db", "NORMAL")
    yield made
    made.close()


def stored(conn: Any, *rows: tuple[str, int, int | None, str, int]) -> None:
    """Readings committed as the pipeline commits them."""
    batch = store.Batch()
    batch.readings.extend(rows)
    store.commit(conn, batch)


def level(ts: int, seq: int, cm: float, suspect: int = 0) -> tuple[str, int, int, str, int]:
    return ("WL-001", ts, seq, store.values_text({"level_cm": cm, "battery_pct": 91.0}), suspect)


def excerpts(
    conn: Any, folder: Path, kinds: dict[str, str] = KINDS, **changes: Any
) -> tuple[SensorExcerpts, EvidenceWriter]:
    writer = EvidenceWriter(folder, LINKS, max_picture_bytes=2 * 2**20)
    made = SensorExcerpts(
        conn, writer, SensorExcerptSettings(**changes), kinds, rule_thresholds(lambda: RULES),
        now_s=lambda: NOW_S,
    )  # fmt: skip
    return made, writer


def the_file(writer: EvidenceWriter, alert: Alert) -> tuple[dict[str, Any], bytes]:
    """The alert's one excerpt media file as the case carries it, and its bytes on disk."""
    [file] = [f for f in evidence_item(alert)["media_files"] if ".json?" in f["url"]]
    data = writer.read_linked(file["url"])
    assert data is not None
    return file, data


# -- the document --------------------------------------------------------------------------

EXPECTED = (
    '{"format":"citygw-sensor-excerpt/1","device_id":"WL-001","kind":"water_level",'
    '"alert":{"key":"WL-001/water_level","rule_id":"water_level","state":"firing",'
    '"priority":"urgent","ts":1795226400000,"values":{"level_cm":31.5,"battery_pct":91.0}},'
    '"thresholds":{"warning_cm":30.0,"alarm_cm":50.0,"warning_for_s":60.0,"alarm_for_s":10.0,'
    '"clear_margin_cm":5.0,"clear_for_s":300.0,"rise_cm":null,"rise_window_s":300.0,'
    '"class_code":"99101","schedule":{"windows":[],'
    '"days":["mon","tue","wed","thu","fri","sat","sun"]}},'
    '"window":{"from_ts":1795224600000,"to_ts":1795226400000,"max_readings":60},'
    '"readings_left_out":0,"readings":[\n'
    '{"ts":1795226370000,"seq":7,"suspect":false,"values":{"level_cm":12.0,"battery_pct":91.0}},\n'
    '{"ts":1795226380000,"seq":8,"suspect":true,"values":{"level_cm":24.5,"battery_pct":91.0}},\n'
    '{"ts":1795226390000,"seq":9,"suspect":false,"values":{"level_cm":29.0,"battery_pct":91.0}}\n'
    "]}\n"
)


def test_the_excerpt_is_the_device_s_readings_before_the_alert_exactly(conn: Any, tmp_path: Path):
    stored(
        conn,
        level(T - 30_000, 7, 12.0),
        level(T - 20_000, 8, 24.5, suspect=1),
        level(T - 10_000, 9, 29.0),
        # Not the device's, outside the window, and the alert's own time: none of them.
        ("MH-001", T - 5_000, 1, '{"tilt_deg":40.0}', 0),
        level(T - 1_800_001, 1, 3.0),
        level(T, 10, 31.5),
    )
    made, writer = excerpts(conn, tmp_path / "evidence")
    alert = made.add(ALERT)
    assert alert.media[:-1] == () and replace(alert, media=()) == ALERT
    file, data = the_file(writer, alert)
    assert data.decode() == EXPECTED
    digest = hashlib.sha256(data).hexdigest()
    name = f"WL-001_water_level_{T}_excerpt_{digest[:16]}.json"
    assert file == {"url": LINKS.url(name, NOW_S), "sha256": digest, "bytes": len(data)}
    assert [p.name for p in (tmp_path / "evidence").iterdir()] == [name]
    assert (media_type(name), made.written, writer.refused) == (
        "application/json",
        {"written": 1},
        {},
    )


def test_a_device_with_no_readings_gets_an_excerpt_of_its_alert_alone(conn: Any, tmp_path: Path):
    made, writer = excerpts(conn, tmp_path, max_readings=5)
    alert = made.add(replace(ALERT, state=AlertState.ESCALATED, priority=Priority.CRITICAL))
    document = json.loads(the_file(writer, alert)[1])
    assert (document["readings"], document["readings_left_out"]) == ([], 0)
    assert document["alert"]["state"] == "escalated"
    assert document["window"] == {"from_ts": T - 1_800_000, "to_ts": T, "max_readings": 5}


def test_the_newest_readings_within_count_window_and_size(sqlite_conn, tmp_path: Path):
    stored(sqlite_conn, *(level(T - 1000 * (100 - i), i, float(i)) for i in range(100)))
    made, writer = excerpts(sqlite_conn, tmp_path / "a", max_readings=7)
    document = json.loads(the_file(writer, made.add(ALERT))[1])
    assert [r["seq"] for r in document["readings"]] == list(range(93, 100))

    made, writer = excerpts(sqlite_conn, tmp_path / "b", window_s=30)
    document = json.loads(the_file(writer, made.add(ALERT))[1])
    assert [r["seq"] for r in document["readings"]] == list(range(70, 100))  # ts >= T - 30 s

    # Each reading is 88 bytes and 2 of framing; the head with its count is the rest.
    made, writer = excerpts(sqlite_conn, tmp_path / "c", max_readings=100, max_bytes=4096)
    data = the_file(writer, made.add(ALERT))[1]
    document = json.loads(data)
    kept = len(document["readings"])
    assert len(data) <= 4096 < len(data) + 90
    assert document["readings_left_out"] == 100 - kept
    assert [r["seq"] for r in document["readings"]] == list(range(100 - kept, 100))


def test_only_firing_or_escalating_alerts_of_registered_devices_once(sqlite_conn, tmp_path):
    made, _ = excerpts(sqlite_conn, tmp_path)
    camera = replace(ALERT, key="CAM-A/zone/dumping", source_id="CAM-A", kind="camera")
    left_alone = [
        replace(ALERT, state=AlertState.CLEARED),
        camera,
        replace(ALERT, closure_check="verifying"),
    ]
    assert [made.add(alert) for alert in left_alone] == left_alone
    once = made.add(ALERT)
    assert made.add(once) == once  # a re-filed command's alert keeps its one excerpt
    off, _ = excerpts(sqlite_conn, tmp_path, enabled=False)
    assert off.add(ALERT) == ALERT
    assert made.written == {"written": 1}
    enriched = made.after(lambda alert: replace(alert, summary="enriched"))(ALERT)
    assert enriched.summary == "enriched" and len(enriched.media) == 1


def test_health_alerts_show_the_health_params(sqlite_conn, tmp_path):
    made, writer = excerpts(sqlite_conn, tmp_path)
    offline = replace(ALERT, key="WL-001/health/offline", rule_id="offline", values={})
    thresholds = json.loads(the_file(writer, made.add(offline))[1])["thresholds"]
    assert (thresholds["heartbeat_s"], thresholds["max_change_per_min"]) == (
        600.0,
        {"level_cm": 50.0},
    )
    unknown_kind = replace(ALERT, kind="lamp_post")
    assert json.loads(the_file(writer, made.add(unknown_kind))[1])["thresholds"] is None


HOSTILE = [
    '{"level_cm":NaN,"x":Infinity,"y":-Infinity,"z":1e999}',
    "not json at all",
    "[1,2,3]",
    '{"s":"text","n":null,"list":[1],"obj":{"a":1},"big":' + "9" * 30 + ',"ok":true}',
    "[" * 50_000 + "]" * 50_000,  # past the length bound: never parsed
    "[" * 30_000,  # nesting deep enough to exhaust the parser
    '{"\\ud800lone":1.5,"' + "n" * 300 + '":2.0}',
    json.dumps({f"f{i}": float(i) for i in range(200)}),
]


def test_hostile_stored_values_become_nulls_within_bounds(sqlite_conn, tmp_path):
    sqlite_conn.executemany(
        "INSERT INTO readings (device_id, ts, seq, values_json, suspect) VALUES (?, ?, ?, ?, ?)",
        [("WL-001", T - 1000 * (10 - i), i, text, 0) for i, text in enumerate(HOSTILE)]
        + [("WL-001", T - 500, "seq-as-text", "{}", "yes")],
    )
    made, writer = excerpts(sqlite_conn, tmp_path)
    alert = replace(ALERT, values={"level_cm": float("nan"), "\udc80": True})
    data = the_file(writer, made.add(alert))[1]
    document = json.loads(data)
    assert data.isascii()
    assert document["alert"]["values"] == {"level_cm": None, "?": True}
    values = [r["values"] for r in document["readings"]]
    assert values[:6] == [
        {"level_cm": None, "x": None, "y": None, "z": None},
        None,
        None,
        {"s": None, "n": None, "list": None, "obj": None, "big": None, "ok": True},
        None,
        None,
    ]
    assert values[6] == {"?lone": 1.5, "n" * 64: 2.0}
    assert values[7] == {f"f{i}": float(i) for i in range(64)}
    assert document["readings"][8] == {"ts": T - 500, "seq": None, "suspect": None, "values": {}}


def test_refusals_are_counted_and_leave_the_alert_as_it_was(sqlite_conn, tmp_path):
    huge = replace(ALERT, values={f"{i:064d}": 1.0 for i in range(64)})
    made, writer = excerpts(sqlite_conn, tmp_path / "evidence", max_bytes=4096)
    assert made.add(huge) == huge

    (tmp_path / "not-a-folder").write_text("")
    blocked, blocked_writer = excerpts(sqlite_conn, tmp_path / "not-a-folder")
    assert blocked.add(ALERT) == ALERT

    sqlite_conn.execute("DROP TABLE readings")
    gone, gone_writer = excerpts(sqlite_conn, tmp_path / "evidence")
    assert gone.add(ALERT) == ALERT
    assert (writer.refused, blocked_writer.refused, gone_writer.refused) == (
        {"excerpt_too_large": 1},
        {"excerpt_not_written": 1},
        {"excerpt_store_error": 1},
    )
    assert not (tmp_path / "evidence").exists()


def test_the_file_name_is_safe_and_short_whatever_the_key():
    alert = replace(ALERT, key=".设备/" + "x" * 300, ts=-5)
    name = excerpt_name(alert, b"{}")
    assert name == "_" * 4 + "x" * 60 + f"_0_excerpt_{hashlib.sha256(b'{}').hexdigest()[:16]}.json"
    assert len(name) <= 128


# -- the upload to a platform that takes files ---------------------------------------------


@pytest.fixture
def intake() -> Iterator[EgovaIntakeFake]:
    with EgovaIntakeFake() as server:
        yield server


def test_a_mapped_rest_platform_gets_the_excerpt_as_an_application_json_file(
    intake: EgovaIntakeFake, sqlite_conn, tmp_path: Path
):
    stored(sqlite_conn, level(T - 10_000, 9, 29.0))
    made, writer = excerpts(sqlite_conn, tmp_path / "evidence")
    alert = made.add(ALERT)
    file, data = the_file(writer, alert)
    with asyncio.Runner() as runner:
        connect: Connect = next(made_adapters := adapters(runner, writer))
        platform = connect(example_data(intake.url))
        runner.run(platform.open_case(case_body(alert), "INC-0042/1"))
        next(made_adapters, None)  # closes the adapter
    [uploaded] = intake.files.values()
    name = Path(file["url"].split("?")[0]).name
    assert (uploaded.filename, uploaded.content_type, uploaded.data) == (
        name,
        "application/json",
        data,
    )
    assert uploaded.fields["contentType"] == "application/json"
    assert uploaded.fields["sha256"] == file["sha256"] == hashlib.sha256(data).hexdigest()
    assert platform.upload_stats == {"uploaded": 1}


# -- whatever the store holds --------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=80), inner, max_size=8)
    ),
    max_leaves=40,
)
_stored_text = st.one_of(
    st.text(max_size=200),
    _json_values.map(json.dumps),
    st.dictionaries(st.text(max_size=80), _json_values, max_size=80).map(json.dumps),
)
_devices = itertools.count()


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.lists(_stored_text, max_size=40),
    values=st.dictionaries(st.text(max_size=80), st.floats() | st.booleans(), max_size=80),
    max_readings=st.integers(1, 50),
    max_bytes=st.integers(4096, 16_384),
)
def test_any_stored_values_give_valid_json_within_the_bound(
    sqlite_conn, tmp_path, texts, values, max_readings, max_bytes
):
    device = f"DEV-{next(_devices)}"
    sqlite_conn.executemany(
        "INSERT INTO readings (device_id, ts, seq, values_json, suspect) VALUES (?, ?, ?, ?, 0)",
        [(device, T - 1000 * (len(texts) - i), i, text) for i, text in enumerate(texts)],
    )
    made, writer = excerpts(
        sqlite_conn, tmp_path / "e", {device: "water_level"}, max_readings=max_readings,
        max_bytes=max_bytes,
    )  # fmt: skip
    alert = replace(ALERT, key=f"{device}/water_level", source_id=device, values=values)
    data = made.document(alert)
    if data is None:
        assert writer.refused == {} and made.add(alert) == alert
        assert writer.refused == {"excerpt_too_large": 1}
        return
    document = json.loads(data, parse_constant=lambda name: pytest.fail(name))
    assert len(data) <= max_bytes and data.isascii()
    found = min(len(texts), max_readings)
    assert len(document["readings"]) + document["readings_left_out"] == found
    assert [r["seq"] for r in document["readings"]] == list(
        range(len(texts) - len(document["readings"]), len(texts))
    )
