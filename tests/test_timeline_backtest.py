"""The backtest against a small hand-computed history, written live by the real pipeline.

BIN-1 reads 88 % at 10:00 and 95 % from 10:05 to 10:15, then 50 % at 10:30; BIN-3, a
kilometre away, 87 % at 11:00 and 11:10, then 40 % at 11:20. Live (fire at 90 % held
600 s) that is one case: BIN-1 from 10:05 to 10:15, cleared at 10:30. At 85 % BIN-1's dwell
starts at 10:00, so its case opens at 10:10, 300 s earlier; BIN-3 is full from 11:00 and
files at 11:10, cleared at 11:20: one case added, none removed.
"""

from __future__ import annotations

from timeline import (
    GRID_A,
    GRID_B,
    Timeline,
    alert,
    at,
    backtest,
    command,
    device,
    reading,
    silence,
    tick,
)

BIN = "BIN-1/bin_overflow"


def history() -> list:
    return [
        at("10:00", reading("BIN-1", fill_pct=88)),
        at("10:05", reading("BIN-1", fill_pct=95)),
        at("10:10", reading("BIN-1", fill_pct=95)),
        at(
            "10:15",
            reading("BIN-1", fill_pct=95),
            alerts=[alert(BIN, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", BIN)],
        ),
        at(
            "10:30",
            reading("BIN-1", fill_pct=50),
            alerts=[alert(BIN, "cleared", "#1")],
            commands=[command("#1/2", "attach", "urgent", BIN, "cleared")],
        ),
        at("11:00", reading("BIN-3", fill_pct=87)),
        at("11:10", reading("BIN-3", fill_pct=87)),
        at("11:20", reading("BIN-3", fill_pct=40)),
    ]


def test_a_lower_fire_level_adds_the_far_bin_and_detects_the_near_one_earlier(tmp_path):
    Timeline(tmp_path, [device("BIN-1"), device("BIN-3")]).play(
        *history(),
        at(
            "12:00",
            backtest(
                "09:00",
                "12:00",
                {"bin.fill_fire_pct": 85},
                report=[
                    "cases current 1 {06042: 1}, proposed 2 {06042: 2}",
                    f"added BIN-3/bin_overflow class 06042 grid {GRID_B} 11:10–11:20",
                    "detect 1 matched, 1 earlier, 0 later, median -300.0 s",
                ],
            ),
        ),
    )


def test_a_longer_hold_removes_every_case_of_this_history(tmp_path):
    """Held 1800 s, neither bin is full long enough: BIN-1's case is removed."""
    Timeline(tmp_path, [device("BIN-1"), device("BIN-3")]).play(
        *history(),
        at(
            "12:00",
            backtest(
                "09:00",
                "12:00",
                {"bin.fire_for_s": 1800},
                report=[
                    "cases current 1 {06042: 1}, proposed 0 {}",
                    f"removed BIN-1/bin_overflow class 06042 grid {GRID_A} 10:15–10:30",
                    "detect 0 matched, 0 earlier, 0 later, median None s",
                ],
            ),
        ),
    )


def test_a_stored_silence_holds_in_the_replay_as_it_did_live(tmp_path):
    """BIN-3 under maintenance from 11:05 to 11:30: at 85 % its alert would fire at 11:10
    and clear at 11:20 inside the silence, so the proposal adds no case."""
    Timeline(tmp_path, [device("BIN-1"), device("BIN-3")]).play(
        at("09:00", silence(device="BIN-3", start="11:05", until="11:30")),
        *history(),
        at(
            "12:00",
            backtest(
                "09:00",
                "12:00",
                {"bin.fill_fire_pct": 85},
                report=[
                    "cases current 1 {06042: 1}, proposed 1 {06042: 1}",
                    "detect 1 matched, 1 earlier, 0 later, median -300.0 s",
                ],
            ),
        ),
    )


WATER = "WL-1/water_level"


def test_switching_on_the_rise_warning_files_before_the_level_does(tmp_path):
    """WL-1 rises 10 → 22 cm in 4 min, then reaches its warning level (30 cm) at 10:10 for
    60 s: live one case at 10:11. With rise_cm 10 the same problem is filed at 10:04 by
    the rise rule (a case opened by another alert: added), and the level joins it, so the
    level's own case is removed."""
    Timeline(tmp_path, [device("WL-1")]).play(
        at("10:00", reading("WL-1", level_cm=10)),
        at("10:04", reading("WL-1", level_cm=22)),
        at("10:10", reading("WL-1", level_cm=30)),
        at(
            "10:11",
            reading("WL-1", level_cm=31),
            alerts=[alert(WATER, "firing", "#1")],
            commands=[command("#1/1", "open", "urgent", WATER)],
        ),
        at(
            "12:00",
            backtest(
                "09:00",
                "12:00",
                {"water_level.rise_cm": 10},
                report=[
                    "cases current 1 {99101: 1}, proposed 1 {99101: 1}",
                    f"added WL-1/water_rise class 99101 grid {GRID_A} 10:04–open",
                    f"removed WL-1/water_level class 99101 grid {GRID_A} 10:11–open",
                    "detect 0 matched, 0 earlier, 0 later, median None s",
                ],
            ),
        ),
    )


OFFLINE = "WL-1/health/offline"
OFFLINE2 = "WL-2/health/offline"


def test_a_shorter_confirmation_files_the_short_outage_and_the_long_one_earlier(tmp_path):
    """Both gauges fall silent after 10:00 and are offline at the 10:30 tick (held for
    confirmation). WL-2 is back at 10:35: live, no case; WL-1 is filed at 10:40 and back at
    10:45. With confirm_s 120 both are due at 10:32: WL-2's case is added (10:32–10:35),
    WL-1's opens 480 s earlier."""
    Timeline(tmp_path, [device("WL-1"), device("WL-2")]).play(
        at("10:00", reading("WL-1", level_cm=10), reading("WL-2", level_cm=10)),
        at(
            "10:30",
            tick(),
            alerts=[
                alert(OFFLINE, "firing", held_by="confirm"),
                alert(OFFLINE2, "firing", held_by="confirm"),
            ],
        ),
        at(
            "10:35",
            reading("WL-2", level_cm=10),
            alerts=[alert(OFFLINE2, "cleared", held_by="confirm")],
        ),
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
        at(
            "12:00",
            backtest(
                "09:00",
                "12:00",
                {"kinds.health.confirm_s": 120},
                report=[
                    "cases current 1 {99301: 1}, proposed 2 {99301: 2}",
                    f"added WL-2/health/offline class 99301 grid {GRID_A} 10:32–10:35",
                    "detect 1 matched, 1 earlier, 0 later, median -480.0 s",
                ],
            ),
        ),
    )
