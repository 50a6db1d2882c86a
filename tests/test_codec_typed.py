"""The telemetry codec reads the common payload straight into its kind's msgspec type
(devices/codec.py ``typed_reading``). For every payload, ``decode_telemetry`` must answer
exactly as the step-by-step checks (``checked_reading``) do alone: the same reading (types,
key order, signed zeros) or the same refusal; and the common payload must take the typed
path."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.codec import checked_reading, decode_telemetry, typed_reading
from devices.kinds import KINDS
from devices.registry import Device
from domain import Location, Reading

PROPERTY = settings(max_examples=50, deadline=None)
NOW_MS = 1_763_700_000_000
SKEW_MS = 300_000
REGISTRY = {
    f"D-{kind}": Device(f"D-{kind}", kind, Location(26.05, 119.28, "here")) for kind in KINDS
}
FIELDS = sorted({name for specs in KINDS.values() for name in specs})

numbers = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=-1, max_value=200)
    | st.integers(-5, 20_000)
    | st.sampled_from([0, -0.0, 100, 100.0, 180.0000001, 10_000, 1e308])
)
field_values = (
    numbers
    | st.booleans()
    | st.none()
    | st.text(max_size=4)
    | st.fixed_dictionaries({"value": numbers, "unit": st.sampled_from(["%", "cm", "m", "x"])})
)
values = st.dictionaries(
    st.sampled_from([*FIELDS, "other"]), field_values, max_size=4
) | st.sampled_from([[], "v", None])
ts_values = (
    st.integers(NOW_MS - 10**9, NOW_MS + 10**6)
    | st.sampled_from([0, -1, 946_684_800_000, 2**63, NOW_MS + 0.5, float(NOW_MS), True])
    | st.sampled_from(["2026-11-21T08:00:00+08:00", "2026-11-21T08:00:00", "x"])
)
seq_values = st.integers(-2, 2**64) | st.sampled_from([None, True, 1.0, "1"])
documents = st.fixed_dictionaries(
    {},
    optional={
        "ts": ts_values,
        "seq": seq_values,
        "values": values,
        "extra": st.text(max_size=3) | st.integers(),
    },
)


def text_of(doc: dict, style: int) -> bytes:
    """The document as devices send it: compact, spaced, or with a key repeated."""
    if style == 0:
        return json.dumps(doc).encode()
    if style == 1:
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    first = json.dumps(doc)
    if first == "{}":
        return b'{"ts": 1, "ts": 2}'
    return ('{"ts": "repeated", ' + first[1:]).encode()  # the last "ts" counts


def same_answer(topic: str, payload: bytes) -> None:
    device_id = topic.split("/")[2]
    got = decode_telemetry(topic, payload, REGISTRY, NOW_MS, SKEW_MS)
    want = checked_reading(device_id, payload, REGISTRY[device_id], NOW_MS, SKEW_MS)
    assert repr(got) == repr(want), payload  # repr tells 1 from 1.0 from True, 0.0 from -0.0


def well_formed(kind: str, data: st.DataObject) -> dict:
    """A reading its kind takes: ts in range, its fields within their ranges, maybe a seq."""
    values = {}
    for name, spec in KINDS[kind].items():
        if spec.required or data.draw(st.booleans()):
            values[name] = data.draw(
                st.booleans()
                if spec.boolean
                else st.floats(spec.low, spec.high) | st.integers(int(spec.low), int(spec.high))
            )
    doc = {"ts": data.draw(st.integers(NOW_MS - 10**9, NOW_MS)), "values": values}
    if data.draw(st.booleans()):
        doc["seq"] = data.draw(st.integers(0, 2**63 - 1) | st.none())
    return doc


@PROPERTY
@given(st.sampled_from(sorted(REGISTRY)), documents, st.integers(0, 2))
def test_every_document_gets_the_step_by_step_answer(device_id, doc, style):
    same_answer(f"citygw/v1/{device_id}/telemetry", text_of(doc, style))


@PROPERTY
@given(st.sampled_from(sorted(REGISTRY)), st.data())
def test_a_reading_changed_in_one_place_gets_the_step_by_step_answer(device_id, data):
    """A well-formed reading with one key changed, dropped or added: where the two paths
    could part."""
    doc = well_formed(REGISTRY[device_id].kind, data)
    change = data.draw(st.sampled_from(["ts", "seq", "value", "drop", "add", "extra"]))
    if change == "ts":
        doc["ts"] = data.draw(ts_values)
    elif change == "seq":
        doc["seq"] = data.draw(seq_values)
    elif change in ("value", "drop") and doc["values"]:
        name = data.draw(st.sampled_from(sorted(doc["values"])))
        if change == "drop":
            del doc["values"][name]
        else:
            doc["values"][name] = data.draw(field_values)
    elif change == "add":
        doc["values"][data.draw(st.sampled_from([*FIELDS, "other"]))] = data.draw(field_values)
    else:
        doc[data.draw(st.sampled_from(["extra", "values", "ts"]))] = data.draw(field_values)
    same_answer(f"citygw/v1/{device_id}/telemetry", text_of(doc, data.draw(st.integers(0, 2))))


@PROPERTY
@given(st.sampled_from(sorted(REGISTRY)), st.data())
def test_well_formed_readings_take_the_typed_path_with_the_same_reading(device_id, data):
    kind = REGISTRY[device_id].kind
    payload = json.dumps(well_formed(kind, data)).encode()
    fast = typed_reading(device_id, kind, payload, NOW_MS, SKEW_MS)
    assert isinstance(fast, Reading)
    assert repr(fast) == repr(
        checked_reading(device_id, payload, REGISTRY[device_id], NOW_MS, SKEW_MS)
    )


def test_what_the_typed_path_leaves_to_the_checks():
    """A key it would skip unread (with a string that is not UTF-8), a unit-tagged value, a
    value out of range, ts as text or a float, a seq beyond 63 bits or a float, a payload
    deeper than the bound: each is left to ``checked_reading``, and answered as it answers."""
    topic, device_id = "citygw/v1/D-bin/telemetry", "D-bin"
    common = b'{"ts": %d, "seq": 1, "values": {"fill_pct": 42}' % NOW_MS
    left = [
        common + b', "note": "\xff"}',
        b'{"ts": %d, "values": {"fill_pct": {"value": 42, "unit": "%%"}}}' % NOW_MS,
        b'{"ts": %d, "values": {"fill_pct": 100.5}}' % NOW_MS,
        b'{"ts": "2025-11-21T08:00:00+08:00", "values": {"fill_pct": 1}}',
        b'{"ts": %d, "seq": 9223372036854775808, "values": {"fill_pct": 1}}' % NOW_MS,
        b'{"ts": %d, "seq": 1.0, "values": {"fill_pct": 1}}' % NOW_MS,
        b'{"ts": %d.0, "values": {"fill_pct": 1}}' % NOW_MS,
        b'{"ts": %d, "values": {"fill_pct": 1}, "x": %s}' % (NOW_MS, b"[" * 40 + b"]" * 40),
    ]
    for payload in left:
        assert typed_reading(device_id, "bin", payload, NOW_MS, SKEW_MS) is None, payload
        same_answer(topic, payload)
    assert typed_reading(device_id, "bin", common + b"}", NOW_MS, SKEW_MS) is not None
