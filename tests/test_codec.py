"""Each bad-input reason, one test each, plus the good paths of the telemetry codec."""

import json
import time

import pytest

from devices.codec import decode_telemetry
from devices.registry import Device
from devices.rejections import Reason, Rejection
from devices.replay_guard import ReplayGuard
from domain import Location, Reading

REGISTRY = {
    "MH-1": Device("MH-1", "manhole_cover", Location(26.08, 119.3)),
    "BIN-1": Device("BIN-1", "bin", Location(26.08, 119.3)),
    "WL-1": Device("WL-1", "water_level", Location(26.08, 119.3)),
}
NOW = 1_763_700_000_000


def decode(device, doc, topic=None, now=NOW):
    payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return decode_telemetry(
        topic or f"citygw/v1/{device}/telemetry", payload, REGISTRY, now, 300_000
    )


def reason(result):
    assert isinstance(result, Rejection), result
    return result.reason


def test_good_reading_with_iso_timestamp_and_unit_conversion():
    result = decode(
        "WL-1",
        {
            "ts": "2025-11-21T12:40:00+08:00",
            "seq": 3,
            "values": {"level_cm": {"value": 0.42, "unit": "m"}},
        },
    )
    assert result == Reading("WL-1", "water_level", 1763700000000, {"level_cm": 42.0}, 3)


def test_malformed_json():
    assert reason(decode("BIN-1", b"\xff{not json")) is Reason.MALFORMED_JSON


@pytest.mark.parametrize(
    "doc",
    [
        [1, 2],
        {"values": {"fill_pct": 5}},
        {"ts": NOW, "values": {"fill_pct": "5"}},
        {"ts": NOW, "values": {}},
        {"ts": NOW, "values": {"fill_pct": 5, "colour": "red"}},
        {"ts": "2025-11-21T12:40:00", "values": {"fill_pct": 5}},
        {"ts": NOW, "seq": -1, "values": {"fill_pct": 5}},
    ],
    ids=["array", "no-ts", "string-value", "missing-field", "unknown-field", "naive-ts", "seq"],
)
def test_bad_schema(doc):
    assert reason(decode("BIN-1", doc)) is Reason.BAD_SCHEMA


def test_bad_topic_is_bad_schema():
    result = decode("BIN-1", {"ts": NOW, "values": {"fill_pct": 5}}, topic="citygw/v1/a/b/c")
    assert reason(result) is Reason.BAD_SCHEMA


def test_out_of_range():
    assert reason(decode("BIN-1", {"ts": NOW, "values": {"fill_pct": 140}})) is Reason.OUT_OF_RANGE


def test_bad_unit():
    doc = {"ts": NOW, "values": {"level_cm": {"value": 3, "unit": "kg"}}}
    assert reason(decode("WL-1", doc)) is Reason.BAD_UNIT


def test_unknown_device():
    result = decode("GHOST", {"ts": NOW, "values": {"fill_pct": 5}})
    assert reason(result) is Reason.UNKNOWN_DEVICE and result.device_id == "GHOST"


def test_future_timestamp():
    doc = {"ts": NOW + 301_000, "values": {"fill_pct": 5}}
    assert reason(decode("BIN-1", doc)) is Reason.FUTURE_TIMESTAMP
    assert isinstance(decode("BIN-1", {"ts": NOW + 299_000, "values": {"fill_pct": 5}}), Reading)


def reading(ts, seq):
    return Reading("BIN-1", "bin", ts, {"fill_pct": 5.0}, seq)


def test_duplicate_seq_is_refused_but_a_rebooted_counter_is_not():
    guard = ReplayGuard()
    assert guard.admit(reading(1000, 7)) is None
    assert guard.admit(reading(1000, 7)).reason is Reason.DUPLICATE
    assert guard.admit(reading(2000, 1)) is None  # device rebooted, time moves on


def test_stale_reading_is_refused():
    guard = ReplayGuard()
    assert guard.admit(reading(5000, 1)) is None
    assert guard.admit(reading(4000, 2)).reason is Reason.STALE
    assert guard.admit(reading(5000, None)).reason is Reason.STALE


def test_guard_state_survives_a_restart():
    guard = ReplayGuard()
    guard.admit(reading(int(time.time() * 1000), 1))
    restored = ReplayGuard()
    for device_id, state in guard.take_dirty().items():
        restored.load(device_id, state)
    assert restored.admit(reading(1, 1)).reason is Reason.DUPLICATE
