"""Pinhole cameras over the street plane: world metres to pixels and back.

One model serves the renderer (actors are 3D, so vertical things foreshorten correctly), the
zone projection (ground polygons into normalised image polygons) and the ground truth
(which camera sees an incident), so pictures, zones and truth can never disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from simulators.video.spec import CameraSpec

NEAR_M = 0.2  # points closer than this in front of the lens are clipped away


@dataclass(frozen=True, slots=True)
class Pinhole:
    """``R`` rows are the camera's right, down and forward axes in world coordinates."""

    width: int
    height: int
    focal_px: float
    centre: np.ndarray  # (3,) camera position, metres
    rotation: np.ndarray  # (3, 3) world → camera

    @classmethod
    def from_spec(cls, spec: CameraSpec) -> Pinhole:
        view = spec.view
        yaw, tilt = math.radians(view.yaw_deg), math.radians(view.tilt_deg)
        forward = np.array(
            [math.sin(yaw) * math.cos(tilt), math.cos(yaw) * math.cos(tilt), -math.sin(tilt)]
        )
        right = np.array([math.cos(yaw), -math.sin(yaw), 0.0])
        down = np.cross(forward, right)
        width, height = spec.size
        focal = (width / 2) / math.tan(math.radians(view.hfov_deg) / 2)
        centre = np.array([view.x_m, view.y_m, view.height_m])
        return cls(width, height, focal, centre, np.stack([right, down, forward]))

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World ``(..., 3)`` → camera ``(..., 3)``: x right, y down, z depth in metres."""
        return (points - self.centre) @ self.rotation.T

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World ``(..., 3)`` → pixels ``(..., 2)`` and depth ``(...)``.

        Depth is clamped to ``NEAR_M`` so points behind the lens stay finite; callers that
        care (zones, truth) clip or test depth themselves.
        """
        cam = self.to_camera(points)
        depth = np.maximum(cam[..., 2], NEAR_M)
        uv = cam[..., :2] * (self.focal_px / depth)[..., None]
        uv += (self.width / 2, self.height / 2)
        return uv, cam[..., 2]

    def rays(self, scale: int = 1) -> np.ndarray:
        """World direction ``(H*scale, W*scale, 3)`` through each (sub)pixel centre."""
        us = (np.arange(self.width * scale) + 0.5) / scale - self.width / 2
        vs = (np.arange(self.height * scale) + 0.5) / scale - self.height / 2
        u, v = np.meshgrid(us / self.focal_px, vs / self.focal_px)
        cam = np.stack([u, v, np.ones_like(u)], axis=-1)
        return cam @ self.rotation  # camera → world is R^T; row vectors multiply by R

    def ground_point(self, u: float, v: float) -> tuple[float, float] | None:
        """Where the ray through pixel ``(u, v)`` meets the street (None above the horizon)."""
        cam = np.array(
            [(u - self.width / 2) / self.focal_px, (v - self.height / 2) / self.focal_px, 1]
        )
        ray = cam @ self.rotation
        if ray[2] >= -1e-9:
            return None
        s = -self.centre[2] / ray[2]
        return float(self.centre[0] + s * ray[0]), float(self.centre[1] + s * ray[1])

    def ground_polygon_px(self, polygon: np.ndarray) -> np.ndarray:
        """A ground polygon ``(N, 2)`` in metres → its visible part in pixels ``(M, 2)``.

        Clipped first against the near plane (so a zone reaching behind the camera does not
        wrap around), then against the frame; empty when the camera does not see it.
        """
        world = np.column_stack([polygon, np.zeros(len(polygon))])
        cam = clip_polygon(self.to_camera(world), np.array([0.0, 0.0, 1.0]), NEAR_M)
        if len(cam) < 3:
            return np.empty((0, 2))
        uv = cam[:, :2] * (self.focal_px / cam[:, 2])[:, None] + (self.width / 2, self.height / 2)
        for normal, offset in (
            ((1.0, 0.0), 0.0),
            ((-1.0, 0.0), -self.width),
            ((0.0, 1.0), 0.0),
            ((0.0, -1.0), -self.height),
        ):
            uv = clip_polygon(uv, np.array(normal), offset)
            if len(uv) < 3:
                return np.empty((0, 2))
        return uv


def clip_polygon(points: np.ndarray, normal: np.ndarray, offset: float) -> np.ndarray:
    """Sutherland–Hodgman: the part of a convex-or-not polygon where ``normal·p >= offset``."""
    kept: list[np.ndarray] = []
    side = points @ normal - offset
    for i in range(len(points)):
        j = (i + 1) % len(points)
        if side[i] >= 0:
            kept.append(points[i])
        if (side[i] >= 0) != (side[j] >= 0):
            a = side[i] / (side[i] - side[j])
            kept.append(points[i] + a * (points[j] - points[i]))
    return np.array(kept).reshape(-1, points.shape[1])


@lru_cache(maxsize=64)
def pinhole(spec: CameraSpec) -> Pinhole:
    """Cached per camera spec (frozen, hashable), so a frame never rebuilds it."""
    return Pinhole.from_spec(spec)
