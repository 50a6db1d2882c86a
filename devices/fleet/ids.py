"""Which registered device a fleet's message is about."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devices.fleet.jsonpath import MISSING
from devices.fleet.settings import DeviceIdSpec
from devices.fleet.topics import topic_level
from devices.limits import InputLimits, device_id_rejection
from devices.registry import Device
from devices.rejections import Reason, Rejection


def device_id_of(spec: DeviceIdSpec, topic: str, doc: Any, limits: InputLimits) -> str | Rejection:
    """The registry id: the topic level or JSON value, with the fleet's prefix and suffix,
    held to the limits' device id bounds."""
    if spec.topic is not None:
        raw: Any = topic_level(topic, spec.topic)
        where = f"topic level {spec.topic}"
    else:
        assert spec.path is not None  # DeviceIdSpec guarantees one of the two
        raw = spec.path.resolve(doc)
        where = str(spec.path)
    if raw is None or raw is MISSING or raw == "":
        return Rejection(Reason.BAD_SCHEMA, f"no device id at {where}")
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        return Rejection(Reason.BAD_SCHEMA, f"device id at {where} must be text or an integer")
    device_id = f"{spec.prefix}{raw}{spec.suffix}"
    return device_id_rejection(device_id, limits) or device_id


def registered(registry: Mapping[str, Device], device_id: str) -> Device | Rejection:
    device = registry.get(device_id)
    if device is None:
        return Rejection(
            Reason.UNKNOWN_DEVICE, f"device {device_id!r} is not registered", device_id
        )
    return device
