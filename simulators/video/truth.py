"""Ground truth of a video scenario: which cases the gateway should file, and each camera's
zones in its own normalised image coordinates.

Which cameras see an incident is *computed* from the same projection the renderer uses,
with the detector's own rule (the zone that holds the box's bottom-centre), so a camera
moved in the YAML changes the truth with it instead of silently contradicting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from detectors.config import STALL_CLASS_BY_ZONE
from simulators.video.camera import pinhole
from simulators.video.render import projected_box
from simulators.video.spec import CameraSpec, Rubbish, Scene, Stall, Zone

RUBBISH_CLASS = "06010"  # 暴露垃圾
PRIORITY = "urgent"
SEEN_FRACTION = 0.8  # this much of the object's box must be inside the frame
MIN_ZONE_AREA = 1e-4  # of the frame; slivers at an edge are no use as zones


@dataclass(frozen=True, slots=True)
class Incident:
    """One staged stall or rubbish pile in a zone that makes it a case."""

    label: str
    zone: str
    class_code: str
    start_s: float
    end_s: float
    cameras: tuple[str, ...]  # sorted; empty when no camera sees it well enough

    def case(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "class_code": self.class_code,
            "priority": PRIORITY,
            "devices": list(self.cameras),
        }


def incidents(scene: Scene) -> list[Incident]:
    """Every stall in a vending-rule zone and every pile in a no-dumping zone."""
    found = []
    for actor in scene.actors:
        if not isinstance(actor, Stall | Rubbish):
            continue
        zone = _zone_of(scene, actor)
        if zone is None:
            continue
        code = STALL_CLASS_BY_ZONE[zone.type] if isinstance(actor, Stall) else RUBBISH_CLASS
        cameras = tuple(sorted(c.id for c in scene.cameras if _sees(scene, c, actor, zone)))
        end = min(actor.end_s, scene.duration_s)
        found.append(Incident(actor.id, zone.id, code, actor.start_s, end, cameras))
    return found


def scene_truth(scene: Scene) -> dict[str, Any]:
    """The truth file's content: expected cases (as the fleet's truth files have them)
    plus when and where each incident happens and who sees it."""
    staged = incidents(scene)
    return {
        "scenario": scene.name,
        "expected_cases": [i.case() for i in staged if i.cameras],
        "incidents": [
            {
                "label": i.label,
                "zone": i.zone,
                "class_code": i.class_code,
                "start_s": i.start_s,
                "end_s": i.end_s,
                "cameras": list(i.cameras),
            }
            for i in staged
        ],
    }


def camera_zones(scene: Scene, camera_id: str) -> list[dict[str, Any]]:
    """The zones this camera sees, as ``detectors.config.ZoneSettings`` fields, with the
    polygon projected and clipped to the frame in normalised (0..1) image coordinates."""
    cam = pinhole(scene.camera(camera_id))
    zones = []
    for zone in scene.zones:
        pixels = cam.ground_polygon_px(np.array(zone.polygon, float))
        if len(pixels) < 3:
            continue
        norm = np.clip(pixels / (cam.width, cam.height), 0.0, 1.0)
        if abs(cv2.contourArea(norm.astype(np.float32))) < MIN_ZONE_AREA:
            continue
        zones.append(
            {
                "id": zone.id,
                "type": zone.type,
                "polygon": [[round(float(x), 4), round(float(y), 4)] for x, y in norm],
                "lat": zone.lat,
                "lon": zone.lon,
                "address": zone.address,
                "grid_code": zone.grid_code,
            }
        )
    return zones


def _zone_of(scene: Scene, actor: Stall | Rubbish) -> Zone | None:
    wanted = STALL_CLASS_BY_ZONE.keys() if isinstance(actor, Stall) else {"no_dumping"}
    for zone in scene.zones:
        if zone.type in wanted and _inside(zone, actor.at):
            return zone
    return None


def _sees(scene: Scene, spec: CameraSpec, actor: Stall | Rubbish, zone: Zone) -> bool:
    """In frame (mostly) and attributed to ``zone`` by its box's bottom-centre."""
    box = projected_box(scene, spec, actor.id, actor.start_s)
    if box is None:
        return False
    x1, y1, x2, y2 = box
    area = (x2 - x1) * (y2 - y1)
    inside_w = max(0.0, min(x2, spec.size[0]) - max(x1, 0.0))
    inside_h = max(0.0, min(y2, spec.size[1]) - max(y1, 0.0))
    if area <= 0 or inside_w * inside_h < SEEN_FRACTION * area or y2 > spec.size[1]:
        return False
    foot = pinhole(spec).ground_point((x1 + x2) / 2, y2)
    return foot is not None and _inside(zone, foot)


def _inside(zone: Zone, point: tuple[float, float]) -> bool:
    contour = np.array(zone.polygon, np.float32)
    return cv2.pointPolygonTest(contour, (float(point[0]), float(point[1])), False) >= 0
