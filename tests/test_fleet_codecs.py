"""Existing fleets' formats by config: JSON paths, unit conversion, enum maps, binary layouts,
timestamps, status messages, topic routing, and one test per rejection reason."""

import base64
import copy
import json
import struct
import zlib
from pathlib import Path

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

import devices.fleet
from devices.fleet import Fleets, FleetSettings, MessageRouter, decode_fleet_message
from devices.fleet.binary import checksum, crc16_modbus
from devices.fleet.jsonpath import MISSING, JsonPath
from devices.fleet.router import KNOWN_TOPICS_BYTES
from devices.fleet.settings import Crc
from devices.limits import InputLimits
from devices.registry import Device
from devices.rejections import Reason, Rejection
from devices.status import DeviceStatus
from domain import Location, Reading

HERE = Location(26.08, 119.3)
REGISTRY = {
    "WL-0001": Device("WL-0001", "water_level", HERE),
    "MH-0002": Device("MH-0002", "manhole_cover", HERE),
    "BIN-0003": Device("BIN-0003", "bin", HERE),
    "MH-1": Device("MH-1", "manhole_cover", HERE),
}
NOW = 1_763_700_000_000  # 2025-11-21T04:40:00Z
SKEW = 300_000

# The example mappings shipped beside the fleet code, by name.
EXAMPLES = {
    f["name"]: f
    for f in yaml.safe_load(
        Path(devices.fleet.__file__).with_name("examples.yaml").read_text(encoding="utf-8")
    )
}
WATER, MANHOLE, BINS, PACKED, LORA = (
    EXAMPLES[name] for name in ("acme-water", "lidco", "binco", "packed-water", "lora-lids")
)


def fleet(example: dict, **changes) -> FleetSettings:
    data = copy.deepcopy(example)
    data.update(changes)
    return FleetSettings.model_validate(data)


def decode(example: dict, topic: str, payload, now=NOW, **changes) -> Reading | Rejection:
    if isinstance(payload, dict | list | int | float | str):
        payload = json.dumps(payload).encode()
    return decode_fleet_message(fleet(example, **changes), topic, payload, REGISTRY, now, SKEW)


def reason(result) -> Reason:
    assert isinstance(result, Rejection), result
    return result.reason


def water_doc(**changes) -> dict:
    doc = {
        "time": "2025-11-21T12:39:00+08:00",
        "meta": {"cnt": 7},
        "data": [{"wl": 1234}],
        "dev": {"bat %": 88},
    }
    doc.update(changes)
    return doc


# --- JSON paths ---------------------------------------------------------------------------


def test_json_path_steps():
    doc = {"a": {"b": [{"c": 1}, {"c": 2}]}, "x.y": 3, "n": None}
    assert JsonPath("$.a.b[1].c").resolve(doc) == 2
    assert JsonPath("$['x.y']").resolve(doc) == 3
    assert JsonPath('$.a["b"][0]').resolve(doc) == {"c": 1}
    assert JsonPath("$").resolve(doc) is doc
    assert JsonPath("$.n").resolve(doc) is None
    assert JsonPath("$.a.b[2].c").resolve(doc) is MISSING
    assert JsonPath("$.a.b.c").resolve(doc) is MISSING  # a list has no names
    assert JsonPath("$.a[0]").resolve(doc) is MISSING  # an object has no indexes
    assert JsonPath("$.a.b[0].c") == JsonPath("$['a']['b'][0]['c']")


@pytest.mark.parametrize("text", ["a.b", "$.a..b", "$.a[-1]", "$.a[*]", "$.a[?(@.b)]", "$a"])
def test_json_path_refuses_what_it_does_not_do(text):
    with pytest.raises(ValueError, match="JSON path"):
        JsonPath(text)


# --- JSON codec ---------------------------------------------------------------------------


def test_json_reading_with_paths_units_and_iso_time():
    result = decode(WATER, "acme/wl/0001/up", water_doc())
    assert result == Reading(
        "WL-0001", "water_level", NOW - 60_000, {"level_cm": 123.4, "battery_pct": 88.0}, 7
    )


def test_json_device_id_from_payload_enum_map_and_scale():
    doc = {"dev": {"sn": 1}, "t": 1763699999.5, "lid": "OPEN", "tilt": 1250}
    result = decode(MANHOLE, "lidco/x/state", doc)
    assert result == Reading(
        "MH-1", "manhole_cover", NOW - 500, {"lid_open": True, "tilt_deg": 12.5}
    )


def test_device_id_from_payload_with_prefix():
    doc = {"dev": {"sn": "0002"}, "lid": "CLOSED", "tilt": 0}
    result = decode(MANHOLE, "lidco/x/state", doc)
    assert isinstance(result, Reading), result
    assert (result.device_id, result.kind) == ("MH-0002", "manhole_cover")  # kind: registry
    assert result.values == {"lid_open": False, "tilt_deg": 0.0}
    assert result.ts == NOW  # optional ts missing: the time it was received


def test_plain_value_payload_with_scale_and_offset():
    result = decode(BINS, "binco/0003/fill", 30)
    assert result == Reading("BIN-0003", "bin", NOW, {"fill_pct": 70.0})


@pytest.mark.parametrize(
    ("fmt", "raw", "expected"),
    [
        ("epoch_s", 1763699940, NOW - 60_000),
        ("epoch_s", 1763699940.25, NOW - 59_750),
        ("epoch_ms", 1763699940000, NOW - 60_000),
        ("epoch_ms", 1763699940000.0, NOW - 60_000),
        ("iso8601", "2025-11-21T04:39:00Z", NOW - 60_000),
    ],
)
def test_timestamp_formats(fmt, raw, expected):
    changes = {"ts": {"path": "$.when", "format": fmt}, "fields": {"fill_pct": "$.f"}}
    bins = copy.deepcopy(BINS)
    bins["codec"].update(changes)
    result = decode_fleet_message(
        FleetSettings.model_validate(bins),
        "binco/0003/fill",
        json.dumps({"when": raw, "f": 10}).encode(),
        REGISTRY,
        NOW,
        SKEW,
    )
    assert isinstance(result, Reading), result
    assert result.ts == expected


@pytest.mark.parametrize(
    ("fmt", "raw"),
    [
        ("epoch_s", "1763699940"),  # text is not a number: no guessing
        ("epoch_s", True),
        ("epoch_ms", 1763699940000.5),
        ("iso8601", "2025-11-21T04:39:00"),  # no zone: ambiguous
        ("iso8601", 1763699940),
        ("epoch_ms", None),  # null is missing, and ts is not optional
    ],
)
def test_bad_timestamps_are_bad_schema(fmt, raw):
    bins = copy.deepcopy(BINS)
    bins["codec"].update({"ts": {"path": "$.when", "format": fmt}, "fields": {"fill_pct": "$.f"}})
    result = decode_fleet_message(
        FleetSettings.model_validate(bins),
        "binco/0003/fill",
        json.dumps({"when": raw, "f": 10}).encode(),
        REGISTRY,
        NOW,
        SKEW,
    )
    assert reason(result) is Reason.BAD_SCHEMA
    assert "$.when" in result.detail


def test_future_timestamp_same_check_as_our_format():
    result = decode(WATER, "acme/wl/0001/up", water_doc(time="2025-11-21T12:50:00+08:00"))
    assert reason(result) is Reason.FUTURE_TIMESTAMP
    assert result.device_id == "WL-0001"
    assert "600 s ahead" in result.detail


def test_malformed_json():
    assert reason(decode(WATER, "acme/wl/0001/up", b"\xff{")) is Reason.MALFORMED_JSON


def test_unknown_device():
    result = decode(WATER, "acme/wl/0999/up", water_doc())
    assert reason(result) is Reason.UNKNOWN_DEVICE
    assert result.device_id == "WL-0999"


def test_out_of_range_after_unit_conversion():
    result = decode(WATER, "acme/wl/0001/up", water_doc(data=[{"wl": 200_000}]))  # 200 m
    assert reason(result) is Reason.OUT_OF_RANGE
    assert "level_cm=20000" in result.detail


def test_integer_beyond_any_float_is_out_of_range_not_a_crash():
    payload = b'{"time": "2025-11-21T12:39:00+08:00", "data": [{"wl": 1' + b"0" * 400 + b"}]}"
    result = decode_fleet_message(fleet(WATER), "acme/wl/0001/up", payload, REGISTRY, NOW, SKEW)
    assert reason(result) is Reason.OUT_OF_RANGE


@pytest.mark.parametrize(
    ("doc", "detail"),
    [
        (water_doc(data=[]), "missing field level_cm at $.data[0].wl"),
        (water_doc(data=[{"wl": None}]), "missing field level_cm at $.data[0].wl"),
        (water_doc(data=[{"wl": "12"}]), "level_cm must be a number"),
        (water_doc(meta={"cnt": -1}), "seq at $.meta.cnt"),
        (water_doc(time=None), "missing ts at $.time"),
        ([1, 2], "missing ts at $.time"),  # not an object: nothing at any path
    ],
)
def test_bad_schema(doc, detail):
    result = decode(WATER, "acme/wl/0001/up", doc)
    assert reason(result) is Reason.BAD_SCHEMA
    assert detail in result.detail


def test_optional_field_null_or_absent_is_left_out():
    result = decode(WATER, "acme/wl/0001/up", water_doc(dev={"bat %": None}))
    assert isinstance(result, Reading), result
    assert result.values == {"level_cm": 123.4}


def test_unmapped_enum_value_is_bad_schema_naming_the_accepted_ones():
    doc = {"dev": {"sn": "0002"}, "lid": "AJAR", "tilt": 0}
    result = decode(MANHOLE, "lidco/x/state", doc)
    assert reason(result) is Reason.BAD_SCHEMA
    assert result.detail == "lid_open value 'AJAR' is not one of OPEN, CLOSED"
    assert result.device_id == "MH-0002"


def test_registry_kind_must_match_the_fleets_kind():
    result = decode(WATER, "acme/wl/0001/up", water_doc(), device_id={"topic": 2, "prefix": "MH-"})
    # MH-0001 is not registered; MH-0002 is a manhole cover, not a gauge
    assert reason(result) is Reason.UNKNOWN_DEVICE
    result = decode(WATER, "acme/wl/0002/up", water_doc(), device_id={"topic": 2, "prefix": "MH-"})
    assert reason(result) is Reason.BAD_SCHEMA
    assert "registry says manhole_cover" in result.detail


def test_field_the_registry_kind_lacks_is_bad_schema():
    data = copy.deepcopy(MANHOLE)
    data["codec"]["fields"]["fill_pct"] = "$.fill"
    payload = json.dumps({"dev": {"sn": "0002"}, "lid": "OPEN", "tilt": 0, "fill": 5}).encode()
    result = decode_fleet_message(
        FleetSettings.model_validate(data), "lidco/x/state", payload, REGISTRY, NOW, SKEW
    )
    assert reason(result) is Reason.BAD_SCHEMA
    assert "unknown field(s) 'fill_pct'" in result.detail


def test_device_id_missing_or_not_text():
    assert "no device id at $.dev.sn" in decode(MANHOLE, "lidco/x/state", {"lid": "OPEN"}).detail
    result = decode(MANHOLE, "lidco/x/state", {"dev": {"sn": [1]}, "lid": "OPEN"})
    assert reason(result) is Reason.BAD_SCHEMA


# --- binary codec -------------------------------------------------------------------------


def packed(ts=1763699940, seq=5, level=4321, battery=77, spare=0, crc=None) -> bytes:
    body = struct.pack(">IHHBB", ts, seq, level, battery, spare)
    return body + struct.pack("<H", crc16_modbus(body) if crc is None else crc)


def test_binary_layout_with_crc_scale_and_unit():
    result = decode(PACKED, "packed/0001/up", packed())
    # 4321 × 0.1 mm = 432.1 mm = 43.21 cm
    assert isinstance(result, Reading), result
    assert (result.device_id, result.ts, result.seq) == ("WL-0001", NOW - 60_000, 5)
    assert result.values == pytest.approx({"level_cm": 43.21, "battery_pct": 77.0})


@pytest.mark.parametrize("cut", [1, -1])
def test_binary_wrong_length_names_the_expected_one(cut):
    payload = packed()[:-1] if cut == 1 else packed() + b"\x00"
    result = decode(PACKED, "packed/0001/up", payload)
    assert reason(result) is Reason.BAD_SCHEMA
    assert result.detail == f"payload is {12 - cut} bytes, the layout expects 12"
    assert result.device_id == "WL-0001"


def test_binary_crc_mismatch():
    result = decode(PACKED, "packed/0001/up", packed(crc=0x1234))
    assert reason(result) is Reason.BAD_CHECKSUM
    assert result.detail.startswith("crc16_modbus is 0x1234, computed 0x")


def test_binary_future_timestamp_unknown_device_and_out_of_range():
    assert reason(decode(PACKED, "packed/0001/up", packed(ts=NOW // 1000 + 3600))) is (
        Reason.FUTURE_TIMESTAMP
    )
    assert reason(decode(PACKED, "packed/0404/up", packed())) is Reason.UNKNOWN_DEVICE
    assert reason(decode(PACKED, "packed/0001/up", packed(battery=101))) is Reason.OUT_OF_RANGE


def lora(body: bytes, device="0002", encoding="base64") -> dict:
    text = base64.b64encode(body).decode() if encoding == "base64" else body.hex()
    return {"end_device_ids": {"device_id": device}, "uplink_message": {"frm_payload": text}}


def test_binary_in_a_json_envelope_little_endian_signed_and_float():
    body = struct.pack("<hBf", 125, 1, 55.5)
    topic = "lns/up/app1/devices/0002"
    assert decode(LORA, topic, lora(body, "MH-0002")) == Reading(
        "MH-0002", "manhole_cover", NOW, {"tilt_deg": 12.5, "lid_open": True, "battery_pct": 55.5}
    )
    hexed = copy.deepcopy(LORA)["codec"] | {
        "envelope": {"path": "$.uplink_message.frm_payload", "encoding": "hex"}
    }
    assert isinstance(decode(LORA, topic, lora(body, "MH-0002", "hex"), codec=hexed), Reading)


@pytest.mark.parametrize(
    ("doc", "why", "detail"),
    [
        (b"not json", Reason.MALFORMED_JSON, "not UTF-8 JSON"),
        ({"uplink_message": {}}, Reason.BAD_SCHEMA, "no base64 text at"),
        (lora(b"") | {"uplink_message": {"frm_payload": "@@"}}, Reason.BAD_SCHEMA, "not valid"),
        (lora(struct.pack("<hBf", 125, 7, 55.5), "MH-0002"), Reason.BAD_SCHEMA, "lid_open value 7"),
        (lora(struct.pack("<hBf", -5, 1, 55.5), "MH-0002"), Reason.OUT_OF_RANGE, "tilt_deg=-0.5"),
        (lora(struct.pack("<hBf", 5, 1, float("nan")), "MH-0002"), Reason.BAD_SCHEMA, "number"),
        (lora(struct.pack("<hBf", 5, 1, 50), "MH-9"), Reason.UNKNOWN_DEVICE, "MH-9"),
    ],
)
def test_binary_envelope_rejections(doc, why, detail):
    result = decode(LORA, "lns/up/x", doc)
    assert reason(result) is why
    assert detail in result.detail


def test_checksums_match_their_catalogue_check_values():
    assert crc16_modbus(b"123456789") == 0x4B37
    assert checksum(Crc(algorithm="crc16_ccitt"), b"123456789") == 0x29B1
    assert checksum(Crc(algorithm="crc32"), b"123456789") == 0xCBF43926 == zlib.crc32(b"123456789")


# --- config errors: caught at load, with the field ------------------------------------------


@pytest.mark.parametrize(
    ("example", "changes", "message"),
    [
        (WATER, {"kind": "bin"}, "kind bin has no field level_cm"),
        (WATER, {"kind": "lamp"}, "kind 'lamp' is not one of"),
        (
            BINS,
            {"codec": {"type": "json", "fields": {"battery_pct": "$.b"}}},
            "needs field(s) fill_pct",
        ),
        (
            BINS,
            {"codec": {"type": "json", "fields": {"fill_pct": {"path": "$", "unit": "mm"}}}},
            "fill_pct cannot take unit 'mm' (accepted: %)",
        ),
        (
            BINS,
            {"codec": {"type": "json", "fields": {"colour": "$.c"}}, "kind": None},
            "no device kind has a field colour",
        ),
        (WATER, {"device_id": {"topic": 1}}, "device_id.topic 1 is not a + or # level"),
        (WATER, {"device_id": {"topic": 2, "path": "$.id"}}, "exactly one of topic"),
        (WATER, {"topic": "acme/wl#"}, "# must be the whole last level"),
        (WATER, {"topic": "acme/w+/x"}, "+ must be a whole level"),
        (WATER, {"topic": "$SYS/#"}, "$-topics"),
        (PACKED, {"device_id": {"path": "$.id"}}, "a binary payload has no JSON paths"),
        (
            MANHOLE,
            {
                "codec": {
                    "type": "json",
                    "fields": {"lid_open": {"path": "$.l", "map": yaml.safe_load("{on: true}")}},
                }
            },
            "map key True must be text",
        ),
        (
            MANHOLE,
            {"codec": {"type": "json", "fields": {"lid_open": {"path": "$.l", "map": {"1": 1.0}}}}},
            "map values must be true/false",
        ),
        (
            MANHOLE,
            {
                "codec": {
                    "type": "json",
                    "fields": {"tilt_deg": {"path": "$.l", "map": {"x": True}}},
                }
            },
            "map values must be numbers",
        ),
        (
            MANHOLE,
            {"codec": {"type": "json", "fields": {"lid_open": {"path": "$.l", "unit": "deg"}}}},
            "unit, scale, offset do not apply",
        ),
        (
            MANHOLE,
            {"codec": {"type": "json", "fields": {"tilt_deg": "$.l", "x": "$.x"}}},
            "no device kind has a field x",
        ),
        (
            WATER,
            {"codec": {"type": "json", "ts": {"path": "$.t"}, "fields": {"level_cm": "$.l"}}},
            "format",
        ),
        (WATER, {"codec": {"type": "json", "fields": {"level_cm": "$.l[x]"}}}, "JSON path"),
        (
            WATER,
            {"codec": {"type": "xml", "fields": {}}},
            "does not match any of the expected tags",
        ),
    ],
)
def test_config_mistakes_are_refused_at_load(example, changes, message):
    with pytest.raises(ValidationError) as caught:
        fleet(example, **changes)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ({"name": "ts", "type": "u16"}, "ts is u32 epoch seconds"),
        ({"name": "seq", "type": "i16"}, "seq is an unsigned integer"),
        ({"name": "lid_open", "type": "u8"}, "map the integer to true/false"),
        ({"name": "tilt_deg", "type": "f32", "map": {"0": 0}}, "f32 value cannot be mapped"),
        ({"name": "tilt_deg", "type": "u64"}, "Input should be"),
    ],
)
def test_binary_layout_mistakes(field, message):
    data = copy.deepcopy(LORA)
    fields = data["codec"]["fields"]
    data["codec"]["fields"] = [f for f in fields if f["name"] != field["name"]] + [field]
    with pytest.raises(ValidationError) as caught:
        FleetSettings.model_validate(data)
    assert message in str(caught.value)


def test_fleet_list_refuses_repeated_names_and_topics():
    adapter = TypeAdapter(Fleets)
    water = copy.deepcopy(WATER)
    with pytest.raises(ValidationError, match="fleet names must be unique"):
        adapter.validate_python([water, water | {"topic": "other/wl/+/up"}])
    with pytest.raises(ValidationError, match="used twice: acme/wl/"):
        adapter.validate_python([water, water | {"name": "b"}])
    assert len(adapter.validate_python([water, copy.deepcopy(BINS)])) == 2


# --- status and routing ---------------------------------------------------------------------


def router() -> MessageRouter:
    return MessageRouter([fleet(t) for t in (WATER, MANHOLE, BINS, PACKED, LORA)])


def route_decode(topic: str, payload: bytes, retained: bool = False):
    return router().decode(topic, payload, REGISTRY, NOW, SKEW, retained)


def test_router_subscribes_ours_then_fleets_in_order():
    assert router().subscriptions() == [
        "citygw/v1/+/telemetry",
        "citygw/v1/+/status",
        "acme/wl/+/up",
        "lidco/+/state",
        "lidco/+/lwt",
        "binco/+/fill",
        "packed/+/up",
        "lns/up/#",
    ]
    assert router().subscriptions("gw")[0] == "$share/gw/citygw/v1/+/telemetry"


def test_router_decodes_each_source():
    ours = json.dumps({"ts": NOW, "values": {"fill_pct": 5}}).encode()
    assert route_decode("citygw/v1/BIN-0003/telemetry", ours) == Reading(
        "BIN-0003", "bin", NOW, {"fill_pct": 5.0}
    )
    assert route_decode("packed/0001/up", packed()).device_id == "WL-0001"
    assert route_decode("binco/0003/fill", b"12.5").values == {"fill_pct": 87.5}
    result = route_decode("nobody/listens/here", b"{}")
    assert reason(result) is Reason.BAD_SCHEMA
    assert "no fleet handles topic" in result.detail


def test_first_matching_filter_wins():
    catch_all = fleet(BINS, name="catch-all", topic="#", device_id={"topic": 1, "prefix": "BIN-"})
    specific = fleet(BINS)
    assert MessageRouter([catch_all, specific]).route("binco/0003/fill").source == "catch-all"
    assert MessageRouter([specific, catch_all]).route("binco/0003/fill").source == "binco"
    # our own topics stay ours even under a catch-all fleet
    assert MessageRouter([catch_all]).route("citygw/v1/BIN-0003/telemetry").source == "citygw"


def test_router_refuses_a_fleet_on_our_own_topic():
    with pytest.raises(ValueError, match="used twice"):
        MessageRouter([fleet(BINS, topic="citygw/v1/+/status", device_id={"topic": 2})])


def test_own_status_online_offline_and_retained():
    assert route_decode("citygw/v1/MH-1/status", b"offline", retained=True) == DeviceStatus(
        "MH-1", False, NOW, retained=True
    )
    assert route_decode("citygw/v1/MH-1/status", b"online\n") == DeviceStatus("MH-1", True, NOW)
    garbled = route_decode("citygw/v1/MH-1/status", b"sleeping")
    assert reason(garbled) is Reason.BAD_SCHEMA
    assert garbled.detail == "status 'sleeping' is not online or offline"
    assert reason(route_decode("citygw/v1/MH-404/status", b"online")) is Reason.UNKNOWN_DEVICE


def test_fleet_status_by_payload_map():
    assert route_decode("lidco/0002/lwt", b"Offline") == DeviceStatus("MH-0002", False, NOW)
    result = route_decode("lidco/0002/lwt", b"offline")  # case matters: the map is the contract
    assert reason(result) is Reason.BAD_SCHEMA
    assert result.detail == "status 'offline' is not one of Online, Offline"
    assert reason(route_decode("lidco/0404/lwt", b"Online")) is Reason.UNKNOWN_DEVICE


def test_fleet_status_from_json_path():
    data = copy.deepcopy(MANHOLE)
    data["status"] = {
        "topic": "lidco/+/conn",
        "device_id": {"path": "$.sn", "prefix": "MH-"},
        "path": "$.connected",
        "map": {"true": True, "false": False},
    }
    status_router = MessageRouter([FleetSettings.model_validate(data)])
    decode_status = status_router.decode
    assert decode_status(
        "lidco/x/conn", b'{"sn": "0002", "connected": false}', REGISTRY, NOW, SKEW
    ) == DeviceStatus("MH-0002", False, NOW)
    assert reason(decode_status("lidco/x/conn", b"{", REGISTRY, NOW, SKEW)) is (
        Reason.MALFORMED_JSON
    )
    result = decode_status("lidco/x/conn", b'{"sn": "0002"}', REGISTRY, NOW, SKEW)
    assert reason(result) is Reason.BAD_SCHEMA
    data["status"]["path"] = None
    with pytest.raises(ValidationError, match=r"device_id\.path needs a JSON status payload"):
        FleetSettings.model_validate(data)


# --- hostile input: every bound refuses with a reason, nothing raises ---------------------


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize("payload", [b"[" * 5000, deep(33)], ids=["beyond-parser", "33-levels"])
@pytest.mark.parametrize(
    ("example", "topic"),
    [(WATER, "acme/wl/0001/up"), (LORA, "lns/up/x"), (MANHOLE, "lidco/0002/conn")],
    ids=["json", "binary-envelope", "json-status"],
)
def test_deep_json_is_too_large_for_every_json_decoder(example, topic, payload):
    data = copy.deepcopy(example)
    if topic.endswith("conn"):  # a status spec with a JSON path
        data["status"] = {
            "topic": "lidco/+/conn",
            "device_id": {"topic": 1, "prefix": "MH-"},
            "path": "$.on",
            "map": {"true": True},
        }
    result = MessageRouter([FleetSettings.model_validate(data)]).decode(
        topic, payload, REGISTRY, NOW, SKEW
    )
    assert reason(result) is Reason.TOO_LARGE
    assert result.detail == "JSON nested deeper than 32 levels"


def timed(fmt: str, raw) -> Reading | Rejection:
    bins = copy.deepcopy(BINS)
    bins["codec"].update({"ts": {"path": "$.when", "format": fmt}, "fields": {"fill_pct": "$.f"}})
    payload = b'{"when": %s, "f": 10}' % (
        raw if isinstance(raw, bytes) else json.dumps(raw).encode()
    )
    return decode_fleet_message(
        FleetSettings.model_validate(bins), "binco/0003/fill", payload, REGISTRY, NOW, SKEW
    )


@pytest.mark.parametrize(
    ("fmt", "raw", "why"),
    [
        ("epoch_s", 1e306, Reason.FUTURE_TIMESTAMP),  # overflowed round(raw * 1000)
        ("epoch_s", -1e306, Reason.OUT_OF_RANGE),
        ("epoch_s", b"1" + b"0" * 400, Reason.FUTURE_TIMESTAMP),
        ("epoch_ms", b"-1" + b"0" * 400, Reason.OUT_OF_RANGE),
        ("epoch_s", 0, Reason.OUT_OF_RANGE),
        ("epoch_ms", -1, Reason.OUT_OF_RANGE),
        ("iso8601", "1970-01-01T00:00:00Z", Reason.OUT_OF_RANGE),
    ],
    ids=["1e306-s", "minus-1e306-s", "400-digit-s", "minus-400-digit-ms", "0-s", "-1-ms", "1970"],
)
def test_every_timestamp_format_goes_through_the_calendar_bound(fmt, raw, why):
    result = timed(fmt, raw)
    assert reason(result) is why
    assert result.device_id == "BIN-0003"


def test_binary_timestamp_of_an_unset_clock_is_out_of_range():
    result = decode(PACKED, "packed/0001/up", packed(ts=0))
    assert reason(result) is Reason.OUT_OF_RANGE
    assert "before 2000-01-01" in result.detail


def test_seq_beyond_int64_is_bad_schema():
    result = decode(WATER, "acme/wl/0001/up", water_doc(meta={"cnt": 2**63}))
    assert reason(result) is Reason.BAD_SCHEMA
    assert result.detail == "seq at $.meta.cnt must be an integer within 0..2**63-1"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_fleet_json_is_strict_utf8(encoding):
    result = decode(WATER, "acme/wl/0001/up", json.dumps(water_doc()).encode(encoding))
    assert reason(result) is Reason.MALFORMED_JSON


@pytest.mark.parametrize(
    ("sn", "why", "detail"),
    [
        ("9" * 10_000, Reason.TOO_LARGE, "device id of 10003 characters is over 64: 'MH-999"),
        (10**500, Reason.TOO_LARGE, "device id of 504 characters is over 64: 'MH-1000"),
        ("\ud800", Reason.BAD_SCHEMA, r"device id 'MH-\ud800' is not printable text"),
    ],
    ids=["10k-text", "500-digit-integer", "lone-surrogate"],
)
def test_device_id_from_the_payload_is_bounded(sn, why, detail):
    result = decode(MANHOLE, "lidco/x/state", {"dev": {"sn": sn}, "lid": "OPEN", "tilt": 0})
    assert reason(result) is why
    assert result.detail.startswith(detail)
    assert result.device_id == ""
    assert len(result.detail) < 100


def test_router_refuses_oversized_payloads_and_topics_before_decoding():
    ours = "citygw/v1/BIN-0003/telemetry"
    big = b'{"ts": %d, "values": {"fill_pct": 5}, "pad": "%s"}' % (NOW, b"x" * 70_000)
    result = router().decode(ours, big, REGISTRY, NOW, SKEW)
    assert reason(result) is Reason.TOO_LARGE
    assert result.detail == f"payload of {len(big)} bytes is over 65536"
    small = MessageRouter(limits=InputLimits(max_payload_bytes=1024))
    assert reason(small.decode(ours, b" " * 1025, REGISTRY, NOW, SKEW)) is Reason.TOO_LARGE
    long_topic = "binco/" + "0" * 300 + "/fill"
    result = router().decode(long_topic, b"5", REGISTRY, NOW, SKEW)
    assert reason(result) is Reason.TOO_LARGE
    assert result.detail.startswith("topic of 311 characters is over 256: 'binco/000")


def test_route_cache_is_bounded_in_bytes_and_skips_long_topics():
    routes = router()
    routes.route("binco/" + "0" * 300 + "/fill")
    assert routes.known_topics_bytes == 0
    for i in range(40_000):  # 40,000 topics of 250 characters: ~14 MB if all were kept
        routes.route(f"binco/{i:0244d}/fill")
    assert 0 < routes.known_topics_bytes <= KNOWN_TOPICS_BYTES
    assert routes.route("binco/0003/fill").source == "binco"


def test_input_limits_are_checked_as_config():
    assert InputLimits().model_dump() == {
        "max_payload_bytes": 65_536,
        "max_json_depth": 32,
        "max_topic_len": 256,
        "max_device_id_len": 64,
    }
    with pytest.raises(ValidationError, match="Extra inputs"):
        InputLimits.model_validate({"max_depth": 3})
    with pytest.raises(ValidationError, match="less than or equal to 256"):
        InputLimits(max_json_depth=10_000)
