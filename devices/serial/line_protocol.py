"""The citygw serial line protocol (an NMEA-0183-like ASCII sentence per reading).

Spec
----
One reading is one sentence::

    $<TYPE>,<device_id>,<field>,...*<hh>\\r\\n

- ``$`` starts a sentence, wherever it appears; ``\\n`` ends it (the ``\\r`` before it is
  optional). A sentence is at most 256 bytes including ``$`` and the line end.
- ``hh`` is the checksum: two hex digits (sent uppercase, accepted in either case) of the
  XOR of every byte between ``$`` and ``*``, exclusive.
- Only printable ASCII between ``$`` and ``*``; ``device_id`` must not contain ``$ , *``
  and is at most 64 characters (the registry's bound, ``InputLimits.max_device_id_len``).
- Fields are plain decimals (``-?digits[.digits]``: no exponent, no ``nan``/``inf``), in
  the field's canonical unit; flags are ``0`` or ``1``. An empty battery field means
  "not measured" and the value is left out of the reading.

Types (the sentence type must match the device's kind in the registry)::

    $WL,<device>,<level_cm>,<battery_pct>               water_level
    $MH,<device>,<tilt_deg>,<lid_open 0|1>,<battery_pct> manhole_cover
    $BN,<device>,<fill_pct>,<battery_pct>               bin

    e.g. $WL,WL-101,42.5,91*24\\r\\n

The devices have no clock: the gateway stamps a reading with its own receive time. Values
go through the same range and type checks as MQTT telemetry (``devices.codec``).

Rejections: over 256 bytes, no ``*hh`` or not ASCII → ``garbage`` (not a sentence at all);
a device id over 64 characters → ``too_large``; wrong checksum → ``bad_checksum``; unknown
type, wrong field count, bad number, or a type that does not fit the device's kind →
``bad_schema``; device not registered → ``unknown_device``; values out of range →
``out_of_range``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import reduce
from operator import xor

from devices.codec import decode_values
from devices.kinds import KINDS
from devices.limits import DEFAULT_LIMITS, device_id_rejection
from devices.registry import Device
from devices.rejections import Reason, Rejection
from domain import Reading

MAX_SENTENCE_BYTES = 256

# Sentence type -> (device kind, its fields in wire order).
SENTENCE_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "WL": ("water_level", ("level_cm", "battery_pct")),
    "MH": ("manhole_cover", ("tilt_deg", "lid_open", "battery_pct")),
    "BN": ("bin", ("fill_pct", "battery_pct")),
}
# Fields that may be sent empty (not measured this time).
_OPTIONAL = frozenset({"battery_pct"})

_FRAME = re.compile(rb"^\$([\x20-\x7e]*)\*([0-9A-Fa-f]{2})\r?\n?$")
_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")
_FLAG = {"0": False, "1": True}
_BOOLEAN = frozenset(n for fields in KINDS.values() for n, spec in fields.items() if spec.boolean)

FieldValue = float | bool | None


def checksum(body: bytes) -> int:
    """XOR of the bytes between ``$`` and ``*``."""
    return reduce(xor, body, 0)


def encode_line(sentence_type: str, device_id: str, fields: Sequence[FieldValue]) -> bytes:
    """One sentence, line end included. ``None`` sends an empty (not measured) field."""
    body = ",".join([sentence_type, device_id, *(_format(v) for v in fields)]).encode("ascii")
    return b"$" + body + b"*%02X\r\n" % checksum(body)


def _format(value: FieldValue) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def parse_line(line: bytes, registry: Mapping[str, Device], now_ms: int) -> Reading | Rejection:
    """Turn one framed line (``$`` .. ``\\n``) into a Reading stamped ``now_ms``, or say why
    not."""
    if len(line) > MAX_SENTENCE_BYTES:
        return Rejection(Reason.GARBAGE, f"line of {len(line)} bytes is over {MAX_SENTENCE_BYTES}")
    frame = _FRAME.match(line)
    if frame is None:
        shown = line[:40].decode("ascii", "backslashreplace")
        return Rejection(Reason.GARBAGE, f"not a $...*hh sentence: {shown!r}")
    body, sent = frame.group(1), int(frame.group(2), 16)
    parts = body.decode("ascii").split(",")
    device_id = parts[1] if len(parts) > 1 else ""
    bad_id = device_id_rejection(device_id, DEFAULT_LIMITS)
    if bad_id is not None:
        return bad_id
    if checksum(body) != sent:
        return Rejection(
            Reason.BAD_CHECKSUM, f"checksum {sent:02X}, bytes give {checksum(body):02X}", device_id
        )
    known = SENTENCE_TYPES.get(parts[0])
    if known is None:
        return Rejection(Reason.BAD_SCHEMA, f"unknown sentence type {parts[0]!r}", device_id)
    kind, names = known
    if len(parts) != 2 + len(names):
        return Rejection(
            Reason.BAD_SCHEMA,
            f"{parts[0]} takes {len(names)} field(s), got {len(parts) - 2}",
            device_id,
        )
    device = registry.get(device_id)
    if device is None:
        return Rejection(
            Reason.UNKNOWN_DEVICE, f"device {device_id!r} is not registered", device_id
        )
    if device.kind != kind:
        return Rejection(
            Reason.BAD_SCHEMA,
            f"{parts[0]} is a {kind} sentence, device is {device.kind}",
            device_id,
        )
    raw = _fields(names, parts[2:])
    if isinstance(raw, Rejection):
        return Rejection(raw.reason, raw.detail, device_id)
    values = decode_values(KINDS[kind], raw)
    if isinstance(values, Rejection):
        return Rejection(values.reason, values.detail, device_id)
    return Reading(device_id=device_id, kind=kind, ts=now_ms, values=values)


def _fields(names: Sequence[str], texts: Sequence[str]) -> dict[str, float | bool] | Rejection:
    """Wire text to typed values; emptiness and number syntax are the protocol's business,
    ranges are the codec's."""
    raw: dict[str, float | bool] = {}
    for name, text in zip(names, texts, strict=True):
        if text == "" and name in _OPTIONAL:
            continue
        if name in _BOOLEAN:
            if text not in _FLAG:
                return Rejection(Reason.BAD_SCHEMA, f"{name} must be 0 or 1, got {text!r}")
            raw[name] = _FLAG[text]
        elif _DECIMAL.match(text):
            raw[name] = float(text)
        else:
            return Rejection(Reason.BAD_SCHEMA, f"{name} must be a decimal number, got {text!r}")
    return raw
