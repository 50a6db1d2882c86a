"""Turn a field's behaviour (baseline, steps, ramps, spikes, noise) into reading values."""

from __future__ import annotations

import random
from bisect import bisect_left

from simulators.fleet.contract import SEND_UNIT_FACTORS
from simulators.scenario import FieldSpec

Value = float | bool


def level_at(spec: FieldSpec, t_s: float) -> Value:
    """The noiseless level at ``t_s``: steps hold, ramps run linearly from the level they
    start at. Spikes do not move the level; they replace one reading."""
    assert spec.baseline is not None
    level = spec.baseline
    for change in spec.changes:
        if change.at > t_s or change.spike is not None:
            continue
        if change.set is not None:
            level = change.set
        elif change.ramp_to is not None and change.over is not None:
            progress = min(1.0, (t_s - change.at) / change.over)
            level = float(level) + (change.ramp_to - float(level)) * progress
    return level


def series(spec: FieldSpec, times_s: list[float], rng: random.Random) -> list[Value]:
    """Values at each reading time. A spike takes the first reading at or after its time,
    exactly as written (no noise), so "a single reading of 95" means one reading of 95."""
    spikes = {}
    for change in spec.changes:
        index = bisect_left(times_s, change.at)
        if change.spike is not None and index < len(times_s):
            spikes[index] = change.spike
    values: list[Value] = []
    for index, t_s in enumerate(times_s):
        level = level_at(spec, t_s)
        if isinstance(level, bool):
            values.append(spikes.get(index, level))
            continue
        noisy = level + rng.uniform(-spec.noise, spec.noise)
        if spec.min is not None:
            noisy = max(spec.min, noisy)
        if spec.max is not None:
            noisy = min(spec.max, noisy)
        values.append(round(float(spikes.get(index, noisy)), spec.decimals))
    return values


def encode(name: str, spec: FieldSpec, value: Value) -> Value | dict[str, float | str]:
    """The wire form of a value: plain, or unit-tagged when the field is sent in a unit."""
    if spec.unit is None or isinstance(value, bool):
        return value
    return {"value": round(value * SEND_UNIT_FACTORS[name][spec.unit], 6), "unit": spec.unit}
