"""Unit grids (单元网格) drawn as GeoJSON polygons, and the grid a point lies in.

The device registry and camera zones give most alerts their grid code; a location without
one gets it here, so that the responsible unit (属地原则) and storm control per grid work for
every source. A city exports its grids as a GeoJSON FeatureCollection of Polygon or
MultiPolygon features (coordinates ``[lon, lat]``, WGS-84) with properties ``grid_code``,
optional ``parent`` (the community or street the grid belongs to) and ``name``.

Codes are 6 to 15 ASCII digits: 15 for a unit grid (GB/T 30428.1: county 6 + street 3 +
community 3 + grid 3), fewer for a street or community that a ``parent`` names.

Answers that must not depend on the order of the file:
- a point on an edge or a vertex shared by several grids gets the smallest code among them;
- a point outside every grid gets ``""``;
- a grid that is another feature's ``parent`` is never an answer (the unit grid inside it
  is), so a file may draw communities as well as their grids.

Everything from the file is bounded (size, features, vertices, coordinate ranges) and
refused with a ``GridFileError`` that names the feature's index and grid code: invalid
(self-intersecting) polygons, duplicate codes, a parent cycle.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import MultiPolygon, Point, Polygon

MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_FEATURES = 50_000
MAX_VERTICES_PER_FEATURE = 20_000
MAX_VERTICES = 2_000_000
MAX_PARTS = 100  # polygons of one MultiPolygon, and holes of one polygon
MAX_NAME_CHARS = 200
GRID_CODE = re.compile(r"[0-9]{6,15}")


class GridFileError(ValueError):
    """A grid file refused; the message names the file, the feature index and its code."""


class GridMap:
    """Unit grids in an STRtree: ``grid_at`` and ``parent_of`` answer in microseconds."""

    def __init__(self, grids: dict[str, Any], parents: dict[str, str], names: dict[str, str]):
        self._parents = parents
        self._names = names
        parent_codes = set(parents.values())
        leaves = sorted(code for code in grids if code not in parent_codes)
        self._codes = leaves
        self._tree = shapely.STRtree([grids[code] for code in leaves])

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

    @property
    def codes(self) -> list[str]:
        """The unit grids' codes (grids that are no one's parent), sorted."""
        return list(self._codes)

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

    def name_of(self, code: str) -> str:
        return self._names.get(code, "")


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
        names: dict[str, str] = {}
        first_index: dict[str, int] = {}
        for index, feature in enumerate(features):
            code, parent, name = self.properties(index, feature)
            if code in first_index:
                raise self.fail(
                    index, code, f"duplicate grid_code (also feature {first_index[code]})"
                )
            first_index[code] = index
            grids[code] = self.geometry(index, code, feature.get("geometry"))
            if parent:
                parents[code] = parent
            if name:
                names[code] = name
        self.check_cycles(parents, first_index)
        return GridMap(grids, parents, names)

    def properties(self, index: int, feature: object) -> tuple[str, str, str]:
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
        name = props.get("name", "")
        if name is None:
            name = ""
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
            raise self.fail(index, code, f"name is not text of at most {MAX_NAME_CHARS} characters")
        return code, parent, name

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

    def ring(self, index: int, code: str, ring: object) -> list[tuple[float, float]]:
        if not isinstance(ring, list) or len(ring) < 4:
            raise self.fail(index, code, "a ring needs at least 4 positions")
        self.vertices += len(ring)
        if self.vertices > MAX_VERTICES:
            raise self.fail(index, code, f"more than {MAX_VERTICES} vertices in the file")
        points = [self.position(index, code, position) for position in ring]
        if points[0] != points[-1]:
            raise self.fail(index, code, "a ring is not closed (first position != last)")
        return points

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
