"""Class-agnostic detection of new static objects: dumping seen without a rubbish class.

COCO models know no "rubbish"; a trained one misses what it was not shown (a mattress, a
heap of debris). What every dumped thing shares is that it was not there before and then
stays. So this keeps a background of each watched region (``static_background``) and
follows regions that differ from it and stay unchanged, as objects with an identity.

What makes it hold on a real street:

- **Zones are analysed as crops of the decoded frame**, each at up to
  ``max_region_pixels`` (native resolution when the crop is that small), not as part of a
  shrunken whole frame: a bag 17 px wide in a 596-px frame keeps its 17 px. Regions are the
  bounding boxes of the camera's zones (overlapping ones merged); nothing outside a zone
  can file a case, so nothing outside is analysed.
- **Minimum size is zone-relative**: ``min_area_frac`` of the region (plus a pixel floor
  against speckle), so a far zone's small objects count as much as a near zone's big ones.
- **Occlusion holds, it does not reset**: a pixel behind a detected person or vehicle, or
  changing between samples (traffic the detector missed), keeps its count of samples
  showing the same new content; other content starts a new count, so a bag's standing time
  never includes the person who stood there before it. A confirmed object whose pixels
  are mostly hidden, or show neither it nor the scenery, is reported as ``occluded`` —
  unknown, not gone — with its identity and its ``since_ms`` kept.
- **Gone means seen empty, repeatedly**: an object is dropped only after
  ``clear_empty_samples`` samples in which most of its visible pixels match the scenery.
- **An object that is a person or vehicle is not reported**: one that differed mostly
  behind detected person or vehicle boxes while it was being confirmed, when one same box
  covered it in many of those samples, or that lies inside such a box not much bigger
  than itself in more than ``max_explained_share`` of its samples, is that parked car or
  standing person. A bus passing in front of a bag is far bigger than the bag, and walkers
  streaming past it are different boxes each time, so neither explains it away.
- **Confirmation has a deadline**: a count that has not reached ``confirm_samples`` open
  views within ``max_confirm_s`` starts over; pieces of a crowd that keep matching some
  content now and then, held behind boxes in between, are a coincidence, not an object.
- **A scene change re-learns**: when most of a region differs and stays unchanged for
  ``scene_change_samples`` (camera moved, switched to night IR), its model restarts; a bus
  filling the view is moving, so it never triggers this.
- **Ghosts are scenery**: a new static region whose outline and contrast with the ground
  around it are in the background rather than in the picture (a crowd that stood there
  while the model started has left) is learnt at once, not reported.
- **Hours make scenery**: an object that has stood ``absorb_s`` becomes background.

The colour background at ``evidence_width`` is the "before" picture for evidence: the
median of the first samples, then learnt where each region learns (and outside the regions
wherever no person or vehicle stands).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from detectors.static_background import BackgroundParams, RegionBackground, Sample
from detectors.zones import Box

NormBox = tuple[float, float, float, float]  # x1, y1, x2, y2 in 0..1 of the frame
WHOLE_FRAME: NormBox = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True, slots=True)
class StaticObjectParams:
    max_region_pixels: int = 320 * 240  # a region is shrunk only beyond this many pixels
    evidence_width: int = 960  # width of the colour "before" picture
    min_sample_interval_ms: int = 750  # at 1 analysed fps every frame is a sample
    confirm_samples: int = 5  # unchanged samples (hidden ones not counted) → static
    max_confirm_s: float = 40.0  # ...reached within this long, or the count starts over
    absorb_s: float = 4 * 3600.0  # standing this long → part of the background
    min_area_frac: float = 0.002  # of the region: the zone-relative minimum size
    # ...and never fewer work pixels than this: 5 x 9 px by a far doorway is a piece of a
    # person standing there more often than a dumped object (a 1.2 m pile far away is
    # ~18 x 12 px).
    min_area_px: int = 60
    max_area_frac: float = 0.5  # of the region
    mask_margin: float = 0.1  # person/vehicle boxes grown by this fraction of their size
    present_frac: float = 0.5  # this much of an object shows it → present
    empty_frac: float = 0.6  # this much of it shows the scenery...
    empty_object_frac: float = 0.2  # ...and no more than this shows it → seen empty
    clear_empty_samples: int = 3  # seen empty this many times → gone
    # An object mostly inside a person/vehicle box not much bigger than itself is that
    # person or vehicle: in more than ``max_explained_share`` of its samples → not reported.
    explained_share: float = 0.6
    max_explained_share: float = 0.3
    explaining_history: int = 20  # samples of boxes a new object's past is judged on
    scene_change_frac: float = 0.6  # of a region's known pixels
    scene_change_samples: int = 10
    background: BackgroundParams = field(default_factory=BackgroundParams)


@dataclass(frozen=True, slots=True)
class StaticObject:
    """A new static object, as a box in the full frame's pixels. ``score`` in 0..1 grows
    with its contrast against the background; ``since_ms`` is when it first stood still;
    ``occluded`` says it is hidden now (its box is where it was last seen)."""

    box: Box
    score: float
    object_id: int
    since_ms: int
    occluded: bool = False


@dataclass(slots=True)
class _Candidate:
    object_id: int
    pixels: np.ndarray  # bool, the region's work size
    appearance: np.ndarray  # float32 aligned grey of the object where ``pixels``
    box: Box  # frame pixels
    since_ms: int
    score: float = 0.0
    occluded: bool = False
    empty_views: int = 0
    views: int = 0
    explained: int = 0
    explainer: Box | None = None  # the person/vehicle box that explained it last sample


class _Counts:
    """A per-pixel count of samples showing one content, and since when."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.count = np.zeros(shape, np.int32)
        self.content = np.zeros(shape, np.float32)  # aligned grey
        self.first_ms = np.zeros(shape, np.int64)

    def swap(self, other: _Counts, where: np.ndarray) -> None:
        """Exchange this count and ``other``'s at the pixels ``where``."""
        for name in ("count", "content", "first_ms"):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, np.where(where, theirs, mine))
            setattr(other, name, np.where(where, mine, theirs))


class StaticObjectDetector:
    """One camera's static-object detector; feed it every analysed frame in time order."""

    def __init__(
        self, params: StaticObjectParams | None = None, regions: Sequence[NormBox] = (WHOLE_FRAME,)
    ) -> None:
        self.params = params or StaticObjectParams()
        self._norm_regions = merge_overlapping(regions)
        self._frame_size: tuple[int, int] | None = None
        self._regions: list[_Region] = []
        self._last_sample_ms: int | None = None
        self._objects: list[StaticObject] = []
        self._colour = _ColourBackground(self.params)
        self._next_id = 1

    def update(
        self,
        frame_bgr: np.ndarray,
        ts_ms: int,
        masked: Sequence[Box],
    ) -> list[StaticObject]:
        """Take a sample (if one is due) and return the static objects now present or
        hidden. ``masked`` are the person and vehicle boxes of this frame, in frame pixels."""
        height, width = frame_bgr.shape[:2]
        if (width, height) != self._frame_size:
            self._frame_size = (width, height)  # a reconnect at another resolution: restart
            self._regions = [
                _Region(box, (width, height), self.params) for box in self._norm_regions
            ]
            self._colour = _ColourBackground(self.params)
            self._last_sample_ms = None
        if (
            self._last_sample_ms is not None
            and ts_ms - self._last_sample_ms < self.params.min_sample_interval_ms
        ):
            return self._objects
        self._last_sample_ms = ts_ms
        objects: list[StaticObject] = []
        learnt = []
        for region in self._regions:
            explaining = [(box, _EXPLAINING_RATIO) for box in masked]
            self._next_id = region.sample(frame_bgr, ts_ms, masked, explaining, self._next_id)
            objects.extend(region.objects())
            learnt.append((region, region.learnt))
        self._colour.update(frame_bgr, masked, learnt)
        self._objects = objects
        return objects

    def background_bgr(self) -> np.ndarray | None:
        """The learnt scene without new objects, at the last frame's size (None before the
        first frame)."""
        if self._frame_size is None:
            return None
        return self._colour.picture(self._frame_size)


class _Region:
    """One analysed crop: its background model, per-pixel counts and its objects."""

    def __init__(self, norm: NormBox, frame_size: tuple[int, int], params: StaticObjectParams):
        width, height = frame_size
        x1, y1 = int(norm[0] * width), int(norm[1] * height)
        x2 = max(x1 + 1, int(np.ceil(norm[2] * width)))
        y2 = max(y1 + 1, int(np.ceil(norm[3] * height)))
        self.rect = (x1, y1, x2, y2)
        scale = min(1.0, (params.max_region_pixels / ((x2 - x1) * (y2 - y1))) ** 0.5)
        self.work = (max(1, round((x2 - x1) * scale)), max(1, round((y2 - y1) * scale)))
        self.scale = (self.work[0] / (x2 - x1), self.work[1] / (y2 - y1))
        self.params = params
        self.model = RegionBackground(params.background)
        shape = (self.work[1], self.work[0])
        self.empty_streak = np.zeros(shape, np.int8)  # consecutive samples seen as scenery
        self.masked_count = np.zeros(shape, np.int32)  # samples it differed behind a mask
        self.current = _Counts(shape)  # unhidden samples showing one content, since when
        self.aside = _Counts(shape)  # the count another content interrupted
        self.candidates: list[_Candidate] = []
        # The explaining boxes of the last samples: what a new object may have been.
        self._recent_explaining: deque[Sequence[tuple[Box, float]]] = deque(
            maxlen=params.explaining_history
        )
        self.learnt: np.ndarray | None = None
        self._scene_change_streak = 0

    def sample(
        self,
        frame: np.ndarray,
        ts_ms: int,
        masked: Sequence[Box],
        explaining: Sequence[tuple[Box, float]],
        next_id: int,
    ) -> int:
        """Analyse this region of ``frame``; returns the next free object id. ``masked``
        boxes hide pixels; ``explaining`` boxes (with the largest area ratio to the object
        at which they still explain it) are what an object may turn out to be."""
        x1, y1, x2, y2 = self.rect
        crop = frame[y1:y2, x1:x2]
        if crop.shape[1] != self.work[0] or crop.shape[0] != self.work[1]:
            crop = cv2.resize(crop, self.work, interpolation=cv2.INTER_AREA)
        grey = cv2.GaussianBlur(
            cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32), (0, 0), 1.0
        )
        mask = self._mask(masked)
        self.learnt = None
        sample = self.model.observe(grey, mask)
        if sample is None:
            return next_id
        if self._scene_changed(sample, mask):
            self._restart()
            return next_id
        hidden = mask | sample.moving
        self._count_still_pixels(sample, hidden, mask, ts_ms)
        components = self._components(self.current.count >= self.params.confirm_samples)
        self._recent_explaining.append(explaining)
        self._judge_candidates(sample, components, explaining)
        for pixels in components:
            if pixels is None:
                continue
            if _is_ghost(pixels, sample.aligned, self.model.bg):
                self.model.absorb(pixels, sample)  # scenery revealed: learn it at once
                self._forget(pixels)
                continue
            self.candidates.append(self._candidate(next_id, pixels))
            next_id += 1
        self._absorb(sample, ts_ms)
        exclude = self.current.count > 0
        for candidate in self.candidates:
            exclude |= candidate.pixels
        self.learnt = self.model.learn(sample, exclude, mask)
        return next_id

    def _count_still_pixels(
        self, sample: Sample, hidden: np.ndarray, mask: np.ndarray, ts_ms: int
    ) -> None:
        """Per pixel: how many unhidden samples have shown the same new content. Hidden
        samples hold the count (traffic in front); content that differs from what was
        counted starts a new count (a person who stood there left, a bag came), while the
        count it interrupts is kept aside, unless a longer one is aside already, and resumed
        if that content comes back (walkers pausing in front of the bag, one after another);
        scenery seen twice running ends both (once could be a passer-by the colour of the
        road)."""
        static_now = sample.foreground & ~hidden
        near = sample.threshold
        current, aside = self.current, self.aside
        go_on = (
            static_now & (current.count > 0) & (np.abs(sample.aligned - current.content) <= near)
        )
        resume = (
            static_now
            & ~go_on
            & (aside.count > 0)
            & (np.abs(sample.aligned - aside.content) <= near)
        )
        fresh = static_now & ~go_on & ~resume
        # The current count goes aside unless a longer one is there already: the bag's
        # count set aside by one walker must survive the next walker too.
        current.swap(aside, resume | (fresh & (current.count > 0) & (current.count >= aside.count)))
        counted = np.where(fresh, 1, current.count)
        current.count = np.where(go_on | resume, current.count + 1, counted)
        current.first_ms[fresh] = ts_ms
        current.content[fresh] = sample.aligned[fresh]
        # Scenery is scenery behind a person's box too (the pavement between a walker's
        # legs): a mask hides what differs, not what matches the background.
        seen_empty = ~sample.foreground & ~sample.moving
        self.empty_streak = np.where(seen_empty, np.minimum(self.empty_streak + 1, 2), 0).astype(
            np.int8
        )
        ended = self.empty_streak >= 2
        self._forget(ended)
        # A count that needs longer than ``max_confirm_s`` to be confirmed is a coincidence
        # of held samples (pieces of a crowd that keep matching), not a thing standing there.
        p = self.params
        late = ts_ms - p.max_confirm_s * 1000
        for counts in (self.current, self.aside):
            counts.count[(counts.count < p.confirm_samples) & (counts.first_ms < late)] = 0
        self.masked_count = np.where(
            sample.foreground & mask, self.masked_count + 1, self.masked_count
        )
        self.masked_count[fresh] = 0

    def _candidate(self, object_id: int, pixels: np.ndarray) -> _Candidate:
        """A new object from a confirmed component. What its pixels went through before
        counts: one that differed more often behind a person or vehicle box than in the
        open, and that one same box (IoU >= 0.5 from sample to sample, not much bigger than
        it) covered in many of the last samples, is that person or vehicle (a parked car
        the model sees two frames in three). A bag in a crowd is behind boxes as often, but
        they are different walkers in different places each time."""
        box = self._box(pixels)
        since = int(np.median(self.current.first_ms[pixels]))
        behind_mask = int(np.median(self.masked_count[pixels]))
        seen = int(np.median(self.current.count[pixels]))
        explained = behind_mask if behind_mask > seen and self._one_box_covered(box) else 0
        return _Candidate(
            object_id,
            pixels,
            self.current.content.copy(),
            box,
            since,
            views=explained + (seen if explained else 0),
            explained=explained,
        )

    def _one_box_covered(self, box: Box) -> bool:
        """Whether a person or vehicle box that stays explained ``box`` in more than
        ``max_explained_share`` of the recent samples: one whose match (IoU >= 0.5) was
        there one or two samples before (a parked car the model misses now and then).
        Walkers crossing a bag cover it for a sample or two each, in their own places."""
        p = self.params
        covering = [
            [b for b, ratio in sample if _explains(b, box, p.explained_share, ratio)]
            for sample in self._recent_explaining
        ]
        staying = sum(
            any(
                _iou(b, other) >= _SAME_BOX_IOU
                for b in boxes
                for earlier in covering[max(0, i - 2) : i]
                for other in earlier
            )
            for i, boxes in enumerate(covering)
        )
        return staying > p.max_explained_share * len(covering)

    def objects(self) -> list[StaticObject]:
        p = self.params
        return [
            StaticObject(c.box, c.score, c.object_id, c.since_ms, c.occluded)
            for c in self.candidates
            if c.explained <= p.max_explained_share * c.views
        ]

    def _judge_candidates(
        self,
        sample: Sample,
        components: list[np.ndarray | None],
        explaining: Sequence[tuple[Box, float]],
    ) -> None:
        """Present, occluded or seen empty, for every known object; components that
        continue one are consumed (set to None).

        Each of the object's pixels is compared with its own appearance and with the
        scenery, whatever box or motion is over it: an occluder shows neither, so a share
        of the whole object is evidence however crowded the street. Mostly the object →
        present; mostly scenery and hardly any object → seen empty (the pavement showing
        between walkers' legs where the bag stood); otherwise (a person standing on the
        spot, a heap being added to) → unknown."""
        p = self.params
        assert self.model.bg is not None
        kept = []
        for c in self.candidates:
            threshold = sample.threshold[c.pixels]
            values = sample.aligned[c.pixels]
            as_object = float((np.abs(values - c.appearance[c.pixels]) <= threshold).mean())
            as_scenery = float((np.abs(values - self.model.bg[c.pixels]) <= threshold).mean())
            c.occluded = True
            if as_object >= p.present_frac:
                c.occluded = False
                c.empty_views = 0
                contrast = np.abs(values - self.model.bg[c.pixels]).mean()
                c.score = round(min(1.0, float(contrast / (3.0 * threshold.mean()))), 3)
            elif as_scenery >= p.empty_frac and as_object <= p.empty_object_frac:
                c.occluded = False
                c.empty_views += 1
            self._continue(c, components, sample)
            c.views += 1
            explainer = next(
                (
                    box
                    for box, ratio in explaining
                    if _explains(box, c.box, p.explained_share, ratio)
                ),
                None,
            )
            # Only a box that stays explains: a parked car's does, walkers' pass on.
            if explainer is not None and c.explainer is not None:
                c.explained += _iou(explainer, c.explainer) >= _SAME_BOX_IOU
            c.explainer = explainer
            if c.empty_views < p.clear_empty_samples:
                kept.append(c)
            else:  # gone: what was counted of it is over, or it comes straight back
                self._forget(c.pixels)
        self.candidates = kept

    def _continue(self, c: _Candidate, components: list[np.ndarray | None], sample: Sample) -> None:
        """Let the components overlapping ``c`` become its new extent (a heap grows), unless
        they are much larger (something big stopped over it: keep what it was)."""
        size = int(c.pixels.sum())
        for index, pixels in enumerate(components):
            if pixels is None:
                continue
            overlap = int((pixels & c.pixels).sum())
            if overlap == 0:
                continue
            area = int(pixels.sum())
            if overlap >= 0.3 * min(area, size):
                components[index] = None
                if area <= 2 * size:
                    grown = pixels & ~c.pixels
                    c.appearance[grown] = self.current.content[grown]
                    c.pixels = pixels
                    c.box = self._box(pixels)

    def _absorb(self, sample: Sample, ts_ms: int) -> None:
        kept = []
        for c in self.candidates:
            if ts_ms - c.since_ms >= self.params.absorb_s * 1000:
                self.model.absorb(c.pixels, sample)
                self._forget(c.pixels)
            else:
                kept.append(c)
        self.candidates = kept

    def _forget(self, where: np.ndarray) -> None:
        """End every count at ``where``: what was counted there is over."""
        self.current.count[where] = 0
        self.aside.count[where] = 0
        self.masked_count[where] = 0

    def _scene_changed(self, sample: Sample, mask: np.ndarray) -> bool:
        p = self.params
        known = int((self.model.known & ~mask).sum())
        still_different = int((sample.foreground & ~sample.moving).sum())
        if still_different > p.scene_change_frac * max(known, 1):
            self._scene_change_streak += 1
        else:
            self._scene_change_streak = 0
        return self._scene_change_streak >= p.scene_change_samples

    def _restart(self) -> None:
        self.model.restart()
        self._forget(np.ones(self.current.count.shape, bool))
        self.candidates = []
        self._scene_change_streak = 0

    def _components(self, static: np.ndarray) -> list[np.ndarray | None]:
        p = self.params
        binary = static.astype(np.uint8)
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        region_area = binary.shape[0] * binary.shape[1]
        least = max(p.min_area_px, p.min_area_frac * region_area)
        found: list[np.ndarray | None] = []
        for index in range(1, count):
            area = int(stats[index][cv2.CC_STAT_AREA])
            if least <= area <= p.max_area_frac * region_area:
                found.append(labels == index)
        return found

    def _box(self, pixels: np.ndarray) -> Box:
        ys, xs = np.nonzero(pixels)
        sx, sy = self.scale
        x0, y0 = self.rect[:2]
        return (
            x0 + float(xs.min()) / sx,
            y0 + float(ys.min()) / sy,
            x0 + float(xs.max() + 1) / sx,
            y0 + float(ys.max() + 1) / sy,
        )

    def _mask(self, boxes: Sequence[Box]) -> np.ndarray:
        """Person/vehicle boxes (grown by ``mask_margin``) in the region's work pixels."""
        sx, sy = self.scale
        x0, y0 = self.rect[:2]
        mask = np.zeros((self.work[1], self.work[0]), dtype=np.uint8)
        m = self.params.mask_margin
        for x1, y1, x2, y2 in boxes:
            dx, dy = (x2 - x1) * m, (y2 - y1) * m
            top_left = (int((x1 - dx - x0) * sx), int((y1 - dy - y0) * sy))
            bottom_right = (int(np.ceil((x2 + dx - x0) * sx)), int(np.ceil((y2 + dy - y0) * sy)))
            cv2.rectangle(mask, top_left, bottom_right, 1, thickness=-1)
        return mask.astype(bool)


class _ColourBackground:
    """The colour "before" picture at ``evidence_width``: the median of the first samples,
    then learnt only where the regions learn (and, outside them, where no person or
    vehicle stands)."""

    def __init__(self, params: StaticObjectParams) -> None:
        self.params = params
        self._warmup: list[np.ndarray] = []
        self._picture: np.ndarray | None = None  # float32 BGR

    def update(
        self,
        frame: np.ndarray,
        masked: Sequence[Box],
        learnt: list[tuple[_Region, np.ndarray | None]],
    ) -> None:
        size = _scaled_size(frame, self.params.evidence_width)
        small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        if self._picture is None:
            self._warmup.append(small)
            if len(self._warmup) >= self.params.background.init_samples:
                self._picture = np.median(np.stack(self._warmup), axis=0).astype(np.float32)
                self._warmup = []
            return
        fx, fy = size[0] / frame.shape[1], size[1] / frame.shape[0]
        learn = np.ones((size[1], size[0]), np.uint8)
        for x1, y1, x2, y2 in masked:
            cv2.rectangle(learn, (int(x1 * fx), int(y1 * fy)), (int(x2 * fx), int(y2 * fy)), 0, -1)
        for region, region_learnt in learnt:
            rx1, ry1, rx2, ry2 = (
                int(region.rect[0] * fx),
                int(region.rect[1] * fy),
                max(int(region.rect[0] * fx) + 1, int(region.rect[2] * fx)),
                max(int(region.rect[1] * fy) + 1, int(region.rect[3] * fy)),
            )
            if region_learnt is None:
                learn[ry1:ry2, rx1:rx2] = 0
            else:
                learn[ry1:ry2, rx1:rx2] = cv2.resize(
                    region_learnt.astype(np.uint8), (rx2 - rx1, ry2 - ry1),
                    interpolation=cv2.INTER_NEAREST,
                )  # fmt: skip
        cv2.accumulateWeighted(small, self._picture, self.params.background.alpha, learn)

    def picture(self, frame_size: tuple[int, int]) -> np.ndarray | None:
        source = self._picture
        if source is None:
            if not self._warmup:
                return None
            source = self._warmup[0]
        return cv2.resize(source.astype(np.uint8), frame_size)


def merge_overlapping(boxes: Sequence[NormBox]) -> list[NormBox]:
    """Boxes with every overlapping pair replaced by their union, so no place is analysed
    (and reported) twice."""
    merged = [tuple(b) for b in boxes]
    changed = True
    while changed:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                a, b = merged[i], merged[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    merged[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del merged[j]
                    changed = True
                    break
            if changed:
                break
    return merged  # type: ignore[return-value]


def _is_ghost(pixels: np.ndarray, now: np.ndarray, background: np.ndarray | None) -> bool:
    """Whether a new static region is scenery revealed rather than an object: something
    that stood there while the background was learnt (a crowd waiting at the start) has
    left. An object has its outline and its contrast with the ground around it in the
    current picture; a revealed patch has them in the background instead."""
    assert background is not None
    ys, xs = np.nonzero(pixels)
    y1, y2 = max(0, int(ys.min()) - 4), int(ys.max()) + 5
    x1, x2 = max(0, int(xs.min()) - 4), int(xs.max()) + 5
    inside = pixels[y1:y2, x1:x2].astype(np.uint8)
    ring = cv2.dilate(inside, np.ones((5, 5), np.uint8)).astype(bool) & ~inside.astype(bool)
    edge = (cv2.dilate(inside, _NEIGHBOURS) - cv2.erode(inside, _NEIGHBOURS)).astype(bool)
    if not ring.any() or not edge.any():
        return False
    crops = (now[y1:y2, x1:x2], background[y1:y2, x1:x2])
    outline_now, outline_then = (float(_gradient(c)[edge].mean()) for c in crops)
    contrast_now, contrast_then = (
        abs(float(np.median(c[inside.astype(bool)])) - float(np.median(c[ring]))) for c in crops
    )
    return outline_now < outline_then and contrast_now < contrast_then


def _gradient(grey: np.ndarray) -> np.ndarray:
    return np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(grey, cv2.CV_32F, 0, 1))


_NEIGHBOURS = np.ones((3, 3), np.uint8)

_SAME_BOX_IOU = 0.5  # a detection box this close to the last one is the same thing


def _iou(a: Box, b: Box) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# A person/vehicle box more than this many times an object's area is something passing in
# front of it (a bus before a bag), not the object itself.
_EXPLAINING_RATIO = 8.0


def _explains(detected: Box, obj: Box, share: float, max_ratio: float) -> bool:
    """Whether a detected person/vehicle box is the object: it holds ``share`` of the
    object's box and is at most ``max_ratio`` times its area."""
    x1, y1 = max(detected[0], obj[0]), max(detected[1], obj[1])
    x2, y2 = min(detected[2], obj[2]), min(detected[3], obj[3])
    inside = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    obj_area = (obj[2] - obj[0]) * (obj[3] - obj[1])
    detected_area = (detected[2] - detected[0]) * (detected[3] - detected[1])
    if obj_area <= 0:
        return False
    return inside >= share * obj_area and detected_area <= max_ratio * obj_area


def _scaled_size(frame: np.ndarray, width: int) -> tuple[int, int]:
    """``(w, h)`` with at most ``width`` columns, keeping the aspect ratio."""
    height, frame_width = frame.shape[:2]
    if frame_width <= width:
        return frame_width, height
    return width, max(1, round(height * width / frame_width))
