"""Platform coordinates: GCJ-02 and BD-09 against published reference pairs, round trips
through an independent inverse, and the projected systems against what a transverse
Mercator must give (easting on the central meridian, northing = scaled meridian arc,
computed here by integration) and EPSG's own worked example."""

from __future__ import annotations

import math

import pyproj
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from case_bridge.coordinates import (
    PlatformCoordinates,
    gcj02_to_bd09,
    in_china,
    wgs84_to_gcj02,
)
from domain import Location

# (WGS-84 lat, lon) → (GCJ-02 lat, lon), with the tolerance the source's digits allow.
PUBLISHED_GCJ02 = [
    # The reference implementation's test points (googollee/eviltransform, all languages).
    ((31.1774276, 121.5272106), (31.17530398364597, 121.531541859215), 1e-12),  # Shanghai
    ((22.543847, 113.912316), (22.540796131694766, 113.9171764808363), 1e-12),  # Shenzhen
    ((39.911954, 116.377817), (39.91334545536069, 116.38404722455657), 1e-12),  # Beijing
    # coord-convert's documented example.
    ((40.0, 120.0), (40.0013047896019, 120.00567568355486), 1e-12),
    # Amap's coordinate conversion API (its documented example), 6 decimals as it answers.
    ((39.990475, 116.481499), (39.991754, 116.487586), 5e-7),
]


@pytest.mark.parametrize(("wgs", "gcj", "tolerance"), PUBLISHED_GCJ02)
def test_gcj02_matches_published_pairs(
    wgs: tuple[float, float], gcj: tuple[float, float], tolerance: float
) -> None:
    lat, lon = wgs84_to_gcj02(*wgs)
    assert abs(lat - gcj[0]) <= tolerance and abs(lon - gcj[1]) <= tolerance
    assert PlatformCoordinates("gcj02").xy(*wgs) == (lon, lat)  # x is the longitude


def test_bd09_matches_a_published_pair() -> None:
    # GCJ-02 (116.487586, 39.991754) → BD-09 (116.49412, 39.997716), MapCoords' example.
    lat, lon = gcj02_to_bd09(39.991754, 116.487586)
    assert abs(lat - 39.997716) <= 5e-7 and abs(lon - 116.49412) <= 5e-7
    x, y = PlatformCoordinates("bd09").xy(39.990475, 116.481499)  # Amap's WGS-84 point
    assert abs(x - 116.49412) <= 1e-6 and abs(y - 39.997716) <= 1e-6


def test_the_fuzhou_case_point() -> None:
    """The point test_mapped_rest.py files, pinned here where the function is proven."""
    x, y = PlatformCoordinates("gcj02").xy(26.0815, 119.2965)
    assert (round(x, 6), round(y, 6)) == (119.3013, 26.078393)
    assert 500 < Location(26.0815, 119.2965).distance_m(Location(y, x)) < 600


def inverse(forward, lat: float, lon: float) -> tuple[float, float]:
    """Fixed-point inverse of a shift-like forward map: independent of its formula."""
    guess_lat, guess_lon = lat, lon
    for _ in range(30):
        got_lat, got_lon = forward(guess_lat, guess_lon)
        guess_lat += lat - got_lat
        guess_lon += lon - got_lon
    return guess_lat, guess_lon


china = st.tuples(st.floats(18.0, 53.0), st.floats(74.0, 134.0))


@settings(max_examples=200, deadline=None)
@given(point=china)
def test_gcj02_and_bd09_round_trip_and_stay_within_their_offsets(
    point: tuple[float, float],
) -> None:
    lat, lon = point
    gcj = wgs84_to_gcj02(lat, lon)
    assert 19 < Location(lat, lon).distance_m(Location(*gcj)) < 720  # metres
    back = inverse(wgs84_to_gcj02, *gcj)
    assert abs(back[0] - lat) < 1e-9 and abs(back[1] - lon) < 1e-9
    bd = gcj02_to_bd09(*gcj)
    assert Location(*gcj).distance_m(Location(*bd)) < 1500
    back = inverse(gcj02_to_bd09, *bd)
    assert abs(back[0] - gcj[0]) < 1e-9 and abs(back[1] - gcj[1]) < 1e-9


@settings(max_examples=200, deadline=None)
@given(lat=st.floats(-90, 90), lon=st.floats(-180, 180))
def test_outside_china_gcj02_is_wgs84(lat: float, lon: float) -> None:
    x, y = PlatformCoordinates("gcj02").xy(lat, lon)
    assert ((x, y) == (lon, lat)) == (not in_china(lat, lon))


@pytest.mark.parametrize("city", [(51.5007, -0.1246), (40.6892, -74.0445), (-33.8568, 151.2153)])
def test_cities_abroad_keep_their_wgs84(city: tuple[float, float]) -> None:
    assert PlatformCoordinates("gcj02").xy(*city) == (city[1], city[0])


def meridian_arc_m(lat: float, a: float, inverse_flattening: float) -> float:
    """Distance from the equator along a meridian, by Simpson's rule on the meridian
    radius of curvature: what a transverse Mercator's northing is on its central meridian."""
    f = 1 / inverse_flattening
    e2 = f * (2 - f)
    steps = 2000
    h = math.radians(lat) / steps

    def radius(phi: float) -> float:
        return a * (1 - e2) / (1 - e2 * math.sin(phi) ** 2) ** 1.5

    total = radius(0) + radius(math.radians(lat))
    total += sum((4 if i % 2 else 2) * radius(i * h) for i in range(1, steps))
    return total * h / 3


@pytest.mark.parametrize(
    ("system", "central_lon", "scale", "a", "inverse_flattening"),
    [
        # CGCS2000 / 3-degree Gauss-Kruger CM 120E (Fuzhou's zone): CGCS2000 ellipsoid.
        ("EPSG:4549", 120.0, 1.0, 6378137.0, 298.257222101),
        # WGS 84 / UTM zone 50N.
        ("EPSG:32650", 117.0, 0.9996, 6378137.0, 298.257223563),
    ],
)
@pytest.mark.parametrize("lat", [0.0, 18.25, 26.0815, 45.5])
def test_projected_on_the_central_meridian_is_the_scaled_meridian_arc(
    system: str, central_lon: float, scale: float, a: float, inverse_flattening: float, lat: float
) -> None:
    x, y = PlatformCoordinates(system).xy(lat, central_lon)
    assert abs(x - 500_000.0) < 1e-6
    assert abs(y - scale * meridian_arc_m(lat, a, inverse_flattening)) < 1e-3  # 1 mm


@settings(max_examples=100, deadline=None)
@given(lat=st.floats(24.5, 27.5), lon=st.floats(118.5, 121.5))
def test_projected_round_trip_in_fuzhous_zone(lat: float, lon: float) -> None:
    x, y = FUZHOU_ZONE.xy(lat, lon)
    back_lon, back_lat = INVERSE_4549.transform(x, y)
    assert abs(back_lat - lat) < 1e-9 and abs(back_lon - lon) < 1e-9
    assert (x < 500_000) == (lon < 120.0) or lon == 120.0


FUZHOU_ZONE = PlatformCoordinates("EPSG:4549")
INVERSE_4549 = pyproj.Transformer.from_crs("EPSG:4549", "EPSG:4326", always_xy=True)


def test_pyproj_reproduces_epsgs_transverse_mercator_example() -> None:
    """EPSG Guidance Note 7-2's worked example (OSGB 1936 / British National Grid):
    50°30'N 0°30'E → E 577274.99, N 69740.50: the PROJ tables installed here are sound."""
    tm = pyproj.Transformer.from_crs("EPSG:4277", "EPSG:27700", always_xy=True)
    easting, northing = tm.transform(0.5, 50.5)
    assert abs(easting - 577274.99) < 0.01 and abs(northing - 69740.50) < 0.01


@pytest.mark.parametrize(
    ("system", "message"),
    [
        ("EPSG:4326", "EPSG:4326 (WGS 84) is not a projected system in metres"),
        ("EPSG:4490", "is not a projected system in metres"),
        ("EPSG:99999", "EPSG:99999 is not a coordinate system in the EPSG tables"),
        ("epsg:4549", "coordinate system must be one of wgs84, gcj02, bd09"),
        ("GCJ02", "coordinate system must be one of"),
        ("EPSG:4547; rm -rf", "coordinate system must be one of"),
    ],
)
def test_unusable_systems_are_refused_by_name(system: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        PlatformCoordinates(system)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("lat", "lon"), [(math.nan, 119.0), (26.0, math.inf), (90.5, 119.0), (26.0, -180.5)]
)
def test_impossible_positions_are_refused(lat: float, lon: float) -> None:
    for system in ("wgs84", "gcj02", "EPSG:4549"):
        with pytest.raises(ValueError, match="not a WGS-84 position"):
            PlatformCoordinates(system).xy(lat, lon)
