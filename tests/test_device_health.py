"""Device health rules, one by one: offline, battery, stuck, impossible jump, suppression."""

from __future__ import annotations

from domain import AlertState, Location, Priority, Reading
from rules.device_health import DeviceHealth
from rules.params import HealthConfig, KindHealthParams
from rules.settings import KindSettings, RuleSettings

HERE = Location(26.087, 119.302, "五四路", "350102001001001")
T0 = 1_763_700_000_000
MIN = 60_000


def health(**water: object) -> DeviceHealth:
    params = {"heartbeat_s": 60, "stuck_after_s": {"level_cm": 3600.0},
              "max_change_per_min": {"level_cm": 50.0}, "change_slack": {"level_cm": 10.0},
              **water}  # fmt: skip
    config = HealthConfig(water_level=KindHealthParams(**params), lwt_grace_s=120)
    h = DeviceHealth(RuleSettings(kinds=KindSettings(health=config)))
    h.add_device("WL-1", "water_level", HERE, "")
    h.add_device("MH-1", "manhole_cover", HERE, "35010201003000001")
    return h


def water(ts: int, level: float, battery: float = 90.0) -> Reading:
    return Reading("WL-1", "water_level", ts, {"level_cm": level, "battery_pct": battery})


def summary(alerts) -> list[tuple[str, str, str, str]]:
    return [(a.source_id, a.rule_id, str(a.state), a.class_code) for a in alerts]


def test_silence_past_heartbeat_times_factor_is_offline_and_a_reading_clears_it():
    h = health()
    h.start(T0)
    assert h.tick(T0 + 179_999) == []  # 60 s heartbeat × 3, not yet
    fired = h.tick(T0 + 180_000)
    assert summary(fired) == [("WL-1", "offline", "firing", "99301")]
    assert fired[0].priority is Priority.NORMAL and fired[0].merge is False
    assert h.tick(T0 + 400_000) == []  # one case, not one per tick
    verdict = h.check(water(T0 + 400_000, 5.0), T0 + 400_000)
    assert summary(verdict.alerts) == [("WL-1", "offline", "cleared", "99301")]
    assert verdict.trusted


def test_a_cover_offline_uses_its_part_anomaly_class():
    h = health()
    h.start(T0)
    fired = h.tick(T0 + 3 * 3600_000)  # covers: 1 h heartbeat by default
    assert ("MH-1", "offline", "firing", "01003") in summary(fired)


def test_last_will_offline_fires_after_the_grace_unless_the_device_comes_back():
    h = health(heartbeat_s=3600)
    h.start(T0)
    h.status("WL-1", online=False, now_ms=T0 + MIN)
    assert h.tick(T0 + MIN + 119_000) == []
    assert summary(h.tick(T0 + MIN + 120_000)) == [("WL-1", "offline", "firing", "99301")]
    h2 = health(heartbeat_s=3600)
    h2.start(T0)
    h2.status("WL-1", online=False, now_ms=T0 + MIN)
    h2.check(water(T0 + 2 * MIN, 5.0), T0 + 2 * MIN)  # a sleeping device reporting again
    assert h2.tick(T0 + 10 * MIN) == []


def test_battery_low_fires_once_and_clears_only_above_the_clear_level():
    h = health()
    seen = []
    for i, battery in enumerate([25, 19, 18, 25, 29, 31, 15]):
        seen += summary(h.check(water(T0 + i * MIN, 5.0, battery), T0 + i * MIN).alerts)
    assert seen == [
        ("WL-1", "battery_low", "firing", "99301"),
        ("WL-1", "battery_low", "cleared", "99301"),
        ("WL-1", "battery_low", "firing", "99301"),
    ]


def test_device_shows_how_each_device_is_judged_and_battery_alert_is_what_check_emits():
    h = health(battery_low_pct=20.0)
    gauge, cover = h.device("WL-1"), h.device("MH-1")
    assert (gauge.kind, gauge.judged, gauge.params.heartbeat_s, gauge.offline_class) == (
        "water_level", True, 60, "99301")  # fmt: skip
    assert (cover.kind, cover.judged, cover.offline_class) == ("manhole_cover", False, "01003")
    assert h.device("WL-9") is None
    low, back = water(T0, 5.0, 19.0), water(T0 + MIN, 5.0, 31.0)
    emitted = h.check(low, T0).alerts + h.check(back, T0 + MIN).alerts
    rebuilt = [h.battery_alert(low, AlertState.FIRING), h.battery_alert(back, AlertState.CLEARED)]
    assert rebuilt == emitted
    assert [a.summary for a in rebuilt] == ["WL-1 battery 19% < 20%", "WL-1 battery 31%"]


def test_a_value_stuck_for_hours_makes_the_device_suspect_until_it_moves():
    h = health()
    verdicts = [h.check(water(T0 + i * 10 * MIN, 42.0), T0) for i in range(7)]  # 0..60 min
    assert [v.trusted for v in verdicts] == [True] * 6 + [False]
    assert summary(verdicts[-1].alerts) == [("WL-1", "suspect", "firing", "99301")]
    assert "stuck at 42" in verdicts[-1].alerts[0].summary
    still = h.check(water(T0 + 70 * MIN, 42.0), T0)
    assert not still.trusted and still.alerts == []
    moved = h.check(water(T0 + 80 * MIN, 42.5), T0)
    assert moved.trusted and summary(moved.alerts) == [("WL-1", "suspect", "cleared", "99301")]


def test_one_impossible_sample_is_muted_without_a_case():
    h = health()
    assert h.check(water(T0, 20.0), T0).trusted
    assert h.check(water(T0 + MIN, 60.0), T0).trusted  # 40 cm in a minute: possible
    spike = h.check(water(T0 + 2 * MIN, 900.0), T0)  # 840 cm in a minute: not
    assert not spike.trusted and spike.alerts == []  # a leaf on the probe: muted, no case
    after = [h.check(water(T0 + (3 + i) * MIN, 61.0 + i), T0) for i in range(3)]
    assert [v.trusted for v in after] == [False, False, True]
    assert all(v.alerts == [] for v in after)


def test_impossible_readings_in_a_row_are_reported_until_plausible_again():
    h = health()
    h.check(water(T0, 60.0), T0)
    lies = [h.check(water(T0 + (1 + i) * MIN, 900.0 + i), T0) for i in range(3)]
    assert [v.trusted for v in lies] == [False] * 3
    assert [summary(v.alerts) for v in lies] == [[], [], [("WL-1", "suspect", "firing", "99301")]]
    assert "60 → 902" in lies[-1].alerts[0].summary
    # back near the last plausible value: believed after three plausible readings in a row
    runs = [h.check(water(T0 + (4 + i) * MIN, 61.0 + i), T0) for i in range(3)]
    assert [r.trusted for r in runs] == [False, False, True]
    assert summary(runs[-1].alerts) == [("WL-1", "suspect", "cleared", "99301")]


def test_a_gauge_that_jumped_and_stays_there_stays_suspect():
    h = health()
    h.check(water(T0, 20.0), T0)
    verdicts = [h.check(water(T0 + (1 + i) * MIN, 800.0), T0) for i in range(10)]
    assert not any(v.trusted for v in verdicts)
    assert sum(len(v.alerts) for v in verdicts) == 1  # one maintenance case, not ten


def test_a_slow_real_rise_is_never_suspect():
    h = health()
    verdicts = [h.check(water(T0 + i * MIN, 10.0 + 30 * i), T0) for i in range(20)]
    assert all(v.trusted for v in verdicts)
    assert all(not v.alerts for v in verdicts)


def test_health_state_round_trips_through_its_committed_json():
    h = health()
    h.check(water(T0, 20.0), T0)
    h.check(water(T0 + MIN, 900.0), T0)
    dirty = h.states.take_dirty()
    again = health()
    for key, state in dirty.items():
        again.states.load_state(key, state)
    assert again.snapshot()["WL-1"]["suspect"] == "jump:level_cm"
    assert not again.check(water(T0 + 2 * MIN, 900.0), T0).trusted
