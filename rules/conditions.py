"""Two conditions beyond a level held for a while, both on event time.

**Repeat** (``bin_repeat``): a bin that passes its fire level ``count`` times within
``window_ms``, compacted in between, is full even though it never stayed full for the
dwell. A pass is a rising edge: a reading at or above ``level`` after one below it (the
first reading seen counts as an edge when it is above). The rule fires at the pass that
brings ``count`` edges within the window ending at it (never at a reading below the
level, even when an operator lowered ``count``); then the edges are forgotten.
It clears like the level rule of its kind: below ``clear_below`` for ``clear_hold_ms``.
State: ``above`` (the last in-force reading's side), ``edges`` (at most ``count``
timestamps), ``firing``, ``clear_since``.

**Rise** (``water_rise``): water rising by ``rise`` or more within ``window_ms`` is an
early warning before any level is reached. The rise at a reading is its value minus the
lowest value within the window before it. The rule clears once the rise has stayed below
half of ``rise`` for ``clear_hold_ms`` (the water stopped climbing; a level alarm, if any,
has its own rule). State: ``samples``, a monotonic queue of ``[ts, value]`` (each later
and higher than the one before, so its head is the window's lowest), capped at
``MAX_SAMPLES``: when full the second entry is dropped, which keeps the true lowest while
it is in the window and only ever under-states a rise, never invents one.

Outside the schedule a reading neither counts an edge nor starts a rise (the queue is
emptied, so a rise is always measured over readings in force), but a firing alert still
clears through its normal path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain import AlertState, Priority, Reading
from rules.condition import Step, Transition

MAX_SAMPLES = 64


def _number(reading: Reading, metric: str) -> float | None:
    value = reading.values.get(metric)
    if isinstance(value, float | int) and not isinstance(value, bool):
        return float(value)
    return None


def _clear_step(state: dict[str, Any], ts: int, low: bool, hold_ms: int) -> bool | None:
    """The shared clear path of a firing state: None when it cleared now, else whether
    ``clear_since`` changed."""
    if low:
        since = state["clear_since"]
        if since is None:
            state["clear_since"] = since = ts
        if ts - since >= hold_ms:
            return None
        return since == ts
    if state["clear_since"] is not None:
        state["clear_since"] = None
        return True
    return False


@dataclass(frozen=True, slots=True)
class RepeatRule:
    rule_id: str
    metric: str
    class_code: str
    level: float
    count: int
    window_ms: int
    clear_below: float
    clear_hold_ms: int
    priority: Priority

    def initial_state(self) -> dict[str, Any]:
        return {"above": False, "edges": [], "firing": False, "clear_since": None}

    def firing(self, state: dict[str, Any]) -> bool:
        return state["firing"]

    def step(self, state: dict[str, Any], reading: Reading, in_force: bool) -> Step:
        value = _number(reading, self.metric)
        if value is None:
            return False
        ts = reading.ts
        above = value >= self.level
        changed = passed = False
        if state["above"] != above and (in_force or state["firing"]):
            state["above"] = above
            changed = True
            if above and in_force and not state["firing"]:
                passed = True
                edges = state["edges"]
                edges.append(ts)
                del edges[: -self.count]
        if state["firing"]:
            moved = _clear_step(state, ts, value < self.clear_below, self.clear_hold_ms)
            if moved is None:
                state.update(self.initial_state(), above=above)
                return Transition(AlertState.CLEARED, self.priority, "cleared")
            return changed or moved
        if not in_force:
            return changed
        edges = state["edges"]
        oldest = ts - self.window_ms
        while edges and edges[0] < oldest:
            del edges[0]
            changed = True
        # Only a pass fires: a count lowered by an operator does not file a full-bin case
        # on the reading of a bin just compacted.
        if passed and len(edges) >= self.count:
            state.update(firing=True, edges=[], clear_since=None)
            window_s = self.window_ms / 1000
            detail = f"{self.count} times {self.metric} ≥ {self.level:g} within {window_s:g} s"
            return Transition(AlertState.FIRING, self.priority, detail)
        return changed


@dataclass(frozen=True, slots=True)
class RiseRule:
    rule_id: str
    metric: str
    class_code: str
    rise: float
    window_ms: int
    clear_hold_ms: int
    priority: Priority

    def initial_state(self) -> dict[str, Any]:
        return {"samples": [], "firing": False, "clear_since": None}

    def firing(self, state: dict[str, Any]) -> bool:
        return state["firing"]

    def step(self, state: dict[str, Any], reading: Reading, in_force: bool) -> Step:
        value = _number(reading, self.metric)
        if value is None:
            return False
        samples = state["samples"]
        if not in_force and not state["firing"]:
            if samples:
                samples.clear()
                return True
            return False
        ts = reading.ts
        oldest = ts - self.window_ms
        while samples and samples[0][0] < oldest:
            del samples[0]
        while samples and samples[-1][1] >= value:
            samples.pop()
        samples.append([ts, value])
        if len(samples) > MAX_SAMPLES:
            del samples[1]
        rise = value - samples[0][1]
        if not state["firing"]:
            if in_force and rise >= self.rise:
                state.update(firing=True, clear_since=None)
                took_s = (ts - samples[0][0]) / 1000
                detail = f"{self.metric} rose {rise:g} in {took_s:g} s (≥ {self.rise:g})"
                return Transition(AlertState.FIRING, self.priority, detail)
            return True
        if _clear_step(state, ts, rise < self.rise / 2, self.clear_hold_ms) is None:
            state.update(firing=False, clear_since=None)
            return Transition(AlertState.CLEARED, self.priority, "cleared")
        return True
