"""Timelines of threshold changes applied live (a new version through the versions store,
applied to the engines between batches, as the API does) and rollback: what a change does
to a dwell under way and to a firing alert (the carry-over rules of rules/engine.py), a
per-device change, a refused change, a version that holds after a restart, and a new
confirmation time for what health holds."""

from __future__ import annotations

from timeline import (
    Timeline,
    alert,
    at,
    command,
    device,
    reading,
    restart,
    rollback,
    set_thresholds,
    tick,
)

BIN = "BIN-1/bin_overflow"
BIN2 = "BIN-2/bin_overflow"
AT_ONCE = {"rules": {"bin": {"fire_for_s": 0}}}


def test_a_shorter_hold_set_mid_dwell_fires_at_the_next_reading(tmp_path):
    """The dwell started at 10:00 keeps its start: at 10:04, under a 240 s hold, it has
    lasted long enough."""
    Timeline(tmp_path, [device("BIN-1")]).play(
        at("10:00", reading("BIN-1", fill_pct=95)),
        at(
            "10:04",
            set_thresholds({"bin.fire_for_s": 240}, version=2),
            reading("BIN-1", fill_pct=95),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
    )


def test_a_level_raised_mid_dwell_restarts_it_at_the_first_reading_meeting_the_new_level(
    tmp_path,
):
    Timeline(tmp_path, [device("BIN-1")]).play(
        at("10:00", reading("BIN-1", fill_pct=92)),
        at("10:05", set_thresholds({"bin.fill_fire_pct": 95}, version=2)),
        at("10:10", reading("BIN-1", fill_pct=92)),  # held 10 min, but below the new level
        at("10:11", reading("BIN-1", fill_pct=96)),
        at("10:20:59.999", reading("BIN-1", fill_pct=96)),
        at(
            "10:21",
            reading("BIN-1", fill_pct=96),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
    )


def test_a_lowered_level_starts_the_dwell_at_the_first_reading_judged_under_it(tmp_path):
    """At 85 % since 10:00, below the old level: the dwell under 80 % starts at 10:20, not
    at 10:00."""
    Timeline(tmp_path, [device("BIN-1")]).play(
        at("10:00", reading("BIN-1", fill_pct=85)),
        at(
            "10:20",
            set_thresholds({"bin.fill_fire_pct": 80}, version=2),
            reading("BIN-1", fill_pct=85),
        ),
        at("10:29:59.999", reading("BIN-1", fill_pct=85)),
        at(
            "10:30",
            reading("BIN-1", fill_pct=85),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
    )


def test_a_firing_alert_that_no_longer_holds_clears_through_the_normal_path(tmp_path):
    """At 70 % the alert holds under clear level 60 and clears at the next reading under
    clear level 75 — a clear its case receives. A higher fire level alone clears nothing
    (hysteresis)."""
    Timeline(tmp_path, [device("BIN-1")], AT_ONCE).play(
        at(
            "10:00",
            reading("BIN-1", fill_pct=95),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
        at("10:05", reading("BIN-1", fill_pct=70)),
        at("10:06", set_thresholds({"bin.fill_fire_pct": 99}, version=2)),
        at("10:07", reading("BIN-1", fill_pct=70)),
        at("10:10", set_thresholds({"bin.fill_clear_pct": 75}, version=3)),
        at(
            "10:15",
            reading("BIN-1", fill_pct=70),
            alerts=[alert(BIN, "cleared", "#1")],
            commands=[command("#1/2", "attach", "urgent", BIN, "cleared")],
        ),
    )


def test_a_device_change_moves_that_device_only(tmp_path):
    devices = [device("BIN-1"), device("BIN-2")]
    Timeline(tmp_path, devices, AT_ONCE).play(
        at("10:00", set_thresholds({"devices.BIN-2.fill_fire_pct": 80}, version=2)),
        at(
            "10:05",
            reading("BIN-1", fill_pct=85),
            reading("BIN-2", fill_pct=85),
            alerts=[alert(BIN2, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN2)],
        ),
    )


def test_a_refused_change_names_the_path_and_changes_nothing(tmp_path):
    Timeline(tmp_path, [device("BIN-1")], AT_ONCE).play(
        at(
            "10:00",
            set_thresholds(
                {"bin.fill_clear_pct": 95},
                refused="kinds.bin.fill_clear_pct: fill_clear_pct must be below fill_fire_pct"
                " (hysteresis)",
            ),
            reading("BIN-1", fill_pct=92),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
        at("10:05", set_thresholds({"bin.fill_clear_pct": 50}, version=2)),
    )


def test_rollback_is_a_new_version_and_drops_a_dwell_the_old_level_does_not_meet(tmp_path):
    Timeline(tmp_path, [device("BIN-1")]).play(
        at("10:00", set_thresholds({"bin.fill_fire_pct": 80}, version=2)),
        at("10:01", reading("BIN-1", fill_pct=85)),
        at("10:05", rollback(1, version=3)),
        at("10:11", reading("BIN-1", fill_pct=85)),  # 10 min at 85 %: only 80 % would fire
        at("10:30", reading("BIN-1", fill_pct=85)),
        at("10:31", rollback(2, version=4)),
        at("10:32", reading("BIN-1", fill_pct=85)),
        at("10:41:59.999", reading("BIN-1", fill_pct=85)),
        at(
            "10:42",
            reading("BIN-1", fill_pct=85),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
    )


def test_rolled_back_while_firing_the_alert_clears_only_below_the_clear_level(tmp_path):
    """Filed at 85 % under version 2; version 1 (fire 90 %) does not make it vanish: 85 %
    is above the clear level, so it fires on until 59 %."""
    Timeline(tmp_path, [device("BIN-1")], AT_ONCE).play(
        at("10:00", set_thresholds({"bin.fill_fire_pct": 80}, version=2)),
        at(
            "10:01",
            reading("BIN-1", fill_pct=85),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
        at("10:15", rollback(1, version=3)),
        at("10:20", reading("BIN-1", fill_pct=85)),
        at(
            "10:25",
            reading("BIN-1", fill_pct=59),
            alerts=[alert(BIN, "cleared", "#1")],
            commands=[command("#1/2", "attach", "urgent", BIN, "cleared")],
        ),
    )


def test_the_latest_version_holds_after_a_restart(tmp_path):
    Timeline(tmp_path, [device("BIN-1")]).play(
        at("10:00", set_thresholds({"bin.fire_for_s": 0}, version=2)),
        at("10:01", restart()),
        at(
            "10:02",
            reading("BIN-1", fill_pct=95),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
    )


REPEAT = "BIN-1/bin_repeat"


def test_a_condition_switched_off_while_firing_clears_at_the_next_reading(tmp_path):
    config = {"rules": {"bin": {"repeat_count": 2, "repeat_window_s": 3600}}}
    Timeline(tmp_path, [device("BIN-1")], config).play(
        at("10:00", reading("BIN-1", fill_pct=95)),
        at("10:05", reading("BIN-1", fill_pct=20)),
        at(
            "10:10",
            reading("BIN-1", fill_pct=95),
            alerts=[alert(REPEAT, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", REPEAT)],
        ),
        at("10:12", set_thresholds({"bin.repeat_count": None}, version=2)),
        at(
            "10:14",
            reading("BIN-1", fill_pct=95),
            alerts=[alert(REPEAT, "cleared", "#1")],
            commands=[command("#1/2", "attach", "urgent", REPEAT, "cleared")],
        ),
    )


OFFLINE = "WL-1/health/offline"


def test_a_shorter_confirmation_releases_a_held_offline_stamped_at_its_new_end(tmp_path):
    """Held at 10:30 for 600 s; confirm_s 60 at 10:32 makes it due at 10:31, already past:
    the next tick files it as of 10:31."""
    Timeline(tmp_path, [device("WL-1")]).play(
        at("10:00", reading("WL-1", level_cm=10)),
        at("10:30", tick(), alerts=[alert(OFFLINE, "firing", held_by="confirm")]),
        at("10:32", set_thresholds({"kinds.health.confirm_s": 60}, version=2)),
        at(
            "10:33",
            tick(),
            alerts=[alert(OFFLINE, "firing", "#1", at="10:31")],
            commands=[command("#1/1", "open", "normal", OFFLINE, at="10:31")],
        ),
    )


def test_a_lower_repeat_count_fires_at_the_next_pass_not_on_an_empty_bin(tmp_path):
    """Two passes counted (10:00, 10:30) toward three; the count lowered to two at 10:40.
    The passes already counted count (rules/engine.py), but the case is for a bin that
    is full: it fires at the next pass (10:50), not at a reading of a compacted bin."""
    config = {"rules": {"bin": {"repeat_count": 3, "repeat_window_s": 3600}}}
    Timeline(tmp_path, [device("BIN-1")], config).play(
        at("10:00", reading("BIN-1", fill_pct=95)),
        at("10:05", reading("BIN-1", fill_pct=20)),
        at("10:30", reading("BIN-1", fill_pct=95)),
        at("10:35", reading("BIN-1", fill_pct=20)),
        at("10:40", set_thresholds({"bin.repeat_count": 2}, version=2)),
        at("10:45", reading("BIN-1", fill_pct=20)),
        at(
            "10:50",
            reading("BIN-1", fill_pct=95),
            alerts=[alert(REPEAT, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", REPEAT)],
        ),
    )
