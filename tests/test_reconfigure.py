"""A new settings version applied between batches: what happens to state already there.

The carry-over rules are in the docstrings of rules/engine.py, rules/device_health.py and
rules/video_rules.py; each test here is one of those sentences."""

from __future__ import annotations

import pytest

from domain import AlertState, Category, Location, Observation, Reading
from rules.condition import Transition
from rules.device_health import DeviceHealth
from rules.engine import RuleEngine
from rules.incidents import IncidentBook, MergePolicy
from rules.params import RulesConfig, VideoRuleParams
from rules.settings import RuleSettings, SettingsError, apply_changes, settings_from_config
from rules.video_rules import VideoRuleEngine

HERE = Location(26.08, 119.3, "五一路", "350102001001001")
DEVICES = {"B1": "bin", "WL-1": "water_level"}
T0 = 1_763_700_000_000
MIN = 60_000


def v1() -> RuleSettings:
    return settings_from_config(
        RulesConfig(),
        VideoRuleParams(),
        {"WL-1": {"warning_cm": "30", "alarm_cm": "50", "heartbeat_s": "60"}},
        {"cam1/z1": {"stall_dwell_s": 300}},
        kinds=DEVICES,
    )


def changed(settings: RuleSettings, **changes: object) -> RuleSettings:
    return apply_changes(settings, changes, DEVICES, ["cam1/z1"])


def rule_engine(settings: RuleSettings) -> RuleEngine:
    e = RuleEngine(settings)
    for device_id, kind in DEVICES.items():
        e.add_source(device_id, kind, HERE)
    return e


def fill(e: RuleEngine, minute: float, pct: float) -> list[tuple[str, str]]:
    alerts = e.process(Reading("B1", "bin", T0 + int(minute * MIN), {"fill_pct": pct}))
    return [(a.rule_id, str(a.state)) for a in alerts]


def test_a_dwell_half_elapsed_is_measured_against_a_shorter_hold_at_the_next_reading():
    e = rule_engine(v1())  # 90 % for 10 min
    assert fill(e, 0, 95) == [] and fill(e, 5, 95) == []
    e.reconfigure(changed(v1(), **{"bin.fire_for_s": 360}))
    assert fill(e, 6, 95) == [("bin_overflow", "firing")]  # 6 min since 0 ≥ 6 min


def test_a_dwell_whose_value_misses_a_raised_level_restarts():
    e = rule_engine(v1())
    assert fill(e, 0, 95) == [] and fill(e, 5, 95) == []
    e.reconfigure(changed(v1(), **{"bin.fill_fire_pct": 97}))
    assert fill(e, 6, 95) == []  # below 97: the dwell restarts
    assert fill(e, 7, 98) == [] and fill(e, 16, 98) == []
    assert fill(e, 17, 98) == [("bin_overflow", "firing")]  # 10 min from 7


def test_a_lowered_level_starts_no_dwell_before_the_first_reading_judged_under_it():
    e = rule_engine(v1())
    assert fill(e, 0, 85) == [] and fill(e, 9, 85) == []
    e.reconfigure(changed(v1(), **{"bin.fill_fire_pct": 80}))
    assert fill(e, 10, 85) == []  # starts now, not at 0
    assert fill(e, 19, 85) == [] and fill(e, 20, 85) == [("bin_overflow", "firing")]


def test_a_firing_alert_judged_against_a_raised_clear_level_clears_through_the_normal_path():
    e = rule_engine(v1())  # clears below 60 %
    book = IncidentBook(MergePolicy())
    alerts = e.process(Reading("B1", "bin", T0, {"fill_pct": 95.0}))
    alerts += e.process(Reading("B1", "bin", T0 + 10 * MIN, {"fill_pct": 95.0}))
    e.reconfigure(changed(v1(), **{"bin.fill_fire_pct": 99, "bin.fill_clear_pct": 98}))
    alerts += e.process(Reading("B1", "bin", T0 + 11 * MIN, {"fill_pct": 95.0}))
    assert [(a.rule_id, str(a.state)) for a in alerts] == [
        ("bin_overflow", "firing"),
        ("bin_overflow", "cleared"),  # 95 < the new clear level 98, clear_for_s 0
    ]
    commands = [c for a in alerts for c in book.handle(a)]
    assert [str(c.kind) for c in commands] == ["open", "attach"]  # the case gets the clear


def test_a_condition_switched_off_while_firing_clears_at_the_next_reading():
    on = changed(v1(), **{"bin.repeat_count": 2})
    e = rule_engine(on)
    assert fill(e, 0, 95) == [] and fill(e, 1, 50) == []
    assert fill(e, 2, 95) == [("bin_repeat", "firing")]
    e.reconfigure(changed(on, **{"bin.repeat_count": None}))
    e.states.take_dirty()
    assert fill(e, 3, 95) == [("bin_repeat", "cleared")]
    assert e.states.take_dirty()["B1/bin_repeat"] is None  # forgotten in the store too
    assert fill(e, 4, 50) == [] and fill(e, 5, 95) == []  # and it stays off


def test_source_rules_show_the_conditions_a_schedule_and_those_retiring():
    on = changed(v1(), **{"bin.repeat_count": 2})
    e = rule_engine(on)
    before = e.source_rules("B1")
    assert [(key, c.rule_id) for key, c in before.conditions] == [
        ("B1/bin_overflow", "bin_overflow"),
        ("B1/bin_repeat", "bin_repeat"),
    ]
    assert (before.scheduled, before.retiring) == (False, False)
    assert e.source_rules("B9") is None
    assert fill(e, 0, 95) == [] and fill(e, 1, 50) == []
    assert fill(e, 2, 95) == [("bin_repeat", "firing")]
    friday = {"windows": [], "days": ["fri"]}  # T0 is a Friday: in force, but scheduled
    e.reconfigure(changed(on, **{"bin.repeat_count": None, "bin.schedule": friday}))
    rules = e.source_rules("B1")
    assert [key for key, _ in rules.conditions] == ["B1/bin_overflow"]
    assert (rules.scheduled, rules.retiring) == (True, True)
    reading = Reading("B1", "bin", T0 + 3 * MIN, {"fill_pct": 95.0})
    repeat = before.conditions[1][1]  # the condition switched off, still firing
    switched_off = Transition(AlertState.CLEARED, repeat.priority, "rule switched off")
    assert e.process(reading) == [e.alert(reading, "B1/bin_repeat", repeat, switched_off)]
    assert e.source_rules("B1").retiring is False


def test_a_condition_switched_off_while_quiet_is_forgotten_and_one_switched_on_starts_fresh():
    on = changed(v1(), **{"bin.repeat_count": 3})
    e = rule_engine(on)
    assert fill(e, 0, 95) == [] and fill(e, 1, 50) == []  # one edge counted
    e.states.take_dirty()
    e.reconfigure(v1())
    assert e.states.take_dirty() == {"B1/bin_repeat": None}
    e.reconfigure(changed(v1(), **{"bin.repeat_count": 2}))
    assert fill(e, 2, 95) == [] and fill(e, 3, 50) == []
    assert fill(e, 4, 95) == [("bin_repeat", "firing")]  # the edge at 0 was forgotten


def test_repeat_edges_already_counted_count_towards_a_lower_count():
    e = rule_engine(changed(v1(), **{"bin.repeat_count": 3}))
    assert fill(e, 0, 95) == [] and fill(e, 1, 50) == []
    assert fill(e, 2, 95) == [] and fill(e, 3, 50) == []
    e.reconfigure(changed(v1(), **{"bin.repeat_count": 2}))
    assert fill(e, 4, 50) == []  # only a pass fires: not a bin just compacted
    assert fill(e, 5, 95) == [("bin_repeat", "firing")]


def test_reconfigure_is_all_or_nothing():
    e = rule_engine(v1())
    broken = v1().model_copy(deep=True)
    broken.devices["WL-1"] = {"warning_cm": 30.0}  # no alarm level: no rule can be built
    broken.kinds.bin.fire_for_s = 0.0
    with pytest.raises(ValueError, match="WL-1"):
        e.reconfigure(broken)
    assert e.settings.kinds.bin.fire_for_s == 600.0
    assert fill(e, 0, 95) == []  # still the old 10-min dwell


def test_a_new_schedule_applies_from_the_next_reading():
    e = rule_engine(v1())  # T0 is a Friday, 12:40 in Shanghai
    assert fill(e, 0, 95) == []
    e.reconfigure(changed(v1(), **{"bin.schedule": {"windows": [], "days": ["mon"]}}))
    assert fill(e, 10, 95) == []  # out of force: the dwell restarts
    e.reconfigure(changed(v1(), **{"bin.schedule": {"windows": [], "days": ["fri"]}}))
    assert fill(e, 11, 95) == [] and fill(e, 21, 95) == [("bin_overflow", "firing")]


def test_apply_changes_refuses_what_reconfigure_could_not_build():
    with pytest.raises(SettingsError, match=r"devices\.WL-1\.alarm_cm: water_level device"):
        changed(v1(), **{"devices.WL-1.alarm_cm": None})


# --- device health -------------------------------------------------------------------------


def health(settings: RuleSettings) -> DeviceHealth:
    h = DeviceHealth(settings)
    h.add_device("WL-1", "water_level", HERE)
    h.add_device("B1", "bin", HERE)
    return h


def test_a_new_heartbeat_applies_at_the_next_tick_and_alerts_carry_the_kind():
    h = health(v1())  # WL-1: 60 s × 3
    h.start(T0)
    assert h.tick(T0 + 150_000) == []
    h.reconfigure(changed(v1(), **{"devices.WL-1.heartbeat_s": 30}))
    fired = h.tick(T0 + 150_000)
    assert [(a.source_id, a.rule_id, a.kind) for a in fired] == [("WL-1", "offline", "water_level")]


def test_a_suspect_device_whose_field_is_no_longer_judged_is_believed_again():
    h = health(v1())
    h.start(T0)
    reading = Reading("WL-1", "water_level", T0, {"level_cm": 10.0})
    h.check(reading, T0)
    for i in range(1, 4):  # jumps of 500 cm a minute, three in a row: reported
        level = 10.0 + 500 * i
        verdict = h.check(Reading("WL-1", "water_level", T0 + i * MIN, {"level_cm": level}), T0)
    assert not verdict.trusted and [a.rule_id for a in verdict.alerts] == ["suspect"]
    no_limits = changed(
        v1(),
        **{
            "kinds.health.water_level.max_change_per_min": "{}",
            "kinds.health.water_level.stuck_after_s": "{}",
            "kinds.health.plausible_to_clear": 1,
        },
    )
    h.reconfigure(no_limits)
    verdict = h.check(Reading("WL-1", "water_level", T0 + 5 * MIN, {"level_cm": 510.0}), T0)
    assert verdict.trusted
    assert [(a.rule_id, str(a.state)) for a in verdict.alerts] == [("suspect", "cleared")]


# --- video ---------------------------------------------------------------------------------


def stall(t_s: int) -> list[Observation]:
    return [
        Observation("cam1", "z1", "stall", Category.STALL_PART, 1, (150.0, 200.0, 250.0, 300.0),
                    0.8, t_s * 1000, stationary_ms=60_000, frame_size=(640, 480))
    ]  # fmt: skip


def test_a_zone_presence_under_way_is_measured_against_a_shorter_zone_dwell():
    e = VideoRuleEngine(v1())  # the zone's own dwell: 300 s
    e.add_zone("cam1", "z1", "no_vending", HERE, "09006")
    e.add_zone("cam1", "z2", "no_vending", HERE, "09006")
    for t in range(0, 120):
        assert e.process("cam1", t * 1000, stall(t)) == []
    e.reconfigure(changed(v1(), **{"zones.cam1/z1.stall_dwell_s": 100}))
    fired = e.process("cam1", 120_000, stall(120))
    assert [(a.rule_id, str(a.state), a.kind, a.zone) for a in fired] == [
        ("stall", "firing", "camera", "cam1/z1")
    ]
    assert fired[0].values["dwell_s"] == 130.0  # it stood still from t=-10 s


def test_a_zone_schedule_from_the_settings_is_judged_in_the_engines_time_zone():
    from zoneinfo import ZoneInfo

    evening = changed(v1(), **{"zones.cam1/z1.schedule": "22:00-23:00"})
    e = VideoRuleEngine(evening, ZoneInfo("UTC"))  # epoch 0 is 00:00 UTC: out of force
    e.add_zone("cam1", "z1", "no_vending", HERE, "09006")
    fired = [a for t in range(0, 400) for a in e.process("cam1", t * 1000, stall(t))]
    assert fired == []
    e.reconfigure(v1())
    fired = [a for t in range(400, 800) for a in e.process("cam1", t * 1000, stall(t))]
    assert [(str(a.state), a.ts) for a in fired] == [("firing", 690_000)]
