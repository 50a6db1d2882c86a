"""Bad messages, each built to provoke exactly one rejection reason and nothing else.

A fault is derived from the device's last good reading so that, if the gateway wrongly let
it through, it would carry harmless values (the same level) rather than move a rule: the
staged outcome must depend on the gateway counting the rejection, not on luck.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from simulators.fleet.message import Outgoing

# Faults whose ts is the fault's own send time (so it must not equal a good reading's ts).
CARRIES_OWN_TS = frozenset({"bad_schema", "out_of_range", "bad_unit"})
# Faults that spend a fresh seq, as a real device's next message would.
TAKES_NEW_SEQ = frozenset({"stale", "bad_schema", "out_of_range", "bad_unit", "future_timestamp"})

# A physically impossible value per kind: (field, value).
_IMPOSSIBLE = {
    "manhole_cover": ("tilt_deg", 200.0),
    "bin": ("fill_pct", 140.0),
    "water_level": ("level_cm", -5.0),
}
# The field that can carry a unit tag per kind, and a unit it can never be in.
_UNIT_FIELD = {"water_level": "level_cm"}
_WRONG_UNIT = "kg"


def fault_problem(reason: str, kind: str) -> str | None:
    """Why ``reason`` cannot be staged on a device of ``kind``, or None if it can."""
    if reason == "out_of_range" and kind not in _IMPOSSIBLE:
        return f"no out-of-range value defined for {kind} devices"
    if reason == "bad_unit" and kind not in _UNIT_FIELD:
        return f"bad_unit needs a unit-tagged field; {kind} devices have none"
    return None


def stage_fault(
    reason: str,
    at_ms: int,
    kind: str,
    last: Outgoing,
    seq: int,
    *,
    back_ms: int = 0,
    ahead_ms: int = 0,
) -> Outgoing:
    """The bad message for ``reason``, sent at ``at_ms`` after ``last`` (the device's last
    good reading); ``seq`` is the device's next unused sequence number."""
    assert last.values is not None and last.ts_offset_ms is not None
    sent = {"offset_ms": at_ms, "purpose": reason}
    if reason == "duplicate":
        return replace(last, **sent)
    if reason == "stale":
        return replace(last, **sent, seq=seq, ts_offset_ms=last.ts_offset_ms - back_ms)
    if reason == "future_timestamp":
        return replace(last, **sent, seq=seq, ts_offset_ms=None, ahead_ms=ahead_ms)
    if reason == "malformed_json":
        whole = json.dumps({"values": last.values}, separators=(",", ":")).encode()
        return Outgoing(at_ms, last.device_id, reason, raw=whole[: len(whole) // 2])
    if reason == "bad_schema":
        return Outgoing(at_ms, last.device_id, reason, seq=seq, ts_offset_ms=at_ms)
    if reason == "out_of_range":
        field, value = _IMPOSSIBLE[kind]
        values = {**last.values, field: value}
    elif reason == "bad_unit":
        field = _UNIT_FIELD[kind]
        values = {**last.values, field: {"value": _number(last.values[field]), "unit": _WRONG_UNIT}}
    else:
        raise ValueError(f"cannot stage {reason!r} on a registered device")
    return Outgoing(at_ms, last.device_id, reason, seq=seq, ts_offset_ms=at_ms, values=values)


def _number(value: Any) -> float:
    return value["value"] if isinstance(value, dict) else value
