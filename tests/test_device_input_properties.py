"""Property tests of every device-side entry point: whatever arrives, nothing raises; what is
refused has a reason and a short, storable detail; what is accepted holds the Reading's
invariants; and valid input built from the spec decodes to exactly the expected Reading.

Entry points: our telemetry codec, the fleet JSON and binary decoders, both status decoders,
the router in front of them, the serial line protocol and the Modbus register decoder.
Examples are derandomized (the same every run: the suite must not flake) and kept to 200 per
test; ``bench/fuzz.py`` throws far more, from seeds, at the same entry points.
"""

from __future__ import annotations

import base64
import json
import math
import struct

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from devices.codec import MAX_SEQ, decode_telemetry, decode_values
from devices.event_time import EARLIEST_TS_MS
from devices.fleet import FleetSettings, MessageRouter, decode_fleet_message, decode_fleet_status
from devices.fleet.binary import crc16_modbus
from devices.invariants import (
    json_violations,
    reading_violations,
    rejection_violations,
    status_violations,
)
from devices.kinds import KINDS
from devices.limits import DEFAULT_LIMITS
from devices.registry import Device
from devices.rejections import Reason, Rejection
from devices.serial.line_protocol import SENTENCE_TYPES, encode_line, parse_line
from devices.serial.registers import block_values, read_blocks
from devices.serial.settings import RegisterSettings
from devices.status import DeviceStatus, decode_status
from domain import Location, Reading

HERE = Location(26.08, 119.3)
REGISTRY = {
    device_id: Device(device_id, kind, HERE)
    for device_id, kind in [
        ("WL-1", "water_level"),
        ("MH-1", "manhole_cover"),
        ("BIN-1", "bin"),
        ("1", "bin"),
    ]
}
NOW = 1_763_700_000_000
SKEW = 300_000

FLEET_JSON = FleetSettings.model_validate(
    yaml.safe_load("""
name: prop-json
topic: prop/+/up
device_id: {path: $.id}
codec:
  type: json
  ts: {path: $.t, format: epoch_ms}
  seq: $.n
  fields:
    level_cm: $.v.level
    battery_pct: $.v.bat
    fill_pct: $.v.fill
    tilt_deg: $.v.tilt
    lid_open: {path: $.v.lid, map: {"OPEN": true, "SHUT": false}}
status:
  topic: prop/+/lwt
  device_id: {path: $.id}
  path: $.state
  map: {"up": true, "down": false}
""")
)
FLEET_BINARY = FleetSettings.model_validate(
    yaml.safe_load("""
name: prop-binary
topic: bin/+/up
device_id: {topic: 1, prefix: WL-}
kind: water_level
codec:
  type: binary
  byte_order: big
  fields:
    - {name: ts, type: u32}
    - {name: seq, type: u32}
    - {name: level_cm, type: u16, scale: 0.5}
    - {name: battery_pct, type: u8}
  crc: {algorithm: crc16_modbus, byte_order: little}
""")
)
FLEET_ENVELOPE = FleetSettings.model_validate(
    yaml.safe_load("""
name: prop-envelope
topic: lns/#
device_id: {path: $.dev}
kind: manhole_cover
codec:
  type: binary
  byte_order: little
  envelope: {path: $.up.data, encoding: base64}
  fields:
    - {name: tilt_deg, type: f32}
    - {name: lid_open, type: u8, map: {0: false, 1: true}}
""")
)
ROUTER = MessageRouter([FLEET_JSON, FLEET_BINARY, FLEET_ENVELOPE])
PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- what arrives -----------------------------------------------------------------------

giant_ints = st.integers(min_value=-(10**400), max_value=10**400)
# Text as JSON escapes can make it: control characters and lone surrogates too.
wild_text = (
    st.text(max_size=30)
    | st.text(st.characters(categories=["Cs", "Cc", "Lo"]), max_size=9)
    | st.sampled_from(["\ud800", "a\udfff", "\x00", "\u202e", "x" * 5_000, "名" * 100])
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | giant_ints
    | st.floats(allow_nan=True, allow_infinity=True)
    | wild_text
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(wild_text, children, max_size=4)
    ),
    max_leaves=20,
)
numbers_at_the_edges = (
    st.sampled_from([MAX_SEQ, MAX_SEQ + 1, -1, 0, 2**64, EARLIEST_TS_MS - 1, NOW + SKEW + 1])
    | st.integers(min_value=-5, max_value=2**64)
    | giant_ints
    | st.floats(allow_nan=True, allow_infinity=True)
)
times = (
    st.integers(min_value=EARLIEST_TS_MS - 10**6, max_value=NOW + 2 * SKEW)
    | numbers_at_the_edges
    | st.datetimes().map(lambda d: d.isoformat() + "Z")
    | wild_text
)
field_values = (
    scalars
    | st.floats(min_value=-1, max_value=20_000)
    | st.fixed_dictionaries(
        {"value": scalars | numbers_at_the_edges, "unit": st.sampled_from(["m", "mm"]) | wild_text}
    )
)
telemetry_docs = st.fixed_dictionaries(
    {},
    optional={
        "ts": times,
        "seq": numbers_at_the_edges | json_values,
        "values": st.dictionaries(
            st.sampled_from([n for specs in KINDS.values() for n in specs]) | wild_text,
            field_values,
            max_size=4,
        )
        | json_values,
    },
)
valid_ts = st.integers(min_value=EARLIEST_TS_MS, max_value=NOW + SKEW)
valid_seq = st.none() | st.integers(min_value=0, max_value=MAX_SEQ)


def in_range(name: str):
    spec = next(specs[name] for specs in KINDS.values() if name in specs)
    if spec.boolean:
        return st.booleans()
    return st.floats(min_value=spec.low, max_value=spec.high, allow_nan=False)


@st.composite
def kind_values(draw, kind: str) -> dict:
    specs = KINDS[kind]
    return {
        name: draw(in_range(name))
        for name, spec in specs.items()
        if spec.required or draw(st.booleans())
    }


@st.composite
def near_valid_telemetry(draw) -> tuple[str, dict]:
    """A valid message with one part made hostile: the accepting paths get explored too."""
    device_id = draw(st.sampled_from(["WL-1", "MH-1", "BIN-1"]))
    values = draw(kind_values(REGISTRY[device_id].kind))
    doc = {"ts": draw(valid_ts), "seq": draw(valid_seq), "values": values}
    part = draw(st.sampled_from(["ts", "seq", "value", "extra field", "extra key", "none"]))
    if part in ("ts", "seq"):
        doc[part] = draw(times if part == "ts" else numbers_at_the_edges)
    elif part == "value":
        values[draw(st.sampled_from(sorted(values)))] = draw(field_values | numbers_at_the_edges)
    elif part == "extra field":
        values[draw(wild_text)] = draw(json_values)
    elif part == "extra key":
        doc[draw(wild_text)] = draw(json_values)
    return device_id, doc


def dumped(doc) -> bytes:
    return json.dumps(doc).encode()  # NaN and Infinity come out as non-JSON literals: refused


deep_nesting = (st.integers(min_value=1, max_value=40) | st.sampled_from([999, 5_000, 30_000])).map(
    lambda n: b"[" * n + b"]" * n
)
other_encodings = st.tuples(telemetry_docs, st.sampled_from(["utf-16", "utf-32", "utf-16-be"])).map(
    lambda pair: json.dumps(pair[0]).encode(pair[1])
)
payloads = (
    st.binary(max_size=200)
    | json_values.map(dumped)
    | telemetry_docs.map(dumped)
    | deep_nesting
    | other_encodings
)
own_topics = st.sampled_from([*REGISTRY, "GHOST", "", "a/b", "x" * 70, "W\x00L"]).map(
    lambda device: f"citygw/v1/{device}/telemetry"
)
topics = (
    own_topics
    | st.text(max_size=60)
    | st.sampled_from(
        ["prop/x/up", "prop/x/lwt", "bin/1/up", "lns/a/b", "citygw/v1/MH-1/status", "x" * 300]
    )
)


@st.composite
def near_valid_payloads(draw) -> tuple[str, bytes]:
    """``near_valid_telemetry`` as bytes, some with raw bytes inside a JSON string (invalid
    UTF-8, or another encoding's) or with a byte order mark."""
    device_id, doc = draw(near_valid_telemetry())
    payload = dumped(doc)
    how = draw(st.sampled_from(["as is", "bytes in a string", "bom", "utf-16"]))
    if how == "bytes in a string":
        payload = b'{"note": "' + draw(st.binary(min_size=1, max_size=4)) + b'", ' + payload[1:]
    elif how == "bom":
        payload = b"\xef\xbb\xbf" + payload
    elif how == "utf-16":
        payload = payload.decode().encode("utf-16")
    return device_id, payload


# --- what must hold ---------------------------------------------------------------------


def holds(result, json_payload: bytes | None = None) -> None:
    """The contract (``devices.invariants``) of anything an entry point returns; a Reading
    decoded from ``json_payload`` also says the payload was strict, bounded JSON."""
    if isinstance(result, Rejection):
        problems = rejection_violations(result, DEFAULT_LIMITS)
    elif isinstance(result, DeviceStatus):
        problems = status_violations(result, REGISTRY)
    else:
        problems = reading_violations(result, REGISTRY, NOW, SKEW)
        if json_payload is not None:
            problems += json_violations(json_payload, DEFAULT_LIMITS)
    assert not problems, (result, problems)


# --- never raises, invariants hold --------------------------------------------------------


@PROPERTY
@given(topic=own_topics | topics, payload=payloads, near_valid=near_valid_payloads())
def test_own_telemetry_codec(topic, payload, near_valid):
    holds(decode_telemetry(topic, payload, REGISTRY, NOW, SKEW), payload)
    device_id, payload = near_valid
    topic = f"citygw/v1/{device_id}/telemetry"
    holds(decode_telemetry(topic, payload, REGISTRY, NOW, SKEW), payload)


@PROPERTY
@given(near_valid=near_valid_telemetry(), levels=st.integers(min_value=0, max_value=100))
def test_json_deeper_than_the_bound_is_too_large(near_valid, levels):
    """The message is one level; its extra key nests ``levels`` more."""
    device_id, doc = near_valid
    deep = doc | {"deep": json.loads("[" * levels + "]" * levels or "0")}
    try:
        payload = json.dumps(deep, allow_nan=False).encode()
    except ValueError:  # NaN or Infinity: refused as malformed before depth is looked at
        assume(False)
    result = decode_telemetry(f"citygw/v1/{device_id}/telemetry", payload, REGISTRY, NOW, SKEW)
    too_deep = 1 + levels > DEFAULT_LIMITS.max_json_depth
    assert (isinstance(result, Rejection) and result.reason is Reason.TOO_LARGE) == too_deep


@PROPERTY
@given(
    device=st.sampled_from(["WL-1", "MH-1", "BIN-1", "GHOST", "", "x" * 100]) | json_values,
    doc=json_values,
    ts=times,
    seq=json_values,
    values=json_values,
)
def test_fleet_json_decoder(device, doc, ts, seq, values):
    payload = dumped({"id": device, "t": ts, "n": seq, "v": values, "x": doc})
    holds(decode_fleet_message(FLEET_JSON, "prop/x/up", payload, REGISTRY, NOW, SKEW), payload)


@PROPERTY
@given(body=st.binary(min_size=11, max_size=11), crc_ok=st.booleans(), raw=st.binary(max_size=40))
def test_fleet_binary_decoder(body, crc_ok, raw):
    crc = crc16_modbus(body) if crc_ok else 0
    payload = body + crc.to_bytes(2, "little")
    for data in (payload, raw):
        holds(decode_fleet_message(FLEET_BINARY, "bin/1/up", data, REGISTRY, NOW, SKEW))


@PROPERTY
@given(
    device=json_values | st.just("MH-1"), data=json_values | st.binary(max_size=8), doc=json_values
)
def test_fleet_binary_envelope_decoder(device, data, doc):
    text = base64.b64encode(data).decode() if isinstance(data, bytes) else data
    payload = dumped({"dev": device, "up": {"data": text}, "x": doc})
    holds(decode_fleet_message(FLEET_ENVELOPE, "lns/a", payload, REGISTRY, NOW, SKEW))


@PROPERTY
@given(topic=topics, payload=payloads | st.sampled_from([b"online", b" offline\n", b"ONLINE"]))
def test_status_decoders(topic, payload):
    holds(decode_status(topic, payload, REGISTRY, NOW))
    assert FLEET_JSON.status is not None
    holds(decode_fleet_status(FLEET_JSON.status, topic, payload, REGISTRY, NOW))
    doc = dumped({"id": "MH-1", "state": payload.decode("latin-1")})
    holds(decode_fleet_status(FLEET_JSON.status, topic, doc, REGISTRY, NOW))


@PROPERTY
@given(topic=topics, payload=payloads, retained=st.booleans())
def test_router(topic, payload, retained):
    route = ROUTER.route(topic)
    is_json = route is not None and route.source != "prop-binary"
    holds(
        ROUTER.decode(topic, payload, REGISTRY, NOW, SKEW, retained), payload if is_json else None
    )


@PROPERTY
@given(text=wild_text)
def test_every_detail_is_short_and_storable(text):
    """Whatever text a message carries, in whichever slot, the rejection stays storable."""
    ours = "citygw/v1/BIN-1/telemetry"
    for doc in (
        {"ts": NOW, "values": {"fill_pct": 5, text: 1}},
        {"ts": NOW, "values": {"fill_pct": {"value": 5, "unit": text}}},
        {"ts": text, "values": {"fill_pct": 5}},
    ):
        holds(ROUTER.decode(ours, dumped(doc), REGISTRY, NOW, SKEW))
    for doc in (
        {"id": text, "t": NOW, "v": {"fill": 5}},
        {"id": "MH-1", "t": NOW, "v": {"tilt": 5, "lid": text}},
        {"id": "MH-1", "t": text, "v": {"tilt": 5, "lid": "OPEN"}},
    ):
        holds(ROUTER.decode("prop/x/up", dumped(doc), REGISTRY, NOW, SKEW))
    holds(ROUTER.decode("prop/x/lwt", dumped({"id": "MH-1", "state": text}), REGISTRY, NOW, SKEW))
    holds(
        ROUTER.decode(
            f"citygw/v1/{text}/status", text.encode("utf-8", "surrogatepass"), REGISTRY, NOW, SKEW
        )
    )
    holds(ROUTER.decode(f"bin/{text}/up", b"", REGISTRY, NOW, SKEW))


sentence_fields = st.lists(
    st.text(alphabet="0123456789.-ein,*$", max_size=12)
    | st.sampled_from(["nan", "inf", "9" * 200]),
    max_size=6,
)


@PROPERTY
@given(
    line=st.binary(max_size=300),
    kind=st.sampled_from(["WL", "MH", "BN", "XX", ""]),
    device=st.sampled_from(["WL-1", "MH-1", "BIN-1", "GHOST", ""]) | st.text(max_size=20),
    fields=sentence_fields,
)
def test_line_protocol(line, kind, device, fields):
    holds(parse_line(line, REGISTRY, NOW))
    body = ",".join([kind, device, *fields]).encode("utf-8", "replace")
    checksum = 0
    for byte in body:
        checksum ^= byte
    holds(parse_line(b"$" + body + b"*%02X\r\n" % checksum, REGISTRY, NOW))


registers = st.builds(
    RegisterSettings,
    field=st.sampled_from(["level_cm", "battery_pct"]),
    address=st.integers(min_value=0, max_value=4),
    type=st.sampled_from(["uint16", "int16", "uint32", "int32", "float32"]),
    word_order=st.sampled_from(["big", "little"]),
    scale=st.floats(allow_nan=False, allow_infinity=False).filter(lambda s: s != 0),
    offset=st.floats(allow_nan=False, allow_infinity=False),
)


@PROPERTY
@given(
    register=registers,
    words=st.lists(st.integers(min_value=0, max_value=0xFFFF) | giant_ints, max_size=8),
)
def test_register_decoder(register, words):
    [block] = read_blocks([register])
    raw = block_values("water_level", block, words)
    if isinstance(raw, Rejection):
        holds(raw)
        return
    values = decode_values(KINDS["water_level"], raw)
    if isinstance(values, Rejection):
        holds(values)
        return
    holds(Reading("WL-1", "water_level", NOW, values))


# --- valid input from the spec decodes to exactly the expected Reading --------------------


@PROPERTY
@given(
    data=st.data(), device_id=st.sampled_from(["WL-1", "MH-1", "BIN-1"]), ts=valid_ts, seq=valid_seq
)
def test_own_telemetry_round_trips(data, device_id, ts, seq):
    kind = REGISTRY[device_id].kind
    values = data.draw(kind_values(kind))
    doc = {"ts": ts, "values": values} | ({} if seq is None else {"seq": seq})
    result = ROUTER.decode(f"citygw/v1/{device_id}/telemetry", dumped(doc), REGISTRY, NOW, SKEW)
    expected = {n: v if isinstance(v, bool) else float(v) for n, v in values.items()}
    assert result == Reading(device_id, kind, ts, expected, seq)


@PROPERTY
@given(
    data=st.data(), device_id=st.sampled_from(["WL-1", "MH-1", "BIN-1"]), ts=valid_ts, seq=valid_seq
)
def test_fleet_json_round_trips(data, device_id, ts, seq):
    kind = REGISTRY[device_id].kind
    values = data.draw(kind_values(kind))
    short = {"level_cm": "level", "battery_pct": "bat", "fill_pct": "fill", "tilt_deg": "tilt"}
    sent = {short[n]: v for n, v in values.items() if n != "lid_open"}
    if "lid_open" in values:
        sent["lid"] = "OPEN" if values["lid_open"] else "SHUT"
    doc = {"id": device_id, "t": ts, "v": sent} | ({} if seq is None else {"n": seq})
    result = ROUTER.decode("prop/x/up", dumped(doc), REGISTRY, NOW, SKEW)
    assert result == Reading(device_id, kind, ts, values, seq)


@PROPERTY
@given(
    ts_s=st.integers(min_value=EARLIEST_TS_MS // 1000, max_value=(NOW + SKEW) // 1000),
    seq=st.integers(min_value=0, max_value=2**32 - 1),
    level=st.integers(min_value=0, max_value=20_000),
    battery=st.integers(min_value=0, max_value=100),
)
def test_fleet_binary_round_trips(ts_s, seq, level, battery):
    body = struct.pack(">IIHB", ts_s, seq, level, battery)
    payload = body + crc16_modbus(body).to_bytes(2, "little")
    result = ROUTER.decode("bin/1/up", payload, REGISTRY, NOW, SKEW)
    expected = {"level_cm": level * 0.5, "battery_pct": float(battery)}
    assert result == Reading("WL-1", "water_level", ts_s * 1000, expected, seq)


@PROPERTY
@given(data=st.data(), sentence_type=st.sampled_from(sorted(SENTENCE_TYPES)))
def test_line_protocol_round_trips(data, sentence_type):
    kind, names = SENTENCE_TYPES[sentence_type]
    device_id = next(d for d, device in REGISTRY.items() if device.kind == kind)
    sent = {
        n: data.draw(
            st.booleans() if KINDS[kind][n].boolean else in_range(n).map(lambda v: round(v, 2))
        )
        for n in names
    }
    line = encode_line(sentence_type, device_id, [sent[n] for n in names])
    expected = {n: v if isinstance(v, bool) else float(v) for n, v in sent.items()}
    assert parse_line(line, REGISTRY, NOW) == Reading(device_id, kind, NOW, expected)


@PROPERTY
@given(
    type_=st.sampled_from(["uint32", "int32", "float32"]),
    word_order=st.sampled_from(["big", "little"]),
    number=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_register_word_orders_round_trip(type_, word_order, number):
    raw = number.to_bytes(4, "big")
    words = [int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big")]
    sent = words if word_order == "big" else words[::-1]
    register = RegisterSettings(field="level_cm", address=0, type=type_, word_order=word_order)
    [block] = read_blocks([register])
    result = block_values("water_level", block, sent)
    assert isinstance(result, dict)
    code = {"uint32": ">I", "int32": ">i", "float32": ">f"}[type_]
    expected = struct.unpack(code, raw)[0]
    if type_ == "float32":
        if math.isnan(expected):
            assert math.isnan(result["level_cm"])
            return
        expected = float(f"{expected:.7g}")
    assert result == {"level_cm": round(expected, 9)}
