"""Actors as 3D primitives in world metres: shaded faces, ellipsoid blobs, rods, shadows.

Builders only *describe* an actor at a pose; ``render`` projects every primitive of a
frame in one numpy call and paints them far-to-near. Working in 3D (rather than pasting
2D sprites) is what makes a stall look right from both cameras, shrink with distance,
and hide a pedestrian walking behind it.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

# Sun: high, from the road side; faces turned to it are lit, the rest fall to ambient.
LIGHT = np.array([-0.35, -0.55, 0.76]) / np.linalg.norm([-0.35, -0.55, 0.76])
SHADOW_REACH = -LIGHT[:2] / LIGHT[2]  # ground offset of a shadow per metre of height
FACE, BLOB, ROD = 0, 1, 2
UNLABELLED = 0  # drawn and occluding, but not an object anyone should detect

SKIN = [(120, 160, 215), (100, 140, 200), (80, 115, 170), (140, 175, 225)]
HAIR = [(20, 20, 25), (30, 35, 45), (40, 55, 80), (110, 110, 115)]
TOPS = [
    (40, 40, 190), (160, 80, 30), (60, 140, 40), (225, 225, 225), (30, 30, 32),
    (40, 190, 225), (130, 50, 120), (120, 120, 120), (170, 130, 230), (90, 40, 20),
]  # fmt: skip
TROUSERS = [(50, 40, 30), (30, 30, 32), (110, 90, 70), (140, 140, 140), (60, 80, 100)]
CAR_PAINT = [(225, 225, 225), (30, 30, 32), (180, 178, 175), (40, 40, 170), (150, 90, 40)]
CRATES = [(170, 90, 30), (40, 40, 190), (60, 150, 50), (40, 190, 230)]
PRODUCE = [(30, 130, 235), (40, 40, 200), (60, 170, 70), (40, 200, 230), (120, 50, 110)]
CLOTHS = [(225, 225, 225), (170, 110, 40), (50, 50, 180), (180, 200, 210)]


def rng_for(*parts: object) -> np.random.Generator:
    """A generator seeded by names (actor id, scene seed): looks stay put between frames."""
    return np.random.default_rng(zlib.crc32("/".join(map(str, parts)).encode()))


@dataclass(slots=True)
class Prim:
    kind: int
    group: int
    label: int
    start: int  # first of this primitive's points in the sketch
    count: int
    colour: tuple[float, float, float]
    normal: np.ndarray | None = None  # faces
    two_sided: bool = False  # faces: canopies are seen from below too
    radius: float = 0.0  # rods, metres
    gloss: bool = False  # blobs: plastic bags shine


@dataclass(slots=True)
class Sketch:
    """Everything drawn in one frame, grouped per actor, with the labelled units named."""

    points: list[np.ndarray] = field(default_factory=list)
    prims: list[Prim] = field(default_factory=list)
    anchors: list[np.ndarray] = field(default_factory=list)  # per group, for depth order
    shadows: list[np.ndarray] = field(default_factory=list)  # ground polygons (N, 2)
    labels: list[tuple[str, str]] = field(default_factory=list)  # label id - 1 → (class, actor)
    _n: int = 0

    def group(self, anchor: tuple[float, float]) -> int:
        """Start a new actor; its primitives are painted together, ordered by ``anchor``."""
        self.anchors.append(np.array([anchor[0], anchor[1], 0.0]))
        return len(self.anchors) - 1

    def label(self, class_name: str, actor_id: str) -> int:
        self.labels.append((class_name, actor_id))
        return len(self.labels)

    def _add(self, points: np.ndarray) -> int:
        start = self._n
        self.points.append(points)
        self._n += len(points)
        return start

    def faces(
        self,
        quads: np.ndarray,
        colours: list[tuple[float, float, float]] | tuple[float, float, float],
        label: int,
        inside: np.ndarray,
        two_sided: bool = False,
    ) -> None:
        """Planar quads ``(n, 4, 3)`` (triangles repeat a corner); normals point away from
        ``inside`` so builders need not care about winding."""
        quads = np.asarray(quads, float).reshape(-1, 4, 3)
        normals = np.cross(quads[:, 1] - quads[:, 0], quads[:, 3] - quads[:, 0])
        lengths = np.linalg.norm(normals, axis=1, keepdims=True)
        normals = normals / np.maximum(lengths, 1e-9)
        outward = np.einsum("ij,ij->i", normals, quads.mean(axis=1) - inside) >= 0
        normals[~outward] *= -1
        if isinstance(colours, tuple):
            colours = [colours] * len(quads)
        group = len(self.anchors) - 1
        for quad, normal, colour in zip(quads, normals, colours, strict=True):
            start = self._add(quad)
            self.prims.append(Prim(FACE, group, label, start, 4, colour, normal, two_sided))

    def blob(
        self,
        centre: np.ndarray,
        axes: np.ndarray,
        colour: tuple[float, float, float],
        label: int,
        gloss: bool = False,
    ) -> None:
        """An ellipsoid: ``axes`` rows are its three semi-axis vectors."""
        centre = np.asarray(centre, float)
        axes = np.asarray(axes, float)
        start = self._add(np.vstack([centre, centre + axes, centre - axes]))
        group = len(self.anchors) - 1
        self.prims.append(Prim(BLOB, group, label, start, 7, colour, gloss=gloss))

    def rod(self, a: np.ndarray, b: np.ndarray, radius: float, colour: tuple, label: int) -> None:
        start = self._add(np.vstack([a, b]).astype(float))
        group = len(self.anchors) - 1
        self.prims.append(Prim(ROD, group, label, start, 2, colour, radius=radius))

    def shadow(self, footprint: np.ndarray, height_m: float, lift_m: float = 0.0) -> None:
        """The ground shadow of a column of this footprint and height under the sun,
        standing on the ground or floating ``lift_m`` above it (a crown, a canopy)."""
        base = np.asarray(footprint, float) + SHADOW_REACH * lift_m
        self.shadows.append(np.vstack([base, base + SHADOW_REACH * height_m]))


def axes_of(heading: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit forward and left vectors on the ground for a heading in radians."""
    c, s = math.cos(heading), math.sin(heading)
    return np.array([c, s, 0.0]), np.array([-s, c, 0.0])


UP = np.array([0.0, 0.0, 1.0])


def prism(
    sk: Sketch,
    centre: np.ndarray,
    heading: float,
    half: tuple[float, float],
    z: tuple[float, float],
    colours: list[tuple[float, float, float]] | tuple[float, float, float],
    label: int,
    top_scale: tuple[float, float] = (1.0, 1.0),
    top_shift: float = 0.0,
) -> None:
    """A box, or a frustum with a scaled/shifted top (car cabins, torsos).

    ``colours`` is one colour or six: bottom, top, front (+forward), back, right, left.
    """
    fwd, left = axes_of(heading)
    base = np.array([centre[0], centre[1], 0.0])
    corners = []
    for level, (sx, sy), shift in ((z[0], (1, 1), 0.0), (z[1], top_scale, top_shift)):
        for cf, cl in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
            corners.append(
                base + fwd * (cf * half[0] * sx + shift) + left * (cl * half[1] * sy) + UP * level
            )
    c = np.array(corners)
    quads = c[[[0, 1, 2, 3], [4, 5, 6, 7], [1, 2, 6, 5], [3, 0, 4, 7], [0, 1, 5, 4], [2, 3, 7, 6]]]
    sk.faces(quads, colours, label, c.mean(axis=0))


def cone(
    sk: Sketch,
    apex: np.ndarray,
    rim_centre: np.ndarray,
    radius: float,
    segments: int,
    colours: tuple[tuple[float, float, float], tuple[float, float, float]],
    label: int,
) -> None:
    """An umbrella canopy: alternating panels, visible from below as well as above."""
    angles = np.linspace(0, 2 * np.pi, segments + 1)
    rim = rim_centre + radius * np.stack([np.cos(angles), np.sin(angles), 0 * angles], axis=1)
    quads = np.stack([np.broadcast_to(apex, rim[:-1].shape), rim[:-1], rim[1:], rim[1:]], axis=1)
    panels = [colours[i % 2] for i in range(segments)]
    sk.faces(quads, panels, label, rim_centre - UP * 0.5, two_sided=True)


def person(
    sk: Sketch,
    at: tuple[float, float],
    heading: float,
    phase: float,
    height_m: float,
    look: np.random.Generator,
    label: int,
    top: tuple[float, float, float] | None = None,
    umbrella: tuple[float, float, float] | None = None,
) -> None:
    """A walking (``phase`` swings the limbs) or standing (``phase`` 0) person."""
    s = height_m / 1.7
    fwd, left = axes_of(heading)
    p = np.array([at[0], at[1], 0.0])
    skin = SKIN[look.integers(len(SKIN))]
    hair = HAIR[look.integers(len(HAIR))]
    top = top or TOPS[look.integers(len(TOPS))]
    legs = TROUSERS[look.integers(len(TROUSERS))]
    swing = math.sin(phase)
    for side in (-1, 1):
        hip = p + left * (side * 0.09 * s) + UP * 0.88 * s
        foot = p + fwd * (side * swing * 0.28 * s) + left * (side * 0.1 * s) + UP * 0.05
        sk.rod(hip, foot, 0.075 * s, legs, label)
        sk.blob(foot + fwd * 0.05, np.diag([0.07, 0.05, 0.04]) * s, (35, 35, 40), label)
    prism(sk, p, heading, (0.11 * s, 0.17 * s), (0.84 * s, 1.45 * s), top, label, (1.0, 1.25))
    hand_hold = None
    for side in (-1, 1):
        shoulder = p + left * (side * 0.22 * s) + UP * 1.40 * s
        hand = p + fwd * (-side * swing * 0.22 * s) + left * (side * 0.25 * s) + UP * 0.82 * s
        if umbrella and side == -1:
            hand = hand_hold = p + fwd * 0.24 * s - left * 0.1 * s + UP * 1.22 * s
        sk.rod(shoulder, hand, 0.05 * s, top, label)
    sk.blob(p + UP * 1.58 * s, np.diag([0.095, 0.095, 0.115]) * s, skin, label)
    sk.blob(p - fwd * 0.015 + UP * 1.64 * s, np.diag([0.1, 0.1, 0.075]) * s, hair, label)
    sk.shadow(_circle(at, 0.22 * s), 1.7 * s)
    if umbrella and hand_hold is not None:
        top_pt = hand_hold + UP * 0.85 * s
        sk.rod(hand_hold, top_pt, 0.012, (40, 40, 40), UNLABELLED)
        darker = tuple(0.8 * c for c in umbrella)
        cone(sk, top_pt, top_pt - UP * 0.3 * s, 0.55 * s, 8, (umbrella, darker), UNLABELLED)
        centre = (top_pt[0], top_pt[1])
        sk.shadow(_circle(centre, 0.55 * s), 0.3 * s, lift_m=float(top_pt[2]) - 0.3 * s)


def car(
    sk: Sketch,
    at: tuple[float, float],
    heading: float,
    paint: tuple[float, float, float],
    body: str,
    label: int,
) -> None:
    """A saloon (glass cabin on a body) or a van (tall box, glass at the front only)."""
    fwd, left = axes_of(heading)
    p = np.array([at[0], at[1], 0.0])
    glass = (55, 48, 45)
    if body == "van":
        half_len, half_wid, sill, roof = 2.4, 0.95, 1.0, 2.1
        prism(sk, p, heading, (half_len, half_wid), (0.3, sill), paint, label)
        cabin = [paint, paint, glass, paint, paint, paint]
        prism(sk, p - fwd * 0.1, heading, (2.25, 0.93), (sill, roof), cabin, label, (0.97, 0.97))
    else:
        half_len, half_wid, sill, roof = 2.2, 0.9, 0.85, 1.42
        prism(sk, p, heading, (half_len, half_wid), (0.28, sill), paint, label)
        cabin = [paint, paint, glass, glass, glass, glass]
        prism(
            sk, p - fwd * 0.2, heading, (1.3, 0.84), (sill, roof), cabin, label, (0.65, 0.88), -0.15
        )
    wheel = np.stack([fwd * 0.32, left * 0.11, UP * 0.32])
    for cf in (-1, 1):
        for cl in (-1, 1):
            centre = p + fwd * (cf * (half_len - 0.8)) + left * (cl * (half_wid - 0.04)) + UP * 0.32
            sk.blob(centre, wheel, (25, 25, 28), label)
            lamp = (210, 235, 245) if cf > 0 else (40, 40, 190)
            spot = p + fwd * (cf * (half_len + 0.01)) + left * (cl * (half_wid - 0.22)) + UP * 0.68
            sk.blob(spot, np.stack([fwd * 0.03, left * 0.14, UP * 0.06]), lamp, label)
    sk.shadow(_rectangle(p[:2], heading, np.array([half_len, half_wid])), 0.6 * roof)


def stall(
    sk: Sketch,
    at: tuple[float, float],
    yaw: float,
    size: tuple[float, float],
    canopy: str,
    colour: tuple[float, float, float],
    look: np.random.Generator,
    label: int,
) -> None:
    """The stall unit: canopy on poles (or a market umbrella), a clothed table, goods."""
    width, depth = size
    fwd, left = axes_of(yaw)
    p = np.array([at[0], at[1], 0.0])
    cloth = CLOTHS[look.integers(len(CLOTHS))]
    table = p - left * 0.1 * depth
    prism(sk, table, yaw, (0.45 * width, 0.28 * depth), (0.15, 0.78), cloth, label)
    crates = max(2, int(width / 0.45))
    for i in range(crates):
        for row in (-1, 1):
            along = (i - (crates - 1) / 2) * 0.8 * width / crates
            spot = table + fwd * along + left * row * 0.13 * depth
            crate = CRATES[look.integers(len(CRATES))]
            prism(sk, spot, yaw, (0.16, 0.11), (0.78, 0.9), crate, label)
            produce = PRODUCE[look.integers(len(PRODUCE))]
            for j in (-1, 0, 1):
                fruit = spot + fwd * (0.09 * j) + UP * (0.95 + 0.02 * (j == 0))
                sk.blob(fruit, np.eye(3) * 0.065, produce, label)
    light = (235, 235, 235)
    if canopy == "umbrella":
        radius = 0.75 * max(width, depth)
        sk.rod(p, p + UP * 2.45, 0.025, (170, 170, 170), label)
        cone(sk, p + UP * 2.5, p + UP * 2.0, radius, 12, (colour, light), label)
        footprint = _circle(at, radius)
    else:
        corners = [p + fwd * (cf * width / 2) + left * (cl * depth / 2) for cf, cl in
                   ((-1, -1), (1, -1), (1, 1), (-1, 1))]  # fmt: skip
        for corner in corners:
            sk.rod(corner, corner + UP * 2.1, 0.025, (175, 175, 170), label)
        _tent(sk, p, [c + UP * 2.1 for c in corners], colour, light, label)
        footprint = np.array([c[:2] for c in corners])
    sk.shadow(footprint, 0.5, lift_m=2.0)
    table_half = np.array([0.45 * width, 0.28 * depth])
    sk.shadow(_rectangle(table[:2], yaw, table_half), 0.78)


def _tent(
    sk: Sketch,
    p: np.ndarray,
    eaves: list[np.ndarray],
    colour: tuple[float, float, float],
    light: tuple[float, float, float],
    label: int,
) -> None:
    """A striped pyramid roof with a hanging valance, like the folding gazebos hawkers use."""
    apex = p + UP * 2.55
    quads, colours = [], []
    for i in range(4):
        a, b = eaves[i], eaves[(i + 1) % 4]
        mid = (a + b) / 2
        quads += [[apex, a, mid, mid], [apex, mid, b, b]]
        colours += [colour, light]
        stripes = max(2, round(np.linalg.norm(b - a) / 0.4))
        for k in range(stripes):
            top0, top1 = a + (b - a) * k / stripes, a + (b - a) * (k + 1) / stripes
            quads.append([top0, top1, top1 - UP * 0.22, top0 - UP * 0.22])
            colours.append(colour if k % 2 else light)
    sk.faces(np.array(quads), colours, label, p + UP * 1.5, two_sided=True)


def rubbish(
    sk: Sketch,
    at: tuple[float, float],
    items: str,
    count: int,
    spread: float,
    look: np.random.Generator,
    label: int,
) -> None:
    """A pile: glossy black bin bags, taped cardboard boxes, or a mixed heap on a mound."""
    p = np.array([at[0], at[1], 0.0])
    if items == "heap":
        mound = np.diag([spread / 2, spread / 2.4, 0.22])
        sk.blob(p + UP * 0.06, mound, (62, 72, 84), label)
    for i in range(count):
        offset = np.clip(look.normal(0, spread / 4, 2), -spread / 2, spread / 2)
        spot = p + np.array([offset[0], offset[1], 0.0])
        yaw = look.uniform(0, np.pi)
        fwd, left = axes_of(yaw)
        kind = items if items != "heap" else ("bags", "boxes", "litter")[look.integers(3)]
        lift = 0.15 if items == "heap" else 0.3 * (i >= 4)
        if kind == "bags":
            r = look.uniform(0.26, 0.38)
            shade = (28, 28, 30) if look.random() < 0.85 else CRATES[look.integers(len(CRATES))]
            axes = np.stack([fwd * r * 1.1, left * r * 0.95, UP * r * 0.8])
            sk.blob(spot + UP * (0.78 * r + lift), axes, shade, label, gloss=True)
            sk.blob(spot + UP * (1.55 * r + lift), np.eye(3) * 0.05, shade, label, gloss=True)
        elif kind == "boxes":
            hx, hy, h = look.uniform(0.14, 0.3), look.uniform(0.12, 0.25), look.uniform(0.2, 0.45)
            card = tuple(c * look.uniform(0.85, 1.15) for c in (60, 105, 150))
            prism(sk, spot, yaw, (hx, hy), (lift, lift + h), card, label)
            tape = np.array([[-hx, -0.03], [hx, -0.03], [hx, 0.03], [-hx, 0.03]])
            quad = [spot + fwd * a + left * b + UP * (lift + h + 0.004) for a, b in tape]
            sk.faces(np.array([quad]), (120, 165, 195), label, spot)
        else:
            colour = [(220, 220, 215), (170, 90, 30), (40, 40, 190), (60, 130, 60)][
                look.integers(4)
            ]
            sk.blob(spot + UP * (lift + 0.06), np.diag([0.12, 0.08, 0.06]), colour, label)
    sk.shadow(_circle(at, spread / 2 + 0.2), 0.4)


def tree(sk: Sketch, at: tuple[float, float], look: np.random.Generator) -> None:
    """A street tree: trunk and a clumped crown, high enough to walk under."""
    p = np.array([at[0], at[1], 0.0])
    sk.rod(p, p + UP * 2.8, 0.12, (45, 65, 85), UNLABELLED)
    for _ in range(4):
        off = look.normal(0, 0.45, 3)
        r = look.uniform(0.9, 1.3)
        green = (50 + look.integers(20), 105 + look.integers(40), 55 + look.integers(20))
        sk.blob(p + off + UP * 3.9, np.eye(3) * r, green, UNLABELLED)
    sk.shadow(_circle(at, 1.3), 1.2, lift_m=3.0)
    sk.shadow(_circle(at, 0.12, 6), 2.8)


def litter_bin(sk: Sketch, at: tuple[float, float], colour: tuple[float, float, float]) -> None:
    """A public two-compartment bin: a box with a darker lid."""
    p = np.array([at[0], at[1], 0.0])
    prism(sk, p, 0.0, (0.3, 0.2), (0.0, 0.85), colour, UNLABELLED)
    lid = tuple(0.6 * c for c in colour)
    prism(sk, p, 0.0, (0.32, 0.22), (0.85, 0.95), lid, UNLABELLED)
    sk.shadow(_circle(at, 0.35), 0.95)


def _rectangle(centre: np.ndarray, heading: float, half: np.ndarray) -> np.ndarray:
    fwd, left = axes_of(heading)
    signs = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)]) * half
    return centre + signs[:, :1] * fwd[:2] + signs[:, 1:] * left[:2]


def _circle(at: tuple[float, float], radius: float, n: int = 10) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([at[0] + radius * np.cos(angles), at[1] + radius * np.sin(angles)])
