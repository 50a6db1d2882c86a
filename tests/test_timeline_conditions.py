"""Timelines of the conditions beyond a level held for a while — N times within a window
(``bin_repeat``) and rate of change (``water_rise``) — each at the edge of its window and
laddered with the level rule of its kind into one case; and schedules at their edges (a
window's first and last instant, over midnight, days), per kind and per device."""

from __future__ import annotations

import json

from timeline import Timeline, alert, at, command, device, reading

BIN = "BIN-1/bin_overflow"
REPEAT = "BIN-1/bin_repeat"
REPEATING = {"rules": {"bin": {"repeat_count": 3, "repeat_window_s": 3600}}}


def test_three_passes_within_the_hour_fire_and_the_level_rule_joins_the_same_case(tmp_path):
    """Edges at 10:00, 10:30 and 11:00: the window ending at 11:00 still holds 10:00. Held
    at 90 % on from 11:00, the level rule fires at 11:10 into the same case (same class,
    same place); one reading below 60 % clears both."""
    Timeline(tmp_path, [device("BIN-1")], REPEATING).play(
        at("10:00", reading("BIN-1", fill_pct=95)),
        at("10:05", reading("BIN-1", fill_pct=20)),
        at("10:30", reading("BIN-1", fill_pct=92)),
        at("10:35", reading("BIN-1", fill_pct=30)),
        at(
            "11:00",
            reading("BIN-1", fill_pct=90),
            alerts=[alert(REPEAT, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", REPEAT)],
        ),
        at(
            "11:10",
            reading("BIN-1", fill_pct=95),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/2", "attach", "urgent", BIN)],
        ),
        at(
            "11:15",
            reading("BIN-1", fill_pct=59),
            alerts=[alert(BIN, "cleared", "#1"), alert(REPEAT, "cleared", "#1")],
            commands=[
                command("#1/3", "attach", "urgent", BIN, "cleared"),
                command("#1/4", "attach", "urgent", REPEAT, "cleared"),
            ],
        ),
    )


def test_a_pass_one_ms_older_than_the_window_does_not_count_and_staying_full_is_one(tmp_path):
    Timeline(tmp_path, [device("BIN-1")], REPEATING).play(
        at("10:00", reading("BIN-1", fill_pct=95)),
        at("10:01", reading("BIN-1", fill_pct=96)),  # still above: not a new pass
        at("10:05", reading("BIN-1", fill_pct=20)),
        at("10:30", reading("BIN-1", fill_pct=92)),
        at("10:35", reading("BIN-1", fill_pct=30)),
        at("11:00:00.001", reading("BIN-1", fill_pct=90)),  # 10:00 has left the window
        at("11:05", reading("BIN-1", fill_pct=20)),
        at(
            "11:10",
            reading("BIN-1", fill_pct=95),
            alerts=[alert(REPEAT, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", REPEAT)],
        ),
    )


WATER = "WL-1/water_level"
RISE = "WL-1/water_rise"
RISING = {"rules": {"water_level": {"rise_cm": 10, "rise_window_s": 300}}}


def test_a_rise_of_10_cm_in_5_min_warns_early_and_the_level_escalates_the_same_case(tmp_path):
    """WL-1 warns at 30 cm, alarms at 50. The rise from 10 cm (10:00) to 20 cm (10:05) is
    exactly 10 cm in exactly 300 s: an early warning (normal) before any level; the warning
    level escalates it to urgent and the alarm to critical, one case. The rise clears once
    it stays under 5 cm for clear_for_s (300 s)."""
    Timeline(tmp_path, [device("WL-1")], RISING).play(
        at("10:00", reading("WL-1", level_cm=10)),
        at("10:02", reading("WL-1", level_cm=15)),
        at("10:04:59.999", reading("WL-1", level_cm=19.99)),
        at(
            "10:05",
            reading("WL-1", level_cm=20),
            alerts=[alert(RISE, "firing", "#1")],
            commands=[command("#1/1", "open", "normal", RISE)],
        ),
        at("10:06", reading("WL-1", level_cm=30)),
        at(
            "10:07",
            reading("WL-1", level_cm=31),
            alerts=[alert(WATER, "firing", "#1")],
            commands=[command("#1/2", "escalate", "urgent", WATER)],
        ),
        at("10:07:30", reading("WL-1", level_cm=50)),
        at(
            "10:07:40",
            reading("WL-1", level_cm=52),
            alerts=[alert(WATER, "escalated", "#1")],
            commands=[command("#1/3", "escalate", "critical", WATER, "escalated")],
        ),
        at("10:13", reading("WL-1", level_cm=52)),  # the window holds only this: no rise
        at("10:17:59.999", reading("WL-1", level_cm=52)),
        at(
            "10:18",
            reading("WL-1", level_cm=52),
            alerts=[alert(RISE, "cleared", "#1")],
            commands=[command("#1/4", "attach", "critical", RISE, "cleared")],
        ),
    )


def test_a_rise_spread_one_ms_past_the_window_is_no_warning(tmp_path):
    Timeline(tmp_path, [device("WL-1")], RISING).play(
        at("10:00", reading("WL-1", level_cm=10)),
        at("10:02", reading("WL-1", level_cm=12)),
        at("10:05:00.001", reading("WL-1", level_cm=20)),  # from 12: 8 cm
        at("10:06", reading("WL-1", level_cm=21)),
    )


def bins_schedule(schedule: dict, fire_for_s: float) -> dict:
    return {"rules": {"bin": {"fire_for_s": fire_for_s, "schedule": schedule}}}


def test_a_schedule_window_counts_from_its_first_instant_to_before_its_last(tmp_path):
    """08:00-20:00: a reading at 07:59:59.999 or at 20:00 cannot fire; a firing alert
    clears outside the window all the same."""
    config = bins_schedule({"windows": ["08:00-20:00"]}, fire_for_s=0)
    Timeline(tmp_path, [device("BIN-1")], config).play(
        at("07:59:59.999", reading("BIN-1", fill_pct=95)),
        at(
            "08:00",
            reading("BIN-1", fill_pct=95),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
        at(
            "12:00",
            reading("BIN-1", fill_pct=10),
            alerts=[alert(BIN, "cleared", "#1")],
            commands=[command("#1/2", "attach", "urgent", BIN, "cleared")],
        ),
        at(
            "19:59:59.999",
            reading("BIN-1", fill_pct=95),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/3", "attach", "urgent", BIN)],
        ),
        at(
            "20:00",
            reading("BIN-1", fill_pct=10),
            alerts=[alert(BIN, "cleared", "#1")],
            commands=[command("#1/4", "attach", "urgent", BIN, "cleared")],
        ),
        at("20:00:01", reading("BIN-1", fill_pct=95)),
    )


def test_a_dwell_does_not_run_across_the_end_of_the_window(tmp_path):
    """Full from 19:50 to the next morning: outside the window the dwell restarts, and it
    runs again from the first reading in force (tue 08:00)."""
    config = bins_schedule({"windows": ["08:00-20:00"]}, fire_for_s=600)
    Timeline(tmp_path, [device("BIN-1")], config).play(
        at("19:50", reading("BIN-1", fill_pct=95)),
        at("20:00", reading("BIN-1", fill_pct=95)),
        at("23:00", reading("BIN-1", fill_pct=95)),
        at("tue 08:00", reading("BIN-1", fill_pct=95)),
        at("tue 08:09:59.999", reading("BIN-1", fill_pct=95)),
        at(
            "tue 08:10",
            reading("BIN-1", fill_pct=95),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
    )


BIN2 = "BIN-2/bin_overflow"


def test_a_devices_own_schedule_over_midnight_on_chosen_days(tmp_path):
    """BIN-2's registry column: 22:00-06:00 on fri and sat (a night market). A window
    belongs to the day it starts on: Friday night runs into Saturday morning, Saturday's
    into Sunday's; Thursday's and Sunday's nights are out. BIN-1 (no schedule) fires at
    any time."""
    night_market = json.dumps({"windows": ["22:00-06:00"], "days": ["fri", "sat"]})
    devices = [device("BIN-1"), device("BIN-2", schedule=night_market)]
    full, empty = {"fill_pct": 95}, {"fill_pct": 10}
    Timeline(tmp_path, devices, {"rules": {"bin": {"fire_for_s": 0}}}).play(
        at("thu 23:00", reading("BIN-2", **full)),
        at("thu 23:01", reading("BIN-2", **empty)),
        at("fri 05:59", reading("BIN-2", **full)),  # Thursday's night: out
        at("fri 05:59:30", reading("BIN-2", **empty)),
        at("fri 21:59:59.999", reading("BIN-2", **full)),
        at(
            "fri 22:00",
            reading("BIN-2", **full),
            reading("BIN-1", **full),
            alerts=[alert(BIN2, "firing", "#1"), alert(BIN, "firing", "#1")],
            commands=[
                command("#1/1", "open", "urgent", BIN2),
                command("#1/2", "attach", "urgent", BIN),
            ],
        ),
        at(
            "fri 22:01",
            reading("BIN-2", **empty),
            alerts=[alert(BIN2, "cleared", "#1")],
            commands=[command("#1/3", "attach", "urgent", BIN2, "cleared")],
        ),
        at(
            "sat 05:59:59.999",
            reading("BIN-2", **full),
            alerts=[alert(BIN2, "firing", "#1")],
            commands=[command("#1/4", "attach", "urgent", BIN2)],
        ),
        at(
            "sat 06:00",
            reading("BIN-2", **empty),
            alerts=[alert(BIN2, "cleared", "#1")],
            commands=[command("#1/5", "attach", "urgent", BIN2, "cleared")],
        ),
        at("sat 06:00:01", reading("BIN-2", **full)),
        at("sat 06:01", reading("BIN-2", **empty)),
        at(
            "sun 01:00",
            reading("BIN-2", **full),
            alerts=[alert(BIN2, "firing", "#1")],
            commands=[command("#1/6", "attach", "urgent", BIN2)],
        ),
        at(
            "sun 01:01",
            reading("BIN-2", **empty),
            alerts=[alert(BIN2, "cleared", "#1")],
            commands=[command("#1/7", "attach", "urgent", BIN2, "cleared")],
        ),
        at("sun 22:00", reading("BIN-2", **full)),
    )
