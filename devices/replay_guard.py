"""Refuse replayed and out-of-order readings per device.

MQTT QoS 1 is at-least-once: after a crash the broker redelivers what was not acknowledged,
and devices retransmit. Rules run on event time, so a reading older than one already applied
would rewind a device's history; it is refused as ``stale``. A repeated ``seq`` that is not
newer is a ``duplicate``. A device that reboots and restarts its counter is still accepted,
because its timestamps move forward.

State is a small dict per device so the gateway can persist it beside the rule state in the
same transaction.
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
        self._state[device_id] = state

    def admit(self, reading: Reading) -> Rejection | None:
        """Accept the reading (and remember it) or return why it must be refused."""
        state = self._state.get(reading.device_id)
        if state is not None:
            last_ts = state["last_ts"]
            if reading.ts <= last_ts:
                if reading.seq is not None and reading.seq in state["seqs"]:
                    return Rejection(
                        Reason.DUPLICATE, f"seq {reading.seq} already applied", reading.device_id
                    )
                return Rejection(
                    Reason.STALE,
                    f"ts {reading.ts} is not after last applied {last_ts}",
                    reading.device_id,
                )
        seqs = [] if state is None else state["seqs"]
        if reading.seq is not None:
            seqs = [*seqs[-(RECENT_SEQS - 1) :], reading.seq]
        self._state[reading.device_id] = {"last_ts": reading.ts, "seqs": seqs}
        self._dirty.add(reading.device_id)
        return None

    def take_dirty(self) -> dict[str, dict[str, Any]]:
        """States changed since the last call, for the caller to persist."""
        changed = {d: self._state[d] for d in self._dirty}
        self._dirty.clear()
        return changed
