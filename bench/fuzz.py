"""Fuzz benchmark: generated hostile input against every device entry point and the config
loader. Nothing may raise (crashes must be 0); every refusal has a reason; nothing accepted
may break the contract of ``devices/invariants.py`` (wrong accepts must be 0); valid input
built from the spec and sent unchanged must be accepted (valid refused must be 0).

Inputs, per entry point: random bytes; valid messages built from the spec, sent unchanged or
mutated: a value replaced by a hostile one (integers beyond int64, 1e306, NaN, a time before
2000 or after 9999, a wrong type, a lone surrogate, 5,000 characters) and/or bit flips,
truncation, splicing with another message, inserted or repeated bytes, nesting far deeper than
any parser allows, huge number literals, another encoding (UTF-16/32, Latin-1, byte order
marks). Binary layouts get their CRC recomputed after a mutation half of the time, so the
field values are reached too. Config files get line-level edits, hostile YAML scalars, alias
bombs, deep nesting and other encodings, and may only ever raise ``ConfigError``.

Deterministic: an entry point's inputs depend only on ``--seed`` and its name, so
``--replay NAME:INDEX`` regenerates one input and runs it with its traceback.

Usage: python bench/fuzz.py [--seed 1] [--count 100000] [--configs 5000] [--replay NAME:INDEX]
Prints a table per entry point and writes it into BENCHMARKS.md (section "Fuzzing the entry
points", replaced on each run) unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import re
import shutil
import signal
import struct
import sys
import tempfile
import textwrap
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml
from benchmarks_doc import write_section

import devices.fleet
from devices.codec import decode_telemetry, decode_values
from devices.fleet import FleetSettings, MessageRouter, decode_fleet_message, decode_fleet_status
from devices.fleet.binary import crc16_modbus
from devices.invariants import (
    json_violations,
    message_violations,
    reading_violations,
    rejection_violations,
    status_violations,
)
from devices.kinds import KINDS
from devices.limits import InputLimits
from devices.registry import Device
from devices.rejections import Reason, Rejection
from devices.serial.line_protocol import SENTENCE_TYPES, encode_line, parse_line
from devices.serial.line_reader import Garbage, LineFramer
from devices.serial.registers import block_values, read_blocks
from devices.serial.settings import RegisterSettings
from devices.status import DeviceStatus, decode_status
from domain import Location, Reading
from gateway.config import ConfigError, load_config
from simulators.scenario import BUILTIN_SCENARIO

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Fuzzing the entry points"
NOW = 1_763_700_000_000  # fixed, so that a seed always gives the same verdicts
SKEW = 300_000
LIMITS = InputLimits()
HANG_S = 5  # an input that takes longer is reported with the crashes
HERE = Location(26.08, 119.3)
REGISTRY = {
    device_id: Device(device_id, kind, HERE)
    for device_id, kind in [
        ("WL-0001", "water_level"),
        ("WL-0002", "water_level"),
        ("MH-0002", "manhole_cover"),
        ("MH-1", "manhole_cover"),
        ("BIN-0003", "bin"),
        ("BIN-1", "bin"),
    ]
}
EXAMPLES = {
    f["name"]: f
    for f in yaml.safe_load(
        Path(devices.fleet.__file__).with_name("examples.yaml").read_text(encoding="utf-8")
    )
}
# lidco's status as JSON with the id inside, so that the status decoder parses JSON too.
EXAMPLES["lidco"]["status"] = {
    "topic": "lidco/+/conn",
    "device_id": {"path": "$.sn", "prefix": "MH-"},
    "path": "$.connected",
    "map": {"true": True, "false": False},
}
FLEETS = {
    name: FleetSettings.model_validate(EXAMPLES[name])
    for name in ("acme-water", "lidco", "packed-water", "lora-lids")
}
ROUTER = MessageRouter(list(FLEETS.values()), limits=LIMITS)
JSON_SOURCES = ("citygw", "acme-water", "lidco", "lora-lids")

# --- hostile material ----------------------------------------------------------------------

HOSTILE_VALUES: list[Any] = [
    10**400, -(10**400), 2**63, 2**64, -1, 0, 1e306, -1e306, float("nan"), float("inf"),
    -float("inf"), 1.5, True, None, "", "x" * 5_000, "\ud800", "a\x00b", "\u202e", "名" * 50,
    [], {}, [[[[[]]]]], {"value": 1, "unit": "kg"}, "1999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-05:00", "2025-13-45T99:99:99Z", "1970-01-01T00:00:00Z", "NaN",
]  # fmt: skip
HUGE_LITERALS = [
    b"1" * 400, b"-" + b"9" * 400, b"1e306", b"-1e400", b"1e-400", b"NaN", b"Infinity",
    b"-Infinity", b"9223372036854775808", b"-9223372036854775809", b"1" * 4_400, b"0.5e99999",
]  # fmt: skip
ENCODINGS = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "latin-1", "bom", "bom2"]
_NUMBER = re.compile(rb"-?\d+(\.\d+)?([eE][-+]?\d+)?")


def bit_flips(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncated(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def spliced(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    other = rng.choice(corpus)
    return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]


def inserted(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:]


def repeated(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    start = rng.randrange(len(data) + 1)
    end = rng.randrange(start, len(data) + 1)
    return data[:start] + data[start:end] * rng.randint(2, 50) + data[end:]


def nested(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    levels = rng.choice([31, 32, 33, 100, 999, 1_000, 5_000, 30_000])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    if rng.random() < 0.5:
        return opener * levels + data + closer * levels
    at = rng.randrange(len(data) + 1)
    return data[:at] + opener * levels + data[at:]  # never closed


def huge_number(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    numbers = list(_NUMBER.finditer(data))
    if not numbers:
        return data + rng.choice(HUGE_LITERALS)
    number = rng.choice(numbers)
    return data[: number.start()] + rng.choice(HUGE_LITERALS) + data[number.end() :]


def re_encoded(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    text = data.decode("utf-8", "replace")
    encoding = rng.choice(ENCODINGS)
    if encoding == "bom":
        return b"\xef\xbb\xbf" + data
    if encoding == "bom2":
        return b"\xef\xbb\xbf\xef\xbb\xbf" + data
    return text.encode(encoding, "replace")


BYTE_MUTATORS: list[Callable[[random.Random, bytes, list[bytes]], bytes]] = [
    bit_flips, truncated, spliced, inserted, repeated, nested, huge_number, re_encoded,
]  # fmt: skip


def mutate_bytes(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    for _ in range(rng.randint(1, 3)):
        data = rng.choice(BYTE_MUTATORS)(rng, data, corpus)
    return data


def mutate_doc(rng: random.Random, doc: Any) -> Any:
    """The document with one value (or a new key's) replaced by a hostile one."""
    slots: list[tuple[Any, Any]] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        keys = list(node) if isinstance(node, dict) else range(len(node))
        for key in keys:
            slots.append((node, key))
            if isinstance(node[key], dict | list):
                stack.append(node[key])
    hostile = rng.choice(HOSTILE_VALUES)
    if not slots or rng.random() < 0.15:
        if isinstance(doc, dict):
            doc[rng.choice(["values", "ts", "seq", "extra", "\ud800", "x" * 300])] = hostile
            return doc
        return hostile
    node, key = rng.choice(slots)
    node[key] = hostile
    return doc


def random_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice([0, 1, 2, 8, 16, 64, 256]))


# --- entry points --------------------------------------------------------------------------

Result = Any  # Reading | DeviceStatus | Rejection, or a loaded config


@dataclass
class Case:
    """One input: the entry point's arguments, and whether it was built from the spec and
    left unchanged (then it must be accepted)."""

    args: tuple[Any, ...]
    valid: bool = False


class EntryPoint:
    """Makes inputs and runs them; subclasses say how."""

    name = ""

    def __init__(self) -> None:
        self.corpus: list[bytes] = []

    def make(self, rng: random.Random) -> Case:
        raise NotImplementedError

    def run(self, case: Case) -> list[Result]:
        raise NotImplementedError

    def label(self, rejection: Rejection) -> str:
        return rejection.reason.value

    def violations(self, case: Case, result: Result) -> list[str]:
        if isinstance(result, Rejection):
            return rejection_violations(result, LIMITS)
        if isinstance(result, DeviceStatus):
            return status_violations(result, REGISTRY)
        return reading_violations(result, REGISTRY, NOW, SKEW)


class MessageEntryPoint(EntryPoint):
    """An MQTT decoder: (topic, payload). ``valid`` builds a message from the spec."""

    def is_json(self, case: Case) -> bool:
        return True

    def violations(self, case: Case, result: Result) -> list[str]:
        problems = super().violations(case, result)
        if isinstance(result, Reading) and self.is_json(case):
            problems += json_violations(case.args[1], LIMITS)
        return problems

    def valid(self, rng: random.Random) -> tuple[str, Any]:
        raise NotImplementedError

    def encode(self, doc: Any) -> bytes:
        return json.dumps(doc).encode()

    def make(self, rng: random.Random) -> Case:
        topic, doc = self.valid(rng)
        choice = rng.random()
        if choice < 0.15:
            return Case((topic, random_bytes(rng)))
        if choice < 0.30:
            payload = self.encode(doc)
            self.corpus = [*self.corpus[-15:], payload]
            return Case((topic, payload), valid=True)
        if choice < 0.60 and not isinstance(doc, bytes):
            payload = self.encode(mutate_doc(rng, doc))
            if rng.random() < 0.3:
                payload = mutate_bytes(rng, payload, self.corpus or [payload])
            return Case((topic, payload))
        payload = mutate_bytes(rng, self.encode(doc), self.corpus or [b"{}"])
        return Case((topic, payload))


def kind_values(rng: random.Random, kind: str) -> dict[str, float | bool]:
    values: dict[str, float | bool] = {}
    for name, spec in KINDS[kind].items():
        if spec.required or rng.random() < 0.5:
            values[name] = rng.random() < 0.5 if spec.boolean else rng.uniform(spec.low, spec.high)
    return values


def event_ms(rng: random.Random) -> int:
    return NOW - rng.randrange(86_400_000)


class OwnTelemetry(MessageEntryPoint):
    name = "codec.decode_telemetry"

    def valid(self, rng: random.Random) -> tuple[str, Any]:
        device_id = rng.choice(list(REGISTRY))
        doc: dict[str, Any] = {
            "ts": event_ms(rng),
            "seq": rng.randrange(2**63),
            "values": kind_values(rng, REGISTRY[device_id].kind),
        }
        if rng.random() < 0.3:
            doc["ts"] = datetime.fromtimestamp(doc["ts"] / 1000, UTC).isoformat()
        if doc["values"].get("level_cm", 1e9) < 9_000 and rng.random() < 0.3:
            doc["values"]["level_cm"] = {"value": doc["values"]["level_cm"] / 100, "unit": "m"}
        return f"citygw/v1/{device_id}/telemetry", doc

    def run(self, case: Case) -> list[Result]:
        return [decode_telemetry(*case.args, REGISTRY, NOW, SKEW, LIMITS)]


class FleetMessages(MessageEntryPoint):
    """``decode_fleet_message`` with the fleet whose topic the message came on."""

    def fleet(self, topic: str) -> FleetSettings:
        raise NotImplementedError

    def run(self, case: Case) -> list[Result]:
        topic, payload = case.args
        fleet = self.fleet(topic)
        return [decode_fleet_message(fleet, topic, payload, REGISTRY, NOW, SKEW, LIMITS)]


class FleetJson(FleetMessages):
    name = "fleet JSON (acme-water, lidco)"

    def fleet(self, topic: str) -> FleetSettings:
        return FLEETS["acme-water"] if topic.startswith("acme") else FLEETS["lidco"]

    def valid(self, rng: random.Random) -> tuple[str, Any]:
        ts = event_ms(rng)
        if rng.random() < 0.5:
            zone = timezone(timedelta(hours=rng.choice([0, 8, -5])))
            doc = {
                "time": datetime.fromtimestamp(ts / 1000, zone).isoformat(),
                "meta": {"cnt": rng.randrange(2**31)},
                "data": [{"wl": rng.uniform(0, 99_990)}],
                "dev": {"bat %": rng.randint(0, 100)},
            }
            return f"acme/wl/{rng.choice(['0001', '0002'])}/up", doc
        doc = {
            "dev": {"sn": rng.choice(["0002", 1])},
            "t": ts / 1000,
            "lid": rng.choice(["OPEN", "CLOSED"]),
            "tilt": rng.randint(0, 17_900),
        }
        return "lidco/x/state", doc


def packed(rng: random.Random) -> bytes:
    ts_s = event_ms(rng) // 1000
    body = struct.pack(
        ">IHHBB", ts_s, rng.randrange(2**16), rng.randrange(2**16), rng.randint(0, 100), 0
    )
    return body + crc16_modbus(body).to_bytes(2, "little")


class FleetBinary(FleetMessages):
    name = "fleet binary (packed-water)"

    def fleet(self, topic: str) -> FleetSettings:
        return FLEETS["packed-water"]

    def valid(self, rng: random.Random) -> tuple[str, Any]:
        return f"packed/{rng.choice(['0001', '0002', '0404'])}/up", packed(rng)

    def encode(self, doc: Any) -> bytes:
        return doc

    def make(self, rng: random.Random) -> Case:
        case = super().make(rng)
        topic, payload = case.args
        if topic.endswith("0404/up"):  # not registered: the valid one is refused rightly
            case.valid = False
        if not case.valid and len(payload) == 12 and rng.random() < 0.5:  # reach the fields
            body = payload[:10]
            case.args = (topic, body + crc16_modbus(body).to_bytes(2, "little"))
        return case

    def is_json(self, case: Case) -> bool:
        return False


class FleetEnvelope(FleetMessages):
    name = "fleet binary in JSON (lora-lids)"

    def fleet(self, topic: str) -> FleetSettings:
        return FLEETS["lora-lids"]

    def valid(self, rng: random.Random) -> tuple[str, Any]:
        body = struct.pack(
            "<hBf", rng.randint(0, 1_800), rng.randint(0, 1), round(rng.uniform(0, 100), 1)
        )
        if rng.random() < 0.3:  # the bytes themselves hostile, inside a well-formed envelope
            body = mutate_bytes(rng, body, [body])
        text = base64.b64encode(body).decode()
        doc = {"end_device_ids": {"device_id": "MH-0002"}, "uplink_message": {"frm_payload": text}}
        return "lns/up/app/devices/x", doc

    def make(self, rng: random.Random) -> Case:
        case = super().make(rng)
        if case.valid:  # a hostile body inside: accepted only if its values happen to fit
            body = base64.b64decode(json.loads(case.args[1])["uplink_message"]["frm_payload"])
            tilt, lid, battery = struct.unpack("<hBf", body) if len(body) == 7 else (-1, 9, 0)
            case.valid = 0 <= tilt <= 1_800 and lid in (0, 1) and 0 <= battery <= 100
        return case


class OwnStatus(MessageEntryPoint):
    name = "status.decode_status"

    def valid(self, rng: random.Random) -> tuple[str, Any]:
        text = rng.choice(["online", "offline", " online\n", "offline\r\n"])
        return f"citygw/v1/{rng.choice(list(REGISTRY))}/status", text.encode()

    def encode(self, doc: Any) -> bytes:
        return doc

    def is_json(self, case: Case) -> bool:
        return False

    def run(self, case: Case) -> list[Result]:
        topic, payload = case.args
        return [decode_status(topic, payload, REGISTRY, NOW, False, LIMITS)]


class FleetStatus(MessageEntryPoint):
    name = "fleet status (lidco, JSON path)"

    def valid(self, rng: random.Random) -> tuple[str, Any]:
        return "lidco/x/conn", {"sn": rng.choice(["0002", 1]), "connected": rng.random() < 0.5}

    def run(self, case: Case) -> list[Result]:
        topic, payload = case.args
        status = FLEETS["lidco"].status
        assert status is not None
        return [decode_fleet_status(status, topic, payload, REGISTRY, NOW, False, LIMITS)]


HOSTILE_TOPICS = [
    "", "/", "#", "+", "citygw/v1/+/telemetry", "citygw/v1//telemetry", "$SYS/x",
    "citygw/v1/" + "W" * 70 + "/telemetry", "citygw/v1/" + "W" * 300 + "/telemetry",
    "x" * 257, "citygw/v1/WL\x00/telemetry", "citygw/v1/名/telemetry", "lns/up/" + "a/" * 200,
]  # fmt: skip


class Router(MessageEntryPoint):
    """``MessageRouter.decode`` with every source's messages, their topics mutated too, and
    payloads past the size limit."""

    name = "MessageRouter.decode"

    def __init__(self, sources: list[MessageEntryPoint]) -> None:
        super().__init__()
        self.sources = sources

    def make(self, rng: random.Random) -> Case:
        case = rng.choice(self.sources).make(rng)
        topic, payload = case.args
        choice = rng.random()
        if choice < 0.1:
            topic = rng.choice(HOSTILE_TOPICS)
            case.valid = False
        elif choice < 0.15:
            topic = topic[: rng.randrange(len(topic) + 1)]
            case.valid = False
        elif choice < 0.2:
            payload = payload + b" " * (LIMITS.max_payload_bytes + 1 - len(payload))
            case.valid = False
        return Case((topic, payload, rng.random() < 0.5), case.valid)

    def is_json(self, case: Case) -> bool:
        route = ROUTER.route(case.args[0])
        return route is not None and route.source in JSON_SOURCES

    def violations(self, case: Case, result: Result) -> list[str]:
        """The size limits are the router's to enforce, before any decoder runs."""
        problems = super().violations(case, result)
        if isinstance(result, Reading | DeviceStatus):
            problems += message_violations(case.args[0], case.args[1], LIMITS)
        return problems

    def run(self, case: Case) -> list[Result]:
        topic, payload, retained = case.args
        return [ROUTER.decode(topic, payload, REGISTRY, NOW, SKEW, retained)]


def sentence(rng: random.Random) -> bytes:
    sentence_type = rng.choice(sorted(SENTENCE_TYPES))
    kind, names = SENTENCE_TYPES[sentence_type]
    device_id = next(d for d, device in REGISTRY.items() if device.kind == kind)
    values = kind_values(rng, kind)
    return encode_line(sentence_type, device_id, [values.get(n) for n in names])


def hostile_sentence(rng: random.Random) -> bytes:
    """A framed sentence with a valid checksum and hostile fields."""
    fields = [rng.choice(["WL", "MH", "BN", "XX", ""]), rng.choice([*REGISTRY, "", "W" * 200])]
    hostile = ["9" * 200, "nan", "inf", "-0", "1e3", "", "00001", "-", ".5", "1.", "0x10", "١"]
    fields += [rng.choice(hostile) for _ in range(rng.randint(0, 6))]
    body = ",".join(fields).encode("utf-8")
    check = 0
    for byte in body:
        check ^= byte
    return b"$" + body + b"*%02X\r\n" % check


class LineProtocol(EntryPoint):
    name = "line_protocol.parse_line"

    def make(self, rng: random.Random) -> Case:
        choice = rng.random()
        if choice < 0.15:
            return Case((random_bytes(rng),))
        if choice < 0.3:
            line = sentence(rng)
            self.corpus = [*self.corpus[-15:], line]
            return Case((line,), valid=True)
        if choice < 0.6:
            return Case((hostile_sentence(rng),))
        return Case((mutate_bytes(rng, sentence(rng), self.corpus or [b"$"]),))

    def run(self, case: Case) -> list[Result]:
        return [parse_line(case.args[0], REGISTRY, NOW)]


class LineStream(EntryPoint):
    """A serial byte stream (sentences, mutated ones, noise) through ``LineFramer`` in
    random chunks, each line parsed: an input gives as many results as it has lines."""

    name = "serial line stream (framer + parser)"

    def make(self, rng: random.Random) -> Case:
        parts = []
        for _ in range(rng.randint(1, 8)):
            choice = rng.random()
            if choice < 0.4:
                parts.append(sentence(rng))
            elif choice < 0.6:
                parts.append(hostile_sentence(rng))
            elif choice < 0.8:
                parts.append(mutate_bytes(rng, sentence(rng), [sentence(rng)]))
            else:
                parts.append(rng.randbytes(rng.choice([1, 10, 300, 1_000])))
        stream = b"".join(parts)
        cuts = sorted(rng.randrange(len(stream) + 1) for _ in range(rng.randint(0, 6)))
        return Case((stream, tuple(cuts)))

    def run(self, case: Case) -> list[Result]:
        stream, cuts = case.args
        framer = LineFramer()
        results: list[Result] = []
        for start, end in zip((0, *cuts), (*cuts, len(stream)), strict=True):
            for item in framer.feed(stream[start:end]):
                if isinstance(item, Garbage):
                    results.append(Rejection(Reason.GARBAGE, item.why))
                else:
                    results.append(parse_line(item, REGISTRY, NOW))
        return results


REGISTER_TYPES = ["uint16", "int16", "uint32", "int32", "float32"]
SCALES = [1.0, 0.1, -1.0, 1e-308, 1e308, 0.5, 3.0]
WORDS = [0, 1, 0xFFFF, 0x7FFF, 0x8000, 0x7FC0, 0x7F80, 0xFF80, -1, 0x10000, 2**80]


class Registers(EntryPoint):
    """A register map (types, word orders, scales) and the words a slave answered, through
    ``block_values`` and the codec's ``decode_values``."""

    name = "registers.block_values"

    def make(self, rng: random.Random) -> Case:
        valid = rng.random() < 0.2
        registers = [
            RegisterSettings(
                field=field_name,
                address=2 * i,
                type="uint16" if valid else rng.choice(REGISTER_TYPES),
                word_order=rng.choice(["big", "little"]),
                scale=1.0 if valid else rng.choice(SCALES),
                offset=0.0 if valid else rng.choice([0.0, -100.0, 1e308]),
            )
            for i, field_name in enumerate(["level_cm", "battery_pct"][: rng.randint(1, 2)])
        ]
        width = sum(r.width for r in registers) + 2
        if valid:
            words = [rng.randint(0, 100) for _ in range(width)]
        elif rng.random() < 0.5:
            words = [rng.randrange(0x10000) for _ in range(rng.randint(0, width))]
        else:
            words = [rng.choice(WORDS) for _ in range(rng.randint(0, width))]
        return Case((tuple(registers), tuple(words)), valid)

    def run(self, case: Case) -> list[Result]:
        registers, words = case.args
        raw: dict[str, Any] = {}
        for block in read_blocks(registers):
            values = block_values("water_level", block, words[block.address :])
            if isinstance(values, Rejection):
                return [values]
            raw.update(values)
        values = decode_values(KINDS["water_level"], raw)
        if isinstance(values, Rejection):
            return [values]
        return [Reading("WL-0001", "water_level", NOW, values)]


# --- the config loader ---------------------------------------------------------------------

# Sections the shipped config (deploy/gateway.yaml) leaves out: fleets, serial, video, TLS.
MORE_SECTIONS = """
gateway_id: fuzz
mqtt:
  url: mqtts://gw:secret@127.0.0.1:8883
  tls: {ca_file: ca.pem}
devices:
  registry: devices.csv
store:
  path: var/gw.db
case_platform:
  url: http://127.0.0.1:8081
  token: platform-token
cases:
  local_classes: {"99101": 道路积水, "99201": 视频监控设备离线}
rules:
  water_level: {warning_for_s: 60, alarm_for_s: 10, class_code: "99101"}
serial:
  ports:
    - path: /dev/ttyUSB0
      framing: modbus
      slaves:
        - unit: 1
          device: WL-101
          registers: [{field: level_cm, address: 0, type: float32, word_order: little}]
api:
  token_file: api.token
"""


def config_seeds() -> list[str]:
    """Configs that load: the shipped one (its ``*_env`` secrets set for the run), and one
    with the sections it leaves out, the example fleets among them."""
    shipped = (ROOT / "deploy" / "gateway.yaml").read_text(encoding="utf-8")
    for variable in re.findall(r"_env:\s*([A-Za-z_][A-Za-z0-9_]*)", shipped):
        os.environ[variable] = "fuzz-secret-0123456789"
    more = yaml.safe_load(MORE_SECTIONS)
    more["devices"]["fleets"] = list(EXAMPLES.values())
    return [shipped, yaml.safe_dump(more, allow_unicode=True, sort_keys=False)]


HOSTILE_YAML = [
    "1" * 5_000, "-1e400", ".nan", ".inf", "~", "!!binary AAAA", "!!set {a, b}", "<<: *x",
    "!!python/object/apply:os.system [true]", "*undefined", "&a [*a]", '"\\ud800"', "[" * 5_000,
    "{a: " * 2_000, "2025-01-01", "0x7FFFFFFFFFFFFFFFFF", "yes", "null", "[]", "{}",
    "'x'" * 2_000, "\t", "|\n  text",
]  # fmt: skip
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


def mutate_yaml(rng: random.Random, text: str, seeds: list[str]) -> bytes:
    lines = text.splitlines()
    for _ in range(rng.randint(1, 3)):
        choice = rng.random()
        at = rng.randrange(len(lines)) if lines else 0
        if choice < 0.2 and lines:
            del lines[at]
        elif choice < 0.3 and lines:
            lines.insert(at, lines[rng.randrange(len(lines))])
        elif choice < 0.4 and lines:
            lines[at] = " " * rng.randint(0, 6) + lines[at].lstrip()
        elif choice < 0.75 and lines and ":" in lines[at]:
            key = lines[at].split(":", 1)[0]
            lines[at] = f"{key}: {rng.choice(HOSTILE_YAML)}"
        elif choice < 0.8:
            lines.append(ALIAS_BOMB)
        else:
            lines.append(rng.choice(HOSTILE_YAML))
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    if rng.random() < 0.3:
        data = mutate_bytes(rng, data, [s.encode() for s in seeds])
    return data


class ConfigLoader(EntryPoint):
    """``gateway.config.load_config`` on mutated files: only ``ConfigError`` may come out."""

    name = "gateway.config.load_config"

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.path = folder / "gw.yaml"
        self.seeds = config_seeds()

    def make(self, rng: random.Random) -> Case:
        seed = rng.choice(self.seeds)
        if rng.random() < 0.1:
            return Case((seed.encode(),), valid=True)
        return Case((mutate_yaml(rng, seed, self.seeds),))

    def run(self, case: Case) -> list[Result]:
        self.path.write_bytes(case.args[0])
        try:
            load_config(self.path)
        except ConfigError as exc:
            return [Rejection(Reason.BAD_SCHEMA, str(exc))]
        return [self.path]  # loaded

    def label(self, rejection: Rejection) -> str:
        return "ConfigError"

    def violations(self, case: Case, result: Result) -> list[str]:
        return []  # refusing with ConfigError is the whole contract here


# --- running and reporting -----------------------------------------------------------------


@dataclass
class Tally:
    inputs: int = 0
    results: int = 0
    accepted: int = 0
    wrong_accepts: int = 0
    bad_rejects: int = 0
    valid_refused: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    slowest_ms: float = 0.0
    seconds: float = 0.0


class Hang(Exception):
    """An input ran past ``HANG_S``."""


def _hang(signum: int, frame: Any) -> None:
    raise Hang(f"no result after {HANG_S} s")


def fuzz(entry: EntryPoint, seed: int, count: int) -> Tally:
    rng = random.Random(f"{seed}:{entry.name}")
    tally = Tally()
    started = time.perf_counter()
    for index in range(count):
        case = entry.make(rng)
        tally.inputs += 1
        at = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, HANG_S)
        try:
            results = entry.run(case)
        except Exception as exc:  # the finding: any exception is a crash, Hang included
            tally.crashes.append(f"{entry.name}:{index}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            tally.slowest_ms = max(tally.slowest_ms, (time.perf_counter() - at) * 1000)
        for result in results:
            tally.results += 1
            problems = entry.violations(case, result)
            if isinstance(result, Rejection):
                tally.rejected[entry.label(result)] += 1
                tally.bad_rejects += bool(problems)
            else:
                tally.accepted += 1
                tally.wrong_accepts += bool(problems)
            if problems and len(tally.problems) < 5:
                tally.problems.append(f"{entry.name}:{index}: {problems} ← {result!r:.200}")
        if case.valid and any(isinstance(r, Rejection) for r in results):
            tally.valid_refused += 1
            if len(tally.problems) < 5:
                tally.problems.append(
                    f"{entry.name}:{index}: valid input refused: {results!r:.300}"
                )
    tally.seconds = time.perf_counter() - started
    return tally


def replay(entry: EntryPoint, seed: int, index: int) -> None:
    rng = random.Random(f"{seed}:{entry.name}")
    for _ in range(index):
        entry.make(rng)
    case = entry.make(rng)
    print(f"input: {case.args!r:.2000}")
    try:
        for result in entry.run(case):
            print(f"result: {result!r}\nviolations: {entry.violations(case, result)}")
    except Exception:
        traceback.print_exc()


def sources() -> list[MessageEntryPoint]:
    """Fresh each time: an entry point's inputs depend on its own history only, so that a
    replay regenerates exactly what the run saw."""
    return [OwnTelemetry(), FleetJson(), FleetBinary(), FleetEnvelope(), OwnStatus(), FleetStatus()]


def entry_points(folder: Path) -> list[EntryPoint]:
    return [
        *sources(),
        Router(sources()),
        LineProtocol(),
        LineStream(),
        Registers(),
        ConfigLoader(folder),
    ]


def table(tallies: dict[str, Tally]) -> str:
    rows = [
        "| entry point | inputs | crashes | accepted | wrong accepts | bad rejects | valid refused"
        " | rejected, by reason | slowest |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for name, t in tallies.items():
        reasons = ", ".join(
            f"{r} {n:,}" for r, n in sorted(t.rejected.items(), key=lambda x: -x[1])
        )
        rows.append(
            f"| `{name}` | {t.inputs:,} | {len(t.crashes)} | {t.accepted:,} | {t.wrong_accepts}"
            f" | {t.bad_rejects} | {t.valid_refused} | {reasons} | {t.slowest_ms:.0f} ms |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--count", type=int, default=100_000, help="device inputs, all entry points"
    )
    parser.add_argument("--configs", type=int, default=5_000, help="config files")
    parser.add_argument("--replay", metavar="NAME:INDEX", help="run one input, with its traceback")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _hang)
    folder = Path(tempfile.mkdtemp(prefix="citygw-fuzz-"))
    try:
        shutil.copy(BUILTIN_SCENARIO.parent / "devices.csv", folder / "devices.csv")
        (folder / "api.token").write_text("fuzz-api-token-0123456789\n", encoding="utf-8")
        entries = entry_points(folder)
        if args.replay:
            name, _, index = args.replay.rpartition(":")
            replay(next(e for e in entries if e.name == name), args.seed, int(index))
            return 0
        devices = [e for e in entries if not isinstance(e, ConfigLoader)]
        tallies: dict[str, Tally] = {}
        for entry in entries:
            count = args.configs if isinstance(entry, ConfigLoader) else args.count // len(devices)
            tallies[entry.name] = tally = fuzz(entry, args.seed, count)
            print(f"{entry.name}: {tally.inputs:,} inputs in {tally.seconds:.1f} s", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    text = report(tallies, args)
    if not args.no_write:
        write_section(SECTION, text)
    failed = any(
        t.crashes or t.wrong_accepts or t.bad_rejects or t.valid_refused for t in tallies.values()
    )
    return 1 if failed else 0


def report(tallies: dict[str, Tally], args: argparse.Namespace) -> str:
    """Print the table and the first findings; the BENCHMARKS.md section."""
    summary = table(tallies)
    print("\n" + summary)
    crashes = []
    for line in [c for t in tallies.values() for c in t.crashes][:10]:
        where = line.split(": ", 1)[0]
        crashes.append(f"- {line} (`python bench/fuzz.py --seed {args.seed} --replay '{where}'`)")
        print(f"CRASH {crashes[-1][2:]}")
    for line in [p for t in tallies.values() for p in t.problems][:10]:
        print(f"PROBLEM {line}")
    total = sum(t.inputs for t in tallies.values())
    seconds = sum(t.seconds for t in tallies.values())
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {platform.python_version()}"
    about = (
        f"`python bench/fuzz.py --seed {args.seed} --count {args.count} --configs {args.configs}`"
        f" — {when} ({machine}): {total:,} inputs in {seconds:.0f} s. Crashes are uncaught"
        " exceptions (or an input running past 5 s); wrong accepts break the contract of"
        " `devices/invariants.py`; bad rejects carry a detail or device id a dead letter"
        " could not store; valid refused are messages built from the spec, unchanged, that"
        " were not accepted. The config loader may raise `ConfigError` and nothing else; a"
        " file it loads counts as accepted. Slowest: the longest single input."
    )
    found = "\n\nCrashes:\n" + "\n".join(crashes) if crashes else ""
    return f"{SECTION}\n\n{textwrap.fill(about, 100)}\n\n{summary}{found}\n\n"


if __name__ == "__main__":
    sys.exit(main())
