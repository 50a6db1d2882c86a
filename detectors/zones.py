"""Camera zones: where a rule applies in the picture, and when.

A zone's polygon is stored normalised (0..1) in the config, so it survives a camera that
reconnects at another resolution; the pixel polygon is derived per frame size and cached.
Membership is decided by a box's bottom-centre, the point where the object touches the
ground: a tall umbrella leaning over a kerb line belongs to where its stand is, not to
where its canopy reaches.
"""

from __future__ import annotations

import cv2
import numpy as np

from detectors.config import STALL_CLASS_BY_ZONE, ZoneSettings
from domain import Location

Box = tuple[float, float, float, float]


def bottom_centre(box: Box) -> tuple[float, float]:
    """The ground contact point of an upright object's pixel box ``(x1, y1, x2, y2)``."""
    x1, _, x2, y2 = box
    return (x1 + x2) / 2.0, y2


class Zone:
    """One configured zone of one camera, ready for per-frame membership and schedule tests."""

    def __init__(self, settings: ZoneSettings) -> None:
        self.settings = settings
        self._pixels: dict[tuple[int, int], np.ndarray] = {}

    @property
    def id(self) -> str:
        return self.settings.id

    @property
    def type(self) -> str:
        return self.settings.type

    @property
    def location(self) -> Location:
        """The zone's place on the map: every camera that sees it reports the same spot."""
        s = self.settings
        return Location(lat=s.lat, lon=s.lon, address=s.address, grid_code=s.grid_code)

    @property
    def class_code(self) -> str:
        """What a violation here is filed as: the stall code of the zone type, or the
        zone's rubbish class for no_dumping zones."""
        return STALL_CLASS_BY_ZONE.get(self.settings.type, self.settings.rubbish_class)

    def polygon_px(self, frame_size: tuple[int, int]) -> np.ndarray:
        """The polygon in pixels of a ``(width, height)`` frame, as float32 ``(N, 2)``."""
        polygon = self._pixels.get(frame_size)
        if polygon is None:
            width, height = frame_size
            scale = np.array([width, height], dtype=np.float32)
            polygon = np.asarray(self.settings.polygon, dtype=np.float32) * scale
            self._pixels[frame_size] = polygon
        return polygon

    def bounds(self, margin: float = 0.0) -> tuple[float, float, float, float]:
        """The polygon's normalised bounding box ``(x1, y1, x2, y2)``, grown by ``margin``
        of its width and height on every side and kept inside the frame."""
        xs = [x for x, _ in self.settings.polygon]
        ys = [y for _, y in self.settings.polygon]
        dx, dy = (max(xs) - min(xs)) * margin, (max(ys) - min(ys)) * margin
        return (
            max(0.0, min(xs) - dx),
            max(0.0, min(ys) - dy),
            min(1.0, max(xs) + dx),
            min(1.0, max(ys) + dy),
        )

    def contains(self, box: Box, frame_size: tuple[int, int]) -> bool:
        """Whether the box's bottom-centre lies inside the zone (the edge counts as in)."""
        x, y = bottom_centre(box)
        return cv2.pointPolygonTest(self.polygon_px(frame_size), (x, y), False) >= 0
