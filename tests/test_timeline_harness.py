"""The harness itself: a timeline fails on any output not declared and on any declared
output missing, and the failure shows the whole timeline step by step."""

from __future__ import annotations

import pytest
from timeline import Timeline, alert, at, case_closed, device, ms, reading, show_time

BIN = "BIN-1/bin_overflow"


def test_the_harness_fails_on_any_output_not_declared_and_shows_the_whole_timeline(tmp_path):
    """The harness itself: an alert that is not expected fails the play, and the message
    holds every step, the missing line marked - and the unexpected +."""
    timeline = Timeline(tmp_path, [device("BIN-1")], {"rules": {"bin": {"fire_for_s": 0}}})
    with pytest.raises(AssertionError) as failure:
        timeline.play(
            at("09:00", reading("BIN-1", fill_pct=10)),
            at("10:00", reading("BIN-1", fill_pct=95), alerts=[alert(BIN, "firing", "#1")]),
            at("10:01", reading("BIN-1", fill_pct=10)),
        )
    assert str(failure.value).splitlines() == [
        "the timeline differs (- expected, + actual):",
        " 09:00            reading BIN-1 fill_pct=10",
        " 10:00            reading BIN-1 fill_pct=95",
        "     alert    BIN-1/bin_overflow firing → #1",
        "+    command  #1/1 open urgent ← BIN-1/bin_overflow firing",
        " 10:01            reading BIN-1 fill_pct=10",
        "+    alert    BIN-1/bin_overflow cleared → #1",
        "+    command  #1/2 attach urgent ← BIN-1/bin_overflow cleared",
    ]


def test_an_action_that_raises_stops_the_play_and_the_rest_is_shown_unplayed(tmp_path):
    timeline = Timeline(tmp_path, [device("BIN-1")])
    with pytest.raises(AssertionError) as failure:
        timeline.play(
            at("10:00", reading("BIN-1", fill_pct=10)),
            at("10:05", case_closed("#7")),
            at("10:10", reading("BIN-1", fill_pct=95), alerts=[alert(BIN, "firing", "#1")]),
        )
    assert str(failure.value).splitlines() == [
        "the timeline differs (- expected, + actual):",
        " 10:00            reading BIN-1 fill_pct=10",
        " 10:05            case of #7 closed on the platform",
        "+    raised   KeyError: 'no incident #7 has appeared yet'",
        "-10:10            reading BIN-1 fill_pct=95  (not played)",
        "-    alert    BIN-1/bin_overflow firing → #1",
    ]


def test_times_of_the_week_read_and_print_alike():
    for text in ("10:00", "10:00:01", "23:59:59.999", "tue 00:00", "sun 23:59:59.001"):
        assert show_time(ms(text)) == text
    assert ms("tue 00:00") - ms("23:59:59.999") == 1
    with pytest.raises(ValueError, match="timeline time '25:00'"):
        ms("25:00")
