"""One camera's analysis: detections of a frame → tracked, zoned Observations.

The detector backend says what is in a frame; this says which of it matters to the city
rules and for how long it has stood still: labels are mapped to rule categories (unlisted
labels are dropped), new static regions are added as ``static_object`` pseudo-detections
(dumping without a rubbish class), everything is tracked per camera, and each object is
placed in the zone holding its bottom-centre.

It also keeps what evidence needs: the latest frame, and per zone a frozen "before"
picture taken from the background model when a stationary object first showed up there,
so the photo pair shows the street without and with the stall or the rubbish.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from detectors.config import CameraSettings
from detectors.static_objects import StaticObjectDetector, StaticObjectParams
from detectors.tracking import Sighting, Tracker, TrackerParams
from detectors.zones import Box, Zone
from domain import Category, Observation

STATIC_LABEL = "static_object"
# Static objects are looked for in each zone's bounding box grown by this share of its
# size: an object standing in a zone can reach above the zone's outline.
ZONE_MARGIN = 0.15
_MASKING = (Category.PERSON, Category.VEHICLE)
# Categories whose stationary presence freezes a zone's "before" picture.
_EVIDENCE = (Category.STALL_PART, Category.RUBBISH, Category.STATIC_OBJECT)
_ZONE_COLOUR = (0, 200, 255)
_BOX_COLOUR = {
    Category.PERSON: (255, 160, 0),
    Category.VEHICLE: (200, 200, 0),
    Category.STALL_PART: (0, 0, 255),
    Category.RUBBISH: (0, 128, 255),
    Category.STATIC_OBJECT: (255, 0, 255),
}


class DetectionLike(Protocol):
    """What a backend's detection must offer (structural: no import of the backends)."""

    @property
    def label(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def box(self) -> Box: ...


class CameraAnalyser:
    """Stateful analysis of one camera's analysed frames, in time order."""

    def __init__(
        self,
        camera: CameraSettings,
        class_map: dict[str, Category],
        tracker: TrackerParams | None = None,
        static: StaticObjectParams | None = None,
    ) -> None:
        self.camera = camera
        self.zones = [Zone(settings) for settings in camera.zones]
        self._zones_by_id = {zone.id: zone for zone in self.zones}
        self._class_map = dict(class_map)
        self._tracker = Tracker(tracker)
        self._static = StaticObjectDetector(
            static, [zone.bounds(ZONE_MARGIN) for zone in self.zones]
        )
        self._frame: np.ndarray | None = None
        self._before: dict[str, np.ndarray] = {}

    def analyse(
        self, frame_bgr: np.ndarray, ts_ms: int, detections: list[DetectionLike]
    ) -> list[Observation]:
        """Observations of every tracked object seen in this frame (event time ``ts_ms``)."""
        height, width = frame_bgr.shape[:2]
        frame_size = (width, height)
        sightings: list[Sighting] = []
        for detection in detections:
            category = self._class_map.get(detection.label)
            if category is None:
                continue
            x1, y1, x2, y2 = (float(v) for v in detection.box)
            box = (x1, y1, x2, y2)
            sightings.append(Sighting(detection.label, float(detection.score), box, category))
        masked = [s.box for s in sightings if s.group in _MASKING]
        static = self._static.update(frame_bgr, ts_ms, masked)
        # The static detector keeps its objects' identity through occlusion: their stationary
        # time is its own, not the tracker's (which only sees boxes, and would hand a new
        # object at the spot of an old one that object's standing time).
        held: list[tuple[int | None, bool]] = [(None, False)] * len(sightings) + [
            (ts_ms - found.since_ms, found.occluded) for found in static
        ]
        sightings += [
            Sighting(STATIC_LABEL, found.score, found.box, Category.STATIC_OBJECT)
            for found in static
        ]

        # The tracker groups by category, so a person never continues a stall's track.
        tracks = self._tracker.update(ts_ms, sightings)
        observations = [
            Observation(
                camera_id=self.camera.id,
                zone_id=self._zone_of(sighting.box, frame_size),
                label=track.label,
                category=Category(sighting.group),
                track_id=track.track_id,
                box=sighting.box,
                score=sighting.score,
                ts=ts_ms,
                stationary_ms=track.stationary_ms(ts_ms) if standing_ms is None else standing_ms,
                frame_size=frame_size,
                occluded=occluded,
            )
            for sighting, track, (standing_ms, occluded) in zip(
                sightings, tracks, held, strict=True
            )
        ]
        self._frame = frame_bgr.copy()
        self._keep_before(observations)
        return observations

    def evidence_frames(self, zone_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        """The latest frame and the zone's "before" picture (None when no stationary
        object has been seen there), both at the latest frame's size."""
        if zone_id not in self._zones_by_id:
            raise LookupError(f"camera {self.camera.id} has no zone {zone_id!r}")
        if self._frame is None:
            raise LookupError(f"camera {self.camera.id} has analysed no frame yet")
        before = self._before.get(zone_id)
        height, width = self._frame.shape[:2]
        if before is not None and before.shape[:2] != (height, width):
            before = cv2.resize(before, (width, height))
        return self._frame, before

    def draw_evidence(
        self, frame: np.ndarray, observations: list[Observation], zone_id: str
    ) -> np.ndarray:
        """A copy of ``frame`` with the zone outlined and the zone's objects boxed and
        labelled (label, track id, seconds stationary) — the photo a case carries."""
        out = frame.copy()
        height, width = out.shape[:2]
        zone = self._zones_by_id[zone_id]
        polygon = np.round(zone.polygon_px((width, height))).astype(np.int32)
        cv2.polylines(out, [polygon], isClosed=True, color=_ZONE_COLOUR, thickness=2)
        cv2.putText(
            out,
            zone.id,
            tuple(int(v) for v in polygon[0]),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.6,
            _ZONE_COLOUR,
            2,
            cv2.LINE_AA,
        )
        for obs in observations:
            if obs.zone_id != zone_id:
                continue
            colour = _BOX_COLOUR.get(obs.category, (255, 255, 255))
            x1, y1, x2, y2 = (round(v) for v in obs.box)
            cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
            text = f"{obs.label} #{obs.track_id} {obs.stationary_ms // 1000}s"
            if obs.occluded:
                text += " (hidden)"
            cv2.putText(
                out,
                text,
                (x1, max(12, y1 - 4)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.5,
                colour,
                1,
                cv2.LINE_AA,
            )
        return out

    def _zone_of(self, box: Box, frame_size: tuple[int, int]) -> str:
        """The first configured zone holding the bottom-centre: config order decides
        between overlapping zones."""
        for zone in self.zones:
            if zone.contains(box, frame_size):
                return zone.id
        return ""

    def _keep_before(self, observations: list[Observation]) -> None:
        """Freeze the background as a zone's "before" picture when a stationary object
        first appears there; forget it when the zone is clear again."""
        occupied = {
            obs.zone_id
            for obs in observations
            if obs.zone_id and obs.category in _EVIDENCE and obs.stationary_ms > 0
        }
        for zone_id in list(self._before):
            if zone_id not in occupied:
                del self._before[zone_id]
        for zone_id in occupied - self._before.keys():
            background = self._static.background_bgr()
            if background is not None:
                self._before[zone_id] = background
