"""The alert flow's gate: silences and health confirmation, on a real incident book.

Times are event times in ms; every expectation is exact (held_by, incident, commands). The
store-level consistency (held alerts and cases across a restart) is in test_silences.py.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from domain import Alert, AlertState, CommandKind, Location, Priority
from rules.flow import AlertFlow, Handled
from rules.incidents import IncidentBook, MergePolicy
from rules.silences import Silence

GRID = "350102001001001"
HERE = Location(26.08, 119.30, "五四路", GRID)
MIN = 60_000


def alert(device="BIN-1", rule="full", state=AlertState.FIRING, ts=0, prio=Priority.URGENT,
          kind="bin", code="06042", grid=GRID) -> Alert:  # fmt: skip
    return Alert(f"{device}/{rule}", device, rule, state, code, prio,
                 replace(HERE, grid_code=grid), ts, kind=kind, merge=rule not in
                 ("offline", "suspect"))  # fmt: skip


def silence(sid=1, starts=0, ends=10 * MIN, **matchers) -> Silence:
    return Silence(sid, matchers or {"device": "BIN-1"}, "王工", "maintenance", starts, ends, 0)


def flow(confirm_ms=0, book=None) -> AlertFlow:
    return AlertFlow(book or IncidentBook(MergePolicy(50, 86_400_000)), confirm_ms=confirm_ms)


def summary(handled: list[Handled]) -> list[tuple]:
    """(key, state, ts, held_by, incident, [command kinds]) per stored alert."""
    return [
        (h.alert.key, str(h.alert.state), h.alert.ts, h.held_by, h.incident_id,
         [str(c.kind) for c in h.commands])
        for h in handled
    ]  # fmt: skip


def incident_of(handled: list[Handled]) -> str:
    [incident] = {h.incident_id for h in handled if h.incident_id}
    return incident


# -- silences -------------------------------------------------------------------------------


def test_a_silenced_alert_is_held_an_escalation_updates_it_and_the_end_files_the_latest():
    f = flow()
    f.put_silence(silence(ends=10 * MIN))
    held = f.handle([alert(ts=MIN)])
    worse = f.handle([alert(state=AlertState.ESCALATED, prio=Priority.CRITICAL, ts=2 * MIN)])
    assert summary(held + worse) == [
        ("BIN-1/full", "firing", MIN, "silence:1", None, []),
        ("BIN-1/full", "escalated", 2 * MIN, "silence:1", None, []),
    ]
    assert f.next_due_ms == 10 * MIN
    assert f.release_due(10 * MIN - 1) == []
    [released] = f.release_due(10 * MIN + 5000)  # noticed late: stamped with the end
    assert summary([released])[0][:4] == ("BIN-1/full", "escalated", 10 * MIN, None)
    [command] = released.commands
    assert command.kind is CommandKind.OPEN and command.priority is Priority.CRITICAL
    assert f.next_due_ms is None


def test_clears_while_silenced_file_nothing_and_nothing_is_filed_at_the_end():
    f = flow()
    f.put_silence(silence())
    got = f.handle([alert(ts=MIN), alert(state=AlertState.CLEARED, ts=3 * MIN)])
    assert summary(got) == [
        ("BIN-1/full", "firing", MIN, "silence:1", None, []),
        ("BIN-1/full", "cleared", 3 * MIN, "silence:1", None, []),
    ]
    assert f.release_due(20 * MIN) == []
    assert f.states.take_dirty() == {"BIN-1/full": None}  # nothing remembered


def test_removing_a_silence_files_what_still_fires_at_that_moment():
    f = flow()
    f.put_silence(silence(ends=60 * MIN))
    f.handle([alert(ts=MIN)])
    f.put_silence(replace(silence(ends=60 * MIN), ends_ms=5 * MIN, removed_ms=5 * MIN))
    [released] = f.release_due(5 * MIN)
    assert summary([released]) == [("BIN-1/full", "firing", 5 * MIN, None,
                                    released.incident_id, ["open"])]  # fmt: skip


def test_an_extension_moves_the_release():
    f = flow()
    f.put_silence(silence(ends=10 * MIN))
    f.handle([alert(ts=MIN)])
    f.put_silence(silence(ends=30 * MIN))
    assert f.release_due(20 * MIN) == []
    assert [h.alert.ts for h in f.release_due(30 * MIN)] == [30 * MIN]


def test_overlapping_silences_hold_until_the_last_ends_and_a_second_one_takes_over():
    f = flow()
    f.put_silence(silence(1, ends=10 * MIN))
    f.put_silence(silence(2, ends=20 * MIN, kind="bin"))
    [held] = f.handle([alert(ts=MIN)])
    assert held.held_by == "silence:2"  # the one ending last
    f.put_silence(silence(3, starts=15 * MIN, ends=40 * MIN, grid=GRID))
    assert f.release_due(20 * MIN) == []  # at 20 min silence 3 is in force: held by it
    assert [h.alert.ts for h in f.release_due(40 * MIN)] == [40 * MIN]


def test_a_replay_releases_at_the_next_event_with_exactly_what_the_timer_releases():
    """Live: the timer notices the end late. Replay: the next alert (another device) is at
    or after the end. Same alert, same ts, same incident, same command id."""
    live, replay = flow(), flow()
    for f in (live, replay):
        f.put_silence(silence(ends=10 * MIN))
        f.handle([alert(ts=MIN)])
    by_timer = live.release_due(10 * MIN + 7_000)
    by_event = replay.handle([alert("BIN-2", ts=10 * MIN)])
    assert summary(by_event[:1]) == summary(by_timer)
    assert [c.command_id for c in by_event[0].commands] == [
        c.command_id for c in by_timer[0].commands
    ]
    # the next event's own alert is handled after the release
    assert summary(by_event[1:]) == [
        ("BIN-2/full", "firing", 10 * MIN, None, by_event[0].incident_id, ["attach"])
    ]


def test_a_filed_case_is_not_gated_by_a_later_silence():
    f = flow()
    opened = f.handle([alert(ts=0)])
    f.put_silence(silence(starts=MIN))
    later = f.handle([
        alert(state=AlertState.ESCALATED, prio=Priority.CRITICAL, ts=2 * MIN),
        alert(state=AlertState.CLEARED, ts=3 * MIN),
    ])  # fmt: skip
    incident = opened[0].incident_id
    assert summary(later) == [
        ("BIN-1/full", "escalated", 2 * MIN, None, incident, ["escalate"]),
        ("BIN-1/full", "cleared", 3 * MIN, None, incident, ["attach"]),
    ]


def test_a_pending_silence_holds_nothing_before_its_start_and_its_end_is_exclusive():
    f = flow()
    f.put_silence(silence(starts=5 * MIN, ends=10 * MIN, device="BIN-1"))
    assert f.handle([alert(ts=5 * MIN - 1)])[0].held_by is None
    assert f.handle([alert("BIN-1", rule="odour", ts=5 * MIN)])[0].held_by == "silence:1"
    assert f.handle([alert("BIN-1", rule="tilt", ts=10 * MIN)])[0].held_by is None


LABEL_VALUES = {
    "device": ["BIN-1", "BIN-2"],
    "kind": ["bin", "camera"],
    "grid": [GRID, "350102001001002"],
    "class": ["06042", "99101"],
    "rule": ["full", "odour"],
    "priority": ["urgent", "low"],
    "origin": ["iot", "video"],
}


@settings(max_examples=150, deadline=None)
@given(
    matchers=st.dictionaries(
        st.sampled_from(sorted(LABEL_VALUES)),
        st.sampled_from(["BIN-1", GRID, "bin", "x"]),
        min_size=1,
    ),
    labels=st.fixed_dictionaries({k: st.sampled_from(v) for k, v in LABEL_VALUES.items()}),
    ts=st.integers(0, 20 * MIN),
)
def test_a_silence_holds_exactly_when_every_matcher_equals_and_the_time_is_inside(
    matchers, labels, ts
):
    """Property: held iff all matchers equal the alert's labels and ts ∈ [start, end)."""
    f = flow()
    f.put_silence(Silence(7, matchers, "a", "r", 5 * MIN, 15 * MIN, 0))
    a = Alert(f"{labels['device']}/{labels['rule']}", labels["device"], labels["rule"],
              AlertState.FIRING, labels["class"], Priority(labels["priority"]),
              replace(HERE, grid_code=labels["grid"]), ts, origin=labels["origin"],
              kind=labels["kind"])  # fmt: skip
    expected = all(a.labels[k] == v for k, v in matchers.items()) and 5 * MIN <= ts < 15 * MIN
    [got] = f.handle([a])
    assert (got.held_by == "silence:7") is expected
    assert (got.commands == []) is expected


# -- health confirmation ----------------------------------------------------------------------


def offline(state=AlertState.FIRING, ts=0, device="WL-1") -> Alert:
    return alert(device, "offline", state, ts, Priority.NORMAL, "water_level", "99001")


def test_an_offline_spell_that_recovers_within_the_confirmation_files_nothing():
    f = flow(confirm_ms=10 * MIN)
    got = f.handle([offline(ts=0), offline(AlertState.CLEARED, ts=10 * MIN - 1)])
    assert summary(got) == [
        ("WL-1/offline", "firing", 0, "confirm", None, []),
        ("WL-1/offline", "cleared", 10 * MIN - 1, "confirm", None, []),
    ]
    assert f.release_due(60 * MIN) == []


def test_an_offline_spell_that_lasts_is_filed_when_the_confirmation_ends():
    f = flow(confirm_ms=10 * MIN)
    f.handle([offline(ts=0)])
    [filed] = f.release_due(10 * MIN)
    assert summary([filed]) == [("WL-1/offline", "firing", 10 * MIN, None,
                                 filed.incident_id, ["open"])]  # fmt: skip
    [cleared] = f.handle([offline(AlertState.CLEARED, ts=11 * MIN)])
    assert (cleared.held_by, cleared.incident_id) == (None, filed.incident_id)


def test_business_rules_and_no_confirmation_time_are_not_held():
    f = flow(confirm_ms=0)
    assert f.handle([offline(ts=0)])[0].held_by is None
    g = flow(confirm_ms=10 * MIN)
    assert g.handle([alert(ts=0)])[0].held_by is None


def test_a_silence_ending_within_the_confirmation_hands_over_to_it():
    f = flow(confirm_ms=10 * MIN)
    f.put_silence(silence(ends=4 * MIN, device="WL-1"))
    assert f.handle([offline(ts=0)])[0].held_by == "silence:1"
    assert f.release_due(5 * MIN) == []  # now held for confirmation until 10 min
    assert f.next_due_ms == 10 * MIN
    assert [h.alert.ts for h in f.release_due(10 * MIN)] == [10 * MIN]


def test_a_new_confirmation_time_moves_what_waits_for_it():
    f = flow(confirm_ms=10 * MIN)
    f.handle([offline(ts=0)])
    f.reconfigure(3 * MIN)
    assert [h.alert.ts for h in f.release_due(4 * MIN)] == [3 * MIN]


# -- state ----------------------------------------------------------------------------------


def test_the_remembered_state_restores_a_flow_that_releases_the_same_case():
    book = IncidentBook(MergePolicy(50, 86_400_000))
    f = flow(confirm_ms=10 * MIN, book=book)
    f.put_silence(silence(ends=30 * MIN))
    f.handle([alert(ts=MIN), offline(ts=2 * MIN)])
    saved = {k: v for k, v in f.states.take_dirty().items() if v is not None}
    assert sorted(saved) == ["BIN-1/full", "WL-1/offline"]
    assert {k: (v["held_by"], v["due_ms"]) for k, v in saved.items()} == {
        "BIN-1/full": ("silence:1", 30 * MIN),
        "WL-1/offline": ("confirm", 12 * MIN),
    }

    restored = flow(confirm_ms=10 * MIN)
    for key, state in saved.items():
        restored.load(key, state)  # the silence ended while the gateway was down
    expected = summary(f.release_due(40 * MIN))
    assert summary(restored.release_due(40 * MIN)) == expected
    assert [(k, ts) for k, _, ts, *_ in expected] == [
        ("WL-1/offline", 12 * MIN), ("BIN-1/full", 30 * MIN)
    ]  # fmt: skip


def test_a_closed_case_re_arms_a_remembered_alert():
    """Filed alerts that are sources or members are remembered; a closed case forgets them,
    and the next firing is gated afresh."""
    book = IncidentBook(MergePolicy(50, 86_400_000))
    f = flow(confirm_ms=MIN, book=book)
    f.handle([offline(ts=0)])
    [filed] = f.release_due(MIN)
    assert f.handle([offline(ts=2 * MIN)])[0].incident_id == filed.incident_id  # a repeat
    f.rearm(book.close(filed.incident_id, "closed"))
    assert f.handle([offline(ts=5 * MIN)])[0].held_by == "confirm"
