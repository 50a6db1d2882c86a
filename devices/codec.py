"""Decode the gateway's own telemetry format into Readings, or say exactly why not.

Format (topic ``citygw/v1/<device_id>/telemetry``)::

    {"ts": 1763700000000 | "2026-11-21T08:00:00+08:00", "seq": 17, "values": {...}}

A numeric value may be sent unit-tagged, ``{"value": 1.2, "unit": "m"}``, and is converted
to the field's canonical unit. This module is pure (no I/O) so it is cheap to test and to
run on the hot path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from devices.kinds import KINDS, FieldSpec
from devices.registry import Device
from devices.rejections import Reason, Rejection
from domain import Reading, Value

TOPIC_PREFIX = "citygw/v1/"
TOPIC_SUFFIX = "/telemetry"
TOPIC_FILTER = TOPIC_PREFIX + "+" + TOPIC_SUFFIX


def device_id_from_topic(topic: str, suffix: str = TOPIC_SUFFIX) -> str | None:
    """The ``<device_id>`` of ``citygw/v1/<device_id><suffix>``, or None."""
    if topic.startswith(TOPIC_PREFIX) and topic.endswith(suffix):
        device_id = topic[len(TOPIC_PREFIX) : -len(suffix)]
        if device_id and "/" not in device_id:
            return device_id
    return None


def decode_telemetry(
    topic: str,
    payload: bytes,
    registry: Mapping[str, Device],
    now_ms: int,
    max_future_skew_ms: int,
) -> Reading | Rejection:
    """Turn one MQTT message into a Reading, checking shape, device, units and range."""
    device_id = device_id_from_topic(topic)
    if device_id is None:
        return Rejection(Reason.BAD_SCHEMA, f"topic {topic!r} is not {TOPIC_FILTER}")
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        return Rejection(Reason.MALFORMED_JSON, f"not UTF-8 JSON: {exc}", device_id)
    if not isinstance(doc, dict):
        return Rejection(Reason.BAD_SCHEMA, "payload is not a JSON object", device_id)
    device = registry.get(device_id)
    if device is None:
        return Rejection(
            Reason.UNKNOWN_DEVICE, f"device {device_id!r} is not registered", device_id
        )
    ts = _parse_ts(doc.get("ts"))
    if ts is None:
        return Rejection(Reason.BAD_SCHEMA, "ts must be epoch ms or ISO 8601 with zone", device_id)
    future = future_rejection(ts, now_ms, max_future_skew_ms, device_id)
    if future is not None:
        return future
    seq = doc.get("seq")
    if seq is not None and not is_seq(seq):
        return Rejection(Reason.BAD_SCHEMA, "seq must be a non-negative integer", device_id)
    raw_values = doc.get("values")
    if not isinstance(raw_values, dict):
        return Rejection(Reason.BAD_SCHEMA, "values must be an object", device_id)
    values = decode_values(KINDS[device.kind], raw_values)
    if isinstance(values, Rejection):
        return Rejection(values.reason, values.detail, device_id)
    return Reading(device_id=device_id, kind=device.kind, ts=ts, values=values, seq=seq)


def _parse_ts(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str):
        return parse_iso8601_ms(raw)
    return None


def parse_iso8601_ms(text: str) -> int | None:
    """Epoch ms of an ISO 8601 time with zone; None when it is not one."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:  # a local time without zone is ambiguous: refuse it
        return None
    return int(parsed.timestamp() * 1000)


def future_rejection(
    ts: int, now_ms: int, max_future_skew_ms: int, device_id: str
) -> Rejection | None:
    """A device clock far ahead of ours would pin its readings in the future: refuse them."""
    if ts > now_ms + max_future_skew_ms:
        ahead = (ts - now_ms) / 1000
        return Rejection(Reason.FUTURE_TIMESTAMP, f"ts is {ahead:.0f} s ahead of now", device_id)
    return None


def is_seq(raw: Any) -> bool:
    """A sequence number is a non-negative integer (booleans are not integers here)."""
    return isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0


def decode_values(
    specs: Mapping[str, FieldSpec], raw: dict[str, Any]
) -> dict[str, Value] | Rejection:
    unknown = sorted(set(raw) - set(specs))
    if unknown:
        return Rejection(Reason.BAD_SCHEMA, f"unknown field(s) {', '.join(unknown)}")
    values: dict[str, Value] = {}
    for name, spec in specs.items():
        if name not in raw:
            if spec.required:
                return Rejection(Reason.BAD_SCHEMA, f"missing field {name}")
            continue
        value = _decode_one(spec, raw[name])
        if isinstance(value, Rejection):
            return value
        values[name] = value
    return values


def _decode_one(spec: FieldSpec, raw: Any) -> Value | Rejection:
    if spec.boolean:
        if isinstance(raw, bool):
            return raw
        return Rejection(Reason.BAD_SCHEMA, f"{spec.name} must be true or false")
    factor = 1.0
    if isinstance(raw, dict):
        unit, number = raw.get("unit"), raw.get("value")
        factor = dict(spec.units).get(unit) if isinstance(unit, str) else None
        if factor is None:
            accepted = ", ".join(u for u, _ in spec.units)
            return Rejection(Reason.BAD_UNIT, f"{spec.name} unit {unit!r} is not one of {accepted}")
        raw = number if _is_number(number) else None
        if raw is None:
            return Rejection(Reason.BAD_SCHEMA, f"{spec.name}.value must be a number")
    if not _is_number(raw):
        return Rejection(Reason.BAD_SCHEMA, f"{spec.name} must be a number")
    try:
        value = float(raw) * factor
    except OverflowError:  # a JSON integer beyond any float: out of every range
        value = math.inf if raw > 0 else -math.inf
    if not spec.low <= value <= spec.high:
        return Rejection(
            Reason.OUT_OF_RANGE, f"{spec.name}={value:g} outside {spec.low:g}..{spec.high:g}"
        )
    return value


def _is_number(raw: Any) -> bool:
    return isinstance(raw, int | float) and not isinstance(raw, bool) and raw == raw  # not NaN
