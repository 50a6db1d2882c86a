"""End to end on real footage: two RTSP cameras → the gateway's video pipeline → one case.

The footage is the shared 1080p pedestrian-street clip with real bin bags (cut from a
photo of Amsterdam pavement rubbish) composited onto the street from 15 s to 50 s — the
staged dumping, so the ground truth is known exactly. The project's RTSP server serves it
on two mounts, CAM-A and CAM-B: two cameras watching the same no-dumping zone (the same
view twice; the synthetic simulator with different angles is separate work). The real
COCO model, PyAV decoder, tracker, static-object model and rules run in the gateway
process; dwell times are shortened for the test.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from harness import Stack, free_port, wait_until

from simulators.rtsp_server import RtspServerProcess
from simulators.truth import compare_cases

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
CLIP = ASSETS / "videos" / "socialdist_pedestrians.mp4"
BAGS = (
    ASSETS / "images" / "amsterdam_garbage" / "mdc_photo_mdc_0da290_cdv_photo_002_1493144966294.jpg"
)
MODEL = ASSETS / "models" / "yolo11n_int8.onnx"
pytestmark = pytest.mark.skipif(
    not (CLIP.is_file() and BAGS.is_file() and MODEL.is_file()),
    reason=f"shared test assets not found under {ASSETS}",
)

DUMPED_FROM_S, REMOVED_AT_S = 15, 50
TRUTH = {"expected_cases": [
    {"label": "bags dumped on the street", "class_code": "06010", "priority": "urgent",
     "devices": ["CAM-A", "CAM-B"]},
]}  # fmt: skip
ZONE = {
    "id": "Z-DUMP",
    "type": "no_dumping",
    "polygon": [[0.0, 0.62], [0.36, 0.62], [0.36, 1.0], [0.0, 1.0]],
    "lat": 26.0795,
    "lon": 119.2981,
    "address": "福州市鼓楼区东街口步行街",
    "grid_code": "350102002001002",
}


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> Path:
    """60 s of the street at 960x540, 10 fps, 1 s GOP, bags present 15–50 s."""
    work = tmp_path_factory.mktemp("footage")
    photo = cv2.imread(str(BAGS))
    crop = photo[270:430, 480:760]
    alpha = np.zeros(crop.shape[:2], np.float32)
    h, w = alpha.shape
    cv2.ellipse(alpha, (w // 2, h // 2 + 5), (w // 2 - 6, h // 2 - 8), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (31, 31), 0)
    cv2.imwrite(str(work / "bags.png"), np.dstack([crop, (alpha * 255).astype(np.uint8)]))
    out = work / "street_dumping.mp4"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(CLIP),
         "-i", str(work / "bags.png"), "-filter_complex",
         "[0:v]scale=960:540[bg];[1:v]scale=140:-1[fg];"
         f"[bg][fg]overlay=x=90:y=400:enable='between(t,{DUMPED_FROM_S},{REMOVED_AT_S})'",
         "-t", "60", "-an", "-r", "10", "-c:v", "libx264", "-preset", "veryfast", "-g", "10",
         "-pix_fmt", "yuv420p", str(out)],
        check=True,
    )  # fmt: skip
    return out


def video_config(server: RtspServerProcess) -> dict:
    return {
        "cameras": [
            {"id": cam, "url": server.url(f"/{cam}"), "analyse_fps": 2, "zones": [ZONE],
             "offline_after_s": 30, "stall_timeout_s": 3}
            for cam in ("CAM-A", "CAM-B")
        ],
        "detector": {"model": str(MODEL)},
        "rules": {"rubbish_dwell_s": 6, "stationary_s": 3, "clear_after_s": 6},
    }  # fmt: skip


@pytest.fixture
def street(tmp_path, footage):
    server = RtspServerProcess(
        [f"/CAM-A=file:{footage}", f"/CAM-B=file:{footage}"], free_port(),
        log=tmp_path / "rtsp.log",
    )  # fmt: skip
    server.start()
    stack = Stack(tmp_path, video=video_config(server))
    stack.start()
    yield server, stack
    stack.stop()
    server.stop()


def devices(case: dict) -> list[str]:
    return sorted({e["source_id"] for e in case["evidence"]})


def wait_for_the_case_to_clear(stack: Stack) -> dict:
    def cleared() -> bool:
        cases = stack.cases()
        return len(cases) == 1 and any(e["state"] == "cleared" for e in cases[0]["evidence"])

    wait_until(cleared, "the dumping case and its cleared evidence", 90)
    return stack.cases()[0]


def test_dumped_bags_seen_by_two_cameras_are_one_case(street):
    server, stack = street
    case = wait_for_the_case_to_clear(stack)
    elapsed = time.time() - server.scenario_start
    assert elapsed >= REMOVED_AT_S  # cleared only after the bags were taken away
    report = compare_cases(TRUTH, stack.cases())
    assert report.ok, report.render() + "\n" + stack.gateway.tail()
    assert (case["source"], case["class_name"]) == ("video", "暴露垃圾")
    firing = [e for e in case["evidence"] if e["state"] == "firing"]
    assert sorted(e["source_id"] for e in firing) == ["CAM-A", "CAM-B"]
    for media in firing[0]["media"]:
        picture = stack.gateway_http.get(media)
        assert picture.status_code == 200 and picture.content[:2] == b"\xff\xd8"
    assert len(firing[0]["media"]) == 2  # the frame with boxes and zone, and "before"


def test_stream_killed_and_restarted_mid_incident_gives_no_duplicate(street):
    server, stack = street
    wait_until(lambda: time.time() - server.scenario_start > DUMPED_FROM_S + 6, "dumping", 60)
    server.kill()
    time.sleep(3)
    server.start()
    wait_for_the_case_to_clear(stack)
    report = compare_cases(TRUTH, stack.cases())
    assert report.ok, report.render() + "\n" + stack.gateway.tail()
    cameras = stack.gateway_stats()["video"]["cameras"]
    assert all(cameras[c]["reconnects"] >= 1 for c in ("CAM-A", "CAM-B")), cameras
