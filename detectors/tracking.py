"""Per-camera multi-object tracking tuned for ~1 analysed frame per second.

City rules care about objects that *stay*: a stall that stands for five minutes, a bag
left for ten. So the tracker's job is to keep one id on a stationary object through
detector flicker and passers-by, and to say for how long it has not moved. Moving objects
only need to be told apart from stationary ones; an id switch on a walker costs nothing.

Association is greedy on an affinity of IoU plus closeness of centres, within one group
(the analyser uses the rule category, so a person never takes over a stall's track):

- at 1 fps a walker moves most of a body height between frames and a small object moves
  many times its own size, so a moving track accepts a detection up to ``max_jump`` box
  sizes away (at least ``min_jump_px``), where IoU alone would lose it every frame;
- a track that has been stationary for ``settle_ms`` only accepts detections within
  ``settled_jump`` box sizes: a passer-by crossing a waiting vendor, in a frame where the
  vendor was missed, must not drag the vendor's track away and reset its stationary time.

Stationarity is measured against an anchor, not the previous position, so a slow creep
adds up and resets it, while detector jitter (within max(8 px, 5% of the box height) of
the anchor) does not. Nor does partial occlusion: a passer-by in front of a stall moves the
stall's box edges (its ground point by tens of pixels), not the stall, so a box that still
overlaps the anchor's box by ``still_iou`` keeps its stationary time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detectors.zones import Box, bottom_centre


@dataclass(frozen=True, slots=True)
class TrackerParams:
    max_missed: int = 10  # analysed frames without a match before a track is dropped
    max_jump: float = 3.0  # moving tracks: centre jump allowed, in box sizes
    min_jump_px: float = 40.0  # ...but never less than this, for small objects
    settled_jump: float = 0.5  # stationary tracks: centre jump allowed, in box sizes
    # (never less than ``stationary_px``, so a tiny box's jitter still matches)
    settle_ms: int = 3_000  # stationary this long → the tighter gate applies
    stationary_px: float = 8.0  # anchor tolerance floor
    stationary_frac: float = 0.05  # anchor tolerance as a fraction of the box height
    still_iou: float = 0.5  # ...or the box still overlaps the anchor's box this much


@dataclass(frozen=True, slots=True)
class Sighting:
    """One detection handed to the tracker. ``group`` keeps unlike objects apart."""

    label: str
    score: float
    box: Box
    group: str = ""


@dataclass(slots=True)
class Track:
    track_id: int
    group: str
    box: Box
    score: float
    first_ms: int
    last_ms: int
    anchor: tuple[float, float]
    anchor_box: Box
    stationary_since_ms: int
    missed: int = 0
    votes: dict[str, int] = field(default_factory=dict)
    last_label: str = ""

    @property
    def label(self) -> str:
        """Majority label over the track's history (ties go to the latest label), so one
        frame of "chair" on a table does not relabel it."""
        return max(self.votes, key=lambda label: (self.votes[label], label == self.last_label))

    def stationary_ms(self, ts_ms: int) -> int:
        return ts_ms - self.stationary_since_ms


class Tracker:
    """Tracks of one camera. Never share one between streams: ids and gates are per view."""

    def __init__(self, params: TrackerParams | None = None) -> None:
        self.params = params or TrackerParams()
        self._tracks: list[Track] = []
        self._next_id = 1

    @property
    def tracks(self) -> list[Track]:
        """Live tracks, including those missed in the latest frames."""
        return list(self._tracks)

    def update(self, ts_ms: int, sightings: list[Sighting]) -> list[Track]:
        """Advance to the frame at ``ts_ms``; return the track of each sighting, in order."""
        matches = self._associate(sightings)
        result: list[Track] = []
        matched_tracks: set[int] = set()
        for index, sighting in enumerate(sightings):
            track = matches.get(index)
            if track is None:
                track = self._start(ts_ms, sighting)
            else:
                self._follow(track, sighting, ts_ms)
            matched_tracks.add(track.track_id)
            result.append(track)
        for track in self._tracks:
            if track.track_id not in matched_tracks:
                track.missed += 1
        self._tracks = [t for t in self._tracks if t.missed <= self.params.max_missed]
        return result

    def _follow(self, track: Track, sighting: Sighting, ts_ms: int) -> None:
        """Move ``track`` to its new sighting; re-anchor (stationary time restarts) only
        when the ground point has left the anchor's tolerance and the box no longer
        overlaps the anchor's box (it moved, rather than being partly hidden)."""
        x, y = bottom_centre(sighting.box)
        height = sighting.box[3] - sighting.box[1]
        tolerance = max(self.params.stationary_px, self.params.stationary_frac * height)
        moved = np.hypot(x - track.anchor[0], y - track.anchor[1]) > tolerance
        overlap = _iou_matrix(np.array([sighting.box]), np.array([track.anchor_box]))[0, 0]
        if moved and overlap < self.params.still_iou:
            track.anchor = (x, y)
            track.anchor_box = sighting.box
            track.stationary_since_ms = ts_ms
        track.box = sighting.box
        track.score = sighting.score
        track.last_ms = ts_ms
        track.missed = 0
        track.votes[sighting.label] = track.votes.get(sighting.label, 0) + 1
        track.last_label = sighting.label

    def _start(self, ts_ms: int, sighting: Sighting) -> Track:
        track = Track(
            track_id=self._next_id,
            group=sighting.group,
            box=sighting.box,
            score=sighting.score,
            first_ms=ts_ms,
            last_ms=ts_ms,
            anchor=bottom_centre(sighting.box),
            anchor_box=sighting.box,
            stationary_since_ms=ts_ms,
            votes={sighting.label: 1},
            last_label=sighting.label,
        )
        self._next_id += 1
        self._tracks.append(track)
        return track

    def _associate(self, sightings: list[Sighting]) -> dict[int, Track]:
        """Greedy matching, best affinity first; returns sighting index → track."""
        if not self._tracks or not sightings:
            return {}
        p = self.params
        old = np.array([t.box for t in self._tracks], dtype=np.float64)
        new = np.array([s.box for s in sightings], dtype=np.float64)
        iou = _iou_matrix(old, new)
        old_c = (old[:, :2] + old[:, 2:]) / 2.0
        new_c = (new[:, :2] + new[:, 2:]) / 2.0
        distance = np.linalg.norm(old_c[:, None, :] - new_c[None, :, :], axis=2)
        old_size = np.max(old[:, 2:] - old[:, :2], axis=1)
        new_size = np.max(new[:, 2:] - new[:, :2], axis=1)
        size = np.maximum(old_size[:, None], new_size[None, :])
        settled = np.array(
            [t.stationary_ms(t.last_ms) >= p.settle_ms for t in self._tracks], dtype=bool
        )
        gate = np.where(
            settled[:, None],
            np.maximum(p.settled_jump * size, p.stationary_px),
            np.maximum(p.max_jump * size, p.min_jump_px),
        )
        same_group = (
            np.array([t.group for t in self._tracks])[:, None]
            == np.array([s.group for s in sightings])[None, :]
        )
        eligible = same_group & (distance <= gate)
        affinity = iou + (1.0 - distance / np.maximum(gate, 1e-9))
        rows, cols = np.nonzero(eligible)
        order = np.argsort(-affinity[rows, cols], kind="stable")
        used_tracks: set[int] = set()
        matches: dict[int, Track] = {}
        for k in order:
            row, col = int(rows[k]), int(cols[k])
            if row in used_tracks or col in matches:
                continue
            used_tracks.add(row)
            matches[col] = self._tracks[row]
        return matches


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), xyxy."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / np.maximum(union, 1e-9)
