"""End to end: an existing fleet's own MQTT formats become cases by config alone.

Two vendors' devices publish in their own formats to a real mosquitto: a water-gauge
vendor's JSON (millimetres, ISO timestamps, its own serial numbers in the topic) and a
cover vendor's packed binary with a CRC. The gateway maps them through ``devices.fleets``
in its YAML, with no code of its own for either, into the same rules and cases as our
format; a malformed binary frame is a counted rejection.
"""

from __future__ import annotations

import json
import struct
import time
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulators.scenario import BUILTIN_SCENARIO
from simulators.truth import compare_cases

from harness import wait_until

FLEETS = [
    {
        "name": "acme-water",
        "topic": "acme/wl/+/up",
        "device_id": {"topic": 2, "prefix": "WL-"},
        "kind": "water_level",
        "codec": {
            "type": "json",
            "ts": {"path": "$.time", "format": "iso8601"},
            "seq": "$.meta.cnt",
            "fields": {"level_cm": {"path": "$.data.wl", "unit": "mm"}},
        },
    },
    {
        "name": "lidco",
        "topic": "lidco/+/frame",
        "device_id": {"topic": 1, "prefix": "MH-"},
        "kind": "manhole_cover",
        "codec": {
            "type": "binary",
            "byte_order": "big",
            "fields": [
                {"name": "ts", "type": "u32"},
                {"name": "seq", "type": "u16"},
                {"name": "tilt_deg", "type": "i16", "scale": 0.1},
                {"name": "lid_open", "type": "u8", "map": {0: False, 1: True}},
            ],
            "crc": {"algorithm": "crc16_modbus", "byte_order": "little"},
        },
    },
]


def crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def lidco_frame(ts_s: int, seq: int, tilt_deg: float, lid_open: bool) -> bytes:
    body = struct.pack(">IHhB", ts_s, seq, round(tilt_deg * 10), int(lid_open))
    return body + struct.pack("<H", crc16_modbus(body))


def acme_message(ts_s: int, seq: int, level_mm: float) -> bytes:
    iso = datetime.fromtimestamp(ts_s, UTC).isoformat()
    return json.dumps({"time": iso, "meta": {"cnt": seq}, "data": {"wl": level_mm}}).encode()


def test_two_vendor_formats_become_cases_by_config_only(stack):
    registry = BUILTIN_SCENARIO.parent / "devices.csv"
    s = stack(config={"devices": {"registry": str(registry), "fleets": FLEETS}})
    start = int(time.time()) - 900
    messages: list[tuple[str, bytes]] = []
    for i in range(60):  # WL-001 rises past 300 mm (warning) to 560 mm (alarm), 10 s apart
        level_mm = 40 if i < 10 else min(560, 40 + (i - 10) * 20)
        messages.append(("acme/wl/001/up", acme_message(start + 10 * i, i, level_mm)))
    for i in range(30):  # MH-001's lid comes off at reading 10
        frame = lidco_frame(start + 10 * i, i, 31.5 if i >= 10 else 0.5, i >= 10)
        messages.append(("lidco/001/frame", frame))
    short = lidco_frame(start + 400, 99, 0.5, False)[:-1]
    corrupt = bytearray(lidco_frame(start + 410, 100, 0.5, False))
    corrupt[6] ^= 0x40  # a bit flipped in the tilt on the way: the CRC catches it
    messages += [("lidco/001/frame", short), ("lidco/001/frame", bytes(corrupt))]

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="vendors")
    client.connect("127.0.0.1", s.broker.port)
    client.loop_start()
    for topic, payload in messages:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()

    wait_until(lambda: s.gateway_stats()["readings_stored"] == 90, "90 readings stored", 60)
    wait_until(lambda: s.gateway_stats()["outbox"]["pending"] == 0, "cases delivered", 60)
    truth = {
        "expected_cases": [
            {"label": "WL-001 flooded", "class_code": "99101", "priority": "critical",
             "devices": ["WL-001"]},
            {"label": "MH-001 lid off", "class_code": "01003", "priority": "critical",
             "devices": ["MH-001"]},
        ]
    }  # fmt: skip
    report = compare_cases(truth, s.cases())
    assert report.ok, report.render() + "\n--- gateway log ---\n" + s.gateway.tail()
    assert s.gateway_stats()["rejected"] == {"bad_schema": 1, "bad_checksum": 1}
    readings = s.gateway_http.get(
        "/api/v1/devices/WL-001/readings", params={"since": 0, "limit": 100}
    ).json()["readings"]
    assert [r["values"]["level_cm"] for r in readings[10:13]] == [4.0, 6.0, 8.0]  # mm → cm
