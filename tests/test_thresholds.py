"""Threshold rules: dwell on event time, hysteresis, trip flags, staged escalation."""

from domain import AlertState, Priority, Reading
from rules.condition import Transition
from rules.thresholds import Stage, ThresholdRule

COVER = ThresholdRule(
    rule_id="cover_anomaly",
    metric="tilt_deg",
    class_code="01003",
    stages=(Stage(15.0, 5_000, Priority.CRITICAL),),
    clear_below=5.0,
    clear_hold_ms=60_000,
    trip_flag="lid_open",
)
WATER = ThresholdRule(
    rule_id="water_level",
    metric="level_cm",
    class_code="99101",
    stages=(Stage(30.0, 60_000, Priority.URGENT), Stage(50.0, 10_000, Priority.CRITICAL)),
    clear_below=25.0,
    clear_hold_ms=300_000,
)


def run(rule, samples):
    """Feed (t_seconds, values) pairs; return [(t, transition, stage)] for transitions."""
    state = rule.initial_state()
    out = []
    for t, values in samples:
        step = rule.step(state, Reading("D", "k", int(t * 1000), values), True)
        if isinstance(step, Transition):
            out.append((t, step.state, state["stage"]))
    return out


def tilt(t, deg, lid=False):
    return (t, {"tilt_deg": deg, "lid_open": lid})


def test_tilt_must_hold_for_the_dwell_time():
    assert run(COVER, [tilt(0, 16), tilt(4, 16), tilt(5, 16)]) == [(5, AlertState.FIRING, 0)]


def test_isolated_spikes_never_fire():
    samples = [tilt(t, 15.5 if t % 10 == 0 else 14.0) for t in range(0, 120, 5)]
    assert run(COVER, samples) == []


def test_hysteresis_no_flapping_around_the_threshold():
    samples = [tilt(0, 15.1), tilt(5, 15.1)]  # fires at t=5
    samples += [tilt(t, 14.9 if t % 10 else 15.1) for t in range(10, 300, 5)]
    assert run(COVER, samples) == [(5, AlertState.FIRING, 0)]


def test_clear_needs_low_value_for_the_whole_clear_hold():
    samples = [tilt(0, 20), tilt(5, 20), tilt(10, 4), tilt(60, 4), tilt(65, 6), tilt(70, 4)]
    samples += [tilt(129, 4), tilt(130, 4)]
    assert run(COVER, samples) == [(5, AlertState.FIRING, 0), (130, AlertState.CLEARED, -1)]


def test_lid_open_fires_at_once_and_blocks_clearing():
    samples = [tilt(0, 1, lid=True), tilt(100, 0, lid=True), tilt(105, 0), tilt(165, 0)]
    assert run(COVER, samples) == [(0, AlertState.FIRING, 0), (165, AlertState.CLEARED, -1)]


def test_water_rises_through_warning_then_alarm_escalates_once():
    samples = [(t, {"level_cm": 35.0}) for t in range(0, 70, 10)]
    samples += [(t, {"level_cm": 55.0}) for t in range(70, 100, 5)]
    assert run(WATER, samples) == [(60, AlertState.FIRING, 0), (80, AlertState.ESCALATED, 1)]


def test_straight_to_alarm_fires_the_highest_stage_reached():
    samples = [(t, {"level_cm": 60.0}) for t in range(0, 70, 10)]
    assert run(WATER, samples) == [(10, AlertState.FIRING, 1)]


def test_missing_metric_changes_nothing():
    state = WATER.initial_state()
    assert WATER.step(state, Reading("D", "k", 0, {"battery_pct": 80.0}), True) is False
    assert state == WATER.initial_state()
