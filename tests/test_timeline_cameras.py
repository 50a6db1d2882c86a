"""Timelines of camera zone alerts through the same flow: a silence on a zone (the zone
label) holds that zone's dumping alert only, and a camera alert merges with nothing of
another class. Frames come once a minute; the video params make that enough (dwell 120 s,
no blind stretch, absence of 120 s clears)."""

from __future__ import annotations

from timeline import Timeline, Zone, alert, at, command, device, frame, silence

VIDEO = {
    "video": {
        "rules": {
            "rubbish_dwell_s": 120,
            "blind_gap_s": 3600,
            "gap_tolerance_s": 90,
            "clear_after_s": 120,
        }
    }
}
ZONES = [Zone("CAM-1", "corner", "no_dumping", near="BIN-1"),
         Zone("CAM-1", "gate", "no_dumping", near="BIN-3")]  # fmt: skip
CORNER = "CAM-1/corner/dumping"
GATE = "CAM-1/gate/dumping"


def test_a_zone_silence_holds_that_zones_dumping_only(tmp_path):
    Timeline(tmp_path, [device("BIN-1")], VIDEO, ZONES).play(
        at("10:00", silence(zone="CAM-1/corner", until="12:00")),
        at("10:01", frame("CAM-1", corner="rubbish", gate="rubbish")),
        at("10:02", frame("CAM-1", corner="rubbish", gate="rubbish")),
        at(
            "10:03",
            frame("CAM-1", corner="rubbish", gate="rubbish"),
            alerts=[alert(CORNER, "firing", held_by="silence:1"), alert(GATE, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", GATE)],
        ),
        at("10:04", frame("CAM-1")),
        at(
            "10:05",  # 120 s after the last sighting
            frame("CAM-1"),
            alerts=[
                alert(CORNER, "cleared", held_by="silence:1"),
                alert(GATE, "cleared", "#1"),
            ],
            commands=[command("#1/2", "attach", "urgent", GATE, "cleared")],
        ),
    )
