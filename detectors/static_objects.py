"""Class-agnostic detection of new static objects: dumping seen without a rubbish class.

COCO models know no "rubbish"; a trained one misses what it was not shown (a mattress, a
heap of debris). What every dumped thing shares is that it was not there before and then
stays. So this keeps a slow background of the scene and reports regions that differ from
it and have not changed for ``confirm_samples`` consecutive samples.

How it stays quiet on real cameras:

- **Reduced resolution** (``work_width``) and a light blur: sensor noise and compression
  speckle average out, and the per-sample cost is a few milliseconds.
- **Brightness normalisation**: each sample is fitted to the background by a robust
  gain/offset (inter-quartile range and median), so slow light drift, auto-exposure and
  passing clouds over the whole view never look like objects.
- **A noise-scaled threshold**: the difference must exceed ``noise_k`` times the sample's
  own robust noise level (and ``min_threshold`` grey levels).
- **People and vehicles are masked**: the background never learns them, they never count,
  and a blob mostly covered by one is dropped. Pixels hidden behind them hold their count,
  so a passer-by in front of a bag does not restart its timer.
- **Only background-like pixels learn**: a dumped bag is never blended into the background
  while it stays, until ``absorb_samples`` (hours) make it part of the scene for good.
- **Whatever was there from the start is background**: the first sample is the background,
  and pixels first seen behind a person or a vehicle are learnt when they are revealed.
- **A scene change re-learns**: when most of the view differs (camera moved, switched to
  night IR), the model restarts instead of reporting one giant object forever.

The colour background at ``evidence_width`` is kept with the same masks: it is the
"before" picture for evidence, the scene as it was without the new objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from detectors.zones import Box


@dataclass(frozen=True, slots=True)
class StaticObjectParams:
    work_width: int = 320  # analysis width in pixels (height keeps the aspect)
    evidence_width: int = 960  # width of the colour "before" picture
    min_sample_interval_ms: int = 750  # at 1 analysed fps every frame is a sample
    alpha: float = 0.02  # background learning rate per sample, background-like pixels only
    confirm_samples: int = 8  # consecutive unchanged samples before a region is static
    absorb_samples: int = 4 * 3600  # static this long → part of the background
    noise_k: float = 4.0  # threshold in robust noise sigmas
    min_threshold: float = 8.0  # ...and at least this many grey levels
    min_area_frac: float = 0.0005  # of the frame
    max_area_frac: float = 0.2  # of the frame
    mask_margin: float = 0.1  # person/vehicle boxes grown by this fraction of their size
    max_masked_frac: float = 0.3  # a blob box more covered by person/vehicle is dropped
    scene_change_frac: float = 0.5  # more than this of the view differs → re-learn


@dataclass(frozen=True, slots=True)
class StaticObject:
    """A new static region, as a box in the full frame's pixels; ``score`` in 0..1 grows
    with its contrast against the background."""

    box: Box
    score: float


class StaticObjectDetector:
    """One camera's background model; feed it every analysed frame."""

    def __init__(self, params: StaticObjectParams | None = None) -> None:
        self.params = params or StaticObjectParams()
        self._frame_size: tuple[int, int] | None = None
        self._last_sample_ms: int | None = None
        self._objects: list[StaticObject] = []
        self._bg: np.ndarray | None = None  # float32 grey, work size
        self._colour: np.ndarray | None = None  # float32 BGR, evidence size
        self._known = np.zeros((0, 0), dtype=bool)  # pixels seen unoccluded at least once
        self._count = np.zeros((0, 0), dtype=np.int32)  # consecutive static samples
        self._prev = np.zeros((0, 0), dtype=np.float32)  # previous aligned sample

    def update(
        self, frame_bgr: np.ndarray, ts_ms: int, masked: Sequence[Box]
    ) -> list[StaticObject]:
        """Take a sample (if one is due) and return the static objects now present.

        ``masked`` are the person and vehicle boxes of this frame, in frame pixels.
        """
        height, width = frame_bgr.shape[:2]
        if (width, height) != self._frame_size:
            self._frame_size = (width, height)
            self._bg = None  # a reconnect at another resolution starts a new model
        if (
            self._last_sample_ms is not None
            and self._bg is not None
            and ts_ms - self._last_sample_ms < self.params.min_sample_interval_ms
        ):
            return self._objects
        self._last_sample_ms = ts_ms
        self._objects = self._sample(frame_bgr, masked)
        return self._objects

    def background_bgr(self) -> np.ndarray | None:
        """The learnt scene without new objects, at the last frame's size (None before the
        first frame)."""
        if self._colour is None or self._frame_size is None:
            return None
        return cv2.resize(self._colour.astype(np.uint8), self._frame_size)

    def _sample(self, frame_bgr: np.ndarray, masked: Sequence[Box]) -> list[StaticObject]:
        p = self.params
        work = _scaled_size(frame_bgr, p.work_width)
        grey = cv2.cvtColor(
            cv2.resize(frame_bgr, work, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY
        )
        grey = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.0)
        colour = cv2.resize(
            frame_bgr, _scaled_size(frame_bgr, p.evidence_width), interpolation=cv2.INTER_AREA
        ).astype(np.float32)
        mask = self._mask(masked, work)
        if self._bg is None or self._colour is None:
            self._start(grey, colour, mask)
            return []
        bg = self._bg

        revealed = ~self._known & ~mask
        bg[revealed] = grey[revealed]
        self._set_colour(colour, revealed)
        self._known |= revealed
        valid = self._known & ~mask

        gain, offset = _fit_brightness(bg[valid], grey[valid])
        aligned = (grey - offset) / gain
        diff = np.abs(aligned - bg)
        sigma = 1.4826 * float(np.median(diff[valid])) if valid.any() else 0.0
        threshold = max(p.noise_k * sigma, p.min_threshold)
        foreground = (diff > threshold) & valid
        if foreground.sum() > p.scene_change_frac * max(int(valid.sum()), 1):
            self._start(grey, colour, mask)
            return []

        # Two samples differ by √2 × the noise of a sample against the averaged background.
        unchanged = np.abs(aligned - self._prev) <= 2.0 * threshold
        self._prev = aligned
        self._count = np.where(
            mask, self._count, np.where(foreground & unchanged, self._count + 1, 0)
        ).astype(np.int32)

        absorbed = self._count >= p.absorb_samples
        bg[absorbed] = aligned[absorbed]
        self._set_colour(colour, absorbed)
        self._count[absorbed] = 0
        learn = valid & ~foreground
        cv2.accumulateWeighted(grey, bg, p.alpha, learn.astype(np.uint8))
        self._blend_colour(colour, learn)

        return self._regions(self._count >= p.confirm_samples, diff, threshold, mask)

    def _start(self, grey: np.ndarray, colour: np.ndarray, mask: np.ndarray) -> None:
        self._bg = grey.copy()
        self._colour = colour.copy()
        self._known = ~mask
        self._count = np.zeros(grey.shape, dtype=np.int32)
        self._prev = grey.copy()

    def _mask(self, boxes: Sequence[Box], work: tuple[int, int]) -> np.ndarray:
        """Person/vehicle boxes (grown by ``mask_margin``) at work resolution."""
        assert self._frame_size is not None
        sx = work[0] / self._frame_size[0]
        sy = work[1] / self._frame_size[1]
        mask = np.zeros((work[1], work[0]), dtype=np.uint8)
        m = self.params.mask_margin
        for x1, y1, x2, y2 in boxes:
            dx, dy = (x2 - x1) * m, (y2 - y1) * m
            top_left = (int((x1 - dx) * sx), int((y1 - dy) * sy))
            bottom_right = (int(np.ceil((x2 + dx) * sx)), int(np.ceil((y2 + dy) * sy)))
            cv2.rectangle(mask, top_left, bottom_right, 1, thickness=-1)
        return mask.astype(bool)

    def _set_colour(self, colour: np.ndarray, where: np.ndarray) -> None:
        if self._colour is not None and where.any():
            big = _resize_mask(where, colour.shape)
            self._colour[big] = colour[big]

    def _blend_colour(self, colour: np.ndarray, where: np.ndarray) -> None:
        if self._colour is not None:
            big = _resize_mask(where, colour.shape).astype(np.uint8)
            cv2.accumulateWeighted(colour, self._colour, self.params.alpha, big)

    def _regions(
        self, static: np.ndarray, diff: np.ndarray, threshold: float, mask: np.ndarray
    ) -> list[StaticObject]:
        p = self.params
        assert self._frame_size is not None
        binary = static.astype(np.uint8)
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        work_area = binary.shape[0] * binary.shape[1]
        sx = self._frame_size[0] / binary.shape[1]
        sy = self._frame_size[1] / binary.shape[0]
        found: list[StaticObject] = []
        for index in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[index])
            if not (p.min_area_frac * work_area <= area <= p.max_area_frac * work_area):
                continue
            if mask[y : y + h, x : x + w].mean() > p.max_masked_frac:
                continue
            contrast = float(diff[labels == index].mean())
            found.append(
                StaticObject(
                    box=(x * sx, y * sy, (x + w) * sx, (y + h) * sy),
                    score=round(min(1.0, contrast / (3.0 * threshold)), 3),
                )
            )
        return found


def _scaled_size(frame: np.ndarray, width: int) -> tuple[int, int]:
    """``(w, h)`` with at most ``width`` columns, keeping the aspect ratio."""
    height, frame_width = frame.shape[:2]
    if frame_width <= width:
        return frame_width, height
    return width, max(1, round(height * width / frame_width))


def _resize_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    resized = cv2.resize(
        mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST
    )
    return resized.astype(bool)


def _fit_brightness(background: np.ndarray, sample: np.ndarray) -> tuple[float, float]:
    """Gain and offset with ``sample ≈ gain · background + offset``, robust to the few
    pixels that hold new objects (quartiles and medians, not means)."""
    if background.size == 0:
        return 1.0, 0.0
    b25, b50, b75 = np.percentile(background, (25, 50, 75))
    s25, s50, s75 = np.percentile(sample, (25, 50, 75))
    spread = b75 - b25
    gain = float((s75 - s25) / spread) if spread > 1.0 else 1.0
    gain = min(max(gain, 0.2), 5.0)
    return gain, float(s50 - gain * b50)
