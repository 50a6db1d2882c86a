"""Detector backends behind one interface: `load_detector(model)` → `Detector`.

ONNX Runtime (CPU) is the default and needs nothing beyond the gateway's own dependencies;
Ultralytics is optional and loaded only when asked for.
"""

from __future__ import annotations

from pathlib import Path

from detectors.backends.base import Detection, Detector, ModelError
from detectors.backends.onnx_yolo import OnnxYoloDetector
from detectors.backends.ultralytics_backend import UltralyticsDetector

BACKENDS = ("onnxruntime", "ultralytics")

__all__ = ["BACKENDS", "Detection", "Detector", "ModelError", "load_detector"]


def load_detector(
    model: str | Path,
    backend: str = "onnxruntime",
    conf: float = 0.25,
    iou: float = 0.45,
    names: list[str] | None = None,
    threads: int | None = None,
    concurrent_runs: int | None = None,
) -> Detector:
    """Load `model` on `backend`, with its score and NMS IoU thresholds.

    `names` overrides the class names (it must match the model's class count). ONNX Runtime
    only: `threads` is the intra-op threads of one run (default 1) and `concurrent_runs` how
    many frames of a batch run at once (default one per core, at most 4). Raises ModelError
    for a model that cannot be used, naming the file and what was wrong.
    """
    if backend == "onnxruntime":
        return OnnxYoloDetector(
            model, conf=conf, iou=iou, names=names, threads=threads,
            concurrent_runs=concurrent_runs,
        )  # fmt: skip
    if backend == "ultralytics":
        return UltralyticsDetector(model, conf=conf, iou=iou, names=names)
    raise ModelError(f"{model}: unknown backend {backend!r}; expected one of {BACKENDS}")
