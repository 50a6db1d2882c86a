"""The empty street as one camera sees it: road, kerbs, tiled pavements, shop fronts, sky.

Ray-cast once per camera (each pixel's ray meets the ground, a row of fronts, or the sky)
and textured procedurally from world coordinates, so both cameras see the *same* tiles,
markings and signs from their own angles. Rendered at 2x and area-averaged, which is what
keeps distant lane dashes and tile joints from shimmering. Cached per (street, seed, camera):
the result depends on nothing else.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from simulators.video.camera import pinhole
from simulators.video.spec import CameraSpec, Street, bgr

KERB_M = 0.25
BUILDING_M = 9.0  # one building per 9 m of frontage, two shop bays each
BAY_M = 4.5
SHOP_H_M = 3.2  # shop floor height; the sign band sits on it
SIGN_H_M = 0.8
HAZE = np.array([196, 192, 188], np.float32)
WALLS = np.array(
    [[170, 190, 205], [180, 182, 186], [210, 212, 214], [150, 160, 190], [95, 110, 150]],
    np.float32,
)
SIGNS = np.array(
    [[40, 40, 190], [160, 80, 30], [40, 190, 225], [60, 140, 40], [225, 225, 225], [30, 120, 230]],
    np.float32,
)


def hash01(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """A stateless integer hash of lattice cells → float32 in [0, 1)."""
    h = (ix.astype(np.int64) * 73856093) ^ (iy.astype(np.int64) * 19349663) ^ (salt * 83492791)
    h &= 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF  # < 2**63: int64 never overflows
    h ^= h >> 16
    return h.astype(np.float32) * np.float32(2**-32)


def value_noise(x: np.ndarray, y: np.ndarray, salt: int) -> np.ndarray:
    """Smooth noise in [0, 1) with unit-sized features: stains, wear, asphalt patches."""
    ix, iy = np.floor(x), np.floor(y)
    fx, fy = x - ix, y - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    c00, c10 = hash01(ix, iy, salt), hash01(ix + 1, iy, salt)
    c01, c11 = hash01(ix, iy + 1, salt), hash01(ix + 1, iy + 1, salt)
    top = c00 + (c10 - c00) * fx
    return (top + (c01 + (c11 - c01) * fx - top) * fy).astype(np.float32)


@lru_cache(maxsize=32)
def backdrop(street: Street, seed: int, spec: CameraSpec, supersample: int = 2) -> np.ndarray:
    """The BGR uint8 background of one camera, before lighting, actors and noise.

    ``supersample`` 2 is for scenes played for minutes; the training-set writer, which
    needs a fresh view per few images, trades the anti-aliasing for 4x the speed.
    """
    cam = pinhole(spec)
    rays = cam.rays(supersample).reshape(-1, 3).astype(np.float32)
    length = np.sqrt((rays * rays).sum(axis=1))
    near_y = street.pavement_width_m
    far_y = -(street.road_width_m + street.far_pavement_width_m)
    cx, cy, cz = cam.centre
    dx, dy, dz = rays[:, 0], rays[:, 1], rays[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        hits = np.stack(
            [
                np.where(dz < -1e-6, -cz / dz, np.inf),
                np.where(dy > 1e-6, (near_y - cy) / dy, np.inf),
                np.where(dy < -1e-6, (far_y - cy) / dy, np.inf),
            ]
        )
    for side, row in ((0, 1), (1, 2)):  # a front only counts below its roof line
        x, z = cx + hits[row] * dx, cz + hits[row] * dz
        finite = np.isfinite(hits[row])
        roof = np.full_like(x, -1.0, dtype=np.float32)
        roof[finite] = _roof_m(x[finite], side, seed)
        hits[row][~finite | (z > roof) | (z < 0)] = np.inf
    nearest = np.argmin(hits, axis=0)
    dist = hits[nearest, np.arange(len(nearest))]
    colour = _sky(rays[:, 2] / length)
    ground = (nearest == 0) & np.isfinite(dist)
    colour[ground] = _ground(
        cx + dist[ground] * dx[ground], cy + dist[ground] * dy[ground], street, seed
    )
    for side, row in ((0, 1), (1, 2)):
        on = (nearest == row) & np.isfinite(dist)
        shade = 1.0 if side == 0 else 0.78  # the far fronts face away from the sun
        colour[on] = shade * _front(cx + dist[on] * dx[on], cz + dist[on] * dz[on], side, seed)
    seen = np.isfinite(dist)
    far = 1 - np.exp(-dist[seen] * length[seen] / 400)
    colour[seen] += (HAZE - colour[seen]) * far[:, None].astype(np.float32)
    image = colour.reshape(spec.size[1] * supersample, spec.size[0] * supersample, 3)
    small = cv2.resize(image, spec.size, interpolation=cv2.INTER_AREA)
    return np.clip(small, 0, 255).astype(np.uint8)


def _roof_m(x: np.ndarray, side: int, seed: int) -> np.ndarray:
    return 7.0 + 12.0 * hash01(np.floor(x / BUILDING_M), np.full_like(x, side), seed + 11)


def _sky(sin_elevation: np.ndarray) -> np.ndarray:
    up = np.sqrt(np.clip(sin_elevation, 0, 1))
    horizon, zenith = np.array([222, 212, 200], np.float32), np.array([205, 160, 115], np.float32)
    return (horizon + (zenith - horizon) * up[:, None].astype(np.float32)).astype(np.float32)


def _ground(x: np.ndarray, y: np.ndarray, street: Street, seed: int) -> np.ndarray:
    """Asphalt with lane markings and zebras, concrete kerbs, tiled pavements."""
    road_w, tile = street.road_width_m, street.tile_m
    out = np.empty((len(x), 3), np.float32)
    wear = value_noise(x * 0.4, y * 0.4, seed + 1)
    road = (y < 0) & (y > -road_w)
    kerb = ((y >= 0) & (y < KERB_M)) | ((y <= -road_w) & (y > -road_w - KERB_M))
    pave = ~road & ~kerb

    rx, ry = x[road], y[road]
    grain = hash01(np.floor(rx / 0.06), np.floor(ry / 0.06), seed + 2)
    patch = value_noise(rx * 1.3, ry * 1.3, seed + 3)
    level = 1 + 0.10 * (patch - 0.5) + 0.16 * (wear[road] - 0.5) + 0.10 * (grain - 0.5)
    asphalt = np.array(bgr(street.asphalt_colour), np.float32) * level[:, None]
    centre = (np.abs(ry + road_w / 2) < 0.08) & ((rx % 6.0) < 3.0)
    edges = (np.abs(ry + 0.35) < 0.07) | (np.abs(ry + road_w - 0.35) < 0.07)
    zebra = np.zeros_like(rx, bool)
    for crossing in street.crossings_x_m:
        zebra |= (
            (np.abs(rx - crossing) < 2.0) & ((ry % 1.0) < 0.5) & (ry < -0.6) & (ry > 0.6 - road_w)
        )
    paint = centre | edges | zebra
    asphalt[paint] = np.array([205, 208, 208], np.float32) * (0.8 + 0.2 * patch[paint, None])
    out[road] = asphalt

    kx = x[kerb]
    block = 0.9 + 0.15 * hash01(np.floor(kx), np.zeros_like(kx), seed + 4)
    block[(kx % 1.0) < 0.03] = 0.6
    out[kerb] = np.array([168, 170, 170], np.float32) * block[:, None]

    px, py = x[pave], y[pave]
    ix, iy = np.floor(px / tile), np.floor(py / tile)
    tint = 0.88 + 0.2 * hash01(ix, iy, seed + 5)
    level = tint * (1 + 0.18 * (wear[pave] - 0.5))
    grout = 0.025 / tile
    joint = ((px / tile - ix) < grout) | ((py / tile - iy) < grout)
    level[joint] *= 0.62
    tiles = np.array(bgr(street.pavement_colour), np.float32) * level[:, None]
    strip_y = 0.25 * street.pavement_width_m  # 盲道: the yellow tactile strip
    tactile = (py >= strip_y) & (py < strip_y + 0.3)
    ridge = np.where((px[tactile] % 0.1) < 0.03, 0.8, 1.0).astype(np.float32)
    tiles[tactile] = np.array([40, 185, 215], np.float32) * (tint[tactile] * ridge)[:, None]
    out[pave] = tiles
    return out


def _front(x: np.ndarray, z: np.ndarray, side: int, seed: int) -> np.ndarray:
    """Shop fronts: pillars, glass or roller shutters, sign boards with 'lettering', windows."""
    building = np.floor(x / BUILDING_M)
    bay = np.floor(x / BAY_M)
    fx = x - bay * BAY_M
    sides = np.full_like(x, side)
    wall = WALLS[(hash01(building, sides, seed + 6) * len(WALLS)).astype(int)]
    out = wall * (0.94 + 0.08 * value_noise(x * 2, z * 2, seed + 7))[:, None]

    shop = z < SHOP_H_M
    pillar = (fx < 0.35) | (fx > BAY_M - 0.35)
    shutter = hash01(bay, sides, seed + 8) < 0.3
    glass = shop & ~pillar & ~shutter & (z > 0.3)
    reflect = 0.75 + 0.25 * value_noise(x * 0.7, z * 0.3, seed + 9)[glass] + 0.12 * z[glass]
    out[glass] = np.array([78, 70, 60], np.float32) * reflect[:, None]
    out[glass & (((fx - 0.35) % 1.3) < 0.07)] = (55, 55, 58)
    metal = shop & ~pillar & shutter
    rib = np.where((z[metal] % 0.12) < 0.025, 0.72, 1.0).astype(np.float32)
    out[metal] = np.array([150, 152, 155], np.float32) * rib[:, None]
    out[shop & (pillar | (z <= 0.3))] *= 0.82

    sign = (z >= SHOP_H_M) & (z < SHOP_H_M + SIGN_H_M)
    board = SIGNS[(hash01(bay, sides, seed + 10) * len(SIGNS)).astype(int)]
    out[sign] = board[sign]
    ink = np.where(board.sum(axis=1, keepdims=True) > 450, 30.0, 235.0).astype(np.float32)
    cx = (fx - 0.8) / 0.42
    stroke = hash01(
        bay * 64 + np.floor(cx),
        np.floor((z - SHOP_H_M) / 0.11) * 8 + np.floor((cx % 1) * 4),
        seed + 12,
    )
    lettering = (
        sign
        & (z > SHOP_H_M + 0.15)
        & (z < SHOP_H_M + SIGN_H_M - 0.15)
        & (cx > 0)
        & (cx < 7)
        & ((cx % 1) < 0.85)
        & (stroke > 0.45)
    )
    out[lettering] = np.broadcast_to(ink, out.shape)[lettering]

    upper = z >= SHOP_H_M + SIGN_H_M
    fz = (z - SHOP_H_M - SIGN_H_M) % 3.0
    wx = x % 2.25
    window = upper & (wx > 0.4) & (wx < 1.85) & (fz > 0.9) & (fz < 2.4)
    frame = window & ((wx < 0.47) | (wx > 1.78) | (fz < 0.97) | (fz > 2.33))
    pane = hash01(np.floor(x / 2.25), np.floor(z / 3.0), seed + 13)[window]
    out[window] = np.array([95, 85, 75], np.float32) * (0.7 + 0.5 * pane)[:, None]
    out[frame] = (205, 205, 200)
    out[upper & (fz < 0.12)] *= 0.8
    return out
