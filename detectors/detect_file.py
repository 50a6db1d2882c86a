"""Run a detector over one image or video file: the `citygw detect PATH --model MODEL` command.

For checking a model against footage from a real camera before it is configured, so the output
is one JSON-ready dict per detection, easy to read, diff and count.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from detectors.backends import Detector, load_detector


class InputError(ValueError):
    """A path that is neither a readable image nor a readable video."""


def detect_path(
    path: str | Path,
    model: str | Path | Detector,
    backend: str = "onnxruntime",
    conf: float = 0.25,
    every_n: int = 1,
) -> Iterator[dict]:
    """Detections in an image (frame 0) or in every `every_n`-th frame of a video, as dicts
    `{"frame": int, "label": str, "score": float, "box": [x1, y1, x2, y2]}`.

    The input is opened and the model loaded before this returns, so a bad path raises
    InputError (and a bad model ModelError) here rather than at the first iteration. `model`
    may be an already loaded Detector, whose own threshold then applies instead of `conf`.
    """
    if every_n < 1:
        raise ValueError(f"every_n must be at least 1, got {every_n}")
    frames = _open_frames(Path(path), every_n)
    detector = model if not isinstance(model, str | Path) else load_detector(model, backend, conf)
    return _detections(frames, detector)


def _detections(frames: Iterator[tuple[int, np.ndarray]], detector: Detector) -> Iterator[dict]:
    for index, frame in frames:
        for found in detector.detect([frame])[0]:
            yield {
                "frame": index,
                "label": found.label,
                "score": round(found.score, 3),
                "box": [round(v) for v in found.box],
            }


def _open_frames(path: Path, every_n: int) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, BGR frame) pairs; an image first, since OpenCV's video reader would also
    open a JPEG as a one-frame "video" through its image-sequence backend."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is not None:
        return iter([(0, image)])
    capture = cv2.VideoCapture(str(path))
    ok, first = capture.read() if capture.isOpened() else (False, None)
    if not ok:
        capture.release()
        raise InputError(f"{path}: neither an image nor a video that OpenCV can decode")
    return _video_frames(capture, first, every_n)


def _video_frames(
    capture: cv2.VideoCapture, first: np.ndarray, every_n: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Every `every_n`-th frame; the skipped ones are only grabbed, not converted to BGR."""
    try:
        yield 0, first
        index = 0
        while True:
            for _ in range(every_n - 1):
                if not capture.grab():
                    return
            ok, frame = capture.read()
            if not ok:
                return
            index += every_n
            yield index, frame
    finally:
        capture.release()
