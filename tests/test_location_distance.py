"""``Location.distance_m`` is the one great-circle distance: merge radii (rules) and nearby
matches of listed platform requests (case_bridge) both use it, so it must answer for any two
points in range, the antipode included, where rounding takes the haversine past 1."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from domain import Location

PROPERTY = settings(max_examples=50, deadline=None)
HALF_CIRCUMFERENCE_M = math.pi * 6_371_008.8
lats = st.floats(-90, 90)
lons = st.floats(-180, 180)


def test_known_distances() -> None:
    """One degree of latitude is ~111.2 km; a point is 0 m from itself."""
    here = Location(26.0815, 119.2965)
    assert here.distance_m(here) == 0.0
    assert round(Location(26.0, 119.3).distance_m(Location(27.0, 119.3))) == 111_195


def test_a_point_whose_haversine_rounds_past_one_is_half_the_earth_away() -> None:
    """A pair found by search whose haversine rounds to 1.0000000000000002, past the
    domain of ``asin``."""
    one = Location(75.73809952164382, 173.5570450150392)
    other = Location(-75.73809952191476, -6.44295498576167)
    assert one.distance_m(other) == HALF_CIRCUMFERENCE_M


@PROPERTY
@given(lats, lons, lats, lons)
def test_any_two_points_are_at_most_half_the_earth_apart_either_way(lat1, lon1, lat2, lon2):
    one, other = Location(lat1, lon1), Location(lat2, lon2)
    distance = one.distance_m(other)
    assert 0 <= distance <= HALF_CIRCUMFERENCE_M
    assert math.isclose(distance, other.distance_m(one), rel_tol=1e-9, abs_tol=1e-6)


@PROPERTY
@given(lats, lons, st.sampled_from([-1e-9, 0.0, 1e-9]))
def test_near_antipodes_answer(lat, lon, nudge):
    antipode = Location(-lat + nudge, lon - 180 if lon > 0 else lon + 180)
    assert math.isclose(Location(lat, lon).distance_m(antipode), HALF_CIRCUMFERENCE_M, rel_tol=1e-6)
