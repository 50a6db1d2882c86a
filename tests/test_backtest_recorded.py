"""Recorded events: an offline alert the live flow held for confirmation and then released
is stored twice (the held firing row and the row written at its release); only the first
is an event of the replay — the replay's own flow releases it again. Feeding the release
row too would give the filed alert a second time: an extra attach command on its case.
"""

from __future__ import annotations

from timeline import Timeline, alert, at, command, device, ms, reading, tick

from gateway.backtest import BacktestRequest, backtest_from_config
from gateway.config import load_config

OFFLINE = "WL-1/health/offline"


def test_a_released_offline_alert_is_replayed_once_and_files_open_and_clear_only(tmp_path):
    timeline = Timeline(tmp_path, [device("WL-1")])
    timeline.play(
        at("10:00", reading("WL-1", level_cm=10)),
        at("10:30", tick(), alerts=[alert(OFFLINE, "firing", held_by="confirm")]),
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
    backtest = backtest_from_config(load_config(timeline.config_path))
    request = BacktestRequest(ms("09:00"), ms("11:00"), {"bin.fill_fire_pct": 85})
    report = backtest.run(request)
    # The held firing and the clear, not the release row; one case, opened at the release.
    assert report["current"]["alerts"] == report["proposed"]["alerts"] == 2
    assert report["current"]["cases"] == 1 and report["time_to_detect"]["median_delta_s"] == 0


def test_only_the_release_row_is_dropped_not_a_fresh_escalation_or_clear():
    from dataclasses import replace

    from domain import Alert, AlertState, Location, Priority
    from gateway.backtest import _events

    held = Alert("CAM-1/z/dump", "CAM-1", "dump", AlertState.FIRING, "06042", Priority.NORMAL,
                 Location(26.0, 119.3), 1_000, summary="dumping")  # fmt: skip
    released = replace(held, ts=5_000)
    worse = replace(held, state=AlertState.ESCALATED, priority=Priority.URGENT, ts=6_000)
    cleared = replace(held, state=AlertState.CLEARED, ts=9_000)
    rows = [(held, "silence:3"), (released, None), (worse, None), (cleared, None),
            (held, "inhibited:x"), (worse, None)]  # fmt: skip
    assert _events(rows) == [held, worse, cleared, held, worse]
