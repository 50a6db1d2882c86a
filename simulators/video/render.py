"""Frames and their labels as pure functions of (scene, camera, t).

Nothing here keeps state between calls except caches keyed on the frozen spec (camera
geometry, the empty-street backdrop), so a live server restarted mid-scenario, a file
writer and a test all get the same pixels for the same moment. Sensor noise is seeded
from (scene seed, camera, frame index) for the same reason.
"""

from __future__ import annotations

import math
import zlib
from functools import lru_cache
from statistics import NormalDist
from typing import NamedTuple

import cv2
import numpy as np

from simulators.video.actors import sketch_actors
from simulators.video.backdrop import backdrop
from simulators.video.camera import NEAR_M, Pinhole, pinhole
from simulators.video.spec import CameraSpec, Scene
from simulators.video.sprites import BLOB, FACE, LIGHT, ROD, Prim, Sketch

SHIFT = 4  # OpenCV fixed-point bits: sub-pixel vertices keep slow motion smooth
ONE = 1 << SHIFT
MIN_PIXELS = 20  # smaller visible remnants are not worth a label
MIN_VISIBLE = 0.3  # labelled only while at least this much of it is not hidden
SHADOW_DEPTH = 0.42
Box = tuple[float, float, float, float]


class LabelledBox(NamedTuple):
    """A visible object's tight pixel box (``x2``/``y2`` exclusive) and who it is."""

    class_name: str
    x1: int
    y1: int
    x2: int
    y2: int
    actor_id: str


def render_frame(scene: Scene, camera_id: str, t_s: float) -> np.ndarray:
    """The BGR uint8 frame camera ``camera_id`` films ``t_s`` seconds into the scenario."""
    spec = scene.camera(camera_id)
    image, _ = draw(scene, spec, t_s, with_ids=False)
    return expose(scene, spec, t_s, image)


def frame_objects(scene: Scene, camera_id: str, t_s: float) -> list[LabelledBox]:
    """Every labelled object visible in that frame, boxed tightly around its drawn pixels."""
    _, objects = draw(scene, scene.camera(camera_id), t_s, with_ids=True)
    return objects


def frame_labels(scene: Scene, camera_id: str, t_s: float) -> list[tuple[str, int, int, int, int]]:
    """``(class_name, x1, y1, x2, y2)`` per visible person, vehicle, stall and rubbish."""
    return [(o.class_name, o.x1, o.y1, o.x2, o.y2) for o in frame_objects(scene, camera_id, t_s)]


def expose(scene: Scene, spec: CameraSpec, t_s: float, image: np.ndarray) -> np.ndarray:
    """Exposure with a slow wander (clouds, auto-exposure), tint, and per-frame sensor noise.

    Integer maths throughout (a per-channel gain, then Gaussian noise drawn through a
    quantile table): it is the per-pixel step of every frame, so it must cost ~1 ms.
    """
    light = scene.lighting
    phase = _phase(scene.seed, spec.id)
    wander = 0.7 * math.sin(2 * math.pi * t_s / 53 + phase) + 0.3 * math.sin(
        2 * math.pi * t_s / 17 + 2 * phase
    )
    gain = light.exposure * (1 + light.drift * wander) * np.array(light.tint, np.float32)
    out = cv2.transform(image, np.diag(gain).astype(np.float32))
    if not light.noise:
        return out
    frame_index = round(t_s * scene.fps)
    rng = np.random.default_rng([scene.seed, scene.camera_index(spec.id), frame_index])
    uniform = rng.integers(0, 256, image.shape, dtype=np.uint8)
    return cv2.add(out, cv2.LUT(uniform, _noise_table(light.noise)), dtype=cv2.CV_8U)


@lru_cache(maxsize=16)
def _noise_table(sigma: float) -> np.ndarray:
    """Byte → Gaussian noise level: the 256 quantiles of N(0, sigma), as int8."""
    quantiles = [NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)]
    return np.clip(np.round(np.array(quantiles) * sigma), -127, 127).astype(np.int8)


def draw(
    scene: Scene, spec: CameraSpec, t_s: float, with_ids: bool, supersample: int = 2
) -> tuple[np.ndarray, list[LabelledBox]]:
    """Backdrop, shadows and actors, before exposure; labels only when ``with_ids``."""
    cam = pinhole(spec)
    sk = Sketch()
    sketch_actors(sk, scene, t_s)
    offset = _shake(spec, t_s)
    image = backdrop(scene.street, scene.seed, spec, supersample)
    if any(offset):
        move = np.float32([[1, 0, offset[0]], [0, 1, offset[1]]])
        image = cv2.warpAffine(image, move, spec.size, borderMode=cv2.BORDER_REFLECT)
    else:
        image = image.copy()
    if not sk.prims:
        return image, []
    points = np.concatenate(sk.points)
    uv, depth = cam.project(points)
    uv += offset
    _cast_shadows(image, cam, sk.shadows, offset)
    ids = np.zeros(image.shape[:2], np.uint16) if with_ids else None
    extents: dict[int, list[int]] = {}
    painted: dict[int, int] = {}
    for group in _paint_order(sk, cam, points, depth):
        for prim, colour in group:
            box = _paint(image, ids, prim, colour, uv, depth, cam)
            if box is not None and prim.label:
                _grow(extents, prim.label, box, cam)
        if ids is not None:
            for label in {prim.label for prim, _ in group if prim.label in extents}:
                painted[label] = _count(ids, label, extents[label])
    return image, _visible(ids, sk.labels, extents, painted) if ids is not None else []


def projected_box(scene: Scene, spec: CameraSpec, actor_id: str, t_s: float) -> Box | None:
    """An actor's whole (unoccluded, unclipped) pixel box; None if absent or behind the lens."""
    sk = Sketch()
    sketch_actors(sk, scene, t_s, only=frozenset({actor_id}))
    labels = {i + 1 for i, (_, owner) in enumerate(sk.labels) if owner == actor_id}
    prims = [p for p in sk.prims if p.label in labels]
    if not prims:
        return None
    cam = pinhole(spec)
    uv, depth = cam.project(np.concatenate(sk.points))
    boxes = [_extent(p, uv, depth, cam) for p in prims]
    if any(b is None for b in boxes):
        return None
    x1, y1, x2, y2 = np.array(boxes).T
    return float(x1.min()), float(y1.min()), float(x2.max()), float(y2.max())


def _paint_order(
    sk: Sketch, cam: Pinhole, points: np.ndarray, depth: np.ndarray
) -> list[list[tuple[Prim, tuple[float, float, float]]]]:
    """Painter's algorithm: actors far to near, and within an actor its parts far to near.

    Faces turned away are dropped (or, for canopies, shown darker from below); the rest
    get Lambert shading from the sun plus some sky light.
    """
    prims = sk.prims
    starts = np.array([p.start for p in prims])
    counts = np.array([p.count for p in prims])
    mean_depth = np.add.reduceat(depth, starts) / counts
    centre_depth = np.where([p.kind == BLOB for p in prims], depth[starts], mean_depth)
    group_depth = cam.to_camera(np.array(sk.anchors))[:, 2]
    groups: dict[int, list[tuple[Prim, tuple[float, float, float]]]] = {}
    for i in np.lexsort((-centre_depth, -group_depth[[p.group for p in prims]])):
        prim = prims[i]
        colour = prim.colour
        if prim.kind == FACE:
            normal = prim.normal
            centroid = points[prim.start : prim.start + 4].mean(axis=0)
            dim = 1.0
            if np.dot(normal, cam.centre - centroid) <= 0:
                if not prim.two_sided:
                    continue
                normal, dim = -normal, 0.72
            shade = dim * (
                0.42 + 0.5 * max(0.0, float(normal @ LIGHT)) + 0.15 * max(0.0, normal[2])
            )
            colour = tuple(min(255.0, c * shade) for c in colour)
        groups.setdefault(prim.group, []).append((prim, colour))
    return list(groups.values())


def _paint(
    image: np.ndarray,
    ids: np.ndarray | None,
    prim: Prim,
    colour: tuple[float, float, float],
    uv: np.ndarray,
    depth: np.ndarray,
    cam: Pinhole,
) -> Box | None:
    """Draw one primitive (and its label into ``ids``); returns its pixel box if drawn."""
    box = _extent(prim, uv, depth, cam)
    if box is None or box[2] < 0 or box[3] < 0 or box[0] > cam.width or box[1] > cam.height:
        return None
    pts = uv[prim.start : prim.start + prim.count]
    fixed = np.round(np.clip(pts, -4000, 8000) * ONE).astype(np.int32)
    if prim.kind == FACE:
        cv2.fillPoly(image, [fixed], colour, cv2.LINE_AA, SHIFT)
        if ids is not None:
            cv2.fillPoly(ids, [fixed], prim.label, cv2.LINE_8, SHIFT)
    elif prim.kind == ROD:
        width = _rod_width(prim, depth, cam)
        shaded = tuple(0.85 * c for c in colour)
        cv2.line(image, fixed[0], fixed[1], shaded, width, cv2.LINE_AA, SHIFT)
        if ids is not None:
            cv2.line(ids, fixed[0], fixed[1], prim.label, width, cv2.LINE_8, SHIFT)
    else:
        half = (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
        _shaded_blob(image, pts[0], half, colour, prim.gloss)
        if ids is not None:
            axes = (max(1, round(half[0] * ONE)), max(1, round(half[1] * ONE)))
            cv2.ellipse(ids, fixed[0], axes, 0, 0, 360, prim.label, -1, cv2.LINE_8, SHIFT)
    return box


def _extent(prim: Prim, uv: np.ndarray, depth: np.ndarray, cam: Pinhole) -> Box | None:
    """A primitive's pixel box, or None when any of it is behind the near plane."""
    sl = slice(prim.start, prim.start + prim.count)
    if depth[sl].min() < NEAR_M:
        return None
    pts = uv[sl]
    if prim.kind == BLOB:
        half = np.abs(pts[1:] - pts[0]).max(axis=0)
        half = np.maximum(half, 0.5)
        return (pts[0, 0] - half[0], pts[0, 1] - half[1], pts[0, 0] + half[0], pts[0, 1] + half[1])
    pad = _rod_width(prim, depth, cam) / 2 if prim.kind == ROD else 0.0
    lo, hi = pts.min(axis=0) - pad, pts.max(axis=0) + pad
    return (lo[0], lo[1], hi[0], hi[1])


def _rod_width(prim: Prim, depth: np.ndarray, cam: Pinhole) -> int:
    mean = depth[prim.start : prim.start + 2].mean()
    return max(1, round(2 * prim.radius * cam.focal_px / mean))


def _shaded_blob(
    image: np.ndarray,
    centre: np.ndarray,
    half: tuple[float, float],
    colour: tuple[float, float, float],
    gloss: bool,
) -> None:
    """A radial gradient, lit from the upper left, and a specular spot for plastic."""
    layers = [(1.0, 0.0, 0.55), (0.78, 0.14, 0.8), (0.5, 0.3, 1.0)]
    if gloss:
        layers.append((0.16, 0.5, None))
    for size, shift, level in layers:
        if size < 1 and min(half) * size < 1.0:
            break
        cx = centre[0] - shift * half[0] * 0.6
        cy = centre[1] - shift * half[1] * 0.8
        axes = (max(1, round(half[0] * size * ONE)), max(1, round(half[1] * size * ONE)))
        fill = (
            tuple(min(255.0, c + 110) for c in colour)
            if level is None
            else tuple(c * level for c in colour)
        )
        at = (round(cx * ONE), round(cy * ONE))
        cv2.ellipse(image, at, axes, 0, 0, 360, fill, -1, cv2.LINE_AA, SHIFT)


def _cast_shadows(
    image: np.ndarray, cam: Pinhole, shadows: list[np.ndarray], offset: tuple[float, float]
) -> None:
    """Darken the ground under and beside actors; soft, because the sky lights shadows too."""
    if not shadows:
        return
    mask = np.zeros(image.shape[:2], np.uint8)
    for polygon in shadows:
        hull = cv2.convexHull(polygon.astype(np.float32)).reshape(-1, 2)
        uv, depth = cam.project(np.column_stack([hull, np.zeros(len(hull))]))
        if depth.min() < NEAR_M:
            continue
        fixed = np.round(np.clip(uv + offset, -4000, 8000) * ONE).astype(np.int32)
        cv2.fillPoly(mask, [fixed], 255, cv2.LINE_AA, SHIFT)
    mask = cv2.GaussianBlur(mask, (0, 0), 2.0)
    keep = 1.0 - (SHADOW_DEPTH / 255.0) * mask.astype(np.float32)
    image[:] = (image * keep[..., None]).astype(np.uint8)


def _grow(extents: dict[int, list[int]], label: int, box: Box, cam: Pinhole) -> None:
    x1, y1 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x2, y2 = min(cam.width, math.ceil(box[2]) + 1), min(cam.height, math.ceil(box[3]) + 1)
    if x2 <= x1 or y2 <= y1:
        return
    known = extents.setdefault(label, [x1, y1, x2, y2])
    known[:] = [min(known[0], x1), min(known[1], y1), max(known[2], x2), max(known[3], y2)]


def _count(ids: np.ndarray, label: int, extent: list[int]) -> int:
    x1, y1, x2, y2 = extent
    return int(np.count_nonzero(ids[y1:y2, x1:x2] == label))


def _visible(
    ids: np.ndarray,
    labels: list[tuple[str, str]],
    extents: dict[int, list[int]],
    painted: dict[int, int],
) -> list[LabelledBox]:
    """Tight boxes of what is left of each object once everything nearer was painted."""
    objects = []
    for label, (class_name, actor_id) in enumerate(labels, start=1):
        if label not in extents or not painted.get(label):
            continue
        x1, y1, x2, y2 = extents[label]
        ys, xs = np.nonzero(ids[y1:y2, x1:x2] == label)
        if len(xs) < MIN_PIXELS or len(xs) < MIN_VISIBLE * painted[label]:
            continue
        objects.append(
            LabelledBox(
                class_name,
                x1 + int(xs.min()),
                y1 + int(ys.min()),
                x1 + int(xs.max()) + 1,
                y1 + int(ys.max()) + 1,
                actor_id,
            )
        )
    return objects


def _shake(spec: CameraSpec, t_s: float) -> tuple[float, float]:
    """A smooth wobble (a pole in the wind), a pure function of time."""
    if not spec.shake_px:
        return (0.0, 0.0)
    a = _phase(0, spec.id)
    dx = 0.7 * math.sin(2 * math.pi * 0.9 * t_s + a) + 0.3 * math.sin(2 * math.pi * 2.3 * t_s)
    dy = 0.7 * math.sin(2 * math.pi * 0.7 * t_s + 2 * a) + 0.3 * math.sin(2 * math.pi * 1.9 * t_s)
    return (spec.shake_px * dx, spec.shake_px * dy)


def _phase(seed: int, camera_id: str) -> float:
    return (zlib.crc32(f"{seed}/{camera_id}".encode()) % 6283) / 1000.0
