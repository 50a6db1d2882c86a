"""Skip inference on frames where nothing changed in the camera's zones; re-check slowly.

At one analysed frame per second a quiet zone changes little; the detector's previous
answer is still right for objects that stand still. Reusing it saves most inference on
quiet cameras. Every frame is still analysed (tracker, static objects, dwell timers): only
the detector call is skipped, and its last detections are reused.

What counts as change, and why:

- **Only inside the zones**: the union of the camera's zone polygons, rasterised at
  thumbnail size. Traffic on the road beside a pavement zone never needs the detector; a
  camera without zones watches the whole picture.
- **Against the thumbnail of the last inference**, not the previous frame: a slow change
  (a bag set down while someone stands in front, then revealed) adds up until it counts.
- **Noise-scaled, counted, not averaged**: a pixel changed when its difference, after
  removing the zone's median shift (exposure, clouds), exceeds ``noise_k`` robust noise
  sigmas (and ``min_level`` grey levels). The frame needs inference when at least
  ``min_changed_px`` thumbnail pixels changed: sensor and compression speckle stay below
  that, a person or a dumped bag of a few thumbnail pixels does not. The sigma is capped at
  ``max_sigma`` so a large object filling most of the zone cannot raise its own threshold.
- **Only empty or settled zones are gated.** Until ``recheck_s`` after the last analysis
  that placed a moving or newly stopped object in a zone, every frame is inferred: a real
  detector flickers between classes on a dumped bag ("suitcase", "car"), and the tracker
  only averages that out over fresh answers; one stale answer reused for seconds loses the
  rubbish track, and a stale vehicle box masks the bag from the static-object path.
  Measured on the footage test's clip: gating an occupied zone lost the dumping case. An
  object that has stood ``settled_s`` no longer holds the zone open (a fixture the model
  misnames would otherwise disable gating for good).
- A fresh detection every ``recheck_s`` even without change (lighting drift, a stall packed
  away slowly).

State is one thumbnail, one mask and three numbers per camera; the cost is one area resize of
the frame plus a few thumbnail-sized operations (see bench/video.py for µs per frame).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from detectors.zones import Zone

THUMB_WIDTH = 160  # a dumped bag ~ 1/40 of a 1080p width is still ~4 thumbnail pixels wide
_NEIGHBOURS = np.ones((3, 3), dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class MotionGateParams:
    recheck_s: float = 10.0  # a fresh detection at least this often
    noise_k: float = 5.0  # a changed pixel differs by more than this many noise sigmas
    min_level: float = 8.0  # ...and by at least this many grey levels
    max_sigma: float = 3.0  # cap on the noise sigma: a big change cannot hide itself
    min_changed_px: int = 4  # changed thumbnail pixels in the zones that need inference
    settled_s: float = 120.0  # objects standing longer no longer hold a zone open


class MotionGate:
    """One camera's gate; ``zones`` empty means the whole picture matters."""

    def __init__(self, zones: Sequence[Zone] = (), params: MotionGateParams | None = None) -> None:
        self.params = params or MotionGateParams()
        self._zones = list(zones)
        self._recheck_ms = int(self.params.recheck_s * 1000)
        self._mask: np.ndarray | None = None  # bool, thumbnail size
        self._last_thumb: np.ndarray | None = None  # float32 grey at the last inference
        self._last_run_ms = 0
        self._occupied_until_ms = 0

    def needs_inference(self, frame_bgr: np.ndarray, ts_ms: int) -> bool:
        """True while a zone was seen occupied within ``recheck_s``, when something changed
        inside the zones since the last inference, or when that inference is older than
        ``recheck_s``. A True answer makes this frame the new reference: the caller must
        run the detector on it."""
        thumb = self._thumbnail(frame_bgr)
        last = self._last_thumb
        due = (
            ts_ms < self._occupied_until_ms
            or last is None
            or last.shape != thumb.shape
            or ts_ms - self._last_run_ms >= self._recheck_ms
            or self.changed_pixels(thumb, last) >= self.params.min_changed_px
        )
        if due:
            self._last_thumb = thumb
            self._last_run_ms = ts_ms
        return due

    def objects_in_zones(self, ts_ms: int, stationary_ms: Iterable[int]) -> None:
        """The analysis of the frame at ``ts_ms`` placed objects standing still this long
        in the zones: while any is moving or newly stopped, infer every frame until
        ``recheck_s`` after. One that has stood ``settled_s`` is settled (a litter bin the
        model takes for a suitcase, a bag long since reported): the recheck keeps its
        answer fresh, and it must not keep the detector running on every frame forever."""
        settled_ms = self.params.settled_s * 1000
        if any(standing < settled_ms for standing in stationary_ms):
            self._occupied_until_ms = ts_ms + self._recheck_ms

    def changed_pixels(self, thumb: np.ndarray, reference: np.ndarray) -> int:
        """How many zone pixels changed beyond noise between ``reference`` and ``thumb``.

        A pixel counts when either picture's value lies outside the other's 3 × 3
        neighbourhood range: a pole swaying by a pixel or compression ringing moves an edge,
        it does not bring a value that was nowhere near. Both directions, because an object
        that leaves is as much a change as one that arrives (its texture would otherwise
        span the paving it leaves behind)."""
        mask = self._mask_for(thumb.shape)
        diff = (thumb - reference)[mask]
        if diff.size == 0:
            return 0
        shift = float(np.median(diff))
        sigma = min(1.4826 * float(np.median(np.abs(diff - shift))), self.params.max_sigma)
        level = max(self.params.noise_k * sigma, self.params.min_level)
        now = thumb - shift
        outside = np.maximum.reduce(
            [
                now - cv2.dilate(reference, _NEIGHBOURS),
                cv2.erode(reference, _NEIGHBOURS) - now,
                reference - cv2.dilate(now, _NEIGHBOURS),
                cv2.erode(now, _NEIGHBOURS) - reference,
            ]
        )
        return int(np.count_nonzero(outside[mask] > level))

    def _thumbnail(self, frame_bgr: np.ndarray) -> np.ndarray:
        height, width = frame_bgr.shape[:2]
        size = (THUMB_WIDTH, max(1, round(height * THUMB_WIDTH / width)))
        # Every n-th pixel first: a 1080p area resize costs ~1.3 ms, this ~0.5 ms, and each
        # thumbnail pixel still averages ~9 samples (enough to flatten sensor noise).
        step = max(1, width // (3 * THUMB_WIDTH))
        small = cv2.resize(frame_bgr[::step, ::step], size, interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(small.astype(np.float32), cv2.COLOR_BGR2GRAY)

    def _mask_for(self, shape: tuple[int, ...]) -> np.ndarray:
        """The union of the zones at thumbnail size (kept for the last size only)."""
        if self._mask is not None and self._mask.shape == shape[:2]:
            return self._mask
        height, width = shape[:2]
        if not self._zones:
            self._mask = np.ones((height, width), dtype=bool)
            return self._mask
        canvas = np.zeros((height, width), dtype=np.uint8)
        for zone in self._zones:
            polygon = np.round(zone.polygon_px((width, height))).astype(np.int32)
            cv2.fillPoly(canvas, [polygon], 1)
        self._mask = canvas.astype(bool)
        return self._mask
