"""The contract of every device entry point, stated once as checks: what any accepted Reading
or DeviceStatus, and any Rejection, must satisfy whatever the input was.

The decoders enforce these bounds themselves, on the hot path; this module is how the
property tests (``tests/test_device_input_properties.py``) and the fuzz benchmark
(``bench/fuzz.py``) verify that they do, against the same definition. Each function returns
the violations it finds, as text; an empty list means the result keeps the contract.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from devices.codec import MAX_SEQ
from devices.event_time import EARLIEST_TS_MS
from devices.json_doc import deeper_than
from devices.kinds import KINDS
from devices.limits import InputLimits
from devices.registry import Device
from devices.rejections import Reason, Rejection
from devices.status import DeviceStatus
from domain import Reading

# Longest detail a rejection may carry into its dead letter.
MAX_DETAIL_CHARS = 300


def reading_violations(
    reading: Reading, registry: Mapping[str, Device], now_ms: int, max_future_skew_ms: int
) -> list[str]:
    """A registered device of the right kind, a time in the calendar bound, a seq within
    int64, and every value of its kind typed, finite and within the physical range."""
    device = registry.get(reading.device_id)
    if device is None:
        return [f"device {reading.device_id!r} is not registered"]
    problems = []
    if reading.kind != device.kind:
        problems.append(f"kind {reading.kind} is not the registry's {device.kind}")
    ts = reading.ts
    if type(ts) is not int or not EARLIEST_TS_MS <= ts <= now_ms + max_future_skew_ms:
        problems.append(f"ts {ts!r} outside {EARLIEST_TS_MS}..now+{max_future_skew_ms}")
    seq = reading.seq
    if seq is not None and (type(seq) is not int or not 0 <= seq <= MAX_SEQ):
        problems.append(f"seq {seq!r} outside 0..2**63-1")
    specs = KINDS[device.kind]
    problems += [
        f"{name} is not a field of {device.kind}" for name in set(reading.values) - set(specs)
    ]
    for name, spec in specs.items():
        if name not in reading.values:
            if spec.required:
                problems.append(f"required {name} is missing")
            continue
        value = reading.values[name]
        if spec.boolean:
            if type(value) is not bool:
                problems.append(f"{name}={value!r} is not true/false")
        elif type(value) is not float or not math.isfinite(value):
            problems.append(f"{name}={value!r} is not a finite float")
        elif not spec.low <= value <= spec.high:
            problems.append(f"{name}={value!r} outside {spec.low}..{spec.high}")
    return problems


def status_violations(status: DeviceStatus, registry: Mapping[str, Device]) -> list[str]:
    if status.device_id not in registry:
        return [f"status of unregistered device {status.device_id!r}"]
    return []


def rejection_violations(rejection: Rejection, limits: InputLimits) -> list[str]:
    """A known reason, and a detail and device id that a dead letter can store: short and
    valid UTF-8 (no lone surrogate from a JSON escape), the id printable and bounded."""
    problems = []
    if not isinstance(rejection.reason, Reason):
        problems.append(f"reason {rejection.reason!r} is not a Reason")
    detail, device_id = rejection.detail, rejection.device_id
    if len(detail) > MAX_DETAIL_CHARS:
        problems.append(f"detail of {len(detail)} characters")
    if not _utf8(detail) or not _utf8(device_id):
        problems.append("detail or device id is not valid UTF-8")
    if len(device_id) > limits.max_device_id_len or not (
        device_id == "" or device_id.isprintable()
    ):
        problems.append(f"device id {device_id[:80]!r} is unbounded or not printable")
    return problems


def message_violations(topic: str, payload: bytes, limits: InputLimits) -> list[str]:
    """What an accepted message must have been: within the size limits."""
    problems = []
    if len(payload) > limits.max_payload_bytes:
        problems.append(f"payload of {len(payload)} bytes")
    if len(topic) > limits.max_topic_len:
        problems.append(f"topic of {len(topic)} characters")
    return problems


def json_violations(payload: bytes, limits: InputLimits) -> list[str]:
    """What an accepted JSON payload must have been: strict UTF-8 (a UTF-8 byte order mark
    allowed), at most ``max_json_depth`` deep."""
    try:
        doc = json.loads(payload.decode("utf-8-sig"), parse_constant=_not_json)
    except UnicodeDecodeError:
        return ["JSON that is not UTF-8"]
    except (ValueError, RecursionError):
        return ["not JSON (NaN and Infinity are not JSON either)"]
    if deeper_than(doc, limits.max_json_depth):
        return [f"JSON deeper than {limits.max_json_depth} levels"]
    return []


def _not_json(constant: str) -> None:
    raise ValueError(constant)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
