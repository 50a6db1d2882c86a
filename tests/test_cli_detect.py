"""`citygw detect`: one JSON object per detection for operators checking a model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
pytestmark = pytest.mark.skipif(not ASSETS.is_dir(), reason=f"test assets not found at {ASSETS}")


def citygw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_detect_prints_one_json_object_per_detection():
    model = str(ASSETS / "models" / "yolo11n_int8.onnx")
    result = citygw("detect", str(ASSETS / "images" / "bus.jpg"), "--model", model)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["label"] for r in rows) == ["bus", "person", "person", "person", "person"]
    assert all(set(r) == {"frame", "label", "score", "box"} and r["frame"] == 0 for r in rows)
    assert all(len(r["box"]) == 4 and all(isinstance(v, int) for v in r["box"]) for r in rows)


def test_detect_refuses_a_file_that_is_not_media_and_a_model_that_is_not_one(tmp_path):
    model = str(ASSETS / "models" / "yolo11n_int8.onnx")
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    bad_input = citygw("detect", str(text), "--model", model)
    assert bad_input.returncode == 2 and "neither an image nor a video" in bad_input.stderr
    bad_model = citygw("detect", str(ASSETS / "images" / "bus.jpg"), "--model", str(text))
    assert bad_model.returncode == 2 and "expected an ONNX model" in bad_model.stderr
