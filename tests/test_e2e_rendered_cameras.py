"""End to end on the rendered street: two RTSP cameras with different views → two cases.

The video simulator's builtin scene (五四路): a market stall in a no-vending zone from 10 s
to 70 s and five bin bags in a no-dumping zone from 15 s to 75 s, seen by two pole cameras
looking at the same pavement from opposite ends; two people with open umbrellas walk
through the stall zone, a green litter bin stands between the zones, and people and cars
pass all the time. The ground truth (which case, which cameras) is computed from the scene
by the simulator. The rendered frames are encoded to H.264 and served by the project's
RTSP server; the gateway runs the shipped city model, the PyAV decoder, tracker, static
objects and rules in its own process. Dwell times are shortened for the test. The two
tests' streets run side by side on one timeline (tests/e2e_streets.py).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from e2e_side_by_side import Running, this_test
from e2e_streets import Street, streets_side_by_side

from simulators.rtsp_server import RtspServerProcess
from simulators.truth import compare_cases
from simulators.video import BUILTIN_VIDEO_SCENE, camera_zones, load_scene, scene_truth, write_mp4

from harness import Stack, wait_until

MODEL = Path(__file__).resolve().parents[1] / "models" / "citygw-street-v2.onnx"
STALL_START_S, RUBBISH_START_S = 10, 15  # from the builtin scene; checked in the fixture
LAST_END_S = 75


@pytest.fixture(scope="module")
def scene_clips(tmp_path_factory):
    """The builtin scene, its truth, and one H.264 MP4 per camera (rendered once)."""
    scene = load_scene(BUILTIN_VIDEO_SCENE)
    truth = scene_truth(scene)
    stall, rubbish = (a for a in scene.actors if a.id in ("stall-1", "rubbish-1"))
    assert (stall.start_s, rubbish.start_s, rubbish.end_s) == (
        STALL_START_S,
        RUBBISH_START_S,
        LAST_END_S,
    )
    out = tmp_path_factory.mktemp("rendered")
    clips = {c.id: write_mp4(scene, c.id, out / f"{c.id}.mp4") for c in scene.cameras}
    return scene, truth, clips


def video_config(scene, server: RtspServerProcess) -> dict:
    return {
        "cameras": [
            {"id": c.id, "url": server.url(f"/{c.id}"), "analyse_fps": 2,
             "zones": camera_zones(scene, c.id), "offline_after_s": 60, "stall_timeout_s": 3}
            for c in scene.cameras
        ],
        "detector": {"model": str(MODEL), "conf": 0.35},
        # clear_after_s outlasts a passer-by walking in front of the stall (several seconds
        # from CAM-B's angle) and still clears before the clip loops at 90 s
        "rules": {"stall_dwell_s": 8, "rubbish_dwell_s": 8, "stationary_s": 3,
                  "clear_after_s": 10},
    }  # fmt: skip


def wait_for_both_cases_to_clear(stack: Stack) -> list[dict]:
    def cleared() -> bool:
        cases = stack.cases()
        return len(cases) >= 2 and all(
            any(e["state"] == "cleared" for e in case["evidence"]) for case in cases
        )

    wait_until(cleared, "the stall and dumping cases and their cleared evidence", 120)
    return stack.cases()


def watched(street: Street) -> tuple[list[dict], float]:
    """The cases once both cleared, and the scenario time they were read at (read then:
    the clip loops at 90 s and the stall comes back)."""
    return wait_for_both_cases_to_clear(street.stack), street.scenario_s()


def restarted(street: Street) -> tuple[float, list[dict], float]:
    """Both streams killed and restarted at once as soon as both cases are filed: the
    scenario time of the kill, then ``watched``'s cases and time.

    Restarted at once: the outage is the server's start-up plus the gateway's reconnect
    back-off, seconds already. While a camera's downtime counts as absence of the bags
    (rules/video_rules.py), a downtime beyond clear_after_s clears the alert too early."""
    stack = street.stack
    wait_until(lambda: len(stack.cases()) == 2, "both cases filed before the streams die", 90)
    killed_s = street.kill_streams()
    return killed_s, *watched(street)


@pytest.fixture(scope="module")
def streets(request, tmp_path_factory, scene_clips):
    """A street per test on the same clips, side by side: one watched, one whose streams
    die; each test's street is the one named after it."""
    scene, _, clips = scene_clips
    yield from streets_side_by_side(
        request,
        tmp_path_factory,
        [f"/{camera}=file:{clip}" for camera, clip in clips.items()],
        partial(video_config, scene),
        [
            (test_stall_and_rubbish_seen_by_two_cameras_are_exactly_the_truth, watched),
            (test_streams_killed_and_restarted_mid_incident_give_no_duplicate, restarted),
        ],
    )


@pytest.fixture
def street(request, streets) -> Running:
    return this_test(request, streets)


def test_stall_and_rubbish_seen_by_two_cameras_are_exactly_the_truth(street, scene_clips):
    stack, truth = street.part.stack, scene_clips[1]
    cases, cleared_s = street.outcome()
    assert cleared_s >= LAST_END_S - 5  # cleared after removal
    report = compare_cases(truth, cases)
    assert report.ok, report.render() + "\n" + stack.gateway.tail()
    by_class = {case["class_code"]: case for case in cases}
    assert sorted(by_class) == ["06010", "09006"]  # nothing for the umbrellas or the bin
    for case in by_class.values():
        firing = [e for e in case["evidence"] if e["state"] == "firing"]
        shown = [(e["source_id"], e["state"], e["summary"]) for e in case["evidence"]]
        assert sorted(e["source_id"] for e in firing) == ["CAM-A", "CAM-B"], shown
    dumping = next(e for e in by_class["06010"]["evidence"] if e["state"] == "firing")
    assert len(dumping["media"]) == 2  # the frame with boxes and zone, and "before"


def test_streams_killed_and_restarted_mid_incident_give_no_duplicate(street, scene_clips):
    stack, truth = street.part.stack, scene_clips[1]
    killed_s, cases, cleared_s = street.outcome()
    assert killed_s < LAST_END_S - 5  # both still there
    # The outage is no absence: cleared only after the stall and the bags were removed.
    assert cleared_s >= LAST_END_S - 5, cases
    report = compare_cases(truth, cases)
    assert report.ok, report.render() + "\n" + stack.gateway.tail()
    cameras = stack.gateway_stats()["video"]["cameras"]
    assert all(cameras[c]["reconnects"] >= 1 for c in ("CAM-A", "CAM-B")), cameras
