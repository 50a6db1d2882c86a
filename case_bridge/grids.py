"""Unit grids (单元网格) drawn as GeoJSON polygons, and the grid a point lies in.

The device registry and camera zones give most alerts their grid code; a location without
one gets it here, so that the responsible unit (属地原则) and storm control per grid work for
every source. A city exports its grids as a GeoJSON FeatureCollection of Polygon or
MultiPolygon features (coordinates ``[lon, lat]``, WGS-84) with properties ``grid_code``
and optional ``parent`` (the community or street the grid belongs to); other properties
(a ``name``) are not read.

Codes are 6 to 15 ASCII digits: 15 for a unit grid (GB/T 30428.1: county 6 + street 3 +
community 3 + grid 3), fewer for a street or community that a ``parent`` names.

Answers that must not depend on the order of the file:
- a point on an edge or a vertex shared by several grids gets the smallest code among them;
- a point outside every grid gets ``""``;
- a grid that is another feature's ``parent`` is never an answer (the unit grid inside it
  is), so a file may draw communities as well as their grids.

Everything from the file is bounded (size, features, vertices, coordinate ranges) and
refused with a ``GridFileError`` that names the feature's index and grid code: invalid
(self-intersecting) polygons, duplicate codes, a parent cycle, and unit grids that overlap
inside (more than ``OVERLAP_TOLERANCE_M2``): a point there would belong to two grids, and
the smallest code winning would hide a drawing mistake. Only unit grids answer, so only
they are checked against each other; a drawn parent contains its grids by design.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon

MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_FEATURES = 50_000
MAX_VERTICES_PER_FEATURE = 20_000
MAX_VERTICES = 2_000_000
MAX_PARTS = 100  # polygons of one MultiPolygon, and holes of one polygon
GRID_CODE = re.compile(r"[0-9]{6,15}")
_NUMBER_TYPES = (int, float)  # what JSON numbers parse to; a bool is not one
# Unit grids may overlap by this much: shared edges written at different precisions in
# two features (6 decimals is ~0.1 m) leave slivers of a few square metres along an edge;
# a grid drawn over another overlaps by hundreds.
OVERLAP_TOLERANCE_M2 = 10.0
M_PER_DEGREE = 111_320.0  # of latitude; of longitude, times the cosine of the latitude
OVERLAP_QUERY_GRIDS = 64  # grids whose meeting pairs are listed at once
OVERLAP_PAIR_BATCH = 4096  # pairs measured at once


class GridFileError(ValueError):
    """A grid file refused; the message names the file, the feature index and its code."""


class GridMap:
    """Unit grids in an STRtree: ``grid_at`` and ``parent_of`` answer in microseconds."""

    def __init__(self, codes: list[str], tree: shapely.STRtree, parents: dict[str, str]):
        """``codes``: the unit grids' codes, sorted, in the order of the tree's shapes."""
        self._codes = codes
        self._tree = tree
        self._parents = parents

    @classmethod
    def from_geojson(cls, path: Path | str) -> GridMap:
        path = Path(path)
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise GridFileError(f"{path}: {size} bytes, more than {MAX_FILE_BYTES}")
            text = path.read_bytes()
        except OSError as exc:
            raise GridFileError(f"{path}: cannot read: {exc.strerror}") from None
        return cls.from_document(text, source=str(path))

    @classmethod
    def from_document(cls, text: str | bytes, source: str = "grids") -> GridMap:
        """Parse and check a GeoJSON FeatureCollection (text or UTF-8 bytes)."""
        if len(text) > MAX_FILE_BYTES:
            raise GridFileError(f"{source}: more than {MAX_FILE_BYTES} bytes")
        try:
            document = json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise GridFileError(f"{source}: not JSON: {str(exc)[:200]}") from None
        return _Loader(source).load(document)

    def grid_at(self, lat: float, lon: float) -> str:
        """The unit grid containing the point (edges and vertices included); the smallest
        code when several touch it, ``""`` outside every grid or for a non-finite point."""
        if not (math.isfinite(lat) and math.isfinite(lon)):
            return ""
        hits = self._tree.query(Point(lon, lat), predicate="intersects")
        return self._codes[int(hits.min())] if len(hits) else ""

    def parent_of(self, code: str) -> str:
        """The grid's parent code, ``""`` when it has none or is unknown."""
        return self._parents.get(code, "")


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


class _Loader:
    """One pass over a FeatureCollection, counting vertices as it goes."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.vertices = 0

    def fail(self, index: int | None, code: str, reason: str) -> GridFileError:
        where = "" if index is None else f" feature {index}"
        named = f" ({code})" if code else ""
        return GridFileError(f"{self.source}:{where}{named}: {reason}")

    def load(self, document: object) -> GridMap:
        if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
            raise self.fail(None, "", "not a GeoJSON FeatureCollection")
        features = document.get("features")
        if not isinstance(features, list):
            raise self.fail(None, "", "'features' is not a list")
        if len(features) > MAX_FEATURES:
            raise self.fail(None, "", f"{len(features)} features, more than {MAX_FEATURES}")
        grids: dict[str, Any] = {}
        parents: dict[str, str] = {}
        first_index: dict[str, int] = {}
        for index, feature in enumerate(features):
            code, parent = self.properties(index, feature)
            if code in first_index:
                raise self.fail(
                    index, code, f"duplicate grid_code (also feature {first_index[code]})"
                )
            first_index[code] = index
            grids[code] = self.geometry(index, code, feature.get("geometry"))
            if parent:
                parents[code] = parent
        self.check_cycles(parents, first_index)
        drawn_parents = set(parents.values())
        codes = sorted(code for code in grids if code not in drawn_parents)
        shapes = np.array([grids[code] for code in codes], dtype=object)
        tree = shapely.STRtree(shapes)
        self.check_overlaps(codes, shapes, tree, first_index)
        return GridMap(codes, tree, parents)

    def properties(self, index: int, feature: object) -> tuple[str, str]:
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise self.fail(index, "", "not a GeoJSON Feature")
        props = feature.get("properties")
        if not isinstance(props, dict):
            raise self.fail(index, "", "no properties")
        code = props.get("grid_code")
        if not isinstance(code, str) or not GRID_CODE.fullmatch(code):
            raise self.fail(index, "", "grid_code is not 6 to 15 ASCII digits (quote it)")
        parent = props.get("parent", "")
        if parent is None:
            parent = ""
        if not isinstance(parent, str) or (parent and not GRID_CODE.fullmatch(parent)):
            raise self.fail(index, code, "parent is not 6 to 15 ASCII digits")
        if parent == code:
            raise self.fail(index, code, "a grid cannot be its own parent")
        return code, parent

    def geometry(self, index: int, code: str, geometry: object) -> Any:
        if not isinstance(geometry, dict):
            raise self.fail(index, code, "no geometry")
        kind, coordinates = geometry.get("type"), geometry.get("coordinates")
        before = self.vertices
        if kind == "Polygon":
            shape: Any = self.polygon(index, code, coordinates)
        elif kind == "MultiPolygon":
            if not isinstance(coordinates, list) or not 1 <= len(coordinates) <= MAX_PARTS:
                raise self.fail(index, code, f"a MultiPolygon needs 1 to {MAX_PARTS} polygons")
            shape = MultiPolygon([self.polygon(index, code, part) for part in coordinates])
        else:
            raise self.fail(index, code, "geometry is not a Polygon or MultiPolygon")
        if self.vertices - before > MAX_VERTICES_PER_FEATURE:
            raise self.fail(index, code, f"more than {MAX_VERTICES_PER_FEATURE} vertices")
        if not shape.is_valid:
            reason = shapely.is_valid_reason(shape)
            raise self.fail(index, code, f"invalid polygon: {reason}")
        if shape.area <= 0:
            raise self.fail(index, code, "the polygon has no area")
        return shape

    def polygon(self, index: int, code: str, rings: object) -> Polygon:
        if not isinstance(rings, list) or not 1 <= len(rings) <= MAX_PARTS + 1:
            raise self.fail(index, code, f"a Polygon needs 1 to {MAX_PARTS + 1} rings")
        shell, *holes = (self.ring(index, code, ring) for ring in rings)
        return Polygon(shell, holes)

    def ring(self, index: int, code: str, ring: object) -> np.ndarray:
        if not isinstance(ring, list) or len(ring) < 4:
            raise self.fail(index, code, "a ring needs at least 4 positions")
        self.vertices += len(ring)
        if self.vertices > MAX_VERTICES:
            raise self.fail(index, code, f"more than {MAX_VERTICES} vertices in the file")
        points = [
            (float(position[0]), float(position[1]))
            if type(position) is list
            and 2 <= len(position) <= 3
            and type(position[0]) in _NUMBER_TYPES
            and type(position[1]) in _NUMBER_TYPES
            and -180 <= position[0] <= 180
            and -90 <= position[1] <= 90
            else self.position(index, code, position)
            for position in ring
        ]
        if points[0] != points[-1]:
            raise self.fail(index, code, "a ring is not closed (first position != last)")
        return np.array(points)  # shapely builds from an array in half the time of a list

    def position(self, index: int, code: str, position: object) -> tuple[float, float]:
        if not isinstance(position, list) or not 2 <= len(position) <= 3:
            raise self.fail(index, code, "a position is not [lon, lat]")
        lon, lat = position[0], position[1]
        for value in (lon, lat):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail(index, code, "a coordinate is not a number")
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise self.fail(index, code, f"position [{lon}, {lat}] is outside [lon, lat] range")
        return float(lon), float(lat)

    def check_cycles(self, parents: dict[str, str], first_index: dict[str, int]) -> None:
        """Refuse a chain of parents that comes back to where it started."""
        done: set[str] = set()
        for start in sorted(parents):
            path: list[str] = []  # the chain walked from ``start``, for the message
            on_path: set[str] = set()  # the same, for a lookup in constant time
            code = start
            while code in parents and code not in done:
                if code in on_path:
                    cycle = " -> ".join([*path[path.index(code) :], code])
                    raise self.fail(first_index[code], code, f"parent cycle: {cycle}")
                path.append(code)
                on_path.add(code)
                code = parents[code]
            done.update(path)

    def check_overlaps(
        self, codes: list[str], shapes: Any, tree: shapely.STRtree, first_index: dict[str, int]
    ) -> None:
        """Refuse two unit grids whose insides overlap by more than the tolerance, naming
        the pair of smallest codes. The tree gives the pairs whose shapes meet, a few
        grids at a time, so a file of many shapes over one spot holds a bounded number of
        pairs and stops at its first overlap rather than listing all of them."""
        for start in range(0, len(shapes), OVERLAP_QUERY_GRIDS):
            left, right = tree.query(shapes[start : start + OVERLAP_QUERY_GRIDS], "intersects")
            left = left + start
            later = left < right  # each pair once, never a grid with itself
            left, right = left[later], right[later]
            order = np.lexsort((right, left))
            left, right = left[order], right[order]
            for at in range(0, len(left), OVERLAP_PAIR_BATCH):
                batch = slice(at, at + OVERLAP_PAIR_BATCH)
                self.measure_overlaps(codes, shapes, left[batch], right[batch], first_index)

    def measure_overlaps(
        self, codes: list[str], shapes: Any, left: Any, right: Any, first_index: dict[str, int]
    ) -> None:
        """Of pairs that meet, neighbours that only share an edge or a vertex (``touches``)
        are most and fine; the others are measured, the first past the tolerance refused."""
        inside = ~shapely.touches(shapes[left], shapes[right])
        left, right = left[inside], right[inside]
        if not len(left):
            return
        common = shapely.intersection(shapes[left], shapes[right])
        latitude = np.radians(shapely.get_y(shapely.centroid(common)))
        square_m = shapely.area(common) * M_PER_DEGREE**2 * np.cos(np.nan_to_num(latitude))
        over = np.flatnonzero(square_m > OVERLAP_TOLERANCE_M2)
        if not len(over):
            return
        first = over[0]
        one, other = codes[left[first]], codes[right[first]]
        raise self.fail(
            first_index[one],
            one,
            f"overlaps grid {other} (feature {first_index[other]}) by about "
            f"{square_m[first]:.0f} m² inside both; unit grids may share edges only",
        )
