"""One region's background model for the static-object detector: what is scenery, what is
new, what is moving, and what may be learnt.

A street camera's zone sees traffic and people pass every few seconds, compression noise
that differs between a smooth wall and a textured pavement, and light that drifts. What
this keeps per pixel, and why:

- **The background is the median of the first samples**, not the first sample: a bus or a
  walker in the first frame is not frozen into the scenery. Pixels hidden behind a person
  or vehicle in all of them stay unknown until seen clear and still.
- **A noise level per pixel**, learnt from background samples and smoothed over a small
  neighbourhood: the threshold for "different" adapts per region, so a bus in one corner
  never raises it anywhere else, and a textured patch does not make a smooth one blind.
- **Brightness alignment fitted on inliers**: each sample is mapped onto the background by
  a gain and offset fitted robustly (quartiles, then least squares over the pixels that
  agree), so auto-exposure and clouds are not objects, even while a bus fills part of the
  view.
- **Motion is remembered**: a pixel that changed between samples is "moving" now and
  "recently moving" for ``recent_motion_samples`` after. Only pixels that are known,
  background-like, not behind a detected person or vehicle and not recently moving are
  learnt, so passers-by the detector misses never blend into the scenery either.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True, slots=True)
class BackgroundParams:
    init_samples: int = 5  # background = per-pixel median of this many first samples
    alpha: float = 0.02  # learning rate per sample, learnable pixels only
    noise_alpha: float = 0.05  # learning rate of the per-pixel noise level
    noise_k: float = 4.0  # "different" = beyond this many noise sigmas...
    min_threshold: float = 8.0  # ...and at least this many grey levels
    min_sigma: float = 1.5  # floor and cap of the per-pixel noise sigma
    max_sigma: float = 10.0
    noise_window: int = 9  # pixels: the neighbourhood a noise level is pooled over
    recent_motion_samples: int = 3  # moved this recently → not learnt


@dataclass(frozen=True, slots=True)
class Sample:
    """One aligned sample's per-pixel verdicts (all arrays at the region's work size)."""

    aligned: np.ndarray  # float32 grey mapped onto the background's brightness
    threshold: np.ndarray  # float32 per-pixel "different" level
    foreground: np.ndarray  # bool: known and differs from the background
    moving: np.ndarray  # bool: changed since the previous sample
    background_like: np.ndarray  # bool: known, unmasked and matches the background


class RegionBackground:
    """Per-pixel background, noise and motion memory of one analysed region."""

    def __init__(self, params: BackgroundParams | None = None) -> None:
        self.params = params or BackgroundParams()
        self._warmup: list[tuple[np.ndarray, np.ndarray]] = []
        self.bg: np.ndarray | None = None
        self._variance = np.zeros((0, 0), np.float32)  # per pixel, before pooling
        self._sigma = np.zeros((0, 0), np.float32)
        self.known = np.zeros((0, 0), bool)
        self._prev: np.ndarray | None = None
        self._since_moved = np.zeros((0, 0), np.int32)

    @property
    def ready(self) -> bool:
        return self.bg is not None

    def restart(self) -> None:
        """Forget everything (camera moved, resolution changed): learn afresh."""
        self.__init__(self.params)  # type: ignore[misc]

    def observe(self, grey: np.ndarray, masked: np.ndarray) -> Sample | None:
        """Take one blurred float32 grey sample and its person/vehicle mask; None while
        the first ``init_samples`` are still being collected."""
        if self.bg is None:
            self._warmup.append((grey, masked))
            if len(self._warmup) >= self.params.init_samples:
                self._initialise()
            return None
        p = self.params
        bg = self.bg
        aligned = self._align(grey, masked)
        threshold = np.maximum(p.noise_k * self._sigma, p.min_threshold)
        diff = np.abs(aligned - bg)
        assert self._prev is not None
        moving = np.abs(aligned - self._prev) > threshold
        self._prev = aligned
        self._since_moved = np.where(moving, 0, np.minimum(self._since_moved + 1, 1 << 20))
        foreground = (diff > threshold) & self.known
        background_like = self.known & ~masked & ~foreground
        return Sample(aligned, threshold, foreground, moving, background_like)

    def learn(self, sample: Sample, exclude: np.ndarray, masked: np.ndarray) -> np.ndarray:
        """Blend learnable pixels into the background and noise level, reveal unknown
        pixels seen clear and still; returns the learnt mask. ``exclude`` holds pixels that
        must not be learnt (static candidates)."""
        p = self.params
        assert self.bg is not None
        still = self._since_moved > p.recent_motion_samples
        revealed = ~self.known & ~masked & still & ~exclude
        self.bg[revealed] = sample.aligned[revealed]
        self.known |= revealed
        learn = sample.background_like & still & ~exclude
        residual = (sample.aligned - self.bg) ** 2
        cv2.accumulateWeighted(residual, self._variance, p.noise_alpha, learn.astype(np.uint8))
        self._sigma = self._pooled_sigma(self._variance)
        cv2.accumulateWeighted(sample.aligned, self.bg, p.alpha, learn.astype(np.uint8))
        return learn

    def absorb(self, where: np.ndarray, sample: Sample) -> None:
        """Make ``where`` scenery at once (an object that has stood for hours)."""
        assert self.bg is not None
        self.bg[where] = sample.aligned[where]

    def _initialise(self) -> None:
        greys = np.stack([g for g, _ in self._warmup])
        masks = np.stack([m for _, m in self._warmup])
        self._warmup = []
        seen = np.where(masks, np.nan, greys)
        self.known = ~masks.all(axis=0)
        with warnings.catch_warnings():  # pixels masked in every sample: all-NaN, unknown
            warnings.simplefilter("ignore", RuntimeWarning)
            bg = np.nanmedian(seen, axis=0)
            spread = 1.4826 * np.nanmedian(np.abs(seen - bg), axis=0)
        self.bg = np.nan_to_num(bg, nan=0.0).astype(np.float32)
        spread = np.nan_to_num(spread, nan=self.params.min_sigma).astype(np.float32)
        self._variance = spread**2
        self._sigma = self._pooled_sigma(self._variance)
        self._prev = self.bg.copy()
        self._since_moved = np.zeros(self.bg.shape, np.int32)

    def _pooled_sigma(self, variance: np.ndarray) -> np.ndarray:
        """Noise sigma per pixel from its neighbourhood's mean variance, within bounds."""
        p = self.params
        pooled = cv2.blur(variance.astype(np.float32), (p.noise_window, p.noise_window))
        # The box filter's running sums can end a hair below zero on a flat patch.
        return np.clip(np.sqrt(np.maximum(pooled, 0.0)), p.min_sigma, p.max_sigma).astype(
            np.float32
        )

    def _align(self, grey: np.ndarray, masked: np.ndarray) -> np.ndarray:
        """``grey`` mapped onto the background's brightness (see the module docstring)."""
        assert self.bg is not None
        # Every other row and column: the fit needs thousands of pixels, not all of them.
        valid = (self.known & ~masked)[::2, ::2]
        if valid.sum() < 16:
            return grey
        background, sample = self.bg[::2, ::2][valid], grey[::2, ::2][valid]
        gain, offset = _quartile_fit(background, sample)
        residual = np.abs(sample - (gain * background + offset))
        inliers = residual <= max(2.5 * 1.4826 * float(np.median(residual)), 4.0)
        if inliers.sum() >= max(16, valid.sum() // 5):
            gain, offset = _least_squares_fit(background[inliers], sample[inliers], gain, offset)
        return ((grey - offset) / gain).astype(np.float32)


def _quartile_fit(background: np.ndarray, sample: np.ndarray) -> tuple[float, float]:
    """Gain and offset with ``sample ≈ gain · background + offset`` from quartiles and
    medians: robust to up to half the pixels being something new."""
    b25, b50, b75 = np.percentile(background, (25, 50, 75))
    s25, s50, s75 = np.percentile(sample, (25, 50, 75))
    spread = b75 - b25
    gain = float((s75 - s25) / spread) if spread > 1.0 else 1.0
    gain = min(max(gain, 0.5), 2.0)
    return gain, float(s50 - gain * b50)


def _least_squares_fit(
    background: np.ndarray, sample: np.ndarray, gain: float, offset: float
) -> tuple[float, float]:
    """Least-squares gain and offset over the inliers; the quartile fit when degenerate."""
    b_mean, s_mean = float(background.mean()), float(sample.mean())
    b_var = float(((background - b_mean) ** 2).mean())
    if b_var < 1.0:
        return gain, offset
    fitted = float(((background - b_mean) * (sample - s_mean)).mean()) / b_var
    fitted = min(max(fitted, 0.5), 2.0)
    return fitted, s_mean - fitted * b_mean
