"""Real objects dumped on real streets behind the real traffic: frames and ground truth for
judging dumped-object detection on footage.

A rendered scene or a pasted sticker proves little: what defeats a detector on a real street
is the bus that drives in front of the bin bags every fifteen seconds, the pedestrians who
walk over them, the compression noise and the far pavement where a pile of bags is a dozen
pixels wide. So a trial takes a real clip (looped, analysed at one frame a second as a
camera is) and a real object cut from a real photo, and puts the object *behind* the
clip's traffic:

- the clip's **empty scene** is its per-pixel temporal median (traffic and people move on,
  the street stays);
- in each frame the object is pasted only where the frame matches that empty scene: where
  a car, a bus or a person covers the spot (a difference beyond ``FOREGROUND_LEVEL``,
  dilated a little, as their soft edges and motion blur reach further), the frame keeps its
  own pixels, so passers-by occlude the object as they would in the street. Only those
  standing level with the object or nearer the camera do: a walker whose feet are well
  behind the object's ground line is behind it, and the object is drawn over them;
- the object is cut from its photo with a matte (GrabCut seeded with the feathered ellipse
  of :func:`simulators.footage.soft_cut`), so it brings no patch of another pavement along;
- it stands at a **spot**: its bottom-centre as normalised coordinates and its width in the
  source clip's pixels (a far pavement makes it small), inside the spot's ``no_dumping`` zone.

A :class:`Trial` is one run: a clip, a spot, an object or none, the second of the loop the
camera starts on, when the object appears and leaves, and how many cases it must cause.
:func:`standard_trials` builds the three kinds every spot needs: an object left for longer
than the dwell (one case, filed within the dwell plus ``lateness_s``), one taken away before
the dwell, and no object at all (no case). Everything is deterministic: the same trial gives
the same frames, and each frame carries a key naming exactly what it shows (clip frame and
what was pasted), so detector answers can be reused across trials and start offsets.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from simulators.footage import DEFAULT_ASSETS, FootageError, soft_cut

FOREGROUND_LEVEL = 28  # grey levels from the empty scene that mean "something covers it"
# A passer-by hides the object when its lowest pixel (its feet, its wheels) is no more than
# this share of the object's height above the object's ground line: level with it or nearer.
NEARER_TOLERANCE = 0.15
MEDIAN_SAMPLES = 120  # frames of the clip the empty scene is the median of
MAX_TRIAL_S = 3600  # a trial is at most an hour of analysed seconds
GARBAGE = "images/amsterdam_garbage"

TrialKind = Literal["positive", "short", "empty"]


@dataclass(frozen=True, slots=True)
class CutObject:
    """A real object: the box ``crop`` (x1, y1, x2, y2, photo pixels) of a photo under the
    shared assets."""

    name: str
    photo: str
    crop: tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Spot:
    """Where an object is dumped: its bottom-centre ``(x, y)`` normalised to the frame, its
    width in the source clip's pixels, and the ``no_dumping`` zone watched around it."""

    name: str
    bottom_centre: tuple[float, float]
    width_src_px: int
    zone: tuple[tuple[float, float], ...]
    passers: str  # who passes in front, for the report

    def __post_init__(self) -> None:
        x, y = self.bottom_centre
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"spot {self.name}: bottom_centre {self.bottom_centre} not in 0..1")
        if not 4 <= self.width_src_px <= 4000:
            raise ValueError(f"spot {self.name}: width_src_px {self.width_src_px} not in 4..4000")
        if len(self.zone) < 3 or any(not (0 <= v <= 1) for point in self.zone for v in point):
            raise ValueError(f"spot {self.name}: zone needs >= 3 points normalised to 0..1")


@dataclass(frozen=True, slots=True)
class StreetClip:
    """A clip under the shared assets, analysed at ``width`` pixels (height keeps the
    aspect), with the spots where objects are dumped in it.

    ``step_frames``: clip frames between analysed seconds; None plays it in real time. A
    clip of a few seconds looped in real time shows everyone back in nearly the same place
    every few analysed frames (3.84 s at 25 fps: 4 frames apart every 4 s), and a tracker
    takes a walker seen there again as someone standing still; a step whose multiples stay
    away from the loop length keeps every re-visit well apart in time."""

    name: str
    video: str
    width: int
    spots: tuple[Spot, ...]
    step_frames: int | None = None

    def __post_init__(self) -> None:
        if not 64 <= self.width <= 3840:
            raise ValueError(f"clip {self.name}: width {self.width} not in 64..3840")
        if self.step_frames is not None and not 1 <= self.step_frames <= 10_000:
            raise ValueError(f"clip {self.name}: step_frames {self.step_frames} not in 1..10000")


@dataclass(frozen=True, slots=True)
class Timing:
    """The rule timing a trial is judged by: the dwell and clear times of the zone, the
    empty seconds before an object appears, and how late after the dwell a case may come."""

    dwell_s: int = 30
    clear_after_s: int = 20
    warmup_s: int = 10
    lateness_s: int = 10

    def __post_init__(self) -> None:
        if not 0 <= self.lateness_s < self.dwell_s <= 600:
            raise ValueError(f"dwell_s {self.dwell_s} must be in (lateness_s >= 0, 600]")
        if not (0 < self.clear_after_s <= 600 and 0 <= self.warmup_s <= 600):
            raise ValueError("clear_after_s must be in (0, 600], warmup_s in [0, 600]")


@dataclass(frozen=True, slots=True)
class Trial:
    """One run of one camera: ``duration_s`` analysed seconds starting on second
    ``start_offset_s`` of the looped clip; the object (if any) is there from run second
    ``appear_s`` up to (not including) ``leave_s``; it must cause ``expected_cases``."""

    clip: StreetClip
    spot: Spot
    obj: CutObject | None
    kind: TrialKind
    start_offset_s: int
    appear_s: int | None
    leave_s: int | None
    duration_s: int
    expected_cases: int

    def __post_init__(self) -> None:
        if not (0 <= self.start_offset_s <= MAX_TRIAL_S and 0 < self.duration_s <= MAX_TRIAL_S):
            raise ValueError(f"trial {self.id}: start_offset_s or duration_s out of range")
        if (self.obj is None) != (self.appear_s is None) or (self.obj is None) != (
            self.leave_s is None
        ):
            raise ValueError(f"trial {self.id}: appear_s and leave_s go with an object")
        if self.appear_s is not None and not (
            0 <= self.appear_s < self.leave_s <= self.duration_s  # type: ignore[operator]
        ):
            raise ValueError(f"trial {self.id}: needs 0 <= appear_s < leave_s <= duration_s")

    @property
    def id(self) -> str:
        """Names the case: clip, spot, object, kind and start offset."""
        what = self.obj.name if self.obj else "nothing"
        return f"{self.clip.name}-{self.spot.name}-{what}-{self.kind}-at{self.start_offset_s}s"

    def present(self, t_s: int) -> bool:
        return self.appear_s is not None and self.appear_s <= t_s < self.leave_s  # type: ignore[operator]


def standard_trials(
    clip: StreetClip,
    spot: Spot,
    objects: Sequence[CutObject],
    start_offsets_s: Sequence[int],
    timing: Timing,
    short_objects: Sequence[CutObject] = (),
    hold_s: int | None = None,
) -> list[Trial]:
    """For every start offset: each object left for the dwell plus ``hold_s`` (default
    ``lateness_s`` + 10 s; one case, cleared after it leaves), each of ``short_objects``
    taken away ``lateness_s`` before the dwell (no case), and the empty zone (no case)."""
    hold = timing.lateness_s + 10 if hold_s is None else hold_s
    if not 0 < hold <= MAX_TRIAL_S:
        raise ValueError(f"hold_s {hold_s} not in 1..{MAX_TRIAL_S}")
    appear = timing.warmup_s
    leave = appear + timing.dwell_s + hold
    positive_end = leave + timing.clear_after_s + 15
    short_leave = appear + timing.dwell_s - timing.lateness_s
    quiet_end = appear + timing.dwell_s + timing.lateness_s + 20
    trials = []
    for offset in start_offsets_s:
        for obj in objects:
            trials.append(
                Trial(clip, spot, obj, "positive", offset, appear, leave, positive_end, 1)
            )
        for obj in short_objects:
            trials.append(
                Trial(clip, spot, obj, "short", offset, appear, short_leave, quiet_end, 0)
            )
        trials.append(Trial(clip, spot, None, "empty", offset, None, None, quiet_end, 0))
    return trials


def judge(trial: Trial, alerts: Sequence[tuple[int, str]], timing: Timing) -> str | None:
    """What is wrong with a trial's alerts ``(run second, "firing"|"cleared")``, or None.

    A positive must fire exactly once, no earlier than ``appear_s + dwell_s`` (anything
    earlier fired on something else) and no later than ``lateness_s`` after that, and clear
    once, after the object left; the others must never fire."""
    firing = [t for t, state in alerts if state == "firing"]
    cleared = [t for t, state in alerts if state == "cleared"]
    if trial.expected_cases == 0:
        return None if not firing else f"false case: fired at {firing} s"
    assert trial.appear_s is not None and trial.leave_s is not None
    due = trial.appear_s + timing.dwell_s
    if not firing:
        return f"no case: nothing fired (object {trial.appear_s}-{trial.leave_s} s, due {due} s)"
    if len(firing) > 1:
        return f"extra case: fired {len(firing)} times, at {firing} s"
    if firing[0] < due:
        return f"early case: fired at {firing[0]} s, before the dwell ended at {due} s"
    if firing[0] > due + timing.lateness_s:
        return f"late case: fired at {firing[0]} s, {firing[0] - due} s after the dwell"
    if len(cleared) != 1 or cleared[0] < trial.leave_s or cleared[0] < firing[0]:
        return f"clear: cleared at {cleared} s, object left at {trial.leave_s} s"
    return None


@dataclass(frozen=True, slots=True)
class TrialFrame:
    """One analysed frame: run second, what it shows (hashable, equal for equal pictures),
    the picture, and the share of the object's matte visible (0 when absent or covered)."""

    t_s: int
    key: tuple
    image: np.ndarray
    visible: float


class StreetScene:
    """One clip, decoded at its working width for the analysed seconds a set of trials
    needs, with its empty scene and the objects cut and scaled for its spots."""

    def __init__(self, clip: StreetClip, horizon_s: int, assets: Path = DEFAULT_ASSETS) -> None:
        """Decode the frames of analysed seconds ``0 .. horizon_s - 1`` of the looped clip
        (one sequential pass) and the median's samples."""
        if not 0 < horizon_s <= 2 * MAX_TRIAL_S:
            raise ValueError(f"horizon_s {horizon_s} not in 1..{2 * MAX_TRIAL_S}")
        self.clip = clip
        self._assets = assets
        path = assets / clip.video
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise FootageError(f"cannot open the clip {path} (the shared test assets)")
        self.fps = capture.get(cv2.CAP_PROP_FPS)
        self.frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.source_width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        source_height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (clip.width, round(source_height * clip.width / self.source_width))
        needed = {self.frame_index(k) for k in range(horizon_s)}
        samples = set(np.linspace(0, self.frame_count - 1, MEDIAN_SAMPLES).astype(int).tolist())
        self._frames: dict[int, np.ndarray] = {}
        sampled = []
        for index in range(self.frame_count):
            if not capture.grab():
                raise FootageError(f"{path}: {index} frames decoded, {self.frame_count} announced")
            if index in needed or index in samples:
                frame = cv2.resize(capture.retrieve()[1], self.size, interpolation=cv2.INTER_AREA)
                if index in needed:
                    self._frames[index] = frame
                if index in samples:
                    sampled.append(frame)
        capture.release()
        self.empty_scene = np.median(np.stack(sampled), axis=0).astype(np.uint8)
        self._cuts: dict[tuple[CutObject, Spot], tuple[np.ndarray, np.ndarray, int, int]] = {}

    def frame_index(self, k: int) -> int:
        """The clip frame a camera looping the clip analyses at second ``k``."""
        if self.clip.step_frames is not None:
            return k * self.clip.step_frames % self.frame_count
        return int(k * self.fps) % self.frame_count

    def frames(self, trial: Trial) -> Iterator[TrialFrame]:
        """The trial's analysed frames, one a second."""
        for t in range(trial.duration_s):
            index = self.frame_index(trial.start_offset_s + t)
            obj = trial.obj if trial.present(t) else None
            yield self.composite(index, obj, trial.spot, t)

    def composite(self, index: int, obj: CutObject | None, spot: Spot, t_s: int = 0) -> TrialFrame:
        """Clip frame ``index`` with ``obj`` dumped at ``spot`` behind whatever covers it."""
        frame = self._frames[index]
        key: tuple = (self.clip.name, self.size, index)
        if obj is None:
            return TrialFrame(t_s, key, frame, 0.0)
        colour, alpha, x0, y0 = self._cut(obj, spot)
        h, w = alpha.shape
        covered = self._covered(index, x0, y0, w, h)
        shown = alpha * (1.0 - covered)
        visible = float(shown.sum() / alpha.sum())
        roi = frame[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
        pasted = np.round(colour * shown[..., None] + roi * (1.0 - shown[..., None]))
        pasted = pasted.astype(np.uint8)
        if np.array_equal(pasted, frame[y0 : y0 + h, x0 : x0 + w]):
            return TrialFrame(t_s, key, frame, 0.0)  # wholly covered: the clip's own frame
        image = frame.copy()
        image[y0 : y0 + h, x0 : x0 + w] = pasted
        return TrialFrame(t_s, (*key, obj, spot), image, visible)

    def _covered(self, index: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """0..1 per pixel of the object's box: how much a passer-by covers it there.

        Moving pixels (far from the empty scene), without speckle, closed and with their
        holes filled (a car's grey flank can match the road it hides; it still hides the
        object), kept where their blob reaches down to the object's ground line (see
        ``NEARER_TOLERANCE``), then dilated by ``radius``, and softened by one pixel."""
        radius = max(1, round(self.size[0] / 480))
        pad = max(w, h) + 2 * radius
        fx0, fy0 = max(0, x0 - pad), max(0, y0 - pad)
        fx1, fy1 = min(self.size[0], x0 + w + pad), min(self.size[1], y0 + h + pad)
        frame = self._frames[index][fy0:fy1, fx0:fx1].astype(np.int16)
        empty = self.empty_scene[fy0:fy1, fx0:fx1].astype(np.int16)
        moving = (np.abs(frame - empty).max(axis=2) > FOREGROUND_LEVEL).astype(np.uint8)
        moving = cv2.morphologyEx(moving, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
        moving = cv2.morphologyEx(moving, cv2.MORPH_CLOSE, _disc(2 * radius))
        outlines, _ = cv2.findContours(moving, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        base = y0 + h - fy0  # the object's ground line in the padded box
        moving[:] = 0
        for outline in outlines:  # only what stands level with the object or nearer
            _, top, _, tall = cv2.boundingRect(outline)
            if top + tall >= base - h * NEARER_TOLERANCE:
                cv2.drawContours(moving, [outline], -1, 1, thickness=cv2.FILLED)
        soft = cv2.GaussianBlur(cv2.dilate(moving, _disc(radius)).astype(np.float32), (3, 3), 0)
        return soft[y0 - fy0 : y0 - fy0 + h, x0 - fx0 : x0 - fx0 + w]

    def _cut(self, obj: CutObject, spot: Spot) -> tuple[np.ndarray, np.ndarray, int, int]:
        """The object's colour and matte scaled for the spot, and its top-left corner."""
        cached = self._cuts.get((obj, spot))
        if cached is not None:
            return cached
        bgra = matte(self._assets / GARBAGE / obj.photo, obj.crop)
        width = max(2, round(spot.width_src_px * self.size[0] / self.source_width))
        height = max(2, round(bgra.shape[0] * width / bgra.shape[1]))
        scaled = cv2.resize(bgra, (width, height), interpolation=cv2.INTER_AREA)
        x0 = round(spot.bottom_centre[0] * self.size[0] - width / 2)
        y0 = round(spot.bottom_centre[1] * self.size[1]) - height
        if x0 < 0 or y0 < 0 or x0 + width > self.size[0] or y0 + height > self.size[1]:
            raise ValueError(f"spot {spot.name}: {obj.name} ({width}x{height}) leaves the frame")
        colour = scaled[..., :3].astype(np.float32)
        alpha = scaled[..., 3].astype(np.float32) / 255.0
        self._cuts[(obj, spot)] = (colour, alpha, x0, y0)
        return self._cuts[(obj, spot)]


def matte(photo: Path, crop: tuple[int, int, int, int]) -> np.ndarray:
    """The object in ``crop`` as BGRA: the feathered ellipse of ``soft_cut`` narrowed by
    GrabCut to the object itself (seeded: the same matte every time)."""
    bgra = soft_cut(photo, crop)
    scale = min(1.0, 240 / bgra.shape[1])
    small = cv2.resize(bgra, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ellipse = small[..., 3]
    seeds = np.full(ellipse.shape, cv2.GC_BGD, np.uint8)
    seeds[ellipse > 20] = cv2.GC_PR_BGD
    seeds[ellipse > 200] = cv2.GC_PR_FGD
    cv2.setRNGSeed(0)
    models = (np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64))
    cv2.grabCut(small[..., :3].copy(), seeds, None, *models, 5, cv2.GC_INIT_WITH_MASK)
    body = np.isin(seeds, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)
    body = cv2.resize(body, (bgra.shape[1], bgra.shape[0]), interpolation=cv2.INTER_LINEAR)
    body = cv2.GaussianBlur(body, (0, 0), max(1.0, bgra.shape[1] / 150))
    alpha = bgra[..., 3].astype(np.float32) * body
    return np.dstack([bgra[..., :3], np.round(alpha).astype(np.uint8)])


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


# --- the catalogue: real objects, and the spots on the two shared clips -------------------


def rect(x1: float, y1: float, x2: float, y2: float) -> tuple[tuple[float, float], ...]:
    """A rectangular zone, normalised."""
    return ((x1, y1), (x2, y1), (x2, y2), (x1, y2))


BAGS = CutObject(
    "bags", "mdc_photo_mdc_0da290_cdv_photo_002_1493144966294.jpg", (548, 280, 730, 438)
)
ARMCHAIR = CutObject(
    "armchair", "mdc_photo_mdc_bab5b0_cdv_photo_001_1466704156289.jpg", (115, 45, 275, 220)
)
HEAP = CutObject("heap", "mdc_photo_cdv_photo_084_1469560128313.jpg", (470, 560, 1590, 985))
BAG_AND_BOX = CutObject(
    "bag_and_box", "mdc_photo_mdc_9f5eba_cdv_photo_001_1493403939557.jpg", (200, 1110, 1380, 1740)
)
OBJECTS = (BAGS, ARMCHAIR, HEAP, BAG_AND_BOX)

# The avenue seen from above its near side: the only pavement is the far one (a person is
# ~8 px wide there), so every spot is far and small (18 px ~ a 1.2 m pile), with
# pedestrians walking over it and tall vehicles in the far kerb lane rising in front of it.
CARCOUNTER = StreetClip("carcounter", "videos/carcounter_street.mp4", 596, (
    Spot("far_shops", (0.40, 0.20), 18, rect(0.28, 0.11, 0.52, 0.225),
         "pedestrians in front of the shops, vans in the far kerb lane"),
    Spot("far_right", (0.85, 0.205), 18, rect(0.80, 0.13, 0.99, 0.22),
         "pedestrians on the right pavement, taxis and vans in the far kerb lane"),
    Spot("far_corner", (0.15, 0.21), 18, rect(0.03, 0.11, 0.27, 0.225),
         "a crowd on the pavement, buses in the far kerb lane"),
))  # fmt: skip
# The pedestrian street from above (1080p source, analysed at 960): people walk over every
# spot; near the camera a pile is ~65 px wide at 960, at the far end ~30 px. Its 96 frames
# are stepped 37 at a time (1.48 s of clip per analysed second): within 12 analysed
# seconds no frame comes back closer than 7 frames (0.28 s) to one already shown (the
# tracker forgets after 10), though every 13 s one comes back 1 frame apart: a 3.84 s clip
# cannot avoid near-repeats over a minute, and no step does better.
SOCIALDIST = StreetClip("socialdist", "videos/socialdist_pedestrians.mp4", 960, (
    Spot("near_walk", (0.16, 0.52), 130, rect(0.0, 0.36, 0.34, 0.64),
         "groups walking along the left pavement"),
    Spot("far_walk", (0.52, 0.20), 60, rect(0.42, 0.09, 0.64, 0.29),
         "shoppers crossing at the far end"),
    Spot("mid_street", (0.42, 0.47), 100, rect(0.30, 0.34, 0.56, 0.60),
         "walkers in the middle of the street"),
), step_frames=37)  # fmt: skip
CLIPS = (CARCOUNTER, SOCIALDIST)
