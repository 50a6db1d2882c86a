"""Decode one message of an existing fleet into a Reading, or say exactly why not.

Same reasons, same checks and in the same order as our own format (``devices.codec``):
payload shape, device, timestamp (the one bound check of ``devices.event_time``), seq, then
every value through ``decode_values`` for type, unit and range. Pure, like the codec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devices.codec import SEQ_RANGE, decode_values, is_seq
from devices.event_time import ms_from_iso8601, ms_from_number, ts_rejection
from devices.fleet.binary import unpack, unwrap
from devices.fleet.ids import device_id_of, registered
from devices.fleet.jsonpath import MISSING
from devices.fleet.settings import BinaryCodec, FleetSettings, JsonCodec, TsSpec
from devices.fleet.values import mapped
from devices.json_doc import load_json
from devices.kinds import KINDS
from devices.limits import DEFAULT_LIMITS, InputLimits, shown
from devices.registry import Device
from devices.rejections import Reason, Rejection
from domain import Reading


def decode_fleet_message(
    fleet: FleetSettings,
    topic: str,
    payload: bytes,
    registry: Mapping[str, Device],
    now_ms: int,
    max_future_skew_ms: int,
    limits: InputLimits = DEFAULT_LIMITS,
) -> Reading | Rejection:
    """Turn one message on ``fleet.topic`` into a Reading in our fields and units."""
    codec = fleet.codec
    if isinstance(codec, BinaryCodec):
        return _decode_binary(
            fleet, codec, topic, payload, registry, now_ms, max_future_skew_ms, limits
        )
    return _decode_json(fleet, codec, topic, payload, registry, now_ms, max_future_skew_ms, limits)


def _decode_json(
    fleet: FleetSettings,
    codec: JsonCodec,
    topic: str,
    payload: bytes,
    registry: Mapping[str, Device],
    now_ms: int,
    max_future_skew_ms: int,
    limits: InputLimits,
) -> Reading | Rejection:
    doc = load_json(payload, limits.max_json_depth)
    if isinstance(doc, Rejection):
        return doc
    device_id = device_id_of(fleet.device_id, topic, doc, limits)
    if isinstance(device_id, Rejection):
        return device_id
    device = _device(fleet, device_id, registry)
    if isinstance(device, Rejection):
        return device
    ts = _json_ts(codec.ts, doc, now_ms)
    if isinstance(ts, str):
        return Rejection(Reason.BAD_SCHEMA, ts, device_id)
    bad_ts = ts_rejection(ts, now_ms, max_future_skew_ms, device_id)
    if bad_ts is not None:
        return bad_ts
    seq = None if codec.seq is None else codec.seq.resolve(doc)
    if seq is MISSING:
        seq = None
    elif seq is not None and not is_seq(seq):
        return Rejection(Reason.BAD_SCHEMA, f"seq at {codec.seq} must be {SEQ_RANGE}", device_id)
    specs = KINDS[device.kind]
    raw: dict[str, Any] = {}
    for name, mapping in codec.fields.items():
        value = mapping.path.resolve(doc)
        if value is MISSING or value is None:  # null is how many fleets say "no sample"
            if name in specs and specs[name].required:
                detail = f"missing field {name} at {mapping.path}"
                return Rejection(Reason.BAD_SCHEMA, detail, device_id)
            continue
        raw[name] = mapped(name, mapping, value)
    return _reading(device, ts, seq, raw)


def _decode_binary(
    fleet: FleetSettings,
    codec: BinaryCodec,
    topic: str,
    payload: bytes,
    registry: Mapping[str, Device],
    now_ms: int,
    max_future_skew_ms: int,
    limits: InputLimits,
) -> Reading | Rejection:
    unwrapped = unwrap(codec, payload, limits.max_json_depth)
    if isinstance(unwrapped, Rejection):
        return unwrapped
    data, doc = unwrapped
    device_id = device_id_of(fleet.device_id, topic, doc, limits)
    if isinstance(device_id, Rejection):
        return device_id
    layout = codec.layout
    values = unpack(layout, data)
    if isinstance(values, Rejection):
        return Rejection(values.reason, values.detail, device_id)
    device = _device(fleet, device_id, registry)
    if isinstance(device, Rejection):
        return device
    ts, seq = now_ms, None
    raw: dict[str, Any] = {}
    for field, value in zip(layout.fields, values, strict=True):
        name = field.name
        if name == "ts":
            ts = value * 1000  # u32 seconds (the settings allow no other type)
        elif name == "seq":
            seq = value
        else:
            raw[name] = mapped(name, field, value)
    bad_ts = ts_rejection(ts, now_ms, max_future_skew_ms, device_id)
    if bad_ts is not None:
        return bad_ts
    return _reading(device, ts, seq, raw)


def _device(
    fleet: FleetSettings, device_id: str, registry: Mapping[str, Device]
) -> Device | Rejection:
    device = registered(registry, device_id)
    if isinstance(device, Device) and fleet.kind is not None and device.kind != fleet.kind:
        detail = f"registry says {device.kind}, fleet {fleet.name} carries {fleet.kind}"
        return Rejection(Reason.BAD_SCHEMA, detail, device_id)
    return device


def _json_ts(spec: TsSpec | None, doc: Any, now_ms: int) -> int | str:
    """Event time in epoch ms, or what is wrong with it."""
    if spec is None:
        return now_ms
    raw = spec.path.resolve(doc)
    if raw is MISSING or raw is None:
        return now_ms if spec.optional else f"missing ts at {spec.path}"
    if spec.format == "iso8601":
        ts = ms_from_iso8601(raw) if isinstance(raw, str) else None
        what = "ISO 8601 with zone"
    else:
        ts = ms_from_number(raw, 1000 if spec.format == "epoch_s" else 1)
        what = spec.format
    return f"ts at {spec.path} must be {what}, got {shown(raw)}" if ts is None else ts


def _reading(device: Device, ts: int, seq: int | None, raw: dict[str, Any]) -> Reading | Rejection:
    """Check the mapped values exactly as our own format's (``decode_values``)."""
    unmapped = next((v for v in raw.values() if isinstance(v, Rejection)), None)
    if unmapped is not None:
        return Rejection(unmapped.reason, unmapped.detail, device.device_id)
    values = decode_values(KINDS[device.kind], raw)
    if isinstance(values, Rejection):
        return Rejection(values.reason, values.detail, device.device_id)
    return Reading(device_id=device.device_id, kind=device.kind, ts=ts, values=values, seq=seq)
