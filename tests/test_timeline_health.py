"""Timelines of device-health confirmation (confirm_s, default 600 s): an offline or
suspect spell is stored at once but held; one that recovers within the confirmation files
nothing; one that lasts is filed when the confirmation ends, measured from its first
firing, stamped with that instant."""

from __future__ import annotations

from timeline import Timeline, alert, at, command, device, reading, restart, tick

OFFLINE = "WL-1/health/offline"
SUSPECT = "WL-1/health/suspect"
WATER = "WL-1/water_level"


def test_offline_that_recovers_within_the_confirmation_files_nothing(tmp_path):
    """Water gauges go offline after 30 min of silence; back at 10:39:59.999, one ms
    before the confirmation ends."""
    Timeline(tmp_path, [device("WL-1")]).play(
        at("10:00", reading("WL-1", level_cm=10)),
        at("10:30", tick(), alerts=[alert(OFFLINE, "firing", held_by="confirm")]),
        at(
            "10:39:59.999",
            reading("WL-1", level_cm=10),
            alerts=[alert(OFFLINE, "cleared", held_by="confirm")],
        ),
        at("10:45", tick(), incidents=[]),
    )


def test_offline_past_the_confirmation_is_filed_when_it_ends_and_cleared_on_return(tmp_path):
    Timeline(tmp_path, [device("WL-1")]).play(
        at("10:00", reading("WL-1", level_cm=10)),
        at("10:30", tick(), alerts=[alert(OFFLINE, "firing", held_by="confirm")]),
        at("10:39:59.999", tick()),
        at(
            "10:40",
            tick(),
            alerts=[alert(OFFLINE, "firing", "#1")],
            commands=[command("#1/1", "open", "normal", OFFLINE)],
        ),
        at(
            "10:45",
            reading("WL-1", level_cm=10),
            alerts=[alert(OFFLINE, "cleared", "#1")],
            commands=[command("#1/2", "attach", "normal", OFFLINE, "cleared")],
        ),
    )


def test_a_recovery_exactly_at_the_confirmations_end_is_too_late(tmp_path):
    """The confirmation is [fired, fired + confirm_s): the device's return at its end is
    released first (nothing but the return itself noticed the due time), then cleared."""
    Timeline(tmp_path, [device("WL-1")]).play(
        at("10:00", reading("WL-1", level_cm=10)),
        at("10:30", tick(), alerts=[alert(OFFLINE, "firing", held_by="confirm")]),
        at(
            "10:40",
            reading("WL-1", level_cm=10),
            alerts=[alert(OFFLINE, "firing", "#1"), alert(OFFLINE, "cleared", "#1")],
            commands=[
                command("#1/1", "open", "normal", OFFLINE),
                command("#1/2", "attach", "normal", OFFLINE, "cleared"),
            ],
        ),
    )


def test_a_confirmation_time_from_config(tmp_path):
    config = {"rules": {"health": {"confirm_s": 60}}}
    Timeline(tmp_path, [device("WL-1")], config).play(
        at("10:00", reading("WL-1", level_cm=10)),
        at("10:30", tick(), alerts=[alert(OFFLINE, "firing", held_by="confirm")]),
        at(
            "10:31:15",
            tick(),
            alerts=[alert(OFFLINE, "firing", "#1", at="10:31")],
            commands=[command("#1/1", "open", "normal", OFFLINE, at="10:31")],
        ),
    )


def jumps() -> list:
    """A gauge reporting 200 cm thrice within 30 s of 10 cm: reported suspect at 10:00:30."""
    return [
        at("10:00", reading("WL-1", level_cm=10)),
        at("10:00:10", reading("WL-1", level_cm=200)),
        at("10:00:20", reading("WL-1", level_cm=200)),
        at(
            "10:00:30",
            reading("WL-1", level_cm=200),
            alerts=[alert(SUSPECT, "firing", held_by="confirm")],
        ),
    ]


def test_a_glitching_gauge_that_settles_within_the_confirmation_files_nothing(tmp_path):
    """Today's complaint: a 30-second glitch filed a maintenance case that stayed open."""
    Timeline(tmp_path, [device("WL-1")]).play(
        *jumps(),
        at("10:05", reading("WL-1", level_cm=12)),
        at("10:05:10", reading("WL-1", level_cm=12)),
        at(
            "10:05:20",
            reading("WL-1", level_cm=12),
            alerts=[alert(SUSPECT, "cleared", held_by="confirm")],
        ),
        at("10:20", tick(), incidents=[]),
    )


def test_a_gauge_still_suspect_after_the_confirmation_gets_its_case_and_stays_muted(tmp_path):
    """Held or filed, a suspect gauge's readings never reach the water rule."""
    Timeline(tmp_path, [device("WL-1")]).play(
        *jumps(),
        at("10:05", reading("WL-1", level_cm=200)),
        at("10:10:29.999", tick()),
        at(
            "10:10:30",
            tick(),
            alerts=[alert(SUSPECT, "firing", "#1")],
            commands=[command("#1/1", "open", "normal", SUSPECT)],
        ),
        at("10:15", reading("WL-1", level_cm=200)),
    )


def test_a_held_offline_survives_a_restart_and_is_filed_when_its_confirmation_ends(tmp_path):
    """The restart restarts the silence clocks, but a device already offline stays
    offline, and its hold keeps its due time."""
    Timeline(tmp_path, [device("WL-1")]).play(
        at("10:00", reading("WL-1", level_cm=10)),
        at("10:30", tick(), alerts=[alert(OFFLINE, "firing", held_by="confirm")]),
        at("10:35", restart()),
        at("10:39:59.999", tick()),
        at(
            "10:40",
            tick(),
            alerts=[alert(OFFLINE, "firing", "#1")],
            commands=[command("#1/1", "open", "normal", OFFLINE)],
        ),
    )
