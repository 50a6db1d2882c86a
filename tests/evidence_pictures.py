"""A video alert and pictures for the evidence tests."""

from __future__ import annotations

import numpy as np

from domain import Alert, AlertState, Location, Priority

# pictures named <key, "/" as "_">_<ts>[_before].jpg
ALERT = Alert("CAM-A/z1/dumping", "CAM-A", "dumping", AlertState.FIRING, "01010",
              Priority.NORMAL, Location(31.2, 121.4), 1_700_000_000_000,
              origin="video")  # fmt: skip
STEM = "CAM-A_z1_dumping_1700000000000"


def scene(seed: int, height: int = 480, width: int = 640) -> np.ndarray:
    """Noise: JPEG cannot shrink it much, so its size is far from any limit by accident."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
