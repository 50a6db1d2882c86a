"""One raw value from a fleet's message → what ``codec.decode_values`` expects.

The range check, the unit conversion and the type check stay in ``decode_values``, so a
fleet's reading is held to exactly the same rules as one in our own format.
"""

from __future__ import annotations

from typing import Any

from devices.fleet.settings import ValueMapping
from devices.limits import shown
from devices.rejections import Reason, Rejection


def map_key(raw: Any) -> str | None:
    """The text a raw value is looked up by in a ``map``: JSON true → "true", 1 and 1.0 →
    "1"; None for values that cannot be keys (objects, lists, fractions)."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return raw if isinstance(raw, str) else None


def mapped(name: str, mapping: ValueMapping, raw: Any) -> Any:
    """Apply map, scale and offset; tag the unit. Returns a Rejection for an unmapped value,
    otherwise the raw value for ``decode_values`` (which refuses wrong types itself)."""
    if mapping.map is not None:
        key = map_key(raw)
        if key is None or key not in mapping.map:
            accepted = ", ".join(mapping.map)
            detail = f"{name} value {shown(raw)} is not one of {accepted}"
            return Rejection(Reason.BAD_SCHEMA, detail)
        raw = mapping.map[key]
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return raw
    if mapping.scale != 1.0 or mapping.offset:
        try:
            raw = raw * mapping.scale + mapping.offset
        except OverflowError:  # an integer beyond any float
            return Rejection(Reason.OUT_OF_RANGE, f"{name} value is beyond any range")
    return raw if mapping.unit is None else {"value": raw, "unit": mapping.unit}
