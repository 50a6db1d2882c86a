"""Class-aware non-maximum suppression in numpy, so the ONNX backend needs no torch.

Boxes of different classes never suppress each other (a person standing at a stall must not
erase the stall): each class is shifted to its own region of coordinate space, then one greedy
NMS runs over all boxes at once.
"""

from __future__ import annotations

import numpy as np


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS over (N, 4) x1y1x2y2 boxes: indices of the kept boxes, best score first.

    Each step compares the best remaining box with all others in one vectorised IoU.
    """
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        width = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        height = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = width * height
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """NMS per class in one pass: boxes are offset by class id times a stride wider than the
    whole span of coordinates, so boxes of different classes can never overlap."""
    if boxes.size == 0:
        return np.empty(0, dtype=np.int64)
    stride = float(boxes.max() - boxes.min()) + 1.0
    return nms(boxes + (class_ids * stride)[:, None], scores, iou_threshold)
