"""Plan every message of a run, good readings and staged faults, in event-time order.

Planning is pure (no clock, no network), so a plan can be inspected and tested on its own;
the runner only paces and sends it.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import replace

from simulators.fleet.faults import TAKES_NEW_SEQ, stage_fault
from simulators.fleet.message import Outgoing
from simulators.fleet.signal import encode, series
from simulators.scenario import DeviceBehaviour, Fault, Scenario


def plan_messages(scenario: Scenario, seed: int) -> list[Outgoing]:
    """All messages of the run sorted by send offset. Ties keep registry order, and within a
    device a fault at a reading's time follows that reading."""
    faults_by_device: dict[str, list[Fault]] = {}
    for fault in sorted(scenario.spec.faults, key=lambda f: f.at):
        faults_by_device.setdefault(fault.device, []).append(fault)
    readings = {b.device_id: _readings(b, scenario.duration_ms, seed) for b in scenario.behaviours}
    messages: list[Outgoing] = []
    for behaviour in scenario.behaviours:
        own_faults = faults_by_device.pop(behaviour.device_id, [])
        messages += _interleave(behaviour.kind, readings[behaviour.device_id], own_faults)
    for ghost_id, ghost_faults in faults_by_device.items():  # unknown_device faults remain
        messages += _ghost(ghost_id, ghost_faults, readings)
    return sorted(messages, key=lambda m: m.offset_ms)


def _readings(behaviour: DeviceBehaviour, duration_ms: int, seed: int) -> list[Outgoing]:
    """Good readings without seq (assigned when faults are interleaved)."""
    offsets = behaviour.reading_offsets_ms(duration_ms)
    times_s = [o / 1000 for o in offsets]
    columns = {
        name: [
            encode(name, spec, v)
            for v in series(spec, times_s, random.Random(f"{seed}/{behaviour.device_id}/{name}"))
        ]
        for name, spec in behaviour.fields.items()
    }
    return [
        Outgoing(
            offset,
            behaviour.device_id,
            "reading",
            ts_offset_ms=offset,
            values={name: column[i] for name, column in columns.items()},
        )
        for i, offset in enumerate(offsets)
    ]


def _interleave(kind: str, readings: list[Outgoing], faults: list[Fault]) -> list[Outgoing]:
    """Number the device's messages with one seq counter and stage its faults in place."""
    out: list[Outgoing] = []
    seq = 0
    last: Outgoing | None = None
    pending = list(faults)
    for reading in [*readings, None]:
        while pending and (reading is None or pending[0].at * 1000 < reading.offset_ms):
            fault = pending.pop(0)
            assert last is not None, "the first reading is at offset 0, before any fault"
            next_seq = seq + 1 if fault.reason in TAKES_NEW_SEQ else seq
            out.append(
                stage_fault(
                    fault.reason,
                    round(fault.at * 1000),
                    kind,
                    last,
                    next_seq,
                    back_ms=round((fault.back_s or 0) * 1000),
                    ahead_ms=round((fault.ahead_s or 0) * 1000),
                )
            )
            seq = next_seq
        if reading is not None:
            seq += 1
            last = replace(reading, seq=seq)
            out.append(last)
    return out


def _ghost(
    ghost_id: str, faults: list[Fault], readings: dict[str, list[Outgoing]]
) -> list[Outgoing]:
    """Messages from a device the registry does not know, copying a real device's reading."""
    out = []
    for seq, fault in enumerate(faults, start=1):
        assert fault.copy_of is not None
        source = readings[fault.copy_of]
        at_ms = round(fault.at * 1000)
        copied = source[max(0, bisect_right([r.offset_ms for r in source], at_ms) - 1)]
        out.append(
            Outgoing(
                at_ms, ghost_id, fault.reason, seq=seq, ts_offset_ms=at_ms, values=copied.values
            )
        )
    return out
