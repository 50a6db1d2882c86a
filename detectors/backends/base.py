"""The one interface every detector backend meets, so the video pipeline never knows which runs.

Boxes are always in the pixel coordinates of the frame the caller passed in, whatever the
model's own input size and padding were: zones, tracks and evidence crops all live in the
camera's frame, so no backend may leak its letterbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class Detection:
    """One object found in one frame.

    `box` is (x1, y1, x2, y2) in pixels of the original frame, clipped to it.
    """

    label: str
    class_id: int
    score: float
    box: tuple[float, float, float, float]


class ModelError(ValueError):
    """A model file that cannot be used: the message names the file, what was expected and
    what was found, so an operator can fix the configuration without reading code."""


class Detector(Protocol):
    """A loaded model. `detect` takes BGR uint8 frames of any size, batched, and returns one
    list of detections per frame, in the same order."""

    names: list[str]
    input_size: tuple[int, int]  # (height, width) the model sees after letterboxing

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]: ...
