"""Cameras in the gateway process: bad inputs never crash it; a camera that stays down is a
maintenance case of its own, and its recovery clears it. Real RTSP server, real decoder,
real model (a COCO model from the shared assets)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from simulators.rtsp_server import RtspServerProcess

from harness import CLI, Stack, free_port, wait_until

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
MODEL = ASSETS / "models" / "yolo11n_int8.onnx"
pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason=f"model not found at {MODEL}")

ZONE = {
    "id": "Z1",
    "type": "no_vending",
    "polygon": [[0.1, 0.5], [0.9, 0.5], [0.9, 0.95], [0.1, 0.95]],
    "lat": 26.0812,
    "lon": 119.2967,
    "address": "福州市鼓楼区五四路",
    "grid_code": "350102001001001",
}


def video_config(url: str, **camera: object) -> dict:
    return {
        "cameras": [{"id": "CAM-1", "url": url, "zones": [ZONE], **camera}],
        "detector": {"model": str(MODEL)},
    }


def camera_stats(s: Stack) -> dict:
    return s.gateway_stats()["video"]["cameras"]["CAM-1"]


def maintenance_cases(s: Stack) -> list[dict]:
    return [c for c in s.cases() if c["class_code"] == "99201"]


def test_unreachable_camera_is_retried_and_filed_as_a_maintenance_case(stack):
    s = stack(video=video_config(f"rtsp://127.0.0.1:{free_port()}/nothing", offline_after_s=2))
    wait_until(lambda: camera_stats(s)["reconnects"] >= 2, "reconnect attempts", 60)
    wait_until(lambda: len(maintenance_cases(s)) == 1, "camera-offline case", 60)
    [case] = maintenance_cases(s)
    assert (case["priority"], case["source"], case["class_name"]) == (
        "low",
        "video",
        "视频监控设备离线",
    )
    assert [e["source_id"] for e in case["evidence"]] == ["CAM-1"]
    assert case["evidence"][0]["media"] == []  # never seen, and no snapshot URI to ask
    assert camera_stats(s)["status"] == "offline"
    assert s.gateway_http.get("/healthz").json()["mqtt_connected"] is True


def test_a_file_that_is_not_video_is_reported_not_retried(stack, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    s = stack(video=video_config(str(notes), offline_after_s=2))
    wait_until(lambda: camera_stats(s)["status"] == "offline", "offline status", 60)
    assert "video" in camera_stats(s)["last_error"]
    time.sleep(2)  # a window for a wrong retry to show
    assert camera_stats(s)["reconnects"] == 0
    wait_until(lambda: len(maintenance_cases(s)) == 1, "camera-offline case", 60)


def test_a_model_of_the_wrong_kind_is_a_clear_error_at_start(tmp_path):
    s = Stack(
        tmp_path,
        video={
            **video_config("rtsp://127.0.0.1:1/x"),
            "detector": {"model": str(tmp_path / "gateway.yaml")},
        },
    )
    result = subprocess.run(
        [*CLI, "run", "-c", str(s.config_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "expected an ONNX model" in result.stderr


def test_camera_down_then_back_clears_its_maintenance_case(stack, tmp_path):
    port = free_port()
    server = RtspServerProcess(["/cam=pattern"], port, log=tmp_path / "rtsp.log")
    server.start()
    try:
        s = stack(video=video_config(server.url("/cam"), offline_after_s=2, stall_timeout_s=2))
        wait_until(lambda: camera_stats(s)["status"] == "online", "camera online", 60)
        wait_until(lambda: camera_stats(s)["frames"] >= 2, "frames analysed", 60)
        server.kill()
        wait_until(lambda: len(maintenance_cases(s)) == 1, "camera-offline case", 60)
        # No snapshot URI (not ONVIF): the case shows the last frame the camera gave.
        [picture] = maintenance_cases(s)[0]["evidence"][0]["media"]
        assert s.gateway_http.get(picture).content[:2] == b"\xff\xd8"  # a JPEG
        server.start()
        wait_until(lambda: camera_stats(s)["status"] == "online", "camera back online", 60)
        wait_until(
            lambda: (
                [e["state"] for e in maintenance_cases(s)[0]["evidence"]] == ["firing", "cleared"]
            ),
            "the case's cleared evidence",
            60,
        )
    finally:
        server.stop()
    assert len(maintenance_cases(s)) == 1
    assert camera_stats(s)["reconnects"] >= 1
    assert s.gateway_stats()["video"]["frames_analysed"] >= 2
