"""The unit grids' outlines for the console's map, from the configured ``cases.grids_file``.

The case dispatch reads the same GeoJSON at start-up (case_bridge/grids.py ``GridMap``,
which checks it and answers which grid a point lies in, but keeps no drawing). The map
needs the polygons themselves, and only those near what it shows: so this reads the file
once more, at the first map asked for, keeps the unit grids (a feature that is another's
``parent`` is a community or street, not drawn) in an STRtree, and answers the grids that
meet an area, bounded in number and in vertices (an outline of more than
``MAX_VERTICES_PER_GRID`` is simplified, to about a metre first, which the map cannot show
anyway, coarser while it still has more). The file passed ``GridMap``'s checks at
start-up; if it can no longer be read or parsed (changed since), the map falls back to
boxes around the grids' members (gateway/console_reads.py) and says so in the log once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.errors import ShapelyError
from shapely.geometry import MultiPolygon, Polygon, box, shape

log = logging.getLogger(__name__)

MAX_GRIDS = 2000  # outlines one map answer carries
MAX_VERTICES_PER_GRID = 500
SIMPLIFY_DEG = 0.00001  # ~1 m, the first try; four times coarser each next one
MAX_SIMPLIFY_DEG = 0.001  # ~100 m: a unit grid's size, coarser would not be the grid
MAX_NAME_CHARS = 60
DECIMALS = 6  # ~0.1 m


@dataclass(frozen=True)
class Outline:
    code: str
    name: str
    shape: Polygon | MultiPolygon

    def drawn(self) -> dict[str, Any]:
        """As the map draws it: ``polygons`` (each its rings of ``[lon, lat]``, the outer
        first), its box, and a point inside it for its label."""
        figure, tolerance = self.shape, SIMPLIFY_DEG
        while (
            shapely.get_num_coordinates(figure) > MAX_VERTICES_PER_GRID
            and tolerance < MAX_SIMPLIFY_DEG
        ):
            figure = self.shape.simplify(tolerance, preserve_topology=True)
            tolerance *= 4
        parts = figure.geoms if isinstance(figure, MultiPolygon) else [figure]
        west, south, east, north = figure.bounds
        inside = figure.representative_point()
        return {
            "code": self.code,
            "name": self.name,
            "extent": "polygon",
            "polygons": [[_ring(part.exterior), *map(_ring, part.interiors)] for part in parts],
            "south": south, "north": north, "west": west, "east": east,
            "label": [round(inside.y, DECIMALS), round(inside.x, DECIMALS)],
        }  # fmt: skip


def _ring(ring: Any) -> list[list[float]]:
    return [[round(x, DECIMALS), round(y, DECIMALS)] for x, y in ring.coords]


class GridOutlines:
    """Unit grids' outlines, found by area in an STRtree."""

    def __init__(self, outlines: list[Outline]) -> None:
        self._outlines = outlines
        self._tree = shapely.STRtree(np.array([o.shape for o in outlines], dtype=object))

    @classmethod
    def read(cls, path: Path) -> GridOutlines:
        """The unit grids of a GeoJSON file ``GridMap`` accepted; ``ValueError`` or
        ``OSError`` for one that no longer reads."""
        document = json.loads(path.read_bytes())
        features = document["features"]
        parents = {f["properties"].get("parent") or "" for f in features}
        outlines = [
            Outline(
                str(f["properties"]["grid_code"]),
                str(f["properties"].get("name") or "")[:MAX_NAME_CHARS],
                shape(f["geometry"]),
            )
            for f in features
            if f["properties"]["grid_code"] not in parents
        ]
        return cls(sorted(outlines, key=lambda o: o.code))

    def __len__(self) -> int:
        return len(self._outlines)

    def meeting(self, south: float, west: float, north: float, east: float) -> list[Outline]:
        """The grids that meet the area, by code, at most ``MAX_GRIDS``."""
        found = sorted(self._tree.query(box(west, south, east, north), predicate="intersects"))
        return [self._outlines[int(i)] for i in found[:MAX_GRIDS]]


def load_outlines(path: Path | None) -> GridOutlines | None:
    """The outlines of ``cases.grids_file``; None without one or when it no longer reads."""
    if path is None:
        return None
    try:
        return GridOutlines.read(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ShapelyError) as exc:
        log.warning("map: the grids file %s no longer reads (%s); grids drawn as boxes",
                    path, type(exc).__name__)  # fmt: skip
        return None
