"""A fleet's own online/offline messages (its Last Will), as configured in ``status``."""

from __future__ import annotations

from collections.abc import Mapping

from devices.fleet.ids import device_id_of, registered
from devices.fleet.jsonpath import MISSING
from devices.fleet.settings import StatusSpec
from devices.fleet.values import map_key
from devices.json_doc import load_json
from devices.limits import DEFAULT_LIMITS, InputLimits, shown
from devices.registry import Device
from devices.rejections import Reason, Rejection
from devices.status import DeviceStatus


def decode_fleet_status(
    spec: StatusSpec,
    topic: str,
    payload: bytes,
    registry: Mapping[str, Device],
    now_ms: int,
    retained: bool = False,
    limits: InputLimits = DEFAULT_LIMITS,
) -> DeviceStatus | Rejection:
    """The payload text (or, with ``spec.path``, the JSON value there) looked up in
    ``spec.map``; anything not in the map is refused, not guessed."""
    doc = None
    if spec.path is not None:
        doc = load_json(payload, limits.max_json_depth)
        if isinstance(doc, Rejection):
            return doc
        raw = spec.path.resolve(doc)
        state = None if raw is MISSING else map_key(raw)
    else:
        state = payload.strip().decode("utf-8", "replace")
    device_id = device_id_of(spec.device_id, topic, doc, limits)
    if isinstance(device_id, Rejection):
        return device_id
    online = spec.map.get(state) if state is not None else None
    if online is None:
        where = f" at {spec.path}" if spec.path is not None else ""
        detail = f"status{where} {shown(state)} is not one of {', '.join(spec.map)}"
        return Rejection(Reason.BAD_SCHEMA, detail, device_id)
    device = registered(registry, device_id)
    if isinstance(device, Rejection):
        return device
    return DeviceStatus(device_id, online, now_ms, retained)
