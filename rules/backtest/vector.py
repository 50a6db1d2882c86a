"""The fast path: a device's transitions found over its columns with numpy.

The live engine walks readings one by one through a small state machine
(``rules/thresholds.py``: stages with a level and a hold, a clear level with its own hold, a
trip flag). Its transitions are few — a bin fills once a day, ~2,000 readings a week — so
this path finds each next transition with array operations and binary searches instead of
visiting every reading, and gives exactly the alerts the scalar path gives
(``tests/test_backtest_exact.py`` holds it to that on generated histories):

- A reading without the rule's metric and without its trip flag set leaves the state
  untouched, so such readings are dropped first.
- A stage's pending start is the start of the current run of readings at or above its
  level, but never before the last clear (a clear resets every stage; reaching a stage
  resets only that stage and those below, which are not evaluated while it fires). A trip
  reading breaks the first stage's run and reaches it at once.
- The clear's pending start is the start of the current run of untripped readings below
  the clear level, never before the reading after the last fire or escalation (that
  reading returns before the clear is looked at).

Device health is vectorised only as far as it can be proven: if no field is ever stuck for
its ``stuck_after_s`` and no step is ever faster than physics allows, the device is never
suspect and every reading reaches its rules; the battery's hysteresis is two searches. A
device where health would mute something returns ``None`` and goes through the scalar
path, as does a rule kind this module does not know.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from domain import AlertState
from rules.backtest.series import DeviceSeries
from rules.params import KindHealthParams
from rules.thresholds import ThresholdRule

Transition = tuple[int, AlertState, int]  # (reading index, what happened, stage after)


@dataclass(frozen=True, slots=True)
class _Runs:
    """Where each run of ``True`` starts and ends, and the readings where a run held long
    enough when measured from its own start."""

    mask: np.ndarray
    start: np.ndarray
    end: np.ndarray
    eligible: np.ndarray  # sorted indices

    @classmethod
    def of(cls, mask: np.ndarray, ts: np.ndarray, hold_ms: int) -> _Runs:
        n = mask.shape[0]
        positions = np.arange(n)
        rising = mask.copy()
        rising[1:] &= ~mask[:-1]
        start = np.maximum.accumulate(np.where(rising, positions, 0))
        falling = mask.copy()
        falling[:-1] &= ~mask[1:]
        end = np.minimum.accumulate(np.where(falling, positions, n - 1)[::-1])[::-1]
        eligible = np.flatnonzero(mask & (ts - ts[start] >= hold_ms))
        return cls(mask, start, end, eligible)

    def first(self, ts: np.ndarray, hold_ms: int, clamp: int) -> int:
        """The first reading at or after ``clamp`` where the run has held ``hold_ms``,
        with no run counted from before ``clamp``; ``len`` when there is none."""
        n = self.mask.shape[0]
        if clamp >= n:
            return n
        after = clamp
        if self.mask[clamp]:
            run_end = int(self.end[clamp])
            reach = int(np.searchsorted(ts, ts[clamp] + hold_ms, "left"))
            if reach <= run_end:
                return max(reach, clamp)
            after = run_end + 1
        found = int(np.searchsorted(self.eligible, after, "left"))
        return int(self.eligible[found]) if found < self.eligible.shape[0] else n


def threshold_transitions(
    rule: ThresholdRule, ts: np.ndarray, metric: np.ndarray, trip: np.ndarray | None
) -> list[Transition]:
    """The rule's transitions over one device's trusted readings, in order."""
    tripped_all = trip if trip is not None else np.zeros(ts.shape[0], dtype=bool)
    kept = np.flatnonzero(~np.isnan(metric) | tripped_all)
    t = ts[kept]
    tripped = tripped_all[kept]
    value = np.where(np.isnan(metric[kept]), -np.inf, metric[kept])
    n = t.shape[0]
    stages = rule.stages
    runs = []
    for j, stage in enumerate(stages):
        above = value >= stage.at
        if j == 0:
            above &= ~tripped
        runs.append(_Runs.of(above, t, stage.hold_ms))
    trips = np.flatnonzero(tripped)
    clears = _Runs.of(~tripped & (value < rule.clear_below), t, rule.clear_hold_ms)

    def reach_at(clamp: int) -> list[int]:
        found = [runs[j].first(t, s.hold_ms, clamp) for j, s in enumerate(stages)]
        at = int(np.searchsorted(trips, clamp, "left"))
        if at < trips.shape[0]:
            found[0] = min(found[0], int(trips[at]))
        return found

    out: list[Transition] = []
    clamp = 0
    while clamp < n:
        reach = reach_at(clamp)
        fired = min(reach)
        if fired >= n:
            break
        stage = max(j for j, at in enumerate(reach) if at == fired)
        out.append((int(kept[fired]), AlertState.FIRING, stage))
        last = fired
        while True:
            higher = reach[stage + 1 :]
            escalate = min(higher, default=n)
            clear = clears.first(t, rule.clear_hold_ms, last + 1)
            if escalate < n and escalate <= clear:
                stage = max(j for j, at in enumerate(reach) if at == escalate)
                out.append((int(kept[escalate]), AlertState.ESCALATED, stage))
                last = escalate
                continue
            if clear < n:
                out.append((int(kept[clear]), AlertState.CLEARED, -1))
            clamp = clear + 1
            break
    return out


def never_suspect(series: DeviceSeries, params: KindHealthParams) -> bool:
    """Whether device health would trust every reading: nothing stuck, nothing jumping."""
    for name, after_s in params.stuck_after_s.items():
        column = series.column(name)
        present = np.flatnonzero(~np.isnan(column))
        if present.shape[0] < 2:
            continue
        values, ts = column[present], series.ts[present]
        same = values[1:] == values[:-1]
        runs = _Runs.of(np.concatenate(([False], same)), ts, 0)
        held_s = (ts - ts[np.maximum(runs.start - 1, 0)]) / 1000
        if np.any(runs.mask & (held_s >= after_s)):
            return False
    for name, per_min in params.max_change_per_min.items():
        if name in series.booleans:
            continue
        column = series.column(name)
        present = np.flatnonzero(~np.isnan(column))
        if present.shape[0] < 2:
            continue
        values, ts = column[present], series.ts[present]
        minutes = np.maximum(np.diff(ts), 0) / 60_000
        allowed = per_min * minutes + params.change_slack.get(name, 0.0)
        if np.any(~(np.abs(np.diff(values)) <= allowed)):
            return False
    return True


def battery_transitions(series: DeviceSeries, params: KindHealthParams) -> list[Transition]:
    """Battery low below ``battery_low_pct``, cleared at or above ``battery_clear_pct``."""
    if "battery_pct" in series.booleans or "battery_pct" not in series.fields:
        return []
    battery = series.fields["battery_pct"]
    lows = np.flatnonzero(battery < params.battery_low_pct)
    oks = np.flatnonzero(battery >= params.battery_clear_pct)
    out: list[Transition] = []
    position = 0
    while True:
        at = int(np.searchsorted(lows, position, "left"))
        if at >= lows.shape[0]:
            return out
        low = int(lows[at])
        out.append((low, AlertState.FIRING, 0))
        at = int(np.searchsorted(oks, low + 1, "left"))
        if at >= oks.shape[0]:
            return out
        position = int(oks[at])
        out.append((position, AlertState.CLEARED, -1))
        position += 1


def rule_transitions(
    series: DeviceSeries, rules: Sequence[ThresholdRule]
) -> list[list[Transition]]:
    """Every rule's transitions over all of the device's readings."""
    trip_cache: dict[str, np.ndarray] = {}
    out = []
    for rule in rules:
        trip = None
        if rule.trip_flag:
            trip = trip_cache.get(rule.trip_flag)
            if trip is None:
                trip = trip_cache[rule.trip_flag] = series.column(rule.trip_flag) == 1.0
        out.append(threshold_transitions(rule, series.ts, series.column(rule.metric), trip))
    return out
