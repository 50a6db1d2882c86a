"""Threshold rules with dwell and hysteresis, evaluated on event time.

One rule watches one metric of one source. It has ordered stages (e.g. water level:
warning → alarm), each with a level, a hold time and a priority. A stage is reached when the
metric stays at or above its level for the hold time, measured between the readings'
own timestamps, so replaying stored history gives the same alerts as the live run did.
Once firing, the rule clears only when the metric stays below a lower ``clear_below`` level
for ``clear_hold_ms``: a value wandering around the firing level cannot make it flap.

A rule may also have a ``trip_flag`` (a boolean such as ``lid_open``): while it is true the
first stage is reached at once and the rule cannot clear.

Outside its schedule (``in_force`` false) a reading can neither start nor advance a stage:
a dwell under way restarts at the next reading in force. A firing rule still clears.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain import AlertState, Priority, Reading
from rules.condition import Step, Transition


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

    @property
    def priority(self) -> Priority:
        return self.stages[0].priority

    def initial_state(self) -> dict[str, Any]:
        """Not firing, nothing pending. Plain JSON so it can be stored as it is."""
        return {"stage": -1, "pending": [None] * len(self.stages), "clear_since": None}

    def firing(self, state: dict[str, Any]) -> bool:
        return state["stage"] >= 0

    def step(self, state: dict[str, Any], reading: Reading, in_force: bool) -> Step:
        """Advance ``state`` (in place) with one reading: a Transition, or whether the
        state changed (so that an unchanged state is not written again)."""
        values = reading.values
        value = values.get(self.metric)
        tripped = self.trip_flag is not None and values.get(self.trip_flag) is True
        number = isinstance(value, float | int)
        if not number and not tripped:
            return False
        metric = float(value) if number else float("-inf")  # type: ignore[arg-type]
        ts = reading.ts
        firing = state["stage"]
        pending = state["pending"]
        changed = False
        reached = firing
        for index in range(firing + 1, len(self.stages)):
            stage = self.stages[index]
            if in_force and tripped and index == 0:
                reached = 0
            elif in_force and metric >= stage.at:
                since = pending[index]
                if since is None:
                    pending[index] = since = ts
                    changed = True
                if ts - since >= stage.hold_ms:
                    reached = index
            elif pending[index] is not None:
                pending[index] = None
                changed = True

        if reached > firing:
            state["stage"] = reached
            state["clear_since"] = None
            for index in range(reached + 1):
                pending[index] = None
            stage = self.stages[reached]
            return Transition(
                AlertState.ESCALATED if firing >= 0 else AlertState.FIRING,
                stage.priority,
                f"stage {reached + 1}: {self.metric} ≥ {stage.at:g}",
            )

        if firing >= 0:
            if not tripped and metric < self.clear_below:
                since = state["clear_since"]
                if since is None:
                    state["clear_since"] = since = ts
                    changed = True
                if ts - since >= self.clear_hold_ms:
                    state.update(self.initial_state())
                    return Transition(AlertState.CLEARED, self.priority, "cleared")
            elif state["clear_since"] is not None:
                state["clear_since"] = None
                changed = True
        return changed
