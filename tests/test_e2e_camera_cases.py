"""End to end on real footage: two RTSP cameras → the gateway's video pipeline → one case.

The footage simulator's builtin scenario: the shared 1080p pedestrian-street clip with
real bin bags (cut from a photo of Amsterdam pavement rubbish) composited onto the street
from 15 s to 50 s, so the ground truth is known exactly. The project's RTSP server serves
it on two mounts, CAM-A and CAM-B: two cameras watching the same no-dumping zone (the
same view twice; a synthetic renderer with different angles is separate work). The real
COCO model, PyAV decoder, tracker, static-object model and rules run in the gateway
process; dwell times are shortened for the test. The two tests' streets run side by side
on one timeline (tests/e2e_streets.py).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from e2e_side_by_side import Running, this_test
from e2e_streets import Street, streets_side_by_side

from simulators.footage import (
    BUILTIN_FOOTAGE,
    DEFAULT_ASSETS,
    FootageScenario,
    Overlay,
    build_footage,
    footage_truth,
    load_footage_scenario,
)
from simulators.rtsp_server import RtspServerProcess
from simulators.truth import compare_cases

from harness import wait_until

ASSETS = DEFAULT_ASSETS
MODEL = ASSETS / "models" / "yolo11n_int8.onnx"
needs_model = pytest.mark.skipif(not MODEL.is_file(), reason=f"shared assets not at {ASSETS}")
pytestmark = needs_model


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> tuple[FootageScenario, Path]:
    """The builtin footage scenario: 60 s, 960x540, 10 fps, 1 s GOP, bags 15–50 s."""
    scenario = load_footage_scenario(BUILTIN_FOOTAGE, ASSETS)
    return scenario, build_footage(scenario, tmp_path_factory.mktemp("footage"))


def video_config(scenario: FootageScenario, server: RtspServerProcess) -> dict:
    """The gateway's video section: each of ``scenario``'s cameras on its mount of
    ``server``, the real model, dwell times shortened for the tests."""
    return {
        "cameras": [
            {"id": cam, "url": server.url(f"/{cam}"), "analyse_fps": 2,
             "zones": scenario.zones, "offline_after_s": 30, "stall_timeout_s": 3}
            for cam in scenario.cameras
        ],
        "detector": {"model": str(MODEL)},
        # clear_after_s outlasts a camera's reconnection after its stream is killed
        "rules": {"rubbish_dwell_s": 6, "stationary_s": 3, "clear_after_s": 10},
    }  # fmt: skip


def devices(case: dict) -> list[str]:
    return sorted({e["source_id"] for e in case["evidence"]})


def wait_for_the_case_to_clear(street: Street) -> tuple[list[dict], float]:
    """The cases once the dumping case has cleared evidence, and the scenario time they
    were read at (read then: the clip loops and the bags come back)."""
    stack = street.stack

    def cleared() -> bool:
        cases = stack.cases()
        return len(cases) == 1 and any(e["state"] == "cleared" for e in cases[0]["evidence"])

    wait_until(cleared, "the dumping case and its cleared evidence", 90)
    return stack.cases(), street.scenario_s()


def restarted(street: Street) -> tuple[float, list[dict], float]:
    """Both streams killed and restarted at once as soon as both cameras filed the case:
    the scenario time of the kill, then the cases and time once it cleared.

    Restarted at once: the outage is the server's start-up plus the gateway's reconnect
    back-off, seconds already. While a camera's downtime counts as absence of the bags
    (rules/video_rules.py), a downtime beyond clear_after_s clears the alert too early."""
    stack = street.stack

    def seen_by_both() -> bool:
        return [devices(case) for case in stack.cases()] == [["CAM-A", "CAM-B"]]

    wait_until(seen_by_both, "the dumping case filed by both cameras", 90)
    killed_s = street.kill_streams()
    return killed_s, *wait_for_the_case_to_clear(street)


@pytest.fixture(scope="module")
def streets(request, tmp_path_factory, footage):
    """A street per test on the same clip, side by side: one watched, one whose streams
    die; each test's street is the one named after it."""
    scenario, clip = footage
    yield from streets_side_by_side(
        request,
        tmp_path_factory,
        [f"/{camera}=file:{clip}" for camera in scenario.cameras],
        partial(video_config, scenario),
        [
            (test_dumped_bags_seen_by_two_cameras_are_one_case, wait_for_the_case_to_clear),
            (test_stream_killed_and_restarted_mid_incident_gives_no_duplicate, restarted),
        ],
    )


@pytest.fixture
def street(request, streets, footage) -> tuple[Running, dict, Overlay]:
    """This test's street, the scenario's truth and its bags."""
    scenario = footage[0]
    return this_test(request, streets), footage_truth(scenario), scenario.overlays[0]


def test_dumped_bags_seen_by_two_cameras_are_one_case(street):
    running, truth, bags = street
    stack = running.part.stack
    cases, cleared_s = running.outcome()
    assert cleared_s >= bags.end_s  # cleared only after the bags were taken away
    report = compare_cases(truth, cases)
    assert report.ok, report.render() + "\n" + stack.gateway.tail()
    [case] = cases
    assert (case["source"], case["class_name"]) == ("video", "暴露垃圾")
    firing = [e for e in case["evidence"] if e["state"] == "firing"]
    assert sorted(e["source_id"] for e in firing) == ["CAM-A", "CAM-B"]
    for media in firing[0]["media"]:
        picture = stack.gateway_http.get(media)
        assert picture.status_code == 200 and picture.content[:2] == b"\xff\xd8"
    assert len(firing[0]["media"]) == 2  # the frame with boxes and zone, and "before"


def test_stream_killed_and_restarted_mid_incident_gives_no_duplicate(street):
    running, truth, bags = street
    stack = running.part.stack
    killed_s, cases, cleared_s = running.outcome()
    assert killed_s < bags.end_s  # mid-incident
    # The outage is no absence: cleared only after the bags were taken away.
    assert cleared_s >= bags.end_s, cases
    report = compare_cases(truth, cases)
    assert report.ok, report.render() + "\n" + stack.gateway.tail()
    cameras = stack.gateway_stats()["video"]["cameras"]
    assert all(cameras[c]["reconnects"] >= 1 for c in ("CAM-A", "CAM-B")), cameras
