"""End to end: the device fleet and the footage cameras on one timeline, one ground truth.

The builtin timeline (simulators/scenarios/bins_and_camera): two bins at a collection
point overflow while a camera beside them sees bin bags dumped on the pavement; a lone bin
89 m away overflows; a second camera ~520 m from any bin sees bags dumped in a lane (the
same composited footage, served on a second mount, its zone placed there). Both simulators
count from one origin on the wall clock: the RTSP server plays footage second t at
origin + t, and the fleet stamps its reading at offset o with origin + o. Through a real
mosquitto, the gateway process (the real COCO model, PyAV decoder, tracker, static-object
model and rules) and the bundled platform, the platform must end with exactly the truth's
cases: ONE 06042 case carrying the two bins' and the camera's evidence (the family merge),
one for the lone bin, one 06010 case for the lane.
"""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import pytest

from domain.types import Location
from simulators.footage import DEFAULT_ASSETS, build_footage, camera_zones
from simulators.rtsp_server import RtspServerProcess
from simulators.timeline import (
    BUILTIN_TIMELINE,
    Timeline,
    gateway_sections,
    load_timeline,
    run_fleet,
)
from simulators.truth import compare_cases

from harness import Stack, free_port, wait_until

MODEL = DEFAULT_ASSETS / "models" / "yolo11n_int8.onnx"
pytestmark = pytest.mark.skipif(
    not MODEL.is_file(), reason=f"shared assets not at {DEFAULT_ASSETS}"
)
# The static-object model learns each zone's background from its first 5 samples (~1/s):
# the cameras must be analysing that long before the bags appear.
BACKGROUND_S = 5
CAMERA_SETTINGS = {"analyse_fps": 2, "offline_after_s": 30, "stall_timeout_s": 3}


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> tuple[Timeline, Path]:
    timeline = load_timeline(BUILTIN_TIMELINE, DEFAULT_ASSETS)
    return timeline, build_footage(timeline.footage, tmp_path_factory.mktemp("footage"))


def places(timeline: Timeline) -> dict[str, Location]:
    """Every source's position: the registry's for devices, the zone's for cameras."""
    registry = timeline.devices.path.parent / timeline.devices.spec.registry
    with registry.open(encoding="utf-8") as rows:
        found = {
            r["device_id"]: Location(float(r["lat"]), float(r["lon"])) for r in csv.DictReader(rows)
        }
    for camera in timeline.footage.cameras:
        [zone] = camera_zones(timeline.footage, camera)
        found[camera] = Location(zone["lat"], zone["lon"])
    return found


def test_the_staging_is_where_the_truth_says():
    """The distances the truth's cases rest on: bags within the family radius of the
    point's bins, the lone bin beyond the same-class radius, the lane beyond every radius."""
    at = places(load_timeline(BUILTIN_TIMELINE, DEFAULT_ASSETS))
    assert at["CAM-POINT"].distance_m(at["BIN-P1"]) < 30
    assert at["BIN-P2"].distance_m(at["BIN-P1"]) < 30
    assert at["BIN-F1"].distance_m(at["BIN-P1"]) > 80
    assert at["BIN-F1"].distance_m(at["CAM-POINT"]) > 50
    assert min(at["CAM-LANE"].distance_m(at[s]) for s in at if s != "CAM-LANE") > 400


def sources(case: dict) -> set[str]:
    return {e["source_id"] for e in case["evidence"]}


def assert_one_clock(truth: dict, cases: list[dict]) -> None:
    """Every evidence is stamped after its source's staging began and before now, on the
    one clock: the bins' readings and the cameras' frames alike."""
    began: dict[str, int] = {}
    for event in truth["staged"]:
        began.setdefault(event["source"], event["at_ms"])
    now_ms = time.time() * 1000
    stamps = [(e["source_id"], e["ts"]) for case in cases for e in case["evidence"]]
    assert stamps and all(began[source] < ts <= now_ms for source, ts in stamps), (began, stamps)


def test_bins_and_bags_on_one_timeline_file_exactly_the_truths_cases(tmp_path, staged):
    timeline, clip = staged
    origin = time.time()  # the one clock's zero, for the footage and the fleet alike
    mounts = [f"/{camera}=file:{clip}" for camera in timeline.footage.cameras]
    server = RtspServerProcess(
        mounts, free_port(), log=tmp_path / "rtsp.log", scenario_start=origin
    )
    config = gateway_sections(
        timeline, lambda camera: server.url(f"/{camera}"), MODEL, CAMERA_SETTINGS
    )
    stack = Stack(
        tmp_path, video=config.pop("video"), scenario=timeline.devices.path, config=config
    )
    failures: list[BaseException] = []
    try:
        server.start()
        stack.start()
        wait_until(stack.cameras_online, "both cameras online", 30, stack.gateway)
        bags = timeline.footage.overlays[0]
        assert time.time() - origin < bags.start_s - BACKGROUND_S, "cameras up too late"

        def fleet() -> None:
            try:
                run_fleet(stack.broker.url, timeline, round(origin * 1000), stack.truth_path)
            except BaseException as exc:  # handed to the test thread
                failures.append(exc)

        runner = threading.Thread(target=fleet, daemon=True)
        runner.start()
        expected = {s for case in timeline.spec.expected.cases for s in case.sources}

        def every_source_filed() -> bool:
            seen = set().union(*map(sources, stack.cases()))
            return seen >= expected and stack.gateway_stats()["outbox"]["pending"] == 0

        wait_until(every_source_filed, "every source's evidence on the platform", 75, stack.gateway)
        runner.join(15)
        assert not failures and not runner.is_alive(), failures
        stack.wait_caught_up(15)
        assert_one_clock(stack.truth(), stack.cases())
        report = compare_cases(stack.truth(), stack.cases())
        assert report.ok, report.render() + "\n--- gateway log ---\n" + stack.gateway.tail()
    finally:
        stack.stop()
        server.stop()
