"""Device online/offline status, e.g. from an MQTT Last Will.

A device sets ``offline`` (retained) as its Last Will on ``citygw/v1/<device_id>/status`` and
publishes ``online`` (retained) after it connects; the broker publishes the will when the
device's connection dies. Device-health rules consume ``DeviceStatus``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from devices.codec import TOPIC_PREFIX, device_id_from_topic
from devices.limits import DEFAULT_LIMITS, InputLimits, device_id_rejection, shown
from devices.registry import Device
from devices.rejections import Reason, Rejection

STATUS_SUFFIX = "/status"
STATUS_FILTER = TOPIC_PREFIX + "+" + STATUS_SUFFIX
_PAYLOADS = {"online": True, "offline": False}


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    device_id: str
    online: bool
    ts: int  # when the gateway received it, epoch ms: status messages carry no clock
    # The broker's stored last state, delivered because we (re)subscribed: the change itself
    # happened at some unknown earlier time, so "offline for N s" cannot start at ``ts``.
    retained: bool = False


def decode_status(
    topic: str,
    payload: bytes,
    registry: Mapping[str, Device],
    now_ms: int,
    retained: bool = False,
    limits: InputLimits = DEFAULT_LIMITS,
) -> DeviceStatus | Rejection:
    """Our own status topic: payload ``online`` or ``offline`` (surrounding blanks ignored)."""
    device_id = device_id_from_topic(topic, STATUS_SUFFIX)
    if device_id is None:
        return Rejection(Reason.BAD_SCHEMA, f"topic {shown(topic)} is not {STATUS_FILTER}")
    bad_id = device_id_rejection(device_id, limits)
    if bad_id is not None:
        return bad_id
    online = _PAYLOADS.get(payload.strip().decode("utf-8", "replace"))
    if online is None:
        detail = f"status {shown(payload[:80].decode('utf-8', 'replace'))} is not online or offline"
        return Rejection(Reason.BAD_SCHEMA, detail, device_id)
    if device_id not in registry:
        return Rejection(
            Reason.UNKNOWN_DEVICE, f"device {device_id!r} is not registered", device_id
        )
    return DeviceStatus(device_id, online, now_ms, retained)
