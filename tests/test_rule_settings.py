"""The rule settings document: version 1 from config, paths, changes, errors, diff, get."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.params import RulesConfig, VideoRuleParams
from rules.settings import (
    RuleSettings,
    SettingsError,
    apply_changes,
    diff,
    parse_path,
    settings_from_config,
    settings_get,
)

DEVICES = {"WL-1": "water_level", "BIN.7": "bin", "MH-1": "manhole_cover"}
ZONES = ["cam1/gate", "cam.2/east"]
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
REGISTRY = {
    "WL-1": {"warning_cm": "30", "alarm_cm": "50", "heartbeat_s": "120"},
    "BIN.7": {"fill_fire_pct": "95"},
    "MH-1": {},
}


def v1() -> RuleSettings:
    return settings_from_config(
        RulesConfig(),
        VideoRuleParams(stall_dwell_s=200),
        REGISTRY,
        {"cam1/gate": {"schedule": ["07:00-22:00"]}},
        kinds=DEVICES,
    )


def test_version_1_holds_config_registry_and_zone_schedules_typed():
    s = v1()
    assert s.devices == {
        "WL-1": {"warning_cm": 30.0, "alarm_cm": 50.0, "heartbeat_s": 120.0},
        "BIN.7": {"fill_fire_pct": 95.0},
    }
    assert s.kinds.video.stall_dwell_s == 200.0
    assert s.zones == {"cam1/gate": {"schedule": {"windows": ["07:00-22:00"], "days": list(DAYS)}}}
    assert RuleSettings.model_validate(json.loads(json.dumps(s.model_dump(mode="json")))) == s


def test_version_1_without_kinds_types_columns_by_name_and_refuses_unknown_ones():
    s = settings_from_config(RulesConfig(), VideoRuleParams(), {"B": {"repeat_count": "3"}})
    assert s.devices == {"B": {"repeat_count": 3}}
    with pytest.raises(SettingsError, match=r"^devices\.B\.colour: no device param of that name"):
        settings_from_config(RulesConfig(), VideoRuleParams(), {"B": {"colour": "red"}})
    with pytest.raises(SettingsError, match=r"^devices\.B\.fire_for_s: Input should be a valid"):
        settings_from_config(RulesConfig(), VideoRuleParams(), {"B": {"fire_for_s": "soon"}})


@pytest.mark.parametrize(
    ("path", "parsed"),
    [
        ("kinds.bin.fill_fire_pct", ("kinds", "", ("bin", "fill_fire_pct"))),
        ("bin.fill_fire_pct", ("kinds", "", ("bin", "fill_fire_pct"))),
        ("kinds.health.bin.heartbeat_s", ("kinds", "", ("health", "bin", "heartbeat_s"))),
        ("devices.BIN.7.fire_for_s", ("devices", "BIN.7", ("fire_for_s",))),
        ("zones.cam.2/east.stall_dwell_s", ("zones", "cam.2/east", ("stall_dwell_s",))),
    ],
)  # fmt: skip
def test_paths(path, parsed):
    assert parse_path(path) == parsed


def test_changes_are_typed_and_applied_and_the_diff_names_each():
    old = v1()
    new = apply_changes(
        old,
        {
            "bin.fill_fire_pct": "85",
            "kinds.health.confirm_s": 120,
            "kinds.health.water_level.heartbeat_s": "300",
            "devices.BIN.7.repeat_count": "3",
            "devices.BIN.7.fill_fire_pct": None,
            "zones.cam.2/east.rubbish_dwell_s": 30,
            "kinds.water_level.schedule": "06:00-23:00",
        },
        DEVICES,
        ZONES,
    )
    assert diff(old, new) == [
        {"path": "devices.BIN.7.fill_fire_pct", "old": 95.0, "new": None},
        {"path": "devices.BIN.7.repeat_count", "old": None, "new": 3},
        {"path": "kinds.bin.fill_fire_pct", "old": 90.0, "new": 85.0},
        {"path": "kinds.health.confirm_s", "old": 600.0, "new": 120.0},
        {"path": "kinds.health.water_level.heartbeat_s", "old": 600.0, "new": 300.0},
        {
            "path": "kinds.water_level.schedule",
            "old": {"windows": [], "days": list(DAYS)},
            "new": {"windows": ["06:00-23:00"], "days": list(DAYS)},
        },
        {"path": "zones.cam.2/east.rubbish_dwell_s", "old": None, "new": 30.0},
    ]
    assert old.kinds.bin.fill_fire_pct == 90.0  # the old version is untouched
    assert diff(new, new) == []


def test_removing_a_devices_last_override_removes_the_device_entry():
    new = apply_changes(v1(), {"devices.BIN.7.fill_fire_pct": "null"}, DEVICES, ZONES)
    assert "BIN.7" not in new.devices


KIND_BIN = r"^kinds\.bin\."
HYSTERESIS = r"fill_clear_pct must be below fill_fire_pct \(hysteresis\)"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bin.fill_fire_pct": "lots"}, KIND_BIN + r"fill_fire_pct: Input should be a valid"),
        ({"bin.fill_fire_pct": 101}, KIND_BIN + r"fill_fire_pct: Input should be less than"),
        ({"bin.fill_clear_pct": 95}, KIND_BIN + r"fill_clear_pct: " + HYSTERESIS + "$"),
        ({"bin.fill_fire_pct": 50}, KIND_BIN + r"fill_fire_pct: " + HYSTERESIS),
        # Valid for the kind, but device BIN.7 fires at 95: named by the kind's paths.
        ({"bin.fill_fire_pct": 99, "bin.fill_clear_pct": 96},
         KIND_BIN + r"fill_fire_pct, kinds\.bin\.fill_clear_pct: " + HYSTERESIS
         + r" \(at devices\.BIN\.7\)$"),
        ({"bin.flil_fire_pct": 1}, r"^bin\.flil_fire_pct: kinds\.bin has no 'flil_fire_pct'"),
        ({"lamp.level": 1}, r"^lamp\.level: kinds has no 'lamp'"),
        ({"kinds.health": 1}, r"^kinds\.health: names a group of params"),
        ({"kinds.bin.fill_fire_pct.x": 1}, r"fill_fire_pct is a param, it has no parts"),
        ({"devices.BIN-9.fire_for_s": 1}, r"^devices\.BIN-9\.fire_for_s: unknown device 'BIN-9'"),
        ({"devices.BIN.7.tilt_fire_deg": 1}, r"^devices\.BIN\.7\.tilt_fire_deg: a bin device"),
        ({"devices.BIN7": 1}, r"^devices\.BIN7: a devices path is devices\.<id>\.<param>"),
        ({"devices.WL-1.warning_cm": None}, r"^devices\.WL-1\.warning_cm: water_level device WL-1"),
        ({"devices.WL-1.warning_cm": 60}, r"^devices\.WL-1\.warning_cm: alarm_cm must be above"),
        ({"devices.WL-1.heartbeat_s": 0}, r"^devices\.WL-1\.heartbeat_s: Input should be greater"),
        ({"kinds.health.water_level.battery_low_pct": 40},
         r"^kinds\.health\.water_level\.battery_low_pct: battery_clear_pct must be above"),
        ({"zones.cam9/x.stall_dwell_s": 1}, r"^zones\.cam9/x\.stall_dwell_s: unknown zone"),
        ({"zones.cam1/gate.fill_fire_pct": 1}, r"^zones\.cam1/gate\.fill_fire_pct: a zone has no"),
        ({"zones.cam1/gate.schedule": "25:00-01:00"},
         r"^zones\.cam1/gate\.schedule: schedule window '25:00-01:00' is not"),
        ({"bin.repeat_count": 1}, KIND_BIN + r"repeat_count: Input should be greater than"),
        ({"water_level.rise_window_s": 0}, r"^kinds\.water_level\.rise_window_s: Input should be"),
        ({"": 1}, r"must be 1 to 300 characters"),
        ({"x" * 301: 1}, r"must be 1 to 300 characters"),
        ({}, r"^changes: nothing to change"),
        ({f"bin.p{i}": 1 for i in range(1001)}, r"^changes: at most 1000 at once"),
    ],
)  # fmt: skip
def test_bad_changes_are_refused_naming_the_path(changes, message):
    with pytest.raises(SettingsError, match=message):
        apply_changes(v1(), changes, DEVICES, ZONES)


def test_get_reads_kinds_groups_overrides_and_effective_device_values():
    s = v1()
    assert settings_get(s, "bin.fill_fire_pct") == 90.0
    assert settings_get(s, "kinds.health.water_level")["heartbeat_s"] == 600.0
    assert settings_get(s, "devices.BIN.7.fill_fire_pct") == 95.0
    assert settings_get(s, "zones.cam1/gate.schedule")["windows"] == ["07:00-22:00"]
    assert settings_get(s, "devices") == s.model_dump(mode="json")["devices"]
    with pytest.raises(SettingsError, match=r"^devices\.MH-1\.tilt_fire_deg: not set"):
        settings_get(s, "devices.MH-1.tilt_fire_deg")
    assert settings_get(s, "devices.MH-1.tilt_fire_deg", DEVICES) == 15.0
    assert settings_get(s, "devices.BIN.7.heartbeat_s", DEVICES) == 3600.0
    with pytest.raises(SettingsError, match=r"^devices\.MH-1\.offline_factor: a manhole_cover"):
        settings_get(s, "devices.MH-1.offline_factor", DEVICES)
    with pytest.raises(SettingsError, match=r"^devices\.X\.y: unknown device 'X'"):
        settings_get(s, "devices.X.y", DEVICES)
    with pytest.raises(SettingsError, match=r"^bin\.nope: kinds\.bin has no 'nope'"):
        settings_get(s, "bin.nope")


# --- properties ---------------------------------------------------------------------------

LEAF_PATHS = sorted(d["path"] for d in diff(RuleSettings(), RuleSettings(kinds=v1().kinds)))
KIND_PARAMS = [
    "bin.fill_fire_pct", "bin.fire_for_s", "bin.repeat_count", "bin.repeat_window_s",
    "water_level.rise_cm", "manhole_cover.tilt_fire_deg", "kinds.health.confirm_s",
    "kinds.health.bin.heartbeat_s", "kinds.video.stall_dwell_s", "bin.schedule",
]  # fmt: skip
SEGMENT = st.text(st.characters(codec="utf-8", exclude_characters="."), max_size=8)
PATHS = st.one_of(
    st.sampled_from(KIND_PARAMS),
    st.builds(lambda a, b: f"devices.{a}.{b}", st.sampled_from([*DEVICES, "nope"]), SEGMENT),
    st.builds(lambda a, b: f"zones.{a}.{b}", st.sampled_from([*ZONES, "c/z"]), SEGMENT),
    st.lists(SEGMENT, min_size=1, max_size=4).map(".".join),
)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["85", "null", "07:00-09:00", "[1]", "{}", "3"]),
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(PATHS, VALUES, min_size=1, max_size=4))
def test_any_change_gives_a_valid_document_or_a_settings_error(changes):
    old = v1()
    try:
        new = apply_changes(old, changes, DEVICES, ZONES)
    except SettingsError as exc:
        assert str(exc)
        return
    # Every reported difference is a path that was changed, and re-applying the diff's
    # new values to the old version gives the same document (what a rollback relies on).
    changed = diff(old, new)
    assert {d["path"] for d in changed} <= {_full(p) for p in changes}
    if changed:
        again = apply_changes(old, {d["path"]: d["new"] for d in changed}, DEVICES, ZONES)
        assert again == new
    assert RuleSettings.model_validate(json.loads(json.dumps(new.model_dump(mode="json")))) == new


def _full(path: str) -> str:
    return path if path.split(".", 1)[0] in ("kinds", "devices", "zones") else f"kinds.{path}"


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_any_path_parses_or_is_a_settings_error(path):
    try:
        section, ident, segments = parse_path(path)
    except SettingsError:
        return
    assert section in ("kinds", "devices", "zones")
    assert all(segments)
    if section != "kinds":
        assert path == f"{section}.{ident}.{segments[0]}"
