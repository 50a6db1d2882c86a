"""Fit a frame of any size into a model's fixed input without distorting it, and map boxes back.

Two placements exist in the wild and a model only works with the one it was trained with:
Ultralytics centres the resized image (padding split between both sides), YOLOX puts it at the
top-left corner (all padding right and bottom). Both pad with grey 114.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How one frame was placed in the model input: input = original * scale + pad."""

    scale: float
    pad_x: int
    pad_y: int

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Map (N, 4) x1y1x2y2 boxes from original-frame pixels to model-input pixels."""
        offset = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], np.float32)
        return boxes * self.scale + offset

    def to_original(self, boxes: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
        """Map (N, 4) x1y1x2y2 boxes from model-input pixels back to the original frame, clipped
        to it (a box may reach into the padding when an object touches the frame's edge)."""
        offset = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], np.float32)
        out = (boxes - offset) / self.scale
        height, width = frame_shape[:2]
        np.clip(out[:, 0::2], 0, width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, height, out=out[:, 1::2])
        return out


def letterbox(
    frame: np.ndarray, size: tuple[int, int], centre: bool
) -> tuple[np.ndarray, Letterbox]:
    """Resize `frame` (H, W, 3) to fit `size` (height, width) keeping its aspect ratio, pad the
    rest with grey 114, and return the padded image with the mapping used.

    `centre=True` reproduces Ultralytics' LetterBox (scale-up allowed, padding rounded the way
    it rounds, so boxes match its own predictor); `centre=False` reproduces YOLOX's
    preproc (truncated size, image at top-left).
    """
    height, width = frame.shape[:2]
    in_h, in_w = size
    scale = min(in_h / height, in_w / width)
    if centre:
        new_w, new_h = round(width * scale), round(height * scale)
        pad_x, pad_y = round((in_w - new_w) / 2 - 0.1), round((in_h - new_h) / 2 - 0.1)
    else:
        new_w, new_h = int(width * scale), int(height * scale)
        pad_x = pad_y = 0
    resized = frame
    if (new_h, new_w) != (height, width):
        resized = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    padded = np.full((in_h, in_w, 3), PAD_VALUE, dtype=np.uint8)
    padded[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    return padded, Letterbox(scale, pad_x, pad_y)
