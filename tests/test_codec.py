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


def test_an_unknown_device_s_unreadable_payload_is_told_as_unreadable():
    """The payload is read before the device is looked up: a dead letter names what is
    wrong with the message, whoever sent it."""
    assert reason(decode("GHOST", b"\xff{not json")) is Reason.MALFORMED_JSON
    assert reason(decode("GHOST", [1, 2])) is Reason.BAD_SCHEMA


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


# --- hostile input: every bound refuses with a reason, nothing raises ---------------------

GOOD = {"ts": NOW, "seq": 1, "values": {"fill_pct": 5}}


def test_json_nested_beyond_the_parser_is_too_large_not_a_recursion_error():
    result = decode("BIN-1", b"[" * 5000)
    assert reason(result) is Reason.TOO_LARGE
    assert result.detail == "JSON nested deeper than 32 levels"
    assert result.device_id == "BIN-1"


def test_json_depth_is_bounded_at_32_levels():
    def nested(levels: int) -> bytes:  # the document itself is one level
        return json.dumps(GOOD | {"extra": json.loads("[" * (levels - 1) + "]" * (levels - 1))})

    assert isinstance(decode("BIN-1", nested(32).encode()), Reading)
    assert reason(decode("BIN-1", nested(33).encode())) is Reason.TOO_LARGE


@pytest.mark.parametrize(
    ("seq", "accepted"),
    [(2**63 - 1, True), (2**63, False), (10**400, False), (-1, False)],
    ids=["int64-max", "2**63", "400-digits", "negative"],
)
def test_seq_is_a_non_negative_int64(seq, accepted):
    result = decode("BIN-1", GOOD | {"seq": seq})
    if accepted:
        assert isinstance(result, Reading) and result.seq == seq
    else:
        assert reason(result) is Reason.BAD_SCHEMA
        assert result.detail == "seq must be an integer within 0..2**63-1"


@pytest.mark.parametrize(
    ("ts", "why"),
    [
        (10**400, Reason.FUTURE_TIMESTAMP),  # overflowed formatting the detail
        (1e306, Reason.FUTURE_TIMESTAMP),
        ("9999-12-31T23:59:59-05:00", Reason.FUTURE_TIMESTAMP),  # after 9999 in UTC
        (-(10**400), Reason.OUT_OF_RANGE),  # overflowed the store's int64
        (-1, Reason.OUT_OF_RANGE),
        (0, Reason.OUT_OF_RANGE),  # a device whose clock was never set
        ("1969-12-31T23:59:59Z", Reason.OUT_OF_RANGE),
        ("1999-12-31T23:59:59.999Z", Reason.OUT_OF_RANGE),
        ("0001-01-01T00:00:00+05:00", Reason.OUT_OF_RANGE),
    ],
    ids=[
        "400-digits",
        "1e306",
        "after-9999",
        "minus-400-digits",
        "-1",
        "0",
        "1969",
        "1999",
        "year-1",
    ],
)
def test_ts_outside_the_calendar_is_refused(ts, why):
    result = decode("BIN-1", GOOD | {"ts": ts}, now=2**62)  # a clock far ahead: bounds hold
    assert reason(result) is why
    assert len(result.detail) < 120


def test_ts_bounds_are_inclusive():
    assert decode("BIN-1", GOOD | {"ts": "2000-01-01T00:00:00Z"}).ts == 946_684_800_000
    assert decode("BIN-1", GOOD | {"ts": 946_684_800_000}).ts == 946_684_800_000
    assert decode("BIN-1", GOOD | {"ts": "2025-11-21T04:40:00.001Z"}).ts == NOW + 1


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-32-be"])
def test_only_utf8_is_taken(encoding):
    result = decode("BIN-1", json.dumps(GOOD).encode(encoding))
    assert reason(result) is Reason.MALFORMED_JSON
    assert result.detail.startswith("not UTF-8 JSON: ")


def test_a_utf8_byte_order_mark_is_skipped():
    assert isinstance(decode("BIN-1", b"\xef\xbb\xbf" + json.dumps(GOOD).encode()), Reading)
    twice = decode("BIN-1", b"\xef\xbb\xbf" * 2 + json.dumps(GOOD).encode())
    assert reason(twice) is Reason.MALFORMED_JSON


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant):
    payload = b'{"ts": %d, "values": {"fill_pct": %s}}' % (NOW, constant.encode())
    result = decode("BIN-1", payload)
    assert reason(result) is Reason.MALFORMED_JSON
    assert result.detail == f"not UTF-8 JSON: {constant} is not a JSON number"


def test_a_long_device_id_is_refused_shortened_not_copied_into_the_dead_letter():
    result = decode("B" * 10_000, GOOD)
    assert reason(result) is Reason.TOO_LARGE
    assert result.device_id == ""
    assert result.detail.startswith("device id of 10000 characters is over 64: 'BBBB")
    assert len(result.detail) < 100


def test_a_device_id_with_control_characters_is_refused():
    result = decode("BIN\x00-1", GOOD)
    assert reason(result) is Reason.BAD_SCHEMA
    assert result.detail == r"device id 'BIN\x00-1' is not printable text"
    assert result.device_id == ""


def test_details_quote_the_message_short_and_storable():
    doc = {"ts": NOW, "values": {"fill_pct": 5, "\ud800" + "x" * 5000: 1, "b": 2, "c": 3, "d": 4}}
    result = decode("BIN-1", json.dumps(doc).encode())
    assert reason(result) is Reason.BAD_SCHEMA
    assert result.detail.startswith("unknown field(s) 'b', 'c', 'd' and 1 more")
    doc = {"ts": NOW, "values": {"fill_pct": {"value": 5, "unit": "\udfff" * 5000}}}
    result = decode("BIN-1", json.dumps(doc).encode())
    assert reason(result) is Reason.BAD_UNIT
    result.detail.encode("utf-8")  # a lone surrogate would fail the dead letter's insert
    assert len(result.detail) < 120
