"""What each device kind publishes: fields, types, physical ranges and accepted units.

Kept as data so that adding a kind is one entry here, not a new code path in the codec.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One telemetry field: numeric with a physical range and unit conversions, or boolean."""

    name: str
    required: bool
    boolean: bool = False
    low: float = float("-inf")
    high: float = float("inf")
    # Unit-tagged values ({"value": 1.2, "unit": "m"}) are converted with these factors into
    # the field's canonical unit (the suffix of its name).
    units: tuple[tuple[str, float], ...] = ()


_BATTERY = FieldSpec("battery_pct", required=False, low=0, high=100, units=(("%", 1.0),))

KINDS: dict[str, dict[str, FieldSpec]] = {
    "manhole_cover": {
        "tilt_deg": FieldSpec("tilt_deg", required=True, low=0, high=180, units=(("deg", 1.0),)),
        "lid_open": FieldSpec("lid_open", required=True, boolean=True),
        "battery_pct": _BATTERY,
    },
    "bin": {
        "fill_pct": FieldSpec("fill_pct", required=True, low=0, high=100, units=(("%", 1.0),)),
        "battery_pct": _BATTERY,
    },
    "water_level": {
        "level_cm": FieldSpec(
            "level_cm",
            required=True,
            low=0,
            high=10_000,
            units=(("cm", 1.0), ("mm", 0.1), ("m", 100.0)),
        ),
        "battery_pct": _BATTERY,
    },
}
