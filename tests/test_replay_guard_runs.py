"""The replay guard's compact state (devices/replay_guard.py) answers as the plain list of
the last ``RECENT_SEQS`` sequence numbers did, and reads a state stored as that list."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.rejections import Reason
from devices.replay_guard import RECENT_SEQS, ReplayGuard
from domain import Reading


def reading(ts: int, seq: int | None) -> Reading:
    return Reading("BIN-001", "bin", ts, {"fill_pct": 10.0}, seq)


def recent_seqs(state: dict) -> list[int]:
    """The sequence numbers a replay state remembers, oldest first."""
    return [seq for first, last in state["runs"] for seq in range(first, last + 1)]


class ListModel:
    """The earlier guard, written plainly: the last 64 sequence numbers as a list."""

    def __init__(self) -> None:
        self.last_ts: int | None = None
        self.seqs: list[int] = []

    def admit(self, ts: int, seq: int | None) -> str:
        if self.last_ts is not None and ts <= self.last_ts:
            return "duplicate" if seq is not None and seq in self.seqs else "stale"
        if seq is not None:
            self.seqs = [*self.seqs[-(RECENT_SEQS - 1) :], seq]
        self.last_ts = ts
        return "ok"


steps = st.lists(
    st.tuples(
        st.integers(-3, 10),  # ts moves on, now and then back
        st.one_of(st.none(), st.just(1), st.integers(0, 150), st.integers(2**63 - 3, 2**63 - 1)),
    ),
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 130), steps, st.integers(0, 429), st.booleans())
def test_answers_as_the_list_did_across_a_restore_from_either_format(
    counted, readings, cut, from_list
):
    """After ``counted`` readings counting up (past the 64 kept, or not), any mix; the
    restart restores the runs stored, or (``from_list``) the list an earlier version
    stored for the same readings."""
    guard, model = ReplayGuard(), ListModel()
    readings = [(1, 1)] * counted + readings
    ts, counter = 0, 0
    for n, (step, seq) in enumerate(readings):
        ts += step
        if seq == 1:  # most devices: the next number
            counter += 1
            seq = counter
        if n == cut:  # a restart: restored from what was stored (as JSON, like the store)
            stored = guard.take_dirty()
            restored = ReplayGuard()
            for device_id, state in stored.items():
                if from_list:
                    state = {"last_ts": model.last_ts, "seqs": model.seqs}
                restored.load(device_id, json.loads(json.dumps(state)))
            guard = restored if stored else guard
        refused = guard.admit(reading(ts, seq))
        expected = model.admit(ts, seq)
        assert (refused.reason if refused else "ok") == expected
        state = guard._state.get("BIN-001")
        if state is not None:
            assert recent_seqs(state) == model.seqs
            assert len(state["runs"]) <= RECENT_SEQS


def test_a_state_stored_as_the_plain_list_is_read_as_runs():
    guard = ReplayGuard()
    guard.load("BIN-001", {"last_ts": 1000, "seqs": [3, 4, 5, 9, 1, 2]})
    assert guard._state["BIN-001"]["runs"] == [[3, 5], [9, 9], [1, 2]]
    assert guard.admit(reading(999, 9)).reason is Reason.DUPLICATE
    assert guard.admit(reading(999, 6)).reason is Reason.STALE
    assert guard.admit(reading(1001, 3)) is None  # a rebooted counter, newer time


def test_a_device_counting_up_keeps_one_run_of_the_last_64():
    guard = ReplayGuard()
    for seq in range(1, 1001):
        assert guard.admit(reading(seq, seq)) is None
        assert recent_seqs(guard._state["BIN-001"]) == list(range(max(1, seq - 63), seq + 1))
    [state] = guard.take_dirty().values()
    assert state == {"last_ts": 1000, "runs": [[937, 1000]]}
    assert len(json.dumps(state)) < 50
