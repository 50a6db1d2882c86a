"""Timelines of inhibition (Alertmanager's shape, config ``alerting.inhibit_rules``) and
area (parent) conditions: ``mute`` holds the target while a source fires in the same grid
and files it when the source clears; ``absorb`` with an area condition gathers the gauges
of a flooded grid into the parent's case."""

from __future__ import annotations

from timeline import (
    GRID_A,
    Timeline,
    alert,
    at,
    case_closed,
    command,
    device,
    incident,
    reading,
    restart,
    silence,
    tick,
)

from case_bridge.settings import CaseSettings

WATER = "WL-1/water_level"
WATER2 = "WL-2/water_level"
WATER3 = "WL-3/water_level"
BIN = "BIN-1/bin_overflow"
BIN3 = "BIN-3/bin_overflow"
MUTED = "inhibited:flood_mutes_bins"
FAST = {"bin": {"fire_for_s": 0}, "water_level": {"clear_for_s": 0}}


def test_a_flood_mutes_full_bins_of_its_grid_until_it_clears(tmp_path):
    """While WL-1 (grid A) fires, BIN-1 (grid A) is held and its clear files nothing; BIN-3
    (grid B) files as usual. When the water clears, BIN-1 — full again — is filed, stamped
    with the water's clear."""
    config = {
        "rules": FAST,
        "alerting": {
            "inhibit_rules": [
                {
                    "name": "flood_mutes_bins",
                    "source_match": {"rule": "water_level"},
                    "target_match": {"kind": "bin"},
                    "equal": ["grid"],
                    "action": "mute",
                }
            ]
        },
    }
    devices = [device("WL-1"), device("BIN-1"), device("BIN-3")]
    Timeline(tmp_path, devices, config).play(
        at("10:00", reading("WL-1", level_cm=35)),
        at(
            "10:01",
            reading("WL-1", level_cm=36),
            alerts=[alert(WATER, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", WATER)],
        ),
        at(
            "10:05",
            reading("BIN-1", fill_pct=95),
            reading("BIN-3", fill_pct=95),
            alerts=[alert(BIN, "firing", held_by=MUTED), alert(BIN3, "firing", "#2")],
            commands=[command("#2/1", "open", "urgent", BIN3)],
        ),
        at("10:10", reading("BIN-1", fill_pct=10), alerts=[alert(BIN, "cleared", held_by=MUTED)]),
        at("10:15", reading("BIN-1", fill_pct=95), alerts=[alert(BIN, "firing", held_by=MUTED)]),
        at(
            "10:20",
            reading("WL-1", level_cm=20),
            alerts=[alert(WATER, "cleared", "#1"), alert(BIN, "firing", "#3")],
            commands=[
                command("#1/2", "attach", "urgent", WATER, "cleared"),
                command("#3/1", "open", "urgent", BIN),
            ],
        ),
    )


FLOOD = f"area/grid_flood/{GRID_A}"
LOCAL_CLASSES = CaseSettings().local_classes  # the area's own class is added to these


AREA_FLOOD = {
    "rules": FAST,
    "cases": {"local_classes": {**LOCAL_CLASSES, "99102": "片区内涝"}},
    "alerting": {
        "area_conditions": [
            {
                "name": "grid_flood",
                "match": {"rule": "water_level"},
                "group_by": ["grid"],
                "min_count": 2,
                "class_code": "99102",
                "priority": "critical",
            }
        ],
        "inhibit_rules": [
            {
                "name": "flood_absorbs_gauges",
                "source_match": {"rule": "grid_flood"},
                "target_match": {"rule": "water_level"},
                "equal": ["grid"],
                "action": "absorb",
            }
        ],
    },
}


def test_an_area_flood_absorbs_the_gauges_of_its_grid_into_one_case(tmp_path):
    """Two gauges of grid A firing make the grid_flood parent (critical, 99102); the gauge
    that filled the group joins the parent's case instead of filing its own. WL-1, filed
    before there was a flood, keeps its case; WL-3 in grid B is its own. One gauge
    clearing ends the flood (parent cleared into its case)."""
    config = AREA_FLOOD
    devices = [device("WL-1"), device("WL-2"), device("WL-3")]
    Timeline(tmp_path, devices, config).play(
        at(
            "10:00",
            reading("WL-1", level_cm=35),
            reading("WL-2", level_cm=10),
            reading("WL-3", level_cm=35),
        ),
        at(
            "10:01",
            reading("WL-1", level_cm=36),
            reading("WL-3", level_cm=36),
            alerts=[alert(WATER, "firing", "#1"), alert(WATER3, "firing", "#2")],
            commands=[
                command("#1/1", "open", "urgent", WATER),
                command("#2/1", "open", "urgent", WATER3),
            ],
        ),
        at("10:02", reading("WL-2", level_cm=35)),
        at(
            "10:03",
            reading("WL-2", level_cm=36),
            alerts=[alert(FLOOD, "firing", "#3"), alert(WATER2, "firing", "#3")],
            commands=[
                command("#3/1", "open", "critical", FLOOD),
                command("#3/2", "attach", "critical", WATER2),
            ],
        ),
        at(
            "10:04",
            reading("WL-1", level_cm=20),
            alerts=[alert(WATER, "cleared", "#1"), alert(FLOOD, "cleared", "#3")],
            commands=[
                command("#1/2", "attach", "urgent", WATER, "cleared"),
                command("#3/3", "attach", "critical", FLOOD, "cleared"),
            ],
        ),
        at(
            "10:06",
            reading("WL-2", level_cm=20),
            alerts=[alert(WATER2, "cleared", "#3")],
            commands=[command("#3/4", "attach", "critical", WATER2, "cleared")],
            incidents=[
                incident("#1", "open", "urgent", "99101", WATER),
                incident("#2", "open", "urgent", "99101", WATER3),
                incident("#3", "open", "critical", "99102", FLOOD, WATER2),
            ],
        ),
    )


def test_a_silenced_flood_holds_the_gauges_it_would_absorb_and_gathers_them_at_its_end(
    tmp_path,
):
    """The area's class is silenced (a drill): the parent is held, and so is the gauge it
    would absorb (held by the absorb rule while its source is held). At the silence's end
    the parent is filed and the gauge joins its case."""
    absorbing = "inhibited:flood_absorbs_gauges"
    Timeline(tmp_path, [device("WL-1"), device("WL-2")], AREA_FLOOD).play(
        at("09:00", silence(**{"class": "99102"}, until="11:00")),
        at("10:00", reading("WL-1", level_cm=35), reading("WL-2", level_cm=35)),
        at(
            "10:01",
            reading("WL-1", level_cm=36),
            reading("WL-2", level_cm=36),
            alerts=[
                alert(WATER, "firing", "#1"),
                alert(FLOOD, "firing", held_by="silence:1"),
                alert(WATER2, "firing", held_by=absorbing),
            ],
            commands=[command("#1/1", "open", "urgent", WATER)],
        ),
        at("10:45", reading("WL-1", level_cm=36), reading("WL-2", level_cm=36)),
        at(
            "11:00",
            tick(),
            alerts=[alert(FLOOD, "firing", "#2"), alert(WATER2, "firing", "#2")],
            commands=[
                command("#2/1", "open", "critical", FLOOD),
                command("#2/2", "attach", "critical", WATER2),
            ],
        ),
    )


def test_area_membership_survives_a_restart_and_a_closed_flood_case_re_arms_it(tmp_path):
    """WL-1 fires before a restart, WL-2 after: still two in grid A, so the flood forms.
    Its case closed on the platform, the flood and WL-2 are re-armed: WL-2, still high,
    fires again after its hold and forms a new flood with WL-1, which never stopped."""
    Timeline(tmp_path, [device("WL-1"), device("WL-2")], AREA_FLOOD).play(
        at("10:00", reading("WL-1", level_cm=35), reading("WL-2", level_cm=10)),
        at(
            "10:01",
            reading("WL-1", level_cm=36),
            alerts=[alert(WATER, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", WATER)],
        ),
        at("10:01:30", restart()),
        at("10:02", reading("WL-2", level_cm=35)),
        at(
            "10:03",
            reading("WL-2", level_cm=36),
            alerts=[alert(FLOOD, "firing", "#2"), alert(WATER2, "firing", "#2")],
            commands=[
                command("#2/1", "open", "critical", FLOOD),
                command("#2/2", "attach", "critical", WATER2),
            ],
        ),
        at(
            "10:10",
            case_closed("#2"),
            incidents=[
                incident("#1", "open", "urgent", "99101", WATER),
                incident("#2", "closed", "critical", "99102", FLOOD, WATER2),
            ],
        ),
        at("10:11", reading("WL-1", level_cm=36), reading("WL-2", level_cm=36)),
        at(
            "10:12",
            reading("WL-1", level_cm=36),
            reading("WL-2", level_cm=36),
            alerts=[alert(FLOOD, "firing", "#3"), alert(WATER2, "firing", "#3")],
            commands=[
                command("#3/1", "open", "critical", FLOOD),
                command("#3/2", "attach", "critical", WATER2),
            ],
        ),
    )
