"""Refuse replayed and out-of-order readings per device.

MQTT QoS 1 is at-least-once: after a crash the broker redelivers what was not acknowledged,
and devices retransmit. Rules run on event time, so a reading older than one already applied
would rewind a device's history; it is refused as ``stale``. A repeated ``seq`` that is not
newer is a ``duplicate``. A device that reboots and restarts its counter is still accepted,
because its timestamps move forward.

State is a small dict per device so the gateway can persist it beside the rule state in the
same transaction: ``last_ts`` and the device's last ``RECENT_SEQS`` sequence numbers as runs
of consecutive numbers (``[[first, last], ...]``, oldest first). A device counting up one by
one — nearly every device — keeps one run, so the state written with every batch for every
device in it stays a few dozen bytes instead of 64 numbers. A state stored as the plain list
of an earlier version (``seqs``) is read as runs; that version cannot read runs, so going
back to it needs the replay states deleted first (``DELETE FROM state WHERE ns =
'replay'``: each device's next reading is then taken as its first).
"""

from __future__ import annotations

from typing import Any

from devices.rejections import Reason, Rejection
from domain import Reading

RECENT_SEQS = 64


class ReplayGuard:
    def __init__(self) -> None:
        self._state: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()

    def load(self, device_id: str, state: dict[str, Any]) -> None:
        if "seqs" in state:  # stored by an earlier version: the seqs themselves
            state = {"last_ts": state["last_ts"], "runs": _runs(state["seqs"])}
        self._state[device_id] = state

    def admit(self, reading: Reading) -> Rejection | None:
        """Accept the reading (and remember it) or return why it must be refused."""
        state = self._state.get(reading.device_id)
        if state is not None:
            last_ts = state["last_ts"]
            if reading.ts <= last_ts:
                if reading.seq is not None and _holds(state["runs"], reading.seq):
                    return Rejection(
                        Reason.DUPLICATE, f"seq {reading.seq} already applied", reading.device_id
                    )
                return Rejection(
                    Reason.STALE,
                    f"ts {reading.ts} is not after last applied {last_ts}",
                    reading.device_id,
                )
        runs = [] if state is None else state["runs"]
        if reading.seq is not None:
            runs = _appended(runs, reading.seq)
        self._state[reading.device_id] = {"last_ts": reading.ts, "runs": runs}
        self._dirty.add(reading.device_id)
        return None

    def take_dirty(self) -> dict[str, dict[str, Any]]:
        """States changed since the last call, for the caller to persist."""
        changed = {d: self._state[d] for d in self._dirty}
        self._dirty.clear()
        return changed


def _holds(runs: list[list[int]], seq: int) -> bool:
    return any(first <= seq <= last for first, last in runs)


def _appended(runs: list[list[int]], seq: int) -> list[list[int]]:
    """``runs`` with ``seq`` after them, the oldest dropped past ``RECENT_SEQS``; a new list
    (the state handed to a commit is never changed afterwards)."""
    if runs and seq == runs[-1][1] + 1:
        runs = [*runs[:-1], [runs[-1][0], seq]]
    else:
        runs = [*runs, [seq, seq]]
    excess = sum(last - first + 1 for first, last in runs) - RECENT_SEQS
    while excess > 0:
        first, last = runs[0]
        if last - first + 1 <= excess:
            runs = runs[1:]
            excess -= last - first + 1
        else:
            runs = [[first + excess, last], *runs[1:]]
            excess = 0
    return runs


def _runs(seqs: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for seq in seqs[-RECENT_SEQS:]:
        runs = _appended(runs, seq)
    return runs
