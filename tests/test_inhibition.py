"""Inhibition (mute, absorb) and area (parent) conditions in the alert flow, and their
config: a flood across a grid is one case that gathers its gauges; a dead device mutes
its own business rules; bad config is refused naming the field."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domain import Alert, AlertState, Location, Priority
from rules.alerting import AlertingConfig
from rules.area import parent_key
from rules.flow import AlertFlow, Handled
from rules.incidents import IncidentBook, MergePolicy
from rules.silences import Silence

GRID_A, GRID_B = "350102001001001", "350102001001002"
MIN = 60_000
FLOOD = {
    "area_conditions": [{"name": "grid_flood", "match": {"class": "99101"},
                         "group_by": ["grid"], "min_count": 2, "class_code": "99102",
                         "priority": "critical"}],
    "inhibit_rules": [{"name": "flood_gathers_gauges", "source_match": {"rule": "grid_flood"},
                       "target_match": {"class": "99101"}, "equal": ["grid"],
                       "action": "absorb"}],
}  # fmt: skip
OFFLINE_MUTES = {
    "inhibit_rules": [{"name": "offline_mutes_device", "source_match": {"rule": "offline"},
                       "target_match": {"kind": "water_level"}, "equal": ["device"]}],
}  # fmt: skip


def gauge(n: int, state=AlertState.FIRING, ts=0, grid=GRID_A, rule="water_level") -> Alert:
    # Gauges 1 km apart: the incident book would never merge them by distance.
    where = Location(26.08 + n * 0.01, 119.30, f"gauge {n}", grid)
    code = "99101" if rule == "water_level" else "99001"
    return Alert(f"WL-{n}/{rule}", f"WL-{n}", rule, state, code, Priority.URGENT, where, ts,
                 kind="water_level", merge=rule == "water_level")  # fmt: skip


def flow(config: dict, confirm_ms=0) -> AlertFlow:
    book = IncidentBook(MergePolicy(50, 86_400_000))
    return AlertFlow(book, AlertingConfig.model_validate(config), confirm_ms)


def rows(handled: list[Handled]) -> list[tuple]:
    return [(h.alert.key, str(h.alert.state), h.alert.ts, h.held_by, h.incident_id,
             [str(c.kind) for c in h.commands]) for h in handled]  # fmt: skip


FLOOD_A = parent_key(("grid_flood", (GRID_A,)))


def test_an_area_flood_files_one_case_and_absorbs_the_gauges_that_follow():
    f = flow(FLOOD)
    [first] = f.handle([gauge(1, ts=0)])
    second = f.handle([gauge(2, ts=MIN)])
    third = f.handle([gauge(3, ts=2 * MIN)])
    other_grid = f.handle([gauge(4, ts=3 * MIN, grid=GRID_B)])
    flood = second[0].incident_id
    assert rows([first]) == [("WL-1/water_level", "firing", 0, None, first.incident_id,
                              ["open"])]  # fmt: skip
    assert rows(second + third) == [
        (FLOOD_A, "firing", MIN, None, flood, ["open"]),  # the parent fires first ...
        ("WL-2/water_level", "firing", MIN, None, flood, ["attach"]),  # ... and takes it
        ("WL-3/water_level", "firing", 2 * MIN, None, flood, ["attach"]),
    ]
    assert second[1].commands[0].priority is Priority.CRITICAL  # the flood's own priority
    assert second[0].alert.priority is Priority.CRITICAL and second[0].alert.kind == "area"
    assert rows(other_grid)[0][4] not in (flood, first.incident_id)
    assert second[0].alert.values == {"count": 2}


def test_the_flood_clears_when_fewer_than_min_count_gauges_fire():
    f = flow(FLOOD)
    f.handle([gauge(1, ts=0), gauge(2, ts=MIN), gauge(3, ts=2 * MIN)])
    assert f.handle([gauge(3, AlertState.CLEARED, ts=3 * MIN)])[0].held_by is None
    drop = f.handle([gauge(2, AlertState.CLEARED, ts=4 * MIN)])
    assert [(k, s, ts) for k, s, ts, *_ in rows(drop)] == [
        ("WL-2/water_level", "cleared", 4 * MIN),
        (FLOOD_A, "cleared", 4 * MIN),
    ]
    assert drop[1].alert.values == {"count": 1}
    assert drop[0].incident_id == drop[1].incident_id  # the gauge's clear went to the flood


def test_a_gauge_waits_for_a_silenced_flood_and_joins_it_when_the_silence_ends():
    f = flow(FLOOD)
    f.put_silence(Silence(1, {"rule": "grid_flood"}, "a", "drill", 0, 10 * MIN, 0))
    got = f.handle([gauge(1, ts=0), gauge(2, ts=MIN)])
    assert rows(got)[1:] == [
        (FLOOD_A, "firing", MIN, "silence:1", None, []),
        ("WL-2/water_level", "firing", MIN, "inhibited:flood_gathers_gauges", None, []),
    ]
    released = f.release_due(10 * MIN)
    flood = released[0].incident_id
    assert rows(released) == [
        (FLOOD_A, "firing", 10 * MIN, None, flood, ["open"]),
        ("WL-2/water_level", "firing", 10 * MIN, None, flood, ["attach"]),
    ]


def test_a_gauge_waiting_on_a_held_flood_files_its_own_case_when_the_flood_clears():
    f = flow(FLOOD)
    f.put_silence(Silence(1, {"rule": "grid_flood"}, "a", "drill", 0, 10 * MIN, 0))
    f.handle([gauge(1, ts=0), gauge(2, ts=MIN)])
    got = f.handle([gauge(1, AlertState.CLEARED, ts=2 * MIN)])
    assert [(k, s, ts, held) for k, s, ts, held, *_ in rows(got)] == [
        ("WL-1/water_level", "cleared", 2 * MIN, None),
        (FLOOD_A, "cleared", 2 * MIN, "silence:1"),
        ("WL-2/water_level", "firing", 2 * MIN, None),
    ]
    assert rows(got)[2][5] == ["open"]


def test_an_offline_device_mutes_its_own_business_rules_until_it_recovers():
    f = flow(OFFLINE_MUTES)
    [source] = f.handle([gauge(1, ts=0, rule="offline")])
    muted = f.handle([gauge(1, ts=MIN), gauge(2, ts=MIN)])  # WL-2 is another device
    assert [h.held_by for h in muted] == ["inhibited:offline_mutes_device", None]
    back = f.handle([gauge(1, AlertState.CLEARED, ts=5 * MIN, rule="offline")])
    assert rows(back) == [
        ("WL-1/offline", "cleared", 5 * MIN, None, source.incident_id, ["attach"]),
        ("WL-1/water_level", "firing", 5 * MIN, None, back[1].incident_id, ["open"]),
    ]


def test_a_muted_alert_that_clears_under_its_source_files_nothing():
    f = flow(OFFLINE_MUTES)
    f.handle([gauge(1, ts=0, rule="offline"), gauge(1, ts=MIN)])
    [cleared] = f.handle([gauge(1, AlertState.CLEARED, ts=2 * MIN)])
    assert (cleared.held_by, cleared.commands) == ("inhibited:offline_mutes_device", [])
    assert rows(f.handle([gauge(1, AlertState.CLEARED, ts=3 * MIN, rule="offline")]))[1:] == []


def test_equal_labels_must_be_equal_and_not_empty():
    f = flow(FLOOD)
    got = f.handle([gauge(1, ts=0, grid=""), gauge(2, ts=MIN, grid="")])
    assert [h.held_by for h in got] == [None, None]  # no grid: no area, nothing absorbed
    assert len({h.incident_id for h in got}) == 2


def test_a_closed_flood_case_re_arms_the_flood_and_its_gauges():
    book = IncidentBook(MergePolicy(50, 86_400_000))
    f = AlertFlow(book, AlertingConfig.model_validate(FLOOD))
    got = f.handle([gauge(1, ts=0), gauge(2, ts=MIN)])
    keys = book.close(got[1].incident_id, "closed")
    assert sorted(keys) == sorted([FLOOD_A, "WL-2/water_level"])
    f.rearm(keys)
    again = f.handle([gauge(2, ts=10 * MIN)])  # the engine fires the gauge again
    assert [(h.alert.key, h.commands[0].kind) for h in again] == [
        (FLOOD_A, "open"), ("WL-2/water_level", "attach")
    ]  # fmt: skip
    assert again[0].incident_id != got[1].incident_id


def test_the_flood_state_survives_a_restart():
    f = flow(FLOOD)
    book = f._book
    f.handle([gauge(1, ts=0), gauge(2, ts=MIN)])
    saved = {k: v for k, v in f.states.take_dirty().items() if v is not None}
    assert sorted(saved) == sorted([FLOOD_A, "WL-1/water_level", "WL-2/water_level"])
    restored_book = IncidentBook(MergePolicy(50, 86_400_000))
    for incident in book.take_dirty().values():
        restored_book.load(incident)
    g = AlertFlow(restored_book, AlertingConfig.model_validate(FLOOD))
    for key, state in saved.items():
        g.load(key, state)
    [third] = g.handle([gauge(3, ts=2 * MIN)])
    assert (third.incident_id, third.commands[0].kind) == (
        restored_book.incident_of(FLOOD_A), "attach")  # fmt: skip


# -- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"inhibit_rules": [{"name": "x", "source_match": {}, "target_match": {"kind": "bin"}}]},
         "inhibit_rules.0.source_match"),
        ({"inhibit_rules": [{"name": "x", "source_match": {"colour": "red"},
                             "target_match": {"kind": "bin"}}]},
         "inhibit_rules.0.source_match.colour.[key]"),
        ({"inhibit_rules": [{"name": "x", "source_match": {"kind": ""},
                             "target_match": {"kind": "bin"}}]},
         "inhibit_rules.0.source_match.kind"),
        ({"inhibit_rules": [{"name": "x", "source_match": {"kind": "a"},
                             "target_match": {"kind": "b"}, "action": "drop"}]},
         "inhibit_rules.0.action"),
        ({"area_conditions": [{"name": "f", "match": {"class": "99101"}, "min_count": 1,
                               "class_code": "99102"}]}, "area_conditions.0.min_count"),
        ({"area_conditions": [{"name": "f", "match": {"class": "99101"}, "min_count": 2,
                               "class_code": "flood"}]}, "area_conditions.0.class_code"),
        ({"silences": {"max_in_force": 0}}, "silences.max_in_force"),
    ],
)  # fmt: skip
def test_bad_alerting_config_is_refused_naming_the_field(config, field):
    with pytest.raises(ValidationError) as caught:
        AlertingConfig.model_validate(config)
    assert field in {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}


def test_a_rule_name_used_twice_is_refused():
    rule = {"name": "x", "source_match": {"kind": "a"}, "target_match": {"kind": "b"}}
    with pytest.raises(ValidationError, match="inhibit_rules: name 'x' is used twice"):
        AlertingConfig.model_validate({"inhibit_rules": [rule, rule]})


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "inhibit_rules": st.lists(
                st.fixed_dictionaries({
                    "name": st.sampled_from(["a", "b", "", "x y"]) | JSONISH,
                    "source_match": st.dictionaries(st.sampled_from(["kind", "grid", "zz"]),
                                                    st.text(max_size=3)) | JSONISH,
                    "target_match": st.dictionaries(st.sampled_from(["rule", "class"]),
                                                    st.text(max_size=3)) | JSONISH,
                }, optional={"equal": st.lists(st.sampled_from(["grid", "device", "q"])),
                             "action": st.sampled_from(["mute", "absorb", "x"])}),
                max_size=3),
            "area_conditions": st.lists(JSONISH, max_size=2),
            "silences": JSONISH,
        },
    )
)  # fmt: skip
def test_any_alerting_config_is_accepted_whole_or_refused_with_a_validation_error(config):
    """Property: the loader never raises anything but a ValidationError, and what it accepts
    holds only bounded, non-empty matchers on known labels."""
    try:
        parsed = AlertingConfig.model_validate(config)
    except ValidationError:
        return
    for rule in parsed.inhibit_rules:
        for matchers in (rule.source_match, rule.target_match):
            assert matchers and all(0 < len(v) <= 128 for v in matchers.values())
            assert set(matchers) <= {"kind", "grid", "rule", "class"}
    AlertFlow(IncidentBook(MergePolicy()), parsed).handle([replace(gauge(1), ts=1)])
