"""Timelines of the sensor rules as they stand: dwell, hysteresis at its edge, a severity
ladder, a trip flag, device health muting business rules, offline on a tick, and dedup and
merge in the incident book. Each output is exact (see tests/timeline.py)."""

from __future__ import annotations

from timeline import (
    Timeline,
    alert,
    at,
    case_closed,
    command,
    device,
    incident,
    reading,
    restart,
    status,
    tick,
)

BIN = "BIN-1/bin_overflow"
# Device-health cases without their confirmation time (tests/test_timeline_health.py has it).
UNCONFIRMED = {"rules": {"health": {"confirm_s": 0}}}


def test_bin_dwell_fires_at_exactly_its_hold_and_not_one_ms_before(tmp_path):
    """fire_for_s 600: the hold is measured between readings' event times, inclusive."""
    Timeline(tmp_path, [device("BIN-1")]).play(
        at("10:00", reading("BIN-1", fill_pct=95)),
        at("10:09:59.999", reading("BIN-1", fill_pct=99)),
        at(
            "10:10",
            reading("BIN-1", fill_pct=90),  # exactly the level counts as reached
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
        at("10:20", reading("BIN-1", fill_pct=100)),  # still firing: no repeat
    )


def test_a_dip_below_the_level_restarts_the_dwell(tmp_path):
    Timeline(tmp_path, [device("BIN-1")]).play(
        at("10:00", reading("BIN-1", fill_pct=95)),
        at("10:05", reading("BIN-1", fill_pct=89.9)),
        at("10:06", reading("BIN-1", fill_pct=95)),
        at("10:15", reading("BIN-1", fill_pct=95)),  # 15 min since the first, 9 since the dip
        at(
            "10:16",
            reading("BIN-1", fill_pct=95),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
    )


def test_hysteresis_a_value_equal_to_the_clear_level_does_not_clear(tmp_path):
    """fill_clear_pct 60: only below 60 clears; between 60 and 90 the alert holds."""
    Timeline(tmp_path, [device("BIN-1")], {"rules": {"bin": {"fire_for_s": 0}}}).play(
        at(
            "10:00",
            reading("BIN-1", fill_pct=92),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
        at("10:01", reading("BIN-1", fill_pct=89)),
        at("10:02", reading("BIN-1", fill_pct=60)),
        at(
            "10:03",
            reading("BIN-1", fill_pct=59.99),
            alerts=[alert(BIN, "cleared", "#1")],
            commands=[command("#1/2", "attach", "urgent", BIN, "cleared")],
        ),
        at("10:04", reading("BIN-1", fill_pct=89.99)),  # re-firing needs the fire level
    )


def test_clear_hold_one_ms_short_and_exact(tmp_path):
    """clear_for_s 300: below the clear level for 300 s of event time; back at the clear
    level restarts it."""
    config = {"rules": {"bin": {"fire_for_s": 0, "clear_for_s": 300}}}
    Timeline(tmp_path, [device("BIN-1")], config).play(
        at(
            "10:00",
            reading("BIN-1", fill_pct=95),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
        at("10:10", reading("BIN-1", fill_pct=10)),
        at("10:12", reading("BIN-1", fill_pct=60)),  # at the clear level: restarts the hold
        at("10:13", reading("BIN-1", fill_pct=10)),
        at("10:17:59.999", reading("BIN-1", fill_pct=10)),
        at(
            "10:18",
            reading("BIN-1", fill_pct=10),
            alerts=[alert(BIN, "cleared", "#1")],
            commands=[command("#1/2", "attach", "urgent", BIN, "cleared")],
        ),
    )


WATER = "WL-1/water_level"


def test_water_level_warning_escalates_to_alarm_on_the_same_case_and_clears_below_margin(
    tmp_path,
):
    """warning 30 cm held 60 s → urgent; alarm 50 cm held 10 s → the same case escalated
    to critical; clears below 30 − 5 cm held 300 s."""
    Timeline(tmp_path, [device("WL-1")]).play(
        at("10:00", reading("WL-1", level_cm=30)),
        at("10:00:59.999", reading("WL-1", level_cm=31)),
        at(
            "10:01",
            reading("WL-1", level_cm=32),
            alerts=[alert(WATER, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", WATER)],
        ),
        at("10:01:30", reading("WL-1", level_cm=55)),
        at("10:01:39.999", reading("WL-1", level_cm=56)),
        at(
            "10:01:40",
            reading("WL-1", level_cm=57),
            alerts=[alert(WATER, "escalated", "#1")],
            commands=[command("#1/2", "escalate", "critical", WATER, "escalated")],
        ),
        at("10:02:30", reading("WL-1", level_cm=25)),  # the clear level itself: holds
        at("10:03", reading("WL-1", level_cm=24.9)),
        at("10:07:59.999", reading("WL-1", level_cm=20)),
        at(
            "10:08",
            reading("WL-1", level_cm=20),
            alerts=[alert(WATER, "cleared", "#1")],
            commands=[command("#1/3", "attach", "critical", WATER, "cleared")],
            incidents=[incident("#1", "open", "critical", "99101", WATER)],
        ),
    )


COVER = "MH-1/cover_anomaly"


def test_lid_open_trips_at_once_and_holds_the_alert_until_the_lid_is_shut(tmp_path):
    """The trip flag skips the tilt dwell; while the lid is open the alert cannot clear even
    flat; shut and flat, it clears after clear_for_s (60 s). Class: the cover's part type."""
    Timeline(tmp_path, [device("MH-1")]).play(
        at("10:00", reading("MH-1", tilt_deg=0, lid_open=False)),
        at(
            "10:05",
            reading("MH-1", tilt_deg=0, lid_open=True),
            alerts=[alert(COVER, "firing", "#1")],
            commands=[command("#1/1", "open", "critical", COVER)],
        ),
        at("10:06", reading("MH-1", tilt_deg=0, lid_open=True)),
        at("10:08", reading("MH-1", tilt_deg=0, lid_open=True)),
        at("10:10", reading("MH-1", tilt_deg=0, lid_open=False)),
        at("10:10:59.999", reading("MH-1", tilt_deg=0, lid_open=False)),
        at(
            "10:11",
            reading("MH-1", tilt_deg=4.9, lid_open=False),
            alerts=[alert(COVER, "cleared", "#1")],
            commands=[command("#1/2", "attach", "critical", COVER, "cleared")],
            incidents=[incident("#1", "open", "critical", "01003", COVER)],
        ),
    )


SUSPECT = "WL-1/health/suspect"


def test_a_suspect_gauge_files_a_maintenance_case_and_its_jumps_file_no_flood(tmp_path):
    """A gauge jumping faster than water can rise (50 cm/min + 10 cm slack) is muted at
    once and reported at the third implausible reading in a row; none of its readings
    reach the water rule (200 cm ≥ alarm 50 for far longer than any hold). Three plausible
    readings in a row make it believed again, and its clear attaches to its own case."""
    Timeline(tmp_path, [device("WL-1")], UNCONFIRMED).play(
        at("10:00", reading("WL-1", level_cm=10)),
        at("10:00:10", reading("WL-1", level_cm=200)),
        at("10:00:20", reading("WL-1", level_cm=200)),
        at(
            "10:00:30",
            reading("WL-1", level_cm=200),
            alerts=[alert(SUSPECT, "firing", "#1")],
            commands=[command("#1/1", "open", "normal", SUSPECT)],
        ),
        at("10:05", reading("WL-1", level_cm=12)),
        at("10:05:10", reading("WL-1", level_cm=12)),
        at(
            "10:05:20",
            reading("WL-1", level_cm=12),
            alerts=[alert(SUSPECT, "cleared", "#1")],
            commands=[command("#1/2", "attach", "normal", SUSPECT, "cleared")],
            incidents=[incident("#1", "open", "normal", "99301", SUSPECT)],
        ),
        # Believed again: a real rise now reaches the water rule.
        at("10:06", reading("WL-1", level_cm=40)),
        at(
            "10:07",
            reading("WL-1", level_cm=40),
            alerts=[alert(WATER, "firing", "#2")],
            commands=[command("#2/1", "open", "urgent", WATER)],
        ),
    )


OFFLINE = "WL-1/health/offline"


def test_offline_on_the_tick_at_three_heartbeats_and_cleared_by_the_next_reading(tmp_path):
    """Water gauges: heartbeat 600 s × offline_factor 3, measured on the gateway's clock
    from the last reading (the start counts as one)."""
    Timeline(tmp_path, [device("WL-1")], UNCONFIRMED).play(
        at("10:00", reading("WL-1", level_cm=10)),
        at("10:29:59.999", tick()),
        at(
            "10:30",
            tick(),
            alerts=[alert(OFFLINE, "firing", "#1")],
            commands=[command("#1/1", "open", "normal", OFFLINE)],
        ),
        at("10:40", tick()),  # offline already: nothing new
        at(
            "10:41",
            reading("WL-1", level_cm=11),
            alerts=[alert(OFFLINE, "cleared", "#1")],
            commands=[command("#1/2", "attach", "normal", OFFLINE, "cleared")],
        ),
    )


def test_a_last_will_makes_a_device_offline_after_the_grace_not_at_once(tmp_path):
    """lwt_grace_s 300: a device that reconnects within it was never offline."""
    Timeline(tmp_path, [device("BIN-1")], UNCONFIRMED).play(
        at("10:00", reading("BIN-1", fill_pct=10)),
        at("10:01", status("BIN-1", online=False)),
        at("10:05", status("BIN-1", online=True)),
        at("10:06", tick()),  # the will was withdrawn: no offline
        at("10:10", status("BIN-1", online=False)),
        at("10:14:59.999", tick()),
        at(
            "10:15",
            tick(),
            alerts=[alert("BIN-1/health/offline", "firing", "#1")],
            commands=[command("#1/1", "open", "normal", "BIN-1/health/offline")],
            incidents=[incident("#1", "open", "normal", "99301", "BIN-1/health/offline")],
        ),
    )


BATTERY = "BIN-1/health/battery_low"


def test_battery_low_below_20_and_cleared_only_at_30(tmp_path):
    Timeline(tmp_path, [device("BIN-1")]).play(
        at("10:00", reading("BIN-1", fill_pct=10, battery_pct=20)),
        at(
            "11:00",
            reading("BIN-1", fill_pct=10, battery_pct=19.9),
            alerts=[alert(BATTERY, "firing", "#1")],
            commands=[command("#1/1", "open", "low", BATTERY)],
        ),
        at("12:00", reading("BIN-1", fill_pct=10, battery_pct=29.9)),
        at(
            "13:00",
            reading("BIN-1", fill_pct=10, battery_pct=30),
            alerts=[alert(BATTERY, "cleared", "#1")],
            commands=[command("#1/2", "attach", "low", BATTERY, "cleared")],
        ),
    )


def test_a_restart_keeps_a_dwell_half_elapsed_and_an_open_case(tmp_path):
    """Rule and incident state are committed with each batch: after a restart the dwell
    goes on from its start and the clear attaches to the case filed before."""
    Timeline(tmp_path, [device("BIN-1")]).play(
        at("10:00", reading("BIN-1", fill_pct=95)),
        at("10:05", restart()),
        at(
            "10:10",
            reading("BIN-1", fill_pct=95),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
        at("10:15", restart()),
        at(
            "10:20",
            reading("BIN-1", fill_pct=10),
            alerts=[alert(BIN, "cleared", "#1")],
            commands=[command("#1/2", "attach", "urgent", BIN, "cleared")],
            incidents=[incident("#1", "open", "urgent", "06042", BIN)],
        ),
    )


BIN2 = "BIN-2/bin_overflow"
BIN3 = "BIN-3/bin_overflow"


def test_two_bins_at_one_collection_point_are_one_case_a_far_one_its_own(tmp_path):
    """Merge: same class within 50 m → the first incident; 1 km away → a new one. A repeat
    while the incident is open attaches; after the case is closed, the alerts re-arm and
    the next fill files a new case after the full hold."""
    bins = [device("BIN-1"), device("BIN-2"), device("BIN-3")]
    Timeline(tmp_path, bins, {"rules": {"bin": {"fire_for_s": 0}}}).play(
        at(
            "10:00",
            reading("BIN-1", fill_pct=95),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
        at(
            "10:05",
            reading("BIN-2", fill_pct=95),
            reading("BIN-3", fill_pct=95),
            alerts=[alert(BIN2, "firing", "#1"), alert(BIN3, "firing", "#2")],
            commands=[
                command("#1/2", "attach", "urgent", BIN2),
                command("#2/1", "open", "urgent", BIN3),
            ],
        ),
        at(
            "10:10",
            reading("BIN-1", fill_pct=10),
            alerts=[alert(BIN, "cleared", "#1")],
            commands=[command("#1/3", "attach", "urgent", BIN, "cleared")],
        ),
        at(
            "10:20",
            reading("BIN-1", fill_pct=97),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/4", "attach", "urgent", BIN)],
            incidents=[
                incident("#1", "open", "urgent", "06042", BIN, BIN2),
                incident("#2", "open", "urgent", "06042", BIN3),
            ],
        ),
        at(
            "11:00",
            case_closed("#1"),
            incidents=[
                incident("#1", "closed", "urgent", "06042", BIN, BIN2),
                incident("#2", "open", "urgent", "06042", BIN3),
            ],
        ),
        at(  # re-armed: the next fill is a new problem, merged into no closed incident
            "11:30",
            reading("BIN-1", fill_pct=96),
            alerts=[alert(BIN, "firing", "#3")],
            commands=[command("#3/1", "open", "urgent", BIN)],
        ),
    )


def test_a_late_reading_is_refused_and_changes_nothing(tmp_path):
    """Event time only moves forward per device: a reading older than the last applied one
    is a dead letter, and it cannot clear the alert."""
    Timeline(tmp_path, [device("BIN-1")], {"rules": {"bin": {"fire_for_s": 0}}}).play(
        at(
            "10:00",
            reading("BIN-1", fill_pct=95),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
        at("10:05", reading("BIN-1", fill_pct=10, at="09:59"), refused=["BIN-1 stale"]),
    )
