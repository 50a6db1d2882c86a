"""The street footage and zones the video benchmarks share (bench/video.py, bench/cameras.py).

A real 1080p25 street clip, looped and re-encoded H.264 with one keyframe per second (a GOP of
25, as most city cameras are set for 1 analysed frame/s), and two zones on it: the lower half,
which people walk through (busy: the motion gate never skips it), and a patch of paving
nobody crosses (quiet: the gate skips ~90 % of its frames).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT.parent / "shared" / "assets"
CLIP = ASSETS / "videos" / "socialdist_pedestrians.mp4"
DEFAULT_MODEL = ASSETS / "models" / "yolo11n_int8.onnx"
# The project's own model (street classes COCO lacks), then the other shared COCO models.
OTHER_MODELS = [ROOT / "models" / "citygw-street-v2.onnx"] + [
    ASSETS / "models" / name for name in ("yolox_nano.onnx", "yolov8n_int8.onnx")
]

ZONE = {"id": "Z", "type": "no_dumping", "polygon": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]],
        "lat": 26.08, "lon": 119.29}  # fmt: skip
# Paving in the lower left of the clip that nobody crosses, short of the litter bin (which
# the COCO model calls a "suitcase": an object in the zone suspends gating): a quiet zone.
QUIET_ZONE = {**ZONE, "polygon": [[0, 0.75], [0.6, 0.75], [0.6, 1], [0, 1]]}
SCENES = {"busy": ZONE, "quiet": QUIET_ZONE}


def make_stream_file(out: Path, seconds: int) -> Path:
    """Loop the clip to ``seconds`` and re-encode it H.264 with one keyframe per second
    (``-sc_threshold 0``: no extra keyframes at scene cuts, so the GOP is exactly 25)."""
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(CLIP),
         "-t", str(seconds), "-an", "-c:v", "libx264", "-preset", "veryfast", "-g", "25",
         "-sc_threshold", "0", "-pix_fmt", "yuv420p", str(out)],
        check=True,
    )  # fmt: skip
    return out
