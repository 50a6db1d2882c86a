"""The telemetry contract between field devices and the gateway, as the fleet must honour it.

Written out here rather than imported from ``devices/`` on purpose: the simulator is an
independent client, so a drift between what the gateway accepts and what the contract says
shows up as a failing end-to-end test instead of being silently shared.
"""

from __future__ import annotations

from typing import Literal, get_args

TOPIC = "citygw/v1/{device_id}/telemetry"
QOS = 1

# Fields each device kind may send, and the ones it must send.
KIND_FIELDS: dict[str, frozenset[str]] = {
    "manhole_cover": frozenset({"tilt_deg", "lid_open", "battery_pct"}),
    "bin": frozenset({"fill_pct", "battery_pct"}),
    "water_level": frozenset({"level_cm", "battery_pct"}),
}
REQUIRED_FIELDS: dict[str, frozenset[str]] = {
    "manhole_cover": frozenset({"tilt_deg", "lid_open"}),
    "bin": frozenset({"fill_pct"}),
    "water_level": frozenset({"level_cm"}),
}
BOOLEAN_FIELDS = frozenset({"lid_open"})

# Units a field may be sent in as {"value": x, "unit": u}: x = canonical value * factor.
SEND_UNIT_FACTORS: dict[str, dict[str, float]] = {
    "level_cm": {"cm": 1.0, "mm": 10.0, "m": 0.01},
}

# Rejection reason codes the gateway counts; a staged fault names the one it must provoke.
Reason = Literal[
    "malformed_json",
    "bad_schema",
    "out_of_range",
    "bad_unit",
    "unknown_device",
    "duplicate",
    "stale",
    "future_timestamp",
]
REJECTION_REASONS: tuple[str, ...] = get_args(Reason)


def topic_for(device_id: str) -> str:
    """The MQTT topic a device publishes its telemetry on."""
    return TOPIC.format(device_id=device_id)
