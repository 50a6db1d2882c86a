"""Worker processes give exactly the alerts the calling process gives.

A store of 60 devices of every kind — fills crossing the bin level, tilts and opened lids,
rising water, a stuck gauge that health distrusts (the scalar path), a low battery, rows
written out of order, a device with no rows and rows of a device not selected — is
replayed under two settings versions in this process, in two workers and in three; each
device's alerts, in the selection's order, and its reading count must be equal.
"""

from __future__ import annotations

import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from domain import AlertState, Location
from gateway import store
from gateway.backtest_shards import replay_devices
from rules.backtest.series import DeviceInfo
from rules.params import BinParams, RulesConfig, VideoRuleParams, WaterLevelParams
from rules.settings import settings_from_config

TZ = ZoneInfo("Asia/Shanghai")
START = 1_700_000_000_000
STEP_MS = 300_000
STEPS = 150
KINDS = ("bin", "manhole_cover", "water_level")


def values(kind: str, n: int, step: int) -> dict:
    phase = (step + 7 * n) % 60
    if kind == "bin":
        return {"fill_pct": min(100.0, phase * 1.8), "battery_pct": 80.0 - step * 0.4 * (n % 2)}
    if kind == "manhole_cover":
        return {"tilt_deg": 30.0 if phase < 4 else 1.0 + (step % 3) * 0.1,
                "lid_open": phase == 30, "battery_pct": 90.0}  # fmt: skip
    if n == 2:  # stuck: the same level for the whole window
        return {"level_cm": 42.0, "battery_pct": 95.0}
    return {"level_cm": 10.0 + phase * 1.5, "battery_pct": 95.0}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> tuple[Path, dict[str, DeviceInfo]]:
    path = tmp_path_factory.mktemp("shards") / "gateway.db"
    conn = store.connect(path, synchronous="OFF")
    devices, rows = {}, []
    for n in range(60):
        kind = KINDS[n % 3]
        device_id = f"{kind[:3].upper()}-{n:03d}"
        part = f"350102{'01003' if kind == 'manhole_cover' else '03005'}{n:06d}"
        devices[device_id] = DeviceInfo(device_id, kind, Location(26.0 + n * 1e-4, 119.3), part)
        if n == 5:
            continue  # selected, never reported
        for step in range(STEPS):
            body = json.dumps(values(kind, n, step))
            rows.append((device_id, START + step * STEP_MS + n, step, body))
    rows[10], rows[11] = rows[11], rows[10]  # written out of order
    rows += [("ZZZ-999", START + step * STEP_MS, step, '{"fill_pct": 99.0}') for step in range(20)]
    conn.executemany(
        "INSERT INTO readings (device_id, ts, seq, values_json, suspect) VALUES (?, ?, ?, ?, 0)",
        rows,
    )
    conn.close()
    return path, devices


def versions():
    low = RulesConfig(bin=BinParams(fill_fire_pct=80, fire_for_s=600),
                      water_level=WaterLevelParams(warning_cm=60, alarm_cm=90))  # fmt: skip
    usual = RulesConfig(water_level=WaterLevelParams(warning_cm=70, alarm_cm=95))
    return [settings_from_config(usual, VideoRuleParams(), {}),
            settings_from_config(low, VideoRuleParams(), {})]  # fmt: skip


def test_workers_give_exactly_the_alerts_of_one_process(fleet):
    path, devices = fleet
    until = START + STEPS * STEP_MS
    here = replay_devices(path, devices, START, until, versions(), TZ, workers=1)
    assert list(here.readings) == list(devices)
    assert here.readings["BIN-000"] == STEPS and here.readings["WAT-005"] == 0
    fired = [a for v in here.versions for alerts in v.per_device for a in alerts]
    firing = {a.rule_id for a in fired if a.state is AlertState.FIRING}
    assert firing == {"bin_overflow", "cover_anomaly", "suspect", "water_level"}
    assert here.versions[0].fast_devices < len(devices)  # the stuck gauge: scalar path
    for workers in (2, 3):
        progress: list[int] = []
        there = replay_devices(
            path, devices, START, until, versions(), TZ, progress.append, workers
        )
        assert there.readings == here.readings
        assert [v.fast_devices for v in there.versions] == [v.fast_devices for v in here.versions]
        for mine, theirs in zip(here.versions, there.versions, strict=True):
            assert theirs.per_device == mine.per_device
        assert sum(progress) == 3 * sum(here.readings.values())  # loaded, then 2 versions
