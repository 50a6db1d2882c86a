"""`citygw simulate video`: the rendered scene's truth, the gateway camera config for it,
and live RTSP mounts that a real decoder reads."""

from __future__ import annotations

import json
import subprocess

import yaml

from detectors.config import CameraSettings
from detectors.sources import RtspSource
from simulators.mosquitto import free_port

from harness import CLI, wait_until


def test_serves_each_camera_and_writes_truth_and_camera_config(tmp_path):
    port = free_port()
    truth, cameras = tmp_path / "truth.json", tmp_path / "cameras.yaml"
    proc = subprocess.Popen(
        [*CLI, "simulate", "video", "--truth", str(truth), "--cameras-out", str(cameras),
         "--serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_until(cameras.exists, "camera config", 30)
        expected = json.loads(truth.read_text(encoding="utf-8"))["expected_cases"]
        assert [(c["class_code"], c["devices"]) for c in expected] == [
            ("09006", ["CAM-A", "CAM-B"]),
            ("06010", ["CAM-A", "CAM-B"]),
        ]
        config = yaml.safe_load(cameras.read_text(encoding="utf-8"))["cameras"]
        settings = [CameraSettings(**camera) for camera in config]
        assert [s.id for s in settings] == ["CAM-A", "CAM-B"]
        assert [[z.id for z in s.zones] for s in settings] == [["Z-STALL", "Z-DUMP"]] * 2
        for camera in settings:
            frames = RtspSource(camera.url, analyse_fps=2).frames()
            frame = next(frames)
            assert frame.image.shape == (360, 640, 3)
            frames.close()
    finally:
        proc.terminate()
        proc.wait(10)
