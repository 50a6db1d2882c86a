"""Timelines of silences (maintenance windows): a silence holds what would file a new case,
over ``[start, end)`` of event time; what still fires when it ends (or is removed) files
its case then, stamped with that instant; a clear while silenced files nothing; what was
filed before the silence is not gated."""

from __future__ import annotations

from timeline import (
    GRID_A,
    Timeline,
    alert,
    at,
    command,
    device,
    extend_silence,
    incident,
    reading,
    restart,
    silence,
    tick,
    unsilence,
)

BIN = "BIN-1/bin_overflow"
BIN2 = "BIN-2/bin_overflow"
BIN3 = "BIN-3/bin_overflow"
COVER = "MH-1/cover_anomaly"
AT_ONCE = {"rules": {"bin": {"fire_for_s": 0}}}
HELD = "silence:1"


def test_still_firing_when_the_silence_expires_files_the_case_then(tmp_path):
    Timeline(tmp_path, [device("BIN-1")], AT_ONCE).play(
        at("10:00", silence(device="BIN-1", until="11:00")),
        at("10:10", reading("BIN-1", fill_pct=95), alerts=[alert(BIN, "firing", held_by=HELD)]),
        at("10:20", reading("BIN-1", fill_pct=97)),
        at("10:59:59.999", tick()),
        at(
            "11:00",
            tick(),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
        at(
            "11:10",
            reading("BIN-1", fill_pct=10),
            alerts=[alert(BIN, "cleared", "#1")],
            commands=[command("#1/2", "attach", "urgent", BIN, "cleared")],
        ),
    )


def test_a_release_noticed_late_is_stamped_with_the_silences_end(tmp_path):
    """The live timer and a replay file the same alert: the release time is the silence's
    end however late it is noticed — here by the next alert of the device, a clear, which
    files the case and then clears it."""
    Timeline(tmp_path, [device("BIN-1")], AT_ONCE).play(
        at("10:00", silence(device="BIN-1", until="11:00")),
        at("10:10", reading("BIN-1", fill_pct=95), alerts=[alert(BIN, "firing", held_by=HELD)]),
        at(
            "11:25",
            reading("BIN-1", fill_pct=10),
            alerts=[alert(BIN, "firing", "#1", at="11:00"), alert(BIN, "cleared", "#1")],
            commands=[
                command("#1/1", "open", "urgent", BIN, at="11:00"),
                command("#1/2", "attach", "urgent", BIN, "cleared"),
            ],
        ),
    )


def test_the_window_holds_from_its_start_inclusive_to_its_end_exclusive(tmp_path):
    """A grid silenced from 10:30: a bin full one ms before is filed, its neighbour full at
    10:30 is held and joins the first bin's case when the silence ends; the filed bin's
    clear during the silence still reaches its case. A bin full exactly when its own
    silence ends is filed at once."""
    bins = [device("BIN-1"), device("BIN-2"), device("BIN-3")]
    Timeline(tmp_path, bins, AT_ONCE).play(
        at(
            "10:00",
            silence(grid=GRID_A, start="10:30", until="11:00"),
            silence(device="BIN-3", until="11:00", id=2),
        ),
        at(
            "10:29:59.999",
            reading("BIN-1", fill_pct=95),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
        at("10:30", reading("BIN-2", fill_pct=95), alerts=[alert(BIN2, "firing", held_by=HELD)]),
        at(
            "10:45",
            reading("BIN-1", fill_pct=10),
            alerts=[alert(BIN, "cleared", "#1")],
            commands=[command("#1/2", "attach", "urgent", BIN, "cleared")],
        ),
        at(
            "11:00",
            tick(),
            reading("BIN-3", fill_pct=95),
            alerts=[alert(BIN2, "firing", "#1"), alert(BIN3, "firing", "#2")],
            commands=[
                command("#1/3", "attach", "urgent", BIN2),
                command("#2/1", "open", "urgent", BIN3),
            ],
        ),
    )


def test_a_crew_opening_a_silenced_cover_and_shutting_it_files_nothing(tmp_path):
    """The issue's case: maintenance on a manhole. The lid open is held; its clear while
    silenced is stored with the silence and files nothing, at the end nothing is left."""
    Timeline(tmp_path, [device("MH-1")]).play(
        at("09:00", silence(device="MH-1", until="12:00")),
        at(
            "10:00",
            reading("MH-1", tilt_deg=0, lid_open=True),
            alerts=[alert(COVER, "firing", held_by=HELD)],
        ),
        at("10:30", reading("MH-1", tilt_deg=0, lid_open=False)),
        at(
            "10:31",
            reading("MH-1", tilt_deg=0, lid_open=False),
            alerts=[alert(COVER, "cleared", held_by=HELD)],
        ),
        at("12:00", tick(), incidents=[]),
    )


def test_removing_a_silence_files_what_it_held_now(tmp_path):
    """The crew leaves with the lid open and the operator removes the silence at 10:30:
    the case is filed at 10:30, not at the silence's planned end."""
    Timeline(tmp_path, [device("MH-1")]).play(
        at("09:00", silence(device="MH-1", until="12:00")),
        at(
            "10:00",
            reading("MH-1", tilt_deg=0, lid_open=True),
            alerts=[alert(COVER, "firing", held_by=HELD)],
        ),
        at(
            "10:30",
            unsilence(1),
            alerts=[alert(COVER, "firing", "#1")],
            commands=[command("#1/1", "open", "critical", COVER)],
        ),
        at("12:00", tick()),
    )


def test_a_pending_silence_removed_before_its_start_never_holds(tmp_path):
    Timeline(tmp_path, [device("MH-1")]).play(
        at("09:00", silence(device="MH-1", start="11:00", until="12:00")),
        at("10:00", unsilence(1)),
        at(
            "11:00",
            reading("MH-1", tilt_deg=0, lid_open=True),
            alerts=[alert(COVER, "firing", "#1")],
            commands=[command("#1/1", "open", "critical", COVER)],
        ),
    )


def test_an_extended_silence_holds_until_its_new_end(tmp_path):
    Timeline(tmp_path, [device("MH-1")]).play(
        at("09:00", silence(device="MH-1", until="11:00")),
        at(
            "10:00",
            reading("MH-1", tilt_deg=0, lid_open=True),
            alerts=[alert(COVER, "firing", held_by=HELD)],
        ),
        at("10:50", extend_silence(1, until="12:00")),
        at("11:00", tick()),
        at("11:59:59.999", tick()),
        at(
            "12:00",
            tick(),
            alerts=[alert(COVER, "firing", "#1")],
            commands=[command("#1/1", "open", "critical", COVER)],
        ),
    )


def test_a_held_alert_survives_a_restart_and_is_released_at_the_silences_end(tmp_path):
    Timeline(tmp_path, [device("MH-1")]).play(
        at("09:00", silence(device="MH-1", until="11:00")),
        at(
            "10:00",
            reading("MH-1", tilt_deg=0, lid_open=True),
            alerts=[alert(COVER, "firing", held_by=HELD)],
        ),
        at("10:30", restart()),
        at("10:59:59.999", tick()),
        at(
            "11:00",
            tick(),
            alerts=[alert(COVER, "firing", "#1")],
            commands=[command("#1/1", "open", "critical", COVER)],
            incidents=[incident("#1", "open", "critical", "01003", COVER)],
        ),
    )


WATER = "WL-1/water_level"


def test_an_escalation_while_silenced_is_what_the_release_files(tmp_path):
    """Held at warning, escalated to alarm while held: the case is filed at the end with
    the alarm's priority, once."""
    Timeline(tmp_path, [device("WL-1")]).play(
        at("09:00", silence(kind="water_level", until="11:00")),
        at("10:00", reading("WL-1", level_cm=35)),
        at("10:01", reading("WL-1", level_cm=36), alerts=[alert(WATER, "firing", held_by=HELD)]),
        at("10:01:30", reading("WL-1", level_cm=55)),
        at(
            "10:01:40",
            reading("WL-1", level_cm=55),
            alerts=[alert(WATER, "escalated", held_by=HELD)],
        ),
        at("10:50", reading("WL-1", level_cm=55)),  # reporting: the 11:00 tick finds it online
        at(
            "11:00",
            tick(),
            alerts=[alert(WATER, "escalated", "#1")],
            commands=[command("#1/1", "open", "critical", WATER, "escalated")],
        ),
    )


def test_a_silence_made_after_the_case_was_filed_does_not_gate_that_case(tmp_path):
    """Its escalation and clear still reach the case: a case is never left half told."""
    Timeline(tmp_path, [device("WL-1")], {"rules": {"water_level": {"clear_for_s": 0}}}).play(
        at("10:00", reading("WL-1", level_cm=35)),
        at(
            "10:01",
            reading("WL-1", level_cm=36),
            alerts=[alert(WATER, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", WATER)],
        ),
        at("10:01:10", silence(device="WL-1", until="12:00")),
        at("10:01:30", reading("WL-1", level_cm=55)),
        at(
            "10:01:40",
            reading("WL-1", level_cm=55),
            alerts=[alert(WATER, "escalated", "#1")],
            commands=[command("#1/2", "escalate", "critical", WATER, "escalated")],
        ),
        at(
            "10:02:30",
            reading("WL-1", level_cm=20),
            alerts=[alert(WATER, "cleared", "#1")],
            commands=[command("#1/3", "attach", "critical", WATER, "cleared")],
        ),
    )


def test_a_silence_that_ended_while_the_gateway_was_down_releases_at_its_end(tmp_path):
    """Down from 10:30 to 11:30 over the silence's end: the first tick after the start
    files the case as of 11:00, the end, not of the restart."""
    Timeline(tmp_path, [device("MH-1")]).play(
        at("09:00", silence(device="MH-1", until="11:00")),
        at(
            "10:00",
            reading("MH-1", tilt_deg=0, lid_open=True),
            alerts=[alert(COVER, "firing", held_by=HELD)],
        ),
        at("11:30", restart()),
        at(
            "11:30:01",
            tick(),
            alerts=[alert(COVER, "firing", "#1", at="11:00")],
            commands=[command("#1/1", "open", "critical", COVER, at="11:00")],
        ),
    )


def test_removing_the_holding_silence_leaves_the_alert_to_another_that_still_covers_it(
    tmp_path,
):
    """Two silences cover MH-1; the later-ending one holds. Removed, the other holds on
    (no new row: the alert is the same), and the case is filed at the other's end."""
    Timeline(tmp_path, [device("MH-1")]).play(
        at(
            "09:00",
            silence(device="MH-1", until="12:00"),
            silence(kind="manhole_cover", until="11:00", id=2),
        ),
        at(
            "10:00",
            reading("MH-1", tilt_deg=0, lid_open=True),
            alerts=[alert(COVER, "firing", held_by=HELD)],
        ),
        at("10:30", unsilence(1)),
        at("10:59:59.999", tick()),
        at(
            "11:00",
            tick(),
            alerts=[alert(COVER, "firing", "#1")],
            commands=[command("#1/1", "open", "critical", COVER)],
        ),
    )


def test_an_escalation_out_of_a_priority_silence_is_filed_at_once(tmp_path):
    """Urgent water warnings are silenced, critical alarms are not: held at warning, the
    gauge's escalation no longer matches, so the case is filed at the escalation."""
    Timeline(tmp_path, [device("WL-1")]).play(
        at("09:00", silence(kind="water_level", priority="urgent", until="12:00")),
        at("10:00", reading("WL-1", level_cm=35)),
        at("10:01", reading("WL-1", level_cm=36), alerts=[alert(WATER, "firing", held_by=HELD)]),
        at("10:01:30", reading("WL-1", level_cm=55)),
        at(
            "10:01:40",
            reading("WL-1", level_cm=55),
            alerts=[alert(WATER, "escalated", "#1")],
            commands=[command("#1/1", "open", "critical", WATER, "escalated")],
        ),
    )
