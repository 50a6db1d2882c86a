"""Repeat (bin passes N times within a window), rise (water rising fast), sensor schedules,
and the kind on every alert, through the rule engine as the gateway runs it."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from domain import AlertState, Location, Priority, Reading
from rules.conditions import MAX_SAMPLES, RiseRule
from rules.engine import RuleEngine
from rules.incidents import IncidentBook, MergePolicy
from rules.params import RulesConfig, VideoRuleParams
from rules.settings import apply_changes, settings_from_config

HERE = Location(26.08, 119.3, "五一路", "350102001001001")
SHANGHAI = ZoneInfo("Asia/Shanghai")
DEVICES = {"B1": "bin", "WL-1": "water_level"}
# Friday 2025-11-21 08:00 in Shanghai.
T0 = int(datetime(2025, 11, 21, 8, 0, tzinfo=SHANGHAI).timestamp() * 1000)
MIN = 60_000


def engine(**changes: object) -> RuleEngine:
    base = settings_from_config(
        RulesConfig(),
        VideoRuleParams(),
        {"WL-1": {"warning_cm": "30", "alarm_cm": "50"}},
        kinds=DEVICES,
    )
    s = apply_changes(base, changes, DEVICES, []) if changes else base
    e = RuleEngine(s, SHANGHAI)
    for device_id, kind in DEVICES.items():
        e.add_source(device_id, kind, HERE)
    return e


def feed(e: RuleEngine, device: str, metric: str, series: list[tuple[float, float]]):
    """(minutes after T0, value) → [(minute, rule, state, priority)] of the alerts."""
    kind = DEVICES[device]
    out = []
    for minute, value in series:
        reading = Reading(device, kind, T0 + int(minute * MIN), {metric: value})
        for a in e.process(reading):
            out.append((minute, a.rule_id, str(a.state), str(a.priority)))
    return out


# --- repeat ---------------------------------------------------------------------------------

REPEAT = {"bin.repeat_count": 3, "bin.repeat_window_s": 3600}


def test_three_passes_within_the_hour_is_full_without_the_dwell():
    # 92 % for 5 min then compacted to 70 %, three times: never 10 min above 90.
    series = [(0, 92), (5, 70), (20, 93), (25, 72), (40, 91), (41, 91)]
    assert feed(engine(**REPEAT), "B1", "fill_pct", series) == [
        (40, "bin_repeat", "firing", "urgent")
    ]


def test_passes_spread_over_more_than_the_window_do_not_fire():
    series = [(0, 92), (5, 70), (40, 93), (45, 72), (61, 91), (65, 70), (90, 95)]
    # Edges at 0, 40, 61, 90: at 61 the one at 0 is out of the hour; at 90 three within.
    assert feed(engine(**REPEAT), "B1", "fill_pct", series) == [
        (90, "bin_repeat", "firing", "urgent")
    ]


def test_staying_above_is_one_pass_and_noise_below_the_level_is_none():
    series = [(0, 92), (1, 95), (2, 91), (3, 89.9), (4, 85), (5, 89)]
    assert feed(engine(**REPEAT), "B1", "fill_pct", series) == []


def test_repeat_clears_when_emptied_below_the_clear_level():
    series = [(0, 92), (5, 70), (10, 92), (15, 70), (20, 92), (25, 75), (30, 59)]
    assert feed(engine(**REPEAT), "B1", "fill_pct", series) == [
        (20, "bin_repeat", "firing", "urgent"),
        (30, "bin_repeat", "cleared", "urgent"),
    ]


def test_repeat_is_off_unless_configured_and_the_dwell_rule_still_works():
    series = [(0, 92), (5, 70), (10, 92), (15, 70), (20, 92), (30, 92)]
    assert feed(engine(), "B1", "fill_pct", series) == [(30, "bin_overflow", "firing", "urgent")]


def test_repeat_per_device_override():
    e = engine(**{"devices.B1.repeat_count": 2})
    series = [(0, 92), (5, 70), (10, 92)]
    assert feed(e, "B1", "fill_pct", series) == [(10, "bin_repeat", "firing", "urgent")]


def test_repeat_state_is_bounded_to_count_edges():
    e = engine(**{"bin.repeat_count": 3, "bin.repeat_window_s": 60})
    for i in range(50):  # an edge every 2 min, never 3 within a minute
        feed(e, "B1", "fill_pct", [(2 * i, 95), (2 * i + 1, 10)])
    state = e.states.get("B1/bin_repeat", dict)
    assert len(state["edges"]) <= 3


# --- rise ----------------------------------------------------------------------------------

RISE = {"water_level.rise_cm": 10, "water_level.rise_window_s": 300}


def test_water_rising_fast_is_an_early_warning_and_the_level_escalates_the_same_case():
    series = [(0, 5), (2, 9), (4, 15.5), (5, 20), (7, 31), (8, 35), (9, 52), (9.5, 53)]
    e = engine(**RISE)
    alerts = []
    for minute, value in series:
        alerts += e.process(
            Reading("WL-1", "water_level", T0 + int(minute * MIN), {"level_cm": value})
        )
    assert [(a.rule_id, str(a.state), str(a.priority)) for a in alerts] == [
        ("water_rise", "firing", "normal"),  # 5 → 15.5 within 4 min
        ("water_level", "firing", "urgent"),  # ≥ 30 for 60 s (7 → 8)
        ("water_level", "escalated", "critical"),  # ≥ 50 for 10 s
    ]
    assert alerts[0].class_code == alerts[1].class_code == "99101"
    book = IncidentBook(MergePolicy())
    commands = [c for a in alerts for c in book.handle(a)]
    # One case, a severity ladder: 一般 (rising) → 紧急 (warning) → 特急 (alarm).
    assert [str(c.kind) for c in commands] == ["open", "escalate", "escalate"]
    assert len({c.incident_id for c in commands}) == 1


def test_a_slow_rise_is_not_an_early_warning():
    series = [(m, 5 + m) for m in range(0, 24, 3)]  # 1 cm a minute: 5 cm per 5 min
    assert feed(engine(**RISE), "WL-1", "level_cm", series) == []


def test_rise_clears_once_the_water_stopped_climbing_for_the_clear_hold():
    e = engine(**RISE, **{"water_level.clear_for_s": 120})
    series = [(0, 5), (2, 16), (3, 17), (8, 17.2), (9, 17.1), (10, 17.0), (11, 17.0)]
    # At 8 the samples of 0..3 are out of the 5-min window: rise 0.2 < 5 → clear starts,
    # held 2 min at 10.
    assert feed(e, "WL-1", "level_cm", series) == [
        (2, "water_rise", "firing", "normal"),
        (10, "water_rise", "cleared", "normal"),
    ]


def test_rise_samples_are_capped_and_keep_the_lowest():
    rule = RiseRule("water_rise", "level_cm", "99101", 10.0, 3_600_000, 0, Priority.NORMAL)
    state = rule.initial_state()
    transitions = []
    for i in range(200):  # +0.04 cm a reading, 200 readings in 20 min: +8 cm, then +12
        level = 5 + 0.04 * i
        step = rule.step(state, Reading("WL-1", "water_level", i * 6000, {"level_cm": level}), True)
        assert len(state["samples"]) <= MAX_SAMPLES
        assert state["samples"][0] == [0, 5.0]
        if not isinstance(step, bool):
            transitions.append((i, step.state))
    step = rule.step(state, Reading("WL-1", "water_level", 200 * 6000, {"level_cm": 17.0}), True)
    assert transitions == []
    assert step.state is AlertState.FIRING


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 120), st.floats(0, 200)), min_size=1, max_size=120))
def test_rise_never_claims_more_than_the_true_rise(steps):
    """A firing rise is always backed by a real rise within the window (the cap only ever
    understates), and the state stays plain, bounded JSON."""
    rule = RiseRule("water_rise", "level_cm", "99101", 10.0, 300_000, 60_000, Priority.NORMAL)
    state = rule.initial_state()
    ts, seen = 0, []
    for gap_s, level in steps:
        ts += gap_s * 1000
        seen.append((ts, level))
        step = rule.step(state, Reading("W", "water_level", ts, {"level_cm": level}), True)
        if not isinstance(step, bool) and step.state is AlertState.FIRING:
            lowest = min(v for t, v in seen if t >= ts - 300_000)
            assert level - lowest >= 10.0
        assert len(state["samples"]) <= MAX_SAMPLES


# --- schedules and kinds -------------------------------------------------------------------


def test_outside_the_schedule_nothing_starts_but_a_firing_alert_clears():
    # In force 08:00-08:30 only (T0 is 08:00).
    e = engine(**{"bin.schedule": "08:00-08:30", "bin.clear_for_s": 0})
    series = [(0, 95), (10, 95), (25, 95), (29, 95), (35, 95), (50, 95), (60, 40)]
    # Fires at 10 (600 s held); out of force from 30; clears at 60 (below 60 %).
    assert feed(e, "B1", "fill_pct", series) == [
        (10, "bin_overflow", "firing", "urgent"),
        (60, "bin_overflow", "cleared", "urgent"),
    ]
    e2 = engine(**{"bin.schedule": "08:00-08:30"})
    # A dwell under way at the end of the window does not carry over the off time.
    assert feed(e2, "B1", "fill_pct", [(25, 95), (31, 95), (40, 95)]) == []


def test_schedule_days_and_per_device_schedule():
    weekend = {"devices.B1.schedule": {"windows": [], "days": ["sat", "sun"]}}
    assert feed(engine(**weekend), "B1", "fill_pct", [(0, 95), (20, 95)]) == []  # a Friday
    assert feed(engine(), "B1", "fill_pct", [(0, 95), (20, 95)]) == [
        (20, "bin_overflow", "firing", "urgent")
    ]


def test_every_sensor_alert_carries_its_kind():
    e = engine(**RISE)
    alerts = e.process(Reading("WL-1", "water_level", T0, {"level_cm": 5.0}))
    alerts += e.process(Reading("WL-1", "water_level", T0 + MIN, {"level_cm": 60.0}))
    alerts += e.process(Reading("WL-1", "water_level", T0 + 2 * MIN, {"level_cm": 60.0}))
    assert {(a.rule_id, a.kind, a.zone) for a in alerts} == {
        ("water_rise", "water_level", ""),
        ("water_level", "water_level", ""),
    }
    assert alerts[0].labels["kind"] == "water_level"
