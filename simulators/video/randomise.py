"""Random street scenes for training: varied streets, views, light, actors and occlusions.

A scene is drawn in two parts: the *view* (street layout, colours, camera) and the
*moment* (actors, lighting). Several moments share one view, as they would on a real
fixed camera, which also lets the expensive backdrop be rendered once per view.
"""

from __future__ import annotations

import math

import numpy as np

from simulators.video.camera import pinhole
from simulators.video.spec import (
    PALETTE,
    CameraSpec,
    Car,
    Lighting,
    LitterBin,
    Pedestrian,
    Rubbish,
    Scene,
    Stall,
    Street,
    Tree,
    View,
)

MOMENT_S = 20.0  # the instant rendered; movers are placed to be at their spot then
PAVEMENTS = ["#8a8c94", "#9a8f86", "#a07f78", "#7d8288", "#b0aa9c", "#6f7a84"]
ASPHALTS = ["#46474a", "#3a3b3e", "#55575a", "#4b4846"]


def random_view(rng: np.random.Generator, imgsz: int) -> tuple[Street, CameraSpec, int]:
    """A street and a pole camera looking at its shop-side pavement from somewhere."""
    street = Street(
        road_width_m=rng.uniform(5, 14),
        pavement_width_m=rng.uniform(3, 8),
        far_pavement_width_m=rng.uniform(2, 5),
        tile_m=rng.uniform(0.3, 0.8),
        pavement_colour=str(rng.choice(PAVEMENTS)),
        asphalt_colour=str(rng.choice(ASPHALTS)),
        crossings_x_m=(float(rng.uniform(-15, 15)),) if rng.random() < 0.3 else (),
    )
    aspect = rng.choice([9 / 16, 3 / 4, 1.0], p=[0.6, 0.3, 0.1])
    size = (imgsz, 2 * round(imgsz * aspect / 2))
    if rng.random() < 0.8:  # across the road, from the far side
        y = -street.road_width_m - rng.uniform(0.3, street.far_pavement_width_m - 0.3)
    else:  # on the shop side, looking along the pavement
        y = rng.uniform(0.3, 1.0)
    target = (rng.uniform(-15, 15), rng.uniform(0.5, street.pavement_width_m - 0.5))
    height = rng.uniform(3.5, 12)
    dx, dy = target[0], target[1] - y
    distance = math.hypot(dx, dy)
    view = View(
        x_m=0.0,
        y_m=y,
        height_m=height,
        yaw_deg=math.degrees(math.atan2(dx, dy)),
        tilt_deg=float(
            np.clip(math.degrees(math.atan2(height, distance)) + rng.uniform(-6, 6), 5, 80)
        ),
        hfov_deg=rng.uniform(40, 75),
    )
    camera = CameraSpec(id="CAM", size=size, view=view, shake_px=0.0)
    return street, camera, int(rng.integers(1 << 30))


def random_scene(
    rng: np.random.Generator, street: Street, camera: CameraSpec, seed: int, tag: str
) -> Scene:
    """Actors placed where this camera sees them, rendered at ``MOMENT_S``."""
    cam = pinhole(camera)
    pave = (0.4, street.pavement_width_m - 0.4)
    road = (-street.road_width_m + 0.9, -0.9)

    def spots(n: int, band: tuple[float, float], gap: float) -> list[tuple[float, float]]:
        """Up to ``n`` ground points in view, ``gap`` metres apart (cars do not overlap)."""
        found: list[tuple[float, float]] = []
        for _ in range(n * 30):
            if len(found) == n:
                break
            x, y = rng.uniform(-40, 40), rng.uniform(*band)
            uv, depth = cam.project(np.array([x, y, 0.5]))
            clear = all(math.hypot(x - a, y - b) >= gap for a, b in found)
            if clear and depth > 2 and 0 <= uv[0] < cam.width and 0 <= uv[1] < cam.height:
                found.append((float(x), float(y)))
        return found

    actors: list = []
    for i, at in enumerate(spots(_count(rng, 2, 0.3), pave, 3.5)):
        actors.append(
            Stall(
                kind="stall", id=f"{tag}s{i}", at=at, end_s=2 * MOMENT_S,
                yaw_deg=float(rng.choice([0, 90])) + rng.uniform(-15, 15),
                canopy=str(rng.choice(["tent", "umbrella"])), colour=_colour(rng),
                width_m=rng.uniform(1.2, 3), depth_m=rng.uniform(0.9, 2),
                vendor=bool(rng.random() < 0.85),
            )
        )  # fmt: skip
    for i, at in enumerate(spots(_count(rng, 3, 0.3), (0.1, street.pavement_width_m - 0.3), 2.0)):
        actors.append(
            Rubbish(
                kind="rubbish", id=f"{tag}r{i}", at=at, end_s=2 * MOMENT_S,
                items=str(rng.choice(["bags", "boxes", "heap"])),
                count=int(rng.integers(1, 11)), spread_m=rng.uniform(0.3, 1.5),
            )
        )  # fmt: skip
    for i, at in enumerate(spots(_count(rng, 12, 0.1), pave, 0.6)):
        heading = rng.choice([0, math.pi]) + rng.normal(0, 0.15)
        speed = rng.uniform(0.8, 1.8)
        umbrella = _colour(rng) if rng.random() < 0.25 else None
        path = _through(at, heading, 2 * MOMENT_S * speed)
        actors.append(
            Pedestrian(
                kind="pedestrian", id=f"{tag}p{i}", path=path, speed_m_s=speed,
                height_m=rng.uniform(1.5, 1.9), umbrella=umbrella,
            )
        )  # fmt: skip
    for i, at in enumerate(spots(_count(rng, 5, 0.3), road, 6.0)):
        speed = rng.uniform(3, 14)
        heading = 0.0 if at[1] < -street.road_width_m / 2 else math.pi  # drive on the right
        actors.append(
            Car(
                kind="car", id=f"{tag}c{i}", path=_through(at, heading, 2 * MOMENT_S * speed),
                speed_m_s=speed, body=str(rng.choice(["car", "van"], p=[0.8, 0.2])),
                colour=_colour(rng) if rng.random() < 0.3 else None,
            )
        )  # fmt: skip
    for i, (x, _) in enumerate(spots(int(rng.integers(0, 3)), pave, 5.0)):
        actors.append(Tree(kind="tree", id=f"{tag}t{i}", at=(x, 0.6)))
    for i, (x, _) in enumerate(spots(int(rng.integers(0, 2)), pave, 3.0)):
        colour = str(rng.choice(["green", "blue", "grey", "orange"]))
        actors.append(LitterBin(kind="litter_bin", id=f"{tag}b{i}", at=(x, 0.5), colour=colour))
    lighting = Lighting(
        exposure=rng.uniform(0.6, 1.3),
        tint=tuple(rng.uniform(0.85, 1.15, 3)),
        drift=0.0,
        noise=rng.uniform(1, 6),
    )
    return Scene(
        name=tag, duration_s=2 * MOMENT_S, seed=seed, street=street, cameras=(camera,),
        actors=tuple(actors), lighting=lighting,
    )  # fmt: skip


def _count(rng: np.random.Generator, most: int, none: float) -> int:
    """How many of a kind: none with probability ``none``, else 1..most."""
    return 0 if rng.random() < none else int(rng.integers(1, most + 1))


def _colour(rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        return str(rng.choice(sorted(PALETTE)))
    return "#" + "".join(f"{int(c):02x}" for c in rng.integers(0, 256, 3))


def _through(
    at: tuple[float, float], heading: float, length: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """A straight path with ``at`` in its middle, so a mover is there at ``MOMENT_S``."""
    dx, dy = math.cos(heading) * length / 2, math.sin(heading) * length / 2
    return ((at[0] - dx, at[1] - dy), (at[0] + dx, at[1] + dy))
