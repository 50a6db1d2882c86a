"""The backtest gives exactly the alerts of the live gateway.

(1) The fast path (numpy over a device's columns) gives exactly the scalar path's alerts
on generated histories: time gaps, flat runs at the fire and clear levels, trip flags,
batteries around their levels, several devices of every kind, holds from zero up.
(2) The scalar replay with the live settings gives exactly the alerts the live pipeline
stored for the same readings pushed through the real ``gateway.pipeline.Pipeline`` on a
real SQLite file — duplicates and out-of-order readings included (its guard refuses them;
the store keeps only what was applied, and that is what the backtest reads).
"""

from __future__ import annotations

import json
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import Alert, Location, Reading
from gateway.backtest import backtest_from_config
from gateway.backtest_store import load_series
from gateway.config import load_config
from gateway.service import Gateway
from rules.backtest.replay import build_engines, device_alerts
from rules.backtest.series import DeviceInfo, DeviceSeries
from rules.params import (
    BinParams,
    ManholeCoverParams,
    RulesConfig,
    VideoRuleParams,
    WaterLevelParams,
)
from rules.settings import settings_from_config
from simulators.scenario import BUILTIN_SCENARIO

TZ = ZoneInfo("Asia/Shanghai")
START = 1_700_000_000_000
KIND_FIELDS = {
    "bin": ("fill_pct", "battery_pct"),
    "manhole_cover": ("tilt_deg", "lid_open", "battery_pct"),
    "water_level": ("level_cm", "battery_pct"),
}
# Values that sit on the levels below, so that flat runs at the edges are common.
EDGES = {
    "fill_pct": [0.0, 59.9, 60.0, 60.1, 89.9, 90.0, 90.1, 100.0],
    "tilt_deg": [0.0, 4.9, 5.0, 5.1, 14.9, 15.0, 15.1, 90.0],
    "level_cm": [0.0, 24.9, 25.0, 29.9, 30.0, 49.9, 50.0, 50.1, 80.0],
    "battery_pct": [5.0, 19.9, 20.0, 29.9, 30.0, 80.0],
}
PART_CODE = "31010401001000001"  # a cover part (01001): its class is the cover's


def rule_settings(hold_s: float, clear_s: float):
    rules = RulesConfig(
        bin=BinParams(fire_for_s=hold_s, clear_for_s=clear_s),
        manhole_cover=ManholeCoverParams(tilt_fire_for_s=hold_s, clear_for_s=clear_s),
        water_level=WaterLevelParams(
            warning_cm=30, alarm_cm=50, warning_for_s=hold_s, alarm_for_s=hold_s / 2,
            clear_for_s=clear_s,
        ),
    )  # fmt: skip
    return settings_from_config(rules, VideoRuleParams(), {})


@st.composite
def histories(draw) -> list[DeviceSeries]:
    out = []
    for n, kind in enumerate(
        draw(st.lists(st.sampled_from(list(KIND_FIELDS)), min_size=1, max_size=4))
    ):
        size = draw(st.integers(0, 60))
        gaps = draw(
            st.lists(
                st.sampled_from([1, 30, 60, 300, 301, 600, 3600]), min_size=size, max_size=size
            )
        )
        ts = START + np.cumsum(np.array(gaps, dtype=np.int64) * 1000)
        fields = {}
        for name in KIND_FIELDS[kind]:
            if name == "lid_open":
                column = draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=size, max_size=size))
            else:
                pick = st.one_of(st.sampled_from(EDGES[name]), st.floats(0, 100))
                column = draw(st.lists(pick, min_size=size, max_size=size))
            present = draw(st.lists(st.booleans(), min_size=size, max_size=size))
            if name != "battery_pct":  # the kind's required field is always there
                present = [True] * size
            fields[name] = np.array(
                [v if p else np.nan for v, p in zip(column, present, strict=True)]
            )
        device = DeviceInfo(f"{kind}-{n}", kind, Location(31.2, 121.4 + n * 0.01), PART_CODE)
        booleans = frozenset({"lid_open"} & fields.keys())
        out.append(DeviceSeries(device, ts.astype(np.int64), fields, booleans))
    return out


def both_paths(series: list[DeviceSeries], hold_s: float, clear_s: float):
    results = []
    for fast in (True, False):
        health, engine = build_engines(
            rule_settings(hold_s, clear_s), [s.device for s in series], TZ
        )
        results.append(device_alerts(series, health, engine, fast=fast))
    return results


@settings(max_examples=150, deadline=None)
@given(histories(), st.sampled_from([0, 60, 300, 600]), st.sampled_from([0, 60, 300]))
def test_the_fast_path_gives_exactly_the_scalar_paths_alerts(series, hold_s, clear_s):
    (fast, _), (scalar, _) = both_paths(series, hold_s, clear_s)
    assert fast == scalar


def test_the_fast_path_is_taken_where_health_trusts_every_reading_and_not_elsewhere():
    """A steady gauge goes the fast way; a jumping one (health mutes it) the scalar way;
    both give the scalar alerts, which include the jumping gauge's suspect alert."""
    ts = START + np.arange(100, dtype=np.int64) * 300_000
    steady = np.where(np.arange(100) % 40 < 10, 40.0, 10.0) + (np.arange(100) % 3) * 0.1
    jumping = steady.copy()
    jumping[50:53] = 900.0
    series = [
        DeviceSeries(DeviceInfo(name, "water_level", Location(31.2, 121.4)), ts,
                     {"level_cm": level, "battery_pct": np.full(100, 80.0)})
        for name, level in (("WL-steady", steady), ("WL-jumping", jumping))
    ]  # fmt: skip
    (fast, fast_count), (scalar, _) = both_paths(series, 60, 300)
    assert fast_count == 1
    assert fast == scalar
    assert [(a.rule_id, str(a.state)) for a in scalar[0]] == [
        ("water_level", "firing"), ("water_level", "cleared"),
        ("water_level", "firing"), ("water_level", "cleared"),
        ("water_level", "firing"), ("water_level", "cleared"),
    ]  # fmt: skip
    assert ("suspect", "firing") in [(a.rule_id, str(a.state)) for a in scalar[1]]


# -- (2) the live pipeline's stored alerts ---------------------------------------------------

REGISTRY = BUILTIN_SCENARIO.parent / "devices.csv"
LIVE_DEVICES = ("BIN-001", "BIN-010", "MH-001", "WL-001")
LIVE_VALUES = {
    "BIN-001": lambda v, flag: {"fill_pct": v, "battery_pct": 15.0 + v / 4},
    "BIN-010": lambda v, flag: {"fill_pct": v},
    "MH-001": lambda v, flag: {"tilt_deg": v / 5, "lid_open": flag},
    "WL-001": lambda v, flag: {"level_cm": v * 0.6},
}


def live_gateway(tmp_path: Path) -> Gateway:
    config = {
        "mqtt": {"url": "mqtt://127.0.0.1:1"},
        "devices": {"registry": str(REGISTRY)},
        "store": {"path": str(tmp_path / "gateway.db")},
        "case_platform": {"url": "http://127.0.0.1:1", "token": "unused"},
        "rules": {"bin": {"fire_for_s": 600, "clear_for_s": 60}},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return Gateway(load_config(path))


@st.composite
def live_histories(draw) -> list[Reading]:
    """Readings of four devices in arrival order: time gaps, edges, repeats of a reading
    already applied (duplicates) and readings older than one applied (out of order)."""
    out: list[Reading] = []
    last = dict.fromkeys(LIVE_DEVICES, START)
    for _ in range(draw(st.integers(1, 80))):
        device_id = draw(st.sampled_from(LIVE_DEVICES))
        what = draw(st.sampled_from(["next", "next", "next", "duplicate", "older"]))
        earlier = [r for r in out if r.device_id == device_id]
        if what == "duplicate" and earlier:
            out.append(draw(st.sampled_from(earlier)))
            continue
        if what == "older" and earlier:
            ts = last[device_id] - draw(st.integers(1, 600_000))
        else:
            ts = last[device_id] = (
                last[device_id] + draw(st.sampled_from([30, 300, 600, 3600])) * 1000
            )
        value = draw(st.one_of(st.sampled_from(EDGES["fill_pct"]), st.floats(0, 100)))
        values = LIVE_VALUES[device_id](value, draw(st.booleans()))
        out.append(Reading(device_id, KINDS_OF[device_id], ts, values, seq=len(out)))
    return out


KINDS_OF = {"BIN-001": "bin", "BIN-010": "bin", "MH-001": "manhole_cover", "WL-001": "water_level"}


def stored_alerts(conn) -> list[tuple]:
    rows = conn.execute("SELECT body FROM alerts ORDER BY id").fetchall()
    return sorted(_comparable(Alert.from_dict(json.loads(body))) for (body,) in rows)


def _comparable(alert: Alert) -> tuple:
    return (alert.source_id, alert.ts, alert.key, str(alert.state), str(alert.priority),
            alert.summary, json.dumps(alert.values, sort_keys=True))  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(live_histories(), st.integers(1, 7))
def test_a_scalar_replay_with_the_live_settings_gives_the_alerts_the_live_pipeline_stored(
    tmp_path_factory, readings, batch
):
    tmp_path = tmp_path_factory.mktemp("live")
    gateway = live_gateway(tmp_path)
    for at in range(0, len(readings), batch):
        items = [("t", b"", r) for r in readings[at : at + batch]]
        gateway.pipeline.process_decoded(items, readings[at].ts)
    live = stored_alerts(gateway.conn)
    gateway.conn.close()

    backtest = backtest_from_config(gateway.config)
    registry = {d: backtest.registry[d] for d in LIVE_DEVICES}
    infos = {d: DeviceInfo(d, r.kind, r.location, r.part_code) for d, r in registry.items()}
    series = load_series(backtest.store_path, infos, 0, 2**62)
    health, engine = build_engines(backtest.config_settings, infos.values(), backtest.tz)
    replayed, _ = device_alerts(series.values(), health, engine, fast=False)
    assert sorted(_comparable(a) for alerts in replayed for a in alerts) == live
    health, engine = build_engines(backtest.config_settings, infos.values(), backtest.tz)
    fast, _ = device_alerts(series.values(), health, engine, fast=True)
    assert fast == replayed
