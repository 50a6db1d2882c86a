"""The grids file's outlines as the console's map gets them (gateway/grid_outlines.py): unit
grids only (a drawn parent is a community, not a grid), found by area, a MultiPolygon as its
parts with their holes, an outline of many vertices simplified to a bounded few, and a file
that no longer reads leaves the map its boxes."""

from __future__ import annotations

import json
import logging
import math

from gateway.grid_outlines import MAX_VERTICES_PER_GRID, GridOutlines, load_outlines


def square(west: float, south: float, side: float) -> list[list[float]]:
    return [[west, south], [west + side, south], [west + side, south + side],
            [west, south + side], [west, south]]  # fmt: skip


def feature(code: str, geometry: dict, parent: str = "") -> dict:
    properties = {"grid_code": code, "parent": parent, "name": f"格 {code[-3:]}"}
    return {"type": "Feature", "properties": properties, "geometry": geometry}


def test_unit_grids_by_area_parts_holes_and_a_bounded_outline(tmp_path):
    circle = [[119.35 + 0.004 * math.cos(a / 1000 * math.tau), 26.05 + 0.004 *
               math.sin(a / 1000 * math.tau)] for a in range(0, 1000)]  # fmt: skip
    circle.append(circle[0])
    document = {"type": "FeatureCollection", "features": [
        feature("350102001001", {"type": "Polygon", "coordinates": [square(119.29, 26.07, 0.03)]}),
        feature("350102001001001", {"type": "Polygon", "coordinates": [
            square(119.293, 26.086, 0.007), square(119.295, 26.088, 0.002)]}, "350102001001"),
        feature("350102001001002", {"type": "MultiPolygon", "coordinates": [
            [square(119.300, 26.086, 0.003)], [square(119.304, 26.086, 0.003)]]}, "350102001001"),
        feature("350102009009009", {"type": "Polygon", "coordinates": [circle]}),
    ]}  # fmt: skip
    path = tmp_path / "grids.geojson"
    path.write_text(json.dumps(document))
    outlines = GridOutlines.read(path)
    assert len(outlines) == 3  # the community drawn as their parent is not a unit grid
    near = outlines.meeting(26.085, 119.29, 26.095, 119.31)
    assert [o.code for o in near] == ["350102001001001", "350102001001002"]
    with_hole, two_parts = (o.drawn() for o in near)
    assert [len(rings) for rings in with_hole["polygons"]] == [2]  # its outer ring and a hole
    assert with_hole["name"] == "格 001" and with_hole["extent"] == "polygon"
    assert [len(rings) for rings in two_parts["polygons"]] == [1, 1]
    assert (two_parts["west"], two_parts["east"]) == (119.3, 119.307)
    [round_one] = outlines.meeting(26.04, 119.34, 26.06, 119.36)
    drawn = round_one.drawn()["polygons"][0][0]
    assert 10 < len(drawn) <= MAX_VERTICES_PER_GRID  # 1001 vertices, ~3 m apart, simplified


def test_a_jagged_outline_is_simplified_coarser_until_it_is_bounded(tmp_path):
    west, south, side, steps = 119.3, 26.08, 0.01, 4000  # a 1 km edge zigzagging by 5 m
    edge = [[west + side * n / steps, south + (0.00005 if n % 2 else 0.0)] for n in range(steps)]
    ring = [*edge, [west + side, south], [west + side, south + side], [west, south + side],
            edge[0]]  # fmt: skip
    document = {"type": "FeatureCollection", "features": [
        feature("350102001001001", {"type": "Polygon", "coordinates": [ring]})]}  # fmt: skip
    path = tmp_path / "grids.geojson"
    path.write_text(json.dumps(document))
    [jagged] = GridOutlines.read(path).meeting(26.0, 119.2, 26.2, 119.4)
    assert len(jagged.drawn()["polygons"][0][0]) <= MAX_VERTICES_PER_GRID


def test_no_file_or_one_that_no_longer_reads_leaves_the_boxes(tmp_path, caplog):
    assert load_outlines(None) is None
    broken = tmp_path / "grids.geojson"
    broken.write_text('{"type": "FeatureCollection", "features": [{"type": "Feat')
    with caplog.at_level(logging.WARNING, logger="gateway.grid_outlines"):
        assert load_outlines(broken) is None
        assert load_outlines(tmp_path / "gone.geojson") is None
    assert [r.getMessage().split(" no longer reads")[0] for r in caplog.records] == [
        f"map: the grids file {broken}", f"map: the grids file {tmp_path / 'gone.geojson'}",
    ]  # fmt: skip
