"""Unit grids from GeoJSON: the grid of a point (inside, on a shared edge, on a vertex,
outside), parents, and a loader that refuses every malformed file with its own error."""

from __future__ import annotations

import csv
import json
import random
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from case_bridge import grids
from case_bridge.grids import GridFileError, GridMap

EXAMPLE = Path(grids.__file__).with_name("data") / "example_grids.geojson"
SCENARIOS = Path(__file__).resolve().parents[1] / "simulators" / "scenarios"
NW, NE, SW, SE = (f"35010200100100{n}" for n in range(1, 5))
FAST = settings(max_examples=50, deadline=None)


def square(code: str, west: float, south: float, east: float, north: float, **props) -> dict:
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {
        "type": "Feature",
        "properties": {"grid_code": code, **props},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def collection(*features: dict) -> str:
    return json.dumps({"type": "FeatureCollection", "features": list(features)})


def refusal(document: str) -> str:
    with pytest.raises(GridFileError) as caught:
        GridMap.from_document(document, source="g.geojson")
    return str(caught.value)


@pytest.fixture(scope="module")
def example() -> GridMap:
    return GridMap.from_geojson(EXAMPLE)


def test_a_point_inside_a_grid_gets_its_code(example: GridMap) -> None:
    assert example.grid_at(26.090, 119.296) == NW
    assert example.grid_at(26.090, 119.304) == NE
    assert example.grid_at(26.080, 119.296) == SW
    assert example.grid_at(26.080, 119.304) == SE


def test_a_shared_edge_gets_the_smallest_code_of_the_grids_that_touch_it(
    example: GridMap,
) -> None:
    assert example.grid_at(26.086, 119.303) == NE  # NE | SE
    assert example.grid_at(26.082, 119.300) == SW  # SW | SE
    assert example.grid_at(26.086, 119.300) == NW  # the vertex all four share
    assert example.grid_at(26.094, 119.300) == NW  # the vertex NW and NE share on the rim
    assert example.grid_at(26.094, 119.295) == NW  # the outer edge: one grid only


def test_the_answer_on_an_edge_does_not_depend_on_the_order_of_the_file() -> None:
    features = json.loads(EXAMPLE.read_text(encoding="utf-8"))["features"]
    for seed in range(4):
        random.Random(seed).shuffle(features)
        shuffled = GridMap.from_document(collection(*features))
        assert shuffled.grid_at(26.086, 119.303) == NE
        assert shuffled.grid_at(26.086, 119.300) == NW


def test_outside_every_grid_and_non_finite_points_get_no_grid(example: GridMap) -> None:
    assert example.grid_at(26.0941, 119.300) == ""
    assert example.grid_at(26.0, 119.0) == ""
    assert example.grid_at(float("nan"), 119.3) == ""
    assert example.grid_at(26.08, float("inf")) == ""


def test_parents(example: GridMap) -> None:
    assert {example.parent_of(code) for code in (NW, NE, SW, SE)} == {"350102001001"}
    assert example.parent_of("350102001001") == ""
    assert example.parent_of("999999999999999") == ""


def test_a_drawn_parent_is_never_the_answer_its_unit_grids_are() -> None:
    community = square("350102001001", 119.0, 26.0, 119.2, 26.2, parent="350102001")
    unit = square("350102001001001", 119.0, 26.0, 119.1, 26.2, parent="350102001001")
    both = GridMap.from_document(collection(community, unit))
    assert both.grid_at(26.1, 119.05) == "350102001001001"
    assert both.grid_at(26.1, 119.15) == ""  # inside the community, in no unit grid
    assert both.parent_of("350102001001") == "350102001"


def test_multipolygons_and_holes() -> None:
    outer = [[119.0, 26.0], [119.3, 26.0], [119.3, 26.3], [119.0, 26.3], [119.0, 26.0]]
    hole = [[119.1, 26.1], [119.2, 26.1], [119.2, 26.2], [119.1, 26.2], [119.1, 26.1]]
    island = [[[120.0, 27.0], [120.1, 27.0], [120.1, 27.1], [120.0, 27.0]]]
    feature = {
        "type": "Feature",
        "properties": {"grid_code": "350102001001009"},
        "geometry": {"type": "MultiPolygon", "coordinates": [[outer, hole], island]},
    }
    lake = square("350102001001010", 119.1, 26.1, 119.2, 26.2)
    both = GridMap.from_document(collection(feature, lake))
    assert both.grid_at(26.05, 119.05) == "350102001001009"
    assert both.grid_at(27.02, 120.05) == "350102001001009"
    assert both.grid_at(26.15, 119.15) == "350102001001010"


def test_the_example_grids_cover_the_builtin_scenarios_devices_and_cameras(
    example: GridMap,
) -> None:
    with (SCENARIOS / "builtin" / "devices.csv").open(encoding="utf-8") as handle:
        points = [(float(row["lat"]), float(row["lon"])) for row in csv.DictReader(handle)]
    for name in ("video_builtin.yaml", "footage_dumping.yaml"):
        found = _latlons(yaml.safe_load((SCENARIOS / name).read_text(encoding="utf-8")))
        assert found, name
        points += found
    assert len(points) >= 9
    assert all(example.grid_at(lat, lon) for lat, lon in points)
    assert {example.grid_at(lat, lon) for lat, lon in points} == {NW, NE, SW, SE}


def _latlons(node: Any) -> list[tuple[float, float]]:
    if isinstance(node, dict):
        here = [(node["lat"], node["lon"])] if {"lat", "lon"} <= node.keys() else []
        return here + [p for value in node.values() for p in _latlons(value)]
    if isinstance(node, list):
        return [p for value in node for p in _latlons(value)]
    return []


def test_a_self_intersecting_polygon_is_refused_naming_the_feature_and_its_code() -> None:
    bowtie = square("350102001001002", 119.0, 26.0, 119.1, 26.1)
    bowtie["geometry"]["coordinates"] = [
        [[119.0, 26.0], [119.1, 26.1], [119.1, 26.0], [119.0, 26.1], [119.0, 26.0]]
    ]
    message = refusal(collection(square(NW, 118.0, 25.0, 118.1, 25.1), bowtie))
    assert message.startswith("g.geojson: feature 1 (350102001001002): invalid polygon: ")
    assert "Self-intersection" in message


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        (
            [square(NW, 119.0, 26.0, 119.1, 26.1), square(NW, 119.2, 26.0, 119.3, 26.1)],
            f"feature 1 ({NW}): duplicate grid_code (also feature 0)",
        ),
        (
            [
                square("350102001001", 119.0, 26.0, 119.1, 26.1, parent="350102001002"),
                square("350102001002", 119.2, 26.0, 119.3, 26.1, parent="350102001001"),
            ],
            "feature 0 (350102001001): parent cycle: 350102001001 -> 350102001002 -> 350102001001",
        ),
        ([square(NW, 119.0, 26.0, 119.1, 26.1, parent=NW)], "a grid cannot be its own parent"),
        ([square(NW, 119.0, 91.0, 119.1, 91.5)], "position [119.0, 91.0] is outside"),
        ([square(NW, 181.0, 26.0, 182.0, 26.1)], "position [181.0, 26.0] is outside"),
        ([square("35010200100100A", 119.0, 26.0, 119.1, 26.1)], "feature 0: grid_code is not"),
        ([square("1234567890123456", 119.0, 26.0, 119.1, 26.1)], "feature 0: grid_code is not"),
        ([square(NW, 119.0, 26.0, 119.0, 26.1)], f"feature 0 ({NW}): invalid polygon"),
    ],
)
def test_bad_features_are_refused_with_a_reason(features: list[dict], expected: str) -> None:
    assert expected in refusal(collection(*features))


def test_numbers_as_codes_are_refused_so_leading_zeros_are_never_lost() -> None:
    feature = square(NW, 119.0, 26.0, 119.1, 26.1)
    feature["properties"]["grid_code"] = 350102001001001
    assert "feature 0: grid_code is not 6 to 15 ASCII digits (quote it)" in refusal(
        collection(feature)
    )


def test_bounds_on_size_features_and_vertices(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    three = collection(
        *(square(f"35010200100100{n}", 119 + n, 26, 119.5 + n, 26.5) for n in range(3))
    )
    monkeypatch.setattr(grids, "MAX_FEATURES", 2)
    assert "3 features, more than 2" in refusal(three)
    monkeypatch.setattr(grids, "MAX_FEATURES", 3)
    monkeypatch.setattr(grids, "MAX_VERTICES", 14)
    assert "feature 2 (350102001001002): more than 14 vertices in the file" in refusal(three)
    monkeypatch.setattr(grids, "MAX_VERTICES", 15)
    monkeypatch.setattr(grids, "MAX_VERTICES_PER_FEATURE", 4)
    assert "feature 0 (350102001001000): more than 4 vertices" in refusal(three)
    monkeypatch.setattr(grids, "MAX_VERTICES_PER_FEATURE", 5)
    loaded = GridMap.from_document(three)
    assert [loaded.grid_at(26.25, 119.25 + n) for n in range(3)] == [
        f"35010200100100{n}" for n in range(3)
    ]
    path = tmp_path / "big.geojson"
    path.write_text(three, encoding="utf-8")
    monkeypatch.setattr(grids, "MAX_FILE_BYTES", len(three) - 1)
    with pytest.raises(GridFileError, match=rf"big\.geojson: {len(three)} bytes, more than"):
        GridMap.from_geojson(path)
    with pytest.raises(GridFileError, match=r"missing\.geojson: cannot read"):
        GridMap.from_geojson(tmp_path / "missing.geojson")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("{", "not JSON"),
        ('{"type": "FeatureCollection", "features": [NaN]}', "not JSON"),
        ("[]", "not a GeoJSON FeatureCollection"),
        ('{"type": "FeatureCollection"}', "'features' is not a list"),
        ('{"type": "FeatureCollection", "features": [1]}', "feature 0: not a GeoJSON Feature"),
    ],
)
def test_documents_that_are_not_feature_collections(document: str, expected: str) -> None:
    assert expected in refusal(document)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=40,
)
NUMBER = st.integers(-400, 400) | st.floats(allow_nan=True, allow_infinity=True)
POSITIONS = st.lists(st.lists(NUMBER, min_size=0, max_size=4), max_size=8)


@FAST
@given(
    top=JSON,
    geometry_type=st.sampled_from(["Polygon", "MultiPolygon", "Point", 7]),
    rings=st.lists(POSITIONS, max_size=3) | JSON,
    code=st.sampled_from([NW, "", "12", 350102001001001, None]) | st.text(max_size=16),
    parent=st.sampled_from([NW, NE, "", None, 5]) | st.text(max_size=16),
    where=st.sampled_from(["top", "feature", "geometry"]),
)
def test_any_document_loads_or_gets_the_modules_own_error(
    top: Any, geometry_type: Any, rings: Any, code: Any, parent: Any, where: str
) -> None:
    feature = {
        "type": "Feature",
        "properties": {"grid_code": code, "parent": parent},
        "geometry": {"type": geometry_type, "coordinates": rings},
    }
    if where == "top":
        document: Any = top
    elif where == "feature":
        document = {"type": "FeatureCollection", "features": [feature, top]}
    else:
        document = {"type": "FeatureCollection", "features": [feature]}
    try:
        loaded = GridMap.from_document(json.dumps(document))
    except GridFileError as exc:
        assert str(exc).startswith("grids:")
    else:
        if where != "top":  # the feature loaded: its parent is what it said
            assert loaded.parent_of(code) == (parent or "")


@FAST
@given(
    lon_cuts=st.lists(st.integers(0, 10_000), min_size=2, max_size=6, unique=True).map(sorted),
    lat_cuts=st.lists(st.integers(0, 10_000), min_size=2, max_size=6, unique=True).map(sorted),
    cell=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    inside=st.tuples(st.floats(0.01, 0.99), st.floats(0.01, 0.99)),
    seed=st.integers(0, 1000),
)
def test_a_point_inside_exactly_one_grid_gets_its_code(
    lon_cuts: list[int],
    lat_cuts: list[int],
    cell: tuple[int, int],
    inside: tuple[float, float],
    seed: int,
) -> None:
    lons = [119.0 + cut / 100_000 for cut in lon_cuts]
    lats = [26.0 + cut / 100_000 for cut in lat_cuts]
    codes = random.Random(seed).sample(range(10**14, 10**15), (len(lons) - 1) * (len(lats) - 1))
    features, expected = [], {}
    for i in range(len(lons) - 1):
        for j in range(len(lats) - 1):
            code = str(codes[i * (len(lats) - 1) + j])
            expected[i, j] = code
            features.append(square(code, lons[i], lats[j], lons[i + 1], lats[j + 1]))
    i, j = cell[0] % (len(lons) - 1), cell[1] % (len(lats) - 1)
    lon = lons[i] + inside[0] * (lons[i + 1] - lons[i])
    lat = lats[j] + inside[1] * (lats[j + 1] - lats[j])
    assert GridMap.from_document(collection(*features)).grid_at(lat, lon) == expected[i, j]


def test_a_long_parent_chain_is_checked_in_linear_time_and_a_cycle_at_its_end_named() -> None:
    codes = [str(100_000 + n) for n in range(50_000)]
    chain = dict(pairwise(codes))
    loader = grids._Loader("g.geojson")  # the check alone: 50,000 features take seconds to parse
    started = time.perf_counter()
    loader.check_cycles(chain, dict.fromkeys(chain, 0))
    assert time.perf_counter() - started < 1.0  # a list lookup per step took 9 s
    chain[codes[-1]] = codes[-3]
    with pytest.raises(GridFileError) as caught:
        loader.check_cycles(chain, {code: n for n, code in enumerate(codes)})
    last = codes[-3:]
    assert str(caught.value) == (
        f"g.geojson: feature 49997 ({last[0]}): parent cycle: "
        f"{last[0]} -> {last[1]} -> {last[2]} -> {last[0]}"
    )


def overlap_refusal(*features: dict) -> str:
    return refusal(collection(*features)).removeprefix("g.geojson: ")


def test_grids_that_overlap_inside_are_refused_naming_both_whatever_the_order() -> None:
    west = square("350102001001002", 119.0, 26.0, 119.001, 26.001)
    east = square("350102001001001", 119.0005, 26.0, 119.0015, 26.001)  # half over west
    other = square("350102001001003", 119.01, 26.0, 119.011, 26.001)
    # 0.0005 deg of longitude (50.0 m at 26 deg N) by 0.001 deg of latitude (111.3 m)
    said = "overlaps grid 350102001001002 ({}) by about 5569 m² inside both; "
    said += "unit grids may share edges only"
    assert overlap_refusal(other, west, east) == (
        "feature 2 (350102001001001): " + said.format("feature 1")
    )
    assert overlap_refusal(east, west, other) == (
        "feature 0 (350102001001001): " + said.format("feature 1")
    )


def test_a_grid_inside_another_or_drawn_twice_is_refused() -> None:
    outer = square("350102001001009", 119.0, 26.0, 119.002, 26.002)
    inner = square("350102001001001", 119.0005, 26.0005, 119.0015, 26.0015)
    assert overlap_refusal(outer, inner).startswith(
        "feature 1 (350102001001001): overlaps grid 350102001001009 (feature 0) by about 11138 m²"
    )
    twin = square("350102001001008", 119.0, 26.0, 119.002, 26.002)
    assert overlap_refusal(outer, twin).startswith(
        "feature 1 (350102001001008): overlaps grid 350102001001009 (feature 0) by about 44552 m²"
    )


def test_a_sliver_along_a_shared_edge_is_tolerated_and_its_points_get_the_smallest_code() -> None:
    # An edge written 1e-7 deg (1 cm) apart in two grids: 1.1 m² along 111 m.
    west = square("350102001001002", 119.0, 26.0, 119.0010001, 26.001)
    east = square("350102001001001", 119.001, 26.0, 119.002, 26.001)
    both = GridMap.from_document(collection(west, east))
    assert both.grid_at(26.0005, 119.00100005) == "350102001001001"
    assert both.grid_at(26.0005, 119.0009) == "350102001001002"
    # 1e-6 deg (10 cm): 11 m², past the 10 m² tolerance.
    west = square("350102001001002", 119.0, 26.0, 119.001001, 26.001)
    assert overlap_refusal(west, east) == (
        "feature 1 (350102001001001): overlaps grid 350102001001002 (feature 0) by about 11 m²"
        " inside both; unit grids may share edges only"
    )
