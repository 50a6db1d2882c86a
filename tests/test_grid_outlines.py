"""The grids file's outlines as the console's map gets them (gateway/grid_outlines.py): unit
grids only (a drawn parent is a community, not a grid), found by area, a MultiPolygon as its
parts with their holes, an outline of many vertices simplified to a bounded few, and a file
that no longer reads leaves the map its boxes."""

from __future__ import annotations

import asyncio
import json
import logging
import math

from hypothesis import event, given, settings
from hypothesis import strategies as st

from gateway.grid_outlines import (
    MAX_VERTICES_PER_GRID,
    GridOutlines,
    Outline,
    OutlinesOnce,
    load_outlines,
)


def square(west: float, south: float, side: float) -> list[list[float]]:
    return [[west, south], [west + side, south], [west + side, south + side],
            [west, south + side], [west, south]]  # fmt: skip


def feature(code: str, geometry: dict, parent: str = "") -> dict:
    properties = {"grid_code": code, "parent": parent, "name": f"格 {code[-3:]}"}
    return {"type": "Feature", "properties": properties, "geometry": geometry}


def drawn_of(outline: Outline) -> dict:
    """An outline as the map gets it (``drawn_json``, as gateway/console_reads.py sends it),
    its count of members as given."""
    drawn = json.loads(outline.drawn_json(7))
    assert drawn.pop("members") == 7
    return drawn


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
    with_hole, two_parts = (drawn_of(o) for o in near)
    assert [len(rings) for rings in with_hole["polygons"]] == [2]  # its outer ring and a hole
    assert with_hole["name"] == "格 001" and with_hole["extent"] == "polygon"
    assert [len(rings) for rings in two_parts["polygons"]] == [1, 1]
    assert (two_parts["west"], two_parts["east"]) == (119.3, 119.307)
    [round_one] = outlines.meeting(26.04, 119.34, 26.06, 119.36)
    drawn = drawn_of(round_one)["polygons"][0][0]
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
    assert len(drawn_of(jagged)["polygons"][0][0]) <= MAX_VERTICES_PER_GRID


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


def vertices(drawn: dict) -> int:
    return sum(len(ring) for rings in drawn["polygons"] for ring in rings)


def read_one(tmp_path, geometry: dict) -> dict:
    path = tmp_path / "grids.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection",
                                "features": [feature("350102001001001", geometry)]}))  # fmt: skip
    [outline] = GridOutlines.read(path).meeting(-90, -180, 90, 180)
    return drawn_of(outline)


def test_thousands_of_specks_keep_their_largest_parts_within_the_bound(tmp_path):
    """No simplification removes a part: the smallest are dropped, the largest kept."""
    triangles = [[[[119.0 + j * 1e-4, 26.0], [119.0 + j * 1e-4 + (j + 1) * 2e-8, 26.0],
                   [119.0 + j * 1e-4, 26.0 + 5e-7], [119.0 + j * 1e-4, 26.0]]]
                 for j in range(2000)]  # fmt: skip
    drawn = read_one(tmp_path, {"type": "MultiPolygon", "coordinates": triangles})
    assert vertices(drawn) == MAX_VERTICES_PER_GRID  # 125 triangles of 4
    kept = sorted(round((rings[0][0][0] - 119.0) / 1e-4) for rings in drawn["polygons"])
    assert kept == list(range(2000 - 125, 2000))


def star(spikes: int, outer: float = 0.004, inner: float = 0.002) -> list[list[float]]:
    ring = [[119.3 + (outer if n % 2 else inner) * math.cos(n * math.pi / spikes),
             26.08 + (outer if n % 2 else inner) * math.sin(n * math.pi / spikes)]
            for n in range(2 * spikes)]  # fmt: skip
    return [*ring, ring[0]]


def test_an_outline_too_spiky_to_simplify_is_its_hull_else_its_box(tmp_path):
    """Tips ~80 m apart and 2.5 km deep: no simplification within a grid's size removes
    them."""
    hull = read_one(tmp_path, {"type": "Polygon", "coordinates": [star(400, 0.05, 0.025)]})
    assert [len(rings) for rings in hull["polygons"]] == [1]
    assert vertices(hull) == 401  # the 400 tips, closed
    boxed = read_one(tmp_path, {"type": "Polygon", "coordinates": [star(1000, 0.2, 0.1)]})
    [[ring]] = boxed["polygons"]
    assert len(ring) == 5
    assert sorted({x for x, _ in ring}) == [round(boxed[k], 6) for k in ("west", "east")]
    assert sorted({y for _, y in ring}) == [round(boxed[k], 6) for k in ("south", "north")]


PARTS = st.lists(
    st.tuples(st.integers(3, 400), st.floats(1e-6, 4e-4), st.booleans()),
    min_size=1,
    max_size=200,
)  # (vertices, radius in degrees, jagged): 126 parts of even 4 vertices are over the bound


@settings(max_examples=50, deadline=None)
@given(parts=PARTS, holes=st.integers(0, 150))
def test_no_outline_is_drawn_with_more_vertices_than_the_bound(tmp_path_factory, parts, holes):
    polygons = []
    for n, (count, radius, jagged) in enumerate(parts):
        x, y = 119.0 + n * 0.001, 26.0
        ring = [[x + radius * (0.5 if jagged and k % 2 else 1) * math.cos(k * math.tau / count),
                 y + radius * (0.5 if jagged and k % 2 else 1) * math.sin(k * math.tau / count)]
                for k in range(count)]  # fmt: skip
        polygons.append([[*ring, ring[0]]])
    big = [square(118.0 + 0.0001 * h, 25.0, 0.00005)[::-1] for h in range(holes)]
    polygons.append([square(117.99, 24.99, 0.03), *big])
    drawn = read_one(tmp_path_factory.mktemp("g"),
                     {"type": "MultiPolygon", "coordinates": polygons})  # fmt: skip
    event(f"parts drawn: {'1' if len(drawn['polygons']) == 1 else 'several'}")
    assert 4 <= vertices(drawn) <= MAX_VERTICES_PER_GRID


def test_the_file_is_read_once_off_the_loop_for_every_map_that_waits(tmp_path):
    """The loop keeps running while the file is read; a map that gave up waiting does not
    stop the read the others wait for."""
    features = [feature(f"350102001{n:06d}", {"type": "Polygon", "coordinates": [star(300)]})
                for n in range(150)]  # fmt: skip
    path = tmp_path / "grids.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))

    async def scenario() -> tuple[int, list]:
        once, ticks, reading = OutlinesOnce(path), 0, True

        async def tick() -> None:
            nonlocal ticks
            while reading:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.ensure_future(tick())
        gave_up, waits = asyncio.ensure_future(once.get()), asyncio.ensure_future(once.get())
        await asyncio.sleep(0)
        gave_up.cancel()
        got = [await waits, await once.get()]
        reading = False
        await ticker
        return ticks, got

    ticks, (first, again) = asyncio.run(scenario())
    assert first is again and len(first) == 150
    assert ticks > 10  # the loop ran while the file was read and drawn
