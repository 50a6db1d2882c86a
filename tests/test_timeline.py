"""Timelines: one device scenario and one footage scenario on one clock, one ground truth."""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.merge_settings import MergeSettings
from rules.params import RulesConfig, VideoRuleParams
from simulators.footage import DEFAULT_ASSETS, camera_zones, footage_truth
from simulators.mosquitto import Mosquitto
from simulators.timeline import (
    BUILTIN_TIMELINE,
    TimelineError,
    gateway_sections,
    load_timeline,
    run_fleet,
    timeline_truth,
)

pytestmark = pytest.mark.skipif(
    not DEFAULT_ASSETS.is_dir(), reason=f"shared assets not at {DEFAULT_ASSETS}"
)
ORIGIN_MS = 1_800_000_000_000
FOLDER = BUILTIN_TIMELINE.parent


def test_builtin_truth_lists_both_simulators_cases_and_stagings_on_one_clock():
    timeline = load_timeline(BUILTIN_TIMELINE, DEFAULT_ASSETS)
    truth = timeline_truth(timeline, ORIGIN_MS)
    assert [(c["class_code"], c["devices"]) for c in truth["expected_cases"]] == [
        ("06042", ["BIN-P1", "BIN-P2", "CAM-POINT"]),
        ("06042", ["BIN-F1"]),
        ("06010", ["CAM-LANE"]),
    ]
    assert set(truth["expected_rejections"].values()) == {0}
    assert (truth["event_start_ms"], truth["event_end_ms"]) == (ORIGIN_MS, ORIGIN_MS + 57_000)
    assert [(e["source"], e["at_ms"] - ORIGIN_MS) for e in truth["staged"]] == [
        ("BIN-P1", 2000),
        ("BIN-F1", 3000),
        ("BIN-P2", 4000),
        ("CAM-LANE", 30_000),
        ("CAM-POINT", 30_000),
    ]
    assert {e["until_ms"] - ORIGIN_MS for e in truth["staged"] if "until_ms" in e} == {57_000}


def test_a_camera_at_another_place_keeps_its_view_and_is_its_own_case():
    footage = load_timeline(BUILTIN_TIMELINE, DEFAULT_ASSETS).footage
    point, lane = (camera_zones(footage, c)[0] for c in ("CAM-POINT", "CAM-LANE"))
    assert point == footage.zones[0]
    assert lane["polygon"] == point["polygon"] and lane["id"] == point["id"]
    assert (lane["lat"], lane["lon"], lane["grid_code"]) == (26.086, 119.299, "350102003002003")
    assert [c["devices"] for c in footage_truth(footage)["expected_cases"]] == [
        ["CAM-POINT"],
        ["CAM-LANE"],
    ]


def write_variant(tmp_path: Path, edit) -> Path:
    """A copy of the builtin timeline's folder with ``edit(name, text) -> text`` applied."""
    for source in FOLDER.iterdir():
        (tmp_path / source.name).write_text(
            edit(source.name, source.read_text(encoding="utf-8")), encoding="utf-8"
        )
    return tmp_path / BUILTIN_TIMELINE.name


@pytest.mark.parametrize(
    ("name", "old", "new", "problem"),
    [
        (
            "devices.yaml",
            "time_scale: 1",
            "time_scale: 60",
            r"timeline.yaml:12: devices: .*time_scale 1",
        ),
        ("timeline.yaml", "sources: [BIN-F1]", "sources: [BIN-F9]", r"cases\.1\.sources: .*BIN-F9"),
        ("footage.yaml", "[CAM-POINT, CAM-LANE]", "[BIN-P1, CAM-LANE]", r"device and a camera"),
        ("footage.yaml", "  CAM-LANE:\n", "  CAM-X:\n", r"places of cameras not in cameras: CAM-X"),
        ("devices.yaml", "interval_s: 2", "interval_s: 0", r"devices\.yaml.*interval_s"),
    ],
)
def test_a_broken_timeline_names_the_file_and_the_problem(tmp_path, name, old, new, problem):
    def edit(file: str, text: str) -> str:
        return text.replace(old, new) if file == name else text

    with pytest.raises(TimelineError, match=problem):
        load_timeline(write_variant(tmp_path, edit), DEFAULT_ASSETS)


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_keys = st.sampled_from(["name", "devices", "footage", "gateway", "expected", "other"])


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=6) | _values)
def test_any_yaml_is_a_timeline_or_a_timeline_error(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "timeline.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        try:
            load_timeline(path, DEFAULT_ASSETS)
        except TimelineError as exc:
            assert str(exc).startswith(str(path))


def test_the_fleet_stamps_and_sends_on_the_one_clock_never_early(tmp_path):
    """An origin 22 s back (a gateway that took that long to start): the readings already
    due go at once, late; the rest (offsets 24-28 s) when due, never before; every one
    stamped origin + its offset."""
    timeline = load_timeline(BUILTIN_TIMELINE, DEFAULT_ASSETS)
    broker = Mosquitto(tmp_path, persistence=False)
    broker.start()
    received: list[tuple[dict, int]] = []
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="timeline-test")
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda _c, _u, m: received.append((json.loads(m.payload), time.time_ns()))
    try:
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        client.subscribe("citygw/v1/+/telemetry", qos=1)
        assert subscribed.wait(10)
        origin_ms = time.time_ns() // 1_000_000 - 22_000
        truth = run_fleet(broker.url, timeline, origin_ms, tmp_path / "truth.json")
        deadline = time.monotonic() + 10
        while len(received) < truth["published"] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.loop_stop()
        broker.stop()
    assert truth["published"] == len(received) == 4 * 15  # four bins, a reading every 2 s
    assert json.loads((tmp_path / "truth.json").read_text())["finished"] is True
    offsets = sorted(body["ts"] - origin_ms for body, _ in received)
    assert offsets == sorted(o for o in range(0, 30_000, 2000) for _ in range(4))
    # Offsets up to 22 s were due when the fleet began; 24-28 s were not, and arrived only
    # once due: sent at once with the others, they would arrive before their own stamps.
    held = [(body["ts"], at_ns) for body, at_ns in received if body["ts"] - origin_ms >= 24_000]
    assert len(held) == 3 * 4
    assert all(ts <= at_ns // 1_000_000 for ts, at_ns in held)
    assert all(body["ts"] <= at_ns // 1_000_000 for body, at_ns in received)  # never early


def test_gateway_sections_add_each_camera_at_its_place_to_the_timelines_own():
    timeline = load_timeline(BUILTIN_TIMELINE, DEFAULT_ASSETS)
    own = json.dumps(timeline.spec.gateway)
    sections = gateway_sections(
        timeline, lambda c: f"rtsp://h/{c}", Path("m.onnx"), {"analyse_fps": 2}
    )
    assert json.dumps(timeline.spec.gateway) == own  # the timeline's sections are not changed
    assert sections["merge"] == timeline.spec.gateway["merge"]
    video = sections["video"]
    assert video["rules"] == timeline.spec.gateway["video"]["rules"]
    assert video["detector"] == {"model": "m.onnx"}
    assert [
        (c["id"], c["url"], c["analyse_fps"], c["zones"][0]["lat"]) for c in video["cameras"]
    ] == [
        ("CAM-POINT", "rtsp://h/CAM-POINT", 2, 26.08304),
        ("CAM-LANE", "rtsp://h/CAM-LANE", 2, 26.086),
    ]


def test_the_builtin_timelines_gateway_sections_are_ones_the_gateway_takes():
    """Validated by the models the gateway loads them with (merge: the rules' own section)."""
    gateway = load_timeline(BUILTIN_TIMELINE, DEFAULT_ASSETS).spec.gateway
    assert sorted(gateway) == ["merge", "rules", "video"]
    merge = MergeSettings.model_validate(gateway["merge"])
    family = merge.family_of("06010")
    assert family is not None and (family.lead, family.radius_m) == ("06042", 30)
    assert merge.family_of("06042") is family
    assert RulesConfig.model_validate(gateway["rules"]).bin.fire_for_s == 8
    assert sorted(gateway["video"]) == ["rules"]
    assert VideoRuleParams.model_validate(gateway["video"]["rules"]).rubbish_dwell_s == 6
