"""Register maps and the serial config section: the simulated slaves' encoder and the
gateway's decoder agree for every type and word order; bad sections are refused."""

import pytest
from pydantic import ValidationError

from devices.codec import decode_values
from devices.kinds import KINDS
from devices.registry import Device
from devices.rejections import Reason, Rejection
from devices.serial.registers import block_values, read_blocks
from devices.serial.settings import RegisterSettings, SerialSettings, registry_problems
from domain import Location
from simulators.scenario import ScenarioError
from simulators.serial.modbus_devices import encode_register
from simulators.serial.scenario import BUILTIN_SERIAL_SCENARIO, Register, load_serial_scenario

HERE = Location(26.08, 119.3)
REGISTRY = {
    "WL-1": Device("WL-1", "water_level", HERE, overrides={"warning_cm": "30", "alarm_cm": "50"}),
    "MH-1": Device("MH-1", "manhole_cover", HERE),
}


def round_trip(kind: str, value, **register):
    """Encode like a slave, read back like the gateway."""
    words = encode_register(Register(**register), value)
    gateway = RegisterSettings(**register)
    [block] = read_blocks([gateway])
    return block_values(kind, block, words)[register["field"]]


@pytest.mark.parametrize(
    ("register", "value", "read"),
    [
        ({"type": "uint16", "scale": 0.1}, 42.5, 42.5),
        ({"type": "int16", "scale": 0.01, "offset": -100}, -12.34, -12.34),
        (
            {"type": "uint32", "word_order": "little", "unit": "mm"},
            1234.5,
            {"value": 12345.0, "unit": "mm"},
        ),
        ({"type": "int32", "unit": "mm"}, 7.0, {"value": 70.0, "unit": "mm"}),
        ({"type": "float32", "unit": "m"}, 12.25, {"value": 0.1225, "unit": "m"}),
        ({"type": "float32", "word_order": "little"}, 58.3, 58.3),
    ],
)
def test_slave_encoding_and_gateway_decoding_agree(register, value, read):
    assert round_trip("water_level", value, field="level_cm", address=7, **register) == read


def test_word_order_matters():
    big = encode_register(Register(field="level_cm", address=0, type="uint32"), 70000)
    little = encode_register(
        Register(field="level_cm", address=0, type="uint32", word_order="little"), 70000
    )
    assert big == [1, 4464] and little == [4464, 1]


def test_flags_from_a_coil_and_from_a_register():
    assert round_trip(
        "manhole_cover", True, field="lid_open", address=3, function="coil", type="bool"
    )
    assert round_trip("manhole_cover", True, field="lid_open", address=3) is True
    assert round_trip("manhole_cover", False, field="lid_open", address=3) is False


def test_read_blocks_join_touching_fields_only():
    registers = [
        RegisterSettings(field="a", address=0, function="input"),
        RegisterSettings(field="b", address=1, function="input", type="float32"),
        RegisterSettings(field="c", address=10, function="input"),
        RegisterSettings(field="d", address=0, function="holding"),
    ]
    blocks = [(b.function, b.address, b.count) for b in read_blocks(registers)]
    assert blocks == [("holding", 0, 1), ("input", 0, 3), ("input", 10, 1)]


def port(**overrides):
    slave = {"unit": 1, "device": "WL-1", "registers": [{"field": "level_cm", "address": 0}]}
    return {"path": "/dev/ttyUSB0", "framing": "modbus", "slaves": [slave], **overrides}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"ports": [port(slaves=[])]}, "needs at least one slave"),
        ({"ports": [port(framing="line")]}, "has no slaves"),
        ({"ports": [port(slaves=[port()["slaves"][0]] * 2)]}, r"unit id\(s\) used twice"),
        ({"ports": [port(), port()]}, "listed twice"),
        ({"ports": [port(parity="X")]}, "parity"),
        ({"ports": [port(speed=9600)]}, "Extra inputs"),
    ],
)
def test_bad_sections_are_refused(section, message):
    with pytest.raises(ValidationError, match=message):
        SerialSettings.model_validate(section)


def test_registry_problems_name_the_key():
    registers = [
        {"field": "level_m", "address": 0},
        {"field": "battery_pct", "address": 1, "unit": "V"},
    ]
    section = SerialSettings.model_validate(
        {
            "ports": [
                port(
                    slaves=[
                        {"unit": 1, "device": "WL-1", "registers": registers},
                        {"unit": 2, "device": "WL-9", "registers": registers},
                    ]
                )
            ]
        }
    )
    problems = dict(registry_problems(section, REGISTRY))
    assert problems == {
        ("ports", 0, "slaves", 0, "registers", 0, "field"): "water_level has no field 'level_m'",
        ("ports", 0, "slaves", 0, "registers", 1, "unit"): "battery_pct takes units: %",
        ("ports", 0, "slaves", 0, "registers"): "missing field(s) level_cm",
        ("ports", 0, "slaves", 1, "device"): "'WL-9' is not in the registry",
    }


def test_serial_scenario_problems_name_the_file_line_and_key(tmp_path):
    builtin = BUILTIN_SERIAL_SCENARIO.read_text(encoding="utf-8")
    layout = tmp_path / "serial.yaml"
    layout.write_text(
        builtin.replace(
            "timeline: serial_builtin/timeline.yaml",
            f"timeline: {BUILTIN_SERIAL_SCENARIO.parent}/serial_builtin/timeline.yaml",
        )
        .replace("devices: [MH-101, BIN-101]", "devices: [MH-101, BIN-101, WL-101]")
        .replace("unit: mm}", "unit: ft}"),
        encoding="utf-8",
    )
    with pytest.raises(ScenarioError) as raised:
        load_serial_scenario(layout)
    message = str(raised.value)
    unit_line = 1 + next(n for n, t in enumerate(builtin.splitlines()) if "unit: mm}" in t)
    assert f"serial.yaml:{unit_line}: buses.0.slaves.2.registers.0.unit:" in message
    assert "WL-101 is on 2 buses, not 1" in message


def test_builtin_serial_scenario_stages_what_its_truth_says():
    scenario = load_serial_scenario(BUILTIN_SERIAL_SCENARIO)
    truth = scenario.expected_truth()
    assert truth["expected_cases"] == [
        {
            "label": "WL-101 underpass flooded",
            "class_code": "99101",
            "priority": "critical",
            "devices": ["WL-101"],
        }
    ]
    assert {k: v for k, v in truth["expected_rejections"].items() if v} == {
        "garbage": 2,
        "bad_checksum": 1,
    }


def block_of(*registers: dict):
    [block] = read_blocks([RegisterSettings(**r) for r in registers])
    return block


@pytest.mark.parametrize(
    ("register", "words", "value"),
    [
        ({"type": "uint32"}, [0x0001, 0x0002], 65538.0),
        ({"type": "uint32", "word_order": "little"}, [0x0002, 0x0001], 65538.0),
        ({"type": "int32"}, [0xFFFF, 0xFFFE], -2.0),
        ({"type": "int32", "word_order": "little"}, [0xFFFE, 0xFFFF], -2.0),
        ({"type": "float32"}, [0x4248, 0x0000], 50.0),
        ({"type": "float32", "word_order": "little"}, [0x0000, 0x4248], 50.0),
    ],
    ids=["u32", "u32-little", "i32", "i32-little", "f32", "f32-little"],
)
def test_32_bit_word_orders(register, words, value):
    block = block_of({"field": "level_cm", "address": 0, **register})
    assert block_values("water_level", block, words) == {"level_cm": value}


@pytest.mark.parametrize(
    ("words", "why", "detail"),
    [
        ([0x7FC0, 0x0000], Reason.BAD_SCHEMA, "level_cm must be a number"),  # NaN
        ([0x7F80, 0x0000], Reason.OUT_OF_RANGE, "level_cm=inf outside 0..10000"),
        ([0xFF80, 0x0000], Reason.OUT_OF_RANGE, "level_cm=-inf outside 0..10000"),
    ],
    ids=["nan", "inf", "-inf"],
)
def test_non_finite_float32_is_refused_by_the_codec(words, why, detail):
    block = block_of({"field": "level_cm", "address": 0, "type": "float32"})
    result = decode_values(KINDS["water_level"], block_values("water_level", block, words))
    assert result == Rejection(why, detail)


def test_a_scale_that_overflows_is_out_of_range():
    block = block_of({"field": "level_cm", "address": 0, "type": "uint32", "scale": 1e308})
    raw = block_values("water_level", block, [0xFFFF, 0xFFFF])
    assert decode_values(KINDS["water_level"], raw) == Rejection(
        Reason.OUT_OF_RANGE, "level_cm=inf outside 0..10000"
    )


def test_a_reply_shorter_than_asked_is_refused_not_an_index_error():
    block = block_of(
        {"field": "level_cm", "address": 0, "type": "float32"},
        {"field": "battery_pct", "address": 2},
    )
    assert block_values("water_level", block, [0x4248, 0, 90]) == {
        "level_cm": 50.0,
        "battery_pct": 90,
    }
    assert block_values("water_level", block, [0x4248, 0]) == Rejection(
        Reason.BAD_SCHEMA, "the reply to holding 0+3 holds 2 of 3"
    )
    coils = block_of({"field": "lid_open", "address": 5, "function": "coil", "type": "bool"})
    assert block_values("manhole_cover", coils, []) == Rejection(
        Reason.BAD_SCHEMA, "the reply to coil 5+1 holds 0 of 1"
    )


def test_a_word_beyond_16_bits_is_refused():
    block = block_of({"field": "level_cm", "address": 0})
    assert block_values("water_level", block, [0x10000]) == Rejection(
        Reason.BAD_SCHEMA, "the reply to holding 0+1 holds a word beyond 16 bits"
    )
