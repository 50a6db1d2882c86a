"""Where each actor is at time ``t`` and what it looks like there.

Poses are closed-form in ``t`` (distance walked = speed x elapsed), never integrated, so a
frame at any moment can be rendered without rendering the ones before it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from simulators.video import sprites
from simulators.video.spec import Actor as ActorSpec
from simulators.video.spec import (
    Car,
    LitterBin,
    Pedestrian,
    Rubbish,
    Scene,
    Stall,
    Tree,
    bgr,
)

STRIDE_M = 1.5  # one full leg cycle (two steps)


def along_path(
    path: tuple[tuple[float, float], ...], distance: float
) -> tuple[tuple[float, float], float]:
    """The point ``distance`` metres along a polyline and the heading there (radians)."""
    for (x0, y0), (x1, y1) in itertools.pairwise(path):
        seg = math.hypot(x1 - x0, y1 - y0)
        if distance <= seg or (x1, y1) == path[-1]:
            a = min(distance / seg, 1.0) if seg else 0.0
            return (x0 + a * (x1 - x0), y0 + a * (y1 - y0)), math.atan2(y1 - y0, x1 - x0)
        distance -= seg
    raise ValueError("empty path")


def present(actor: ActorSpec, t_s: float) -> bool:
    """Whether ``actor`` is in the street at ``t_s`` (fixtures always are)."""
    if isinstance(actor, Tree | LitterBin):
        return True
    if isinstance(actor, Pedestrian | Car):
        walked = (t_s - actor.start_s) * actor.speed_m_s
        return 0 <= walked <= actor.length_m
    return actor.start_s <= t_s < actor.end_s


def sketch_actors(
    sk: sprites.Sketch, scene: Scene, t_s: float, only: frozenset[str] | None = None
) -> None:
    """Add every actor present at ``t_s`` (or just those in ``only``) to the sketch."""
    for actor in scene.actors:
        if (only is None or actor.id in only) and present(actor, t_s):
            _sketch(sk, actor, t_s, scene.seed)


def _sketch(sk: sprites.Sketch, actor: ActorSpec, t_s: float, seed: int) -> None:
    look = sprites.rng_for(seed, actor.id)
    if isinstance(actor, Pedestrian):
        walked = (t_s - actor.start_s) * actor.speed_m_s
        at, heading = along_path(actor.path, walked)
        sk.group(at)
        label = sk.label("person", actor.id)
        top = bgr(actor.clothes) if actor.clothes else None
        umbrella = bgr(actor.umbrella) if actor.umbrella else None
        phase = 2 * math.pi * walked / STRIDE_M
        sprites.person(sk, at, heading, phase, actor.height_m, look, label, top, umbrella)
    elif isinstance(actor, Car):
        at, heading = along_path(actor.path, (t_s - actor.start_s) * actor.speed_m_s)
        sk.group(at)
        paint = (
            bgr(actor.colour)
            if actor.colour
            else sprites.CAR_PAINT[look.integers(len(sprites.CAR_PAINT))]
        )
        sprites.car(sk, at, heading, paint, actor.body, sk.label("vehicle", actor.id))
    elif isinstance(actor, Stall):
        _stall(sk, actor, look)
    elif isinstance(actor, Rubbish):
        sk.group(actor.at)
        label = sk.label("rubbish", actor.id)
        sprites.rubbish(sk, actor.at, actor.items, actor.count, actor.spread_m, look, label)
    elif isinstance(actor, Tree):
        sk.group(actor.at)
        sprites.tree(sk, actor.at, look)
    else:
        sk.group(actor.at)
        sprites.litter_bin(sk, actor.at, bgr(actor.colour))


def _stall(sk: sprites.Sketch, stall: Stall, look: np.random.Generator) -> None:
    """The stall unit and its vendor share a group (painted together) but not a label."""
    yaw = math.radians(stall.yaw_deg)
    sk.group(stall.at)
    colour = bgr(stall.colour) if stall.colour else sprites.CRATES[look.integers(4)]
    label = sk.label("stall", stall.id)
    size = (stall.width_m, stall.depth_m)
    sprites.stall(sk, stall.at, yaw, size, stall.canopy, colour, look, label)
    if stall.vendor:
        _, left = sprites.axes_of(yaw)
        spot = (
            stall.at[0] + left[0] * 0.4 * stall.depth_m,
            stall.at[1] + left[1] * 0.4 * stall.depth_m,
        )
        vendor = sk.label("person", f"{stall.id}/vendor")
        sprites.person(sk, spot, yaw - math.pi / 2, 0.0, 1.65, look, vendor)
