"""Threshold rules with dwell and hysteresis, evaluated on event time.

One rule watches one metric of one source. It has ordered stages (e.g. water level:
warning → alarm), each with a level, a hold time and a priority. A stage is reached when the
metric stays at or above its level for the hold time, measured between the readings'
own timestamps, so replaying stored history gives the same alerts as the live run did.
Once firing, the rule clears only when the metric stays below a lower ``clear_below`` level
for ``clear_hold_ms``: a value wandering around the firing level cannot make it flap.

A rule may also have a ``trip_flag`` (a boolean such as ``lid_open``): while it is true the
first stage is reached at once and the rule cannot clear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain import AlertState, Priority, Reading


@dataclass(frozen=True, slots=True)
class Stage:
    at: float
    hold_ms: int
    priority: Priority


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    rule_id: str
    metric: str
    class_code: str
    stages: tuple[Stage, ...]
    clear_below: float
    clear_hold_ms: int
    trip_flag: str | None = None


def initial_state(rule: ThresholdRule) -> dict[str, Any]:
    """Not firing, nothing pending. Plain JSON so it can be stored as it is."""
    return {"stage": -1, "pending": [None] * len(rule.stages), "clear_since": None}


def evaluate(
    rule: ThresholdRule, state: dict[str, Any], reading: Reading
) -> tuple[AlertState | None, int]:
    """Advance ``state`` (in place) with one reading; return the transition, if any, and
    the stage the rule is in afterwards (-1 when not firing)."""
    value = reading.values.get(rule.metric)
    tripped = bool(rule.trip_flag and reading.values.get(rule.trip_flag) is True)
    if not isinstance(value, float | int) and not tripped:
        return None, state["stage"]
    metric = float(value) if isinstance(value, float | int) else float("-inf")

    reached = state["stage"]
    pending = state["pending"]
    for index in range(state["stage"] + 1, len(rule.stages)):
        stage = rule.stages[index]
        if tripped and index == 0:
            reached = 0
            pending[index] = None
        elif metric >= stage.at:
            since = pending[index] if pending[index] is not None else reading.ts
            pending[index] = since
            if reading.ts - since >= stage.hold_ms:
                reached = index
        else:
            pending[index] = None

    if reached > state["stage"]:
        was_firing = state["stage"] >= 0
        state["stage"] = reached
        state["clear_since"] = None
        for index in range(reached + 1):
            pending[index] = None
        return (AlertState.ESCALATED if was_firing else AlertState.FIRING), reached

    if state["stage"] >= 0:
        if not tripped and metric < rule.clear_below:
            since = state["clear_since"] if state["clear_since"] is not None else reading.ts
            state["clear_since"] = since
            if reading.ts - since >= rule.clear_hold_ms:
                state.update(initial_state(rule))
                return AlertState.CLEARED, -1
        else:
            state["clear_since"] = None
    return None, state["stage"]
