"""The unit grids' outlines for the console's map, from the configured ``cases.grids_file``.

The case dispatch reads the same GeoJSON at start-up (case_bridge/grids.py ``GridMap``,
which checks it and answers which grid a point lies in, but keeps no drawing). The map
needs the polygons themselves, and only those near what it shows: so this reads the file
once more, at the first map asked for, in a worker thread (``OutlinesOnce``: reading and
simplifying a city's grids takes a second; the event loop serves everyone meanwhile). It
keeps the unit grids (a feature that is another's ``parent`` is a community or street, not
drawn), each drawn once when read and kept as drawn, in an STRtree, and answers the grids
that meet an area, bounded in number.

Each drawn outline has at most ``MAX_VERTICES_PER_GRID`` vertices, holes included: one of
more is simplified, to about a metre first, which the map cannot show anyway, coarser while
it still has more; then its smallest parts and holes are dropped (a MultiPolygon of
thousands of specks); then it is drawn as its convex hull, or at last its box. The file
passed ``GridMap``'s checks at start-up; if it can no longer be read or parsed (changed
since), the map falls back to boxes around the grids' members (gateway/console_reads.py)
and says so in the log once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
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
Figure = Polygon | MultiPolygon


@dataclass(frozen=True)
class Outline:
    """A unit grid as read, its ``shape`` already bounded (``bounded``) and drawn once.

    The drawing is kept as its JSON text: a city's outlines go out with every map, and
    encoding them anew for each took longer than all else the map reads (and held the
    loop); the text is also a tenth of the memory of the lists of floats."""

    code: str
    name: str
    shape: Figure
    drawing: str

    @classmethod
    def of(cls, code: str, name: str, geometry: Any) -> Outline:
        figure = bounded(geometry)
        return cls(code, name, figure, compact_json(_drawing(code, name, figure)))

    def drawn_json(self, members: int) -> str:
        """As the map draws it, JSON text: ``polygons`` (each its rings of ``[lon, lat]``,
        the outer first), its box, a point inside it for its label, and how many
        ``members`` stand in it."""
        return f'{self.drawing[:-1]},"members":{int(members)}}}'


def compact_json(value: Any) -> str:
    """JSON as the API answers it (FastAPI's ``JSONResponse``: no NaN, no spaces)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def bounded(figure: Figure) -> Figure:
    """``figure`` with at most ``MAX_VERTICES_PER_GRID`` vertices: simplified, then its
    smallest parts and holes dropped, then its convex hull, then its box."""
    drawn, tolerance = figure, SIMPLIFY_DEG
    while shapely.get_num_coordinates(drawn) > MAX_VERTICES_PER_GRID and (
        tolerance < MAX_SIMPLIFY_DEG
    ):
        drawn = figure.simplify(tolerance, preserve_topology=True)
        tolerance *= 4
    if shapely.get_num_coordinates(drawn) <= MAX_VERTICES_PER_GRID and not drawn.is_empty:
        return drawn
    largest = _largest_parts(drawn)
    if largest is not None:
        return largest
    hull = drawn.convex_hull
    if isinstance(hull, Polygon) and shapely.get_num_coordinates(hull) <= MAX_VERTICES_PER_GRID:
        return hull
    return box(*figure.bounds)


def _largest_parts(figure: Figure) -> Figure | None:
    """The largest parts, each with its largest holes, that fit the bound together; None
    when not even the largest part's outer ring does."""
    parts = figure.geoms if isinstance(figure, MultiPolygon) else [figure]
    kept: list[Polygon] = []
    room = MAX_VERTICES_PER_GRID
    for part in sorted(parts, key=lambda p: p.area, reverse=True):
        need = len(part.exterior.coords)
        if need > room or part.is_empty:
            continue
        room -= need
        holes = []
        for hole in sorted(part.interiors, key=lambda r: Polygon(r).area, reverse=True):
            if len(hole.coords) <= room:
                holes.append(hole)
                room -= len(hole.coords)
        kept.append(Polygon(part.exterior, holes))
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else MultiPolygon(kept)


def _drawing(code: str, name: str, figure: Figure) -> dict[str, Any]:
    parts = figure.geoms if isinstance(figure, MultiPolygon) else [figure]
    west, south, east, north = figure.bounds
    inside = figure.representative_point()
    return {
        "code": code,
        "name": name,
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
        # Maps are answered in worker threads; GEOS does not promise that two queries of
        # one tree may run at once, and one takes microseconds.
        self._querying = threading.Lock()

    @classmethod
    def read(cls, path: Path) -> GridOutlines:
        """The unit grids of a GeoJSON file ``GridMap`` accepted; ``ValueError`` or
        ``OSError`` for one that no longer reads."""
        document = json.loads(path.read_bytes())
        features = document["features"]
        parents = {f["properties"].get("parent") or "" for f in features}
        outlines = [
            Outline.of(
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
        area = box(west, south, east, north)
        with self._querying:
            found = sorted(self._tree.query(area, predicate="intersects"))
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


class OutlinesOnce:
    """``load_outlines(path)`` read once, in a worker thread, at the first map asked for;
    every map asked for meanwhile waits for the same read. A read that failed in a way
    ``load_outlines`` does not answer (a bug) is tried again by the next map."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._reading: asyncio.Future[GridOutlines | None] | None = None

    async def get(self) -> GridOutlines | None:
        if self._reading is None:
            self._reading = asyncio.ensure_future(asyncio.to_thread(load_outlines, self._path))
        reading = self._reading
        try:
            return await asyncio.shield(reading)  # a request gone does not stop the read
        except Exception:
            if reading.done() and self._reading is reading:
                self._reading = None
            raise
