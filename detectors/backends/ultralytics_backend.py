"""Models that only Ultralytics can run (.pt weights, OpenVINO folders, TensorRT engines).

Optional: Ultralytics pulls in torch, which a gateway on ONNX Runtime does not need, so it is
imported only when such a model is loaded, and its absence is a ModelError that says what to
install rather than an ImportError at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from detectors.backends.base import Detection, ModelError


class UltralyticsDetector:
    """A model run through `ultralytics.YOLO`, which does its own letterbox and NMS and already
    returns boxes in each frame's pixels."""

    def __init__(
        self,
        model: str | Path,
        conf: float = 0.25,
        iou: float = 0.45,
        names: list[str] | None = None,
    ) -> None:
        try:
            from ultralytics import YOLO
        except ImportError as exc:
            raise ModelError(
                f"{model}: the ultralytics backend needs `pip install ultralytics` (it brings "
                "torch); or export the model to ONNX and use the onnxruntime backend"
            ) from exc
        if not Path(model).exists():
            raise ModelError(f"{model}: model file or folder not found")
        try:
            self._model: Any = YOLO(str(model), task="detect")
        except Exception as exc:  # Ultralytics raises a variety of errors for unusable files
            raise ModelError(f"{model}: Ultralytics cannot load it as a detector: {exc}") from exc
        model_names = [self._model.names[i] for i in sorted(self._model.names)]
        if names is not None and len(names) != len(model_names):
            raise ModelError(
                f"{model}: the model has {len(model_names)} classes but {len(names)} names given"
            )
        self.names = list(names) if names is not None else model_names
        # .pt weights remember their training size; exported models keep theirs in metadata,
        # which Ultralytics applies itself at predict time, so imgsz is never passed to it.
        imgsz = self._model.overrides.get("imgsz", 640)
        self.input_size = (imgsz, imgsz) if isinstance(imgsz, int) else (imgsz[0], imgsz[1])
        self.conf = conf
        self.iou = iou

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Detect objects in BGR uint8 frames (Ultralytics takes numpy arrays as BGR)."""
        if not frames:
            return []
        results = self._model.predict(frames, conf=self.conf, iou=self.iou, verbose=False)
        return [self._detections(result) for result in results]

    def _detections(self, result: Any) -> list[Detection]:
        boxes = result.boxes
        xyxy = boxes.xyxy.cpu().numpy()
        scores = boxes.conf.cpu().numpy()
        class_ids = boxes.cls.cpu().numpy().astype(int)
        return [
            Detection(
                self.names[c],
                int(c),
                float(s),
                (float(b[0]), float(b[1]), float(b[2]), float(b[3])),
            )
            for b, s, c in zip(xyxy, scores, class_ids, strict=True)
        ]
