"""`citygw simulate video`: the rendered scene's truth, the gateway camera config for it,
and live RTSP mounts that a real decoder reads."""

from __future__ import annotations

import json

import yaml

from detectors.config import CameraSettings
from detectors.sources import RtspSource
from simulators.mosquitto import free_port
from simulators.rtsp_server import describe_status

from harness import Service, wait_until

CAMERAS = ["CAM-A", "CAM-B"]  # the builtin scene's


def test_serves_each_camera_and_writes_truth_and_camera_config(tmp_path):
    port = free_port()
    truth, cameras = tmp_path / "truth.json", tmp_path / "cameras.yaml"
    video = Service(
        "simulate-video",
        ["simulate", "video", "--truth", str(truth), "--cameras-out", str(cameras),
         "--serve", "--port", str(port)],
        tmp_path,
    )  # fmt: skip
    video.start()
    try:
        # Ready when every camera's mount answers a DESCRIBE: its stream has started (the
        # files are written before serving begins).
        for camera in CAMERAS:
            url = f"rtsp://127.0.0.1:{port}/{camera}"
            wait_until(lambda url=url: describe_status(url, 10) == 200, url, 120, video)
        expected = json.loads(truth.read_text(encoding="utf-8"))["expected_cases"]
        assert [(c["class_code"], c["devices"]) for c in expected] == [
            ("09006", CAMERAS),
            ("06010", CAMERAS),
        ]
        config = yaml.safe_load(cameras.read_text(encoding="utf-8"))["cameras"]
        settings = [CameraSettings(**camera) for camera in config]
        assert [s.id for s in settings] == CAMERAS
        assert [s.url for s in settings] == [f"rtsp://127.0.0.1:{port}/{c}" for c in CAMERAS]
        assert [[z.id for z in s.zones] for s in settings] == [["Z-STALL", "Z-DUMP"]] * 2
        for camera in settings:
            frames = RtspSource(camera.url, analyse_fps=2).frames()
            frame = next(frames)
            assert frame.image.shape == (360, 640, 3)
            frames.close()
    finally:
        video.stop()
