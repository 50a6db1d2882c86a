"""Skip inference on frames where nothing moved, but re-check on a slower cadence.

At one analysed frame per second a quiet street changes little; the detector's previous
answer is still right for objects that stand still. Reusing it saves most inference on
quiet cameras. Dwell timers stay true because the gate forces a fresh detection every
``recheck_s`` even without motion (a stall packed away slowly, lighting drift).
"""

from __future__ import annotations

import cv2
import numpy as np

THUMB = (64, 36)  # enough to see a person move, cheap to compare


class MotionGate:
    def __init__(self, threshold: float = 2.0, recheck_s: float = 10.0) -> None:
        self._threshold = threshold
        self._recheck_ms = int(recheck_s * 1000)
        self._last_thumb: np.ndarray | None = None
        self._last_run_ms = 0

    def needs_inference(self, frame_bgr: np.ndarray, ts_ms: int) -> bool:
        """True when the frame moved (mean absolute change of a grey thumbnail above
        ``threshold`` grey levels) or the last inference is older than ``recheck_s``."""
        thumb = cv2.resize(
            cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY), THUMB, interpolation=cv2.INTER_AREA
        ).astype(np.float32)
        last = self._last_thumb
        due = (
            last is None
            or last.shape != thumb.shape
            or ts_ms - self._last_run_ms >= self._recheck_ms
            or float(np.mean(np.abs(thumb - last))) > self._threshold
        )
        if due:
            self._last_thumb = thumb
            self._last_run_ms = ts_ms
        return due
