"""Incident correlation: repeats, merges by class/radius/window, escalation, close."""

import math
from typing import ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st

from domain import Alert, AlertState, CommandKind, Location, Priority
from rules.incidents import IncidentBook, MergePolicy
from rules.merge_index import MergeIndex
from rules.merge_settings import MergeSettings

BASE = Location(26.0800, 119.3000, "五四路", "350102001001001")


def near(metres_north: float) -> Location:
    return Location(BASE.lat + metres_north / 111_195, BASE.lon, "", BASE.grid_code)


def alert(source, state=AlertState.FIRING, code="06042", prio=Priority.URGENT, loc=BASE, ts=0):
    return Alert(f"{source}/r", source, "r", state, code, prio, loc, ts)


def book(radius=50.0, window_s=3600):
    return IncidentBook(MergePolicy(radius, window_s * 1000))


def test_neighbours_of_the_same_class_merge_into_one_incident():
    b = book()
    first = b.handle(alert("BIN-1"))
    second = b.handle(alert("BIN-2", loc=near(20), ts=60_000))
    assert [c.kind for c in first + second] == [CommandKind.OPEN, CommandKind.ATTACH]
    assert second[0].incident_id == first[0].incident_id
    assert second[0].command_id == f"{first[0].incident_id}/2"


def test_outside_radius_other_class_or_window_open_new_incidents():
    b = book(radius=50, window_s=600)
    b.handle(alert("BIN-1"))
    far = b.handle(alert("BIN-2", loc=near(60)))
    other = b.handle(alert("MH-1", code="01003", prio=Priority.CRITICAL, loc=near(5)))
    late = b.handle(alert("BIN-3", loc=near(10), ts=601_000))
    assert [c[0].kind for c in (far, other, late)] == [CommandKind.OPEN] * 3


def test_higher_priority_escalates_the_same_incident():
    b = book()
    opened = b.handle(alert("WL-1"))
    up = b.handle(alert("WL-1", state=AlertState.ESCALATED, prio=Priority.CRITICAL, ts=10))
    assert up[0].kind is CommandKind.ESCALATE and up[0].priority is Priority.CRITICAL
    assert up[0].incident_id == opened[0].incident_id


def test_clear_attaches_and_a_clear_without_incident_is_ignored():
    b = book()
    opened = b.handle(alert("BIN-1"))
    cleared = b.handle(alert("BIN-1", state=AlertState.CLEARED, ts=5))
    assert cleared[0].kind is CommandKind.ATTACH
    assert b.handle(alert("BIN-9", state=AlertState.CLEARED)) == []
    b.close(opened[0].incident_id, "closed")
    assert b.handle(alert("BIN-1", state=AlertState.CLEARED, ts=6)) == []


def test_closed_incident_returns_keys_and_next_alert_opens_a_new_case():
    b = book()
    opened = b.handle(alert("BIN-1"))
    b.handle(alert("BIN-2", loc=near(10)))
    assert b.close(opened[0].incident_id, "case closed") == ["BIN-1/r", "BIN-2/r"]
    assert b.close(opened[0].incident_id, "again") == []
    again = b.handle(alert("BIN-1", ts=10))
    assert again[0].kind is CommandKind.OPEN
    assert again[0].incident_id != opened[0].incident_id


def test_state_round_trips_through_load():
    b = book()
    opened = b.handle(alert("BIN-1"))
    restored = book()
    for incident in b.take_dirty().values():
        restored.load(incident)
    merged = restored.handle(alert("BIN-2", loc=near(10)))
    assert merged[0].incident_id == opened[0].incident_id
    assert merged[0].command_id.endswith("/2")


def test_equal_distances_merge_into_the_smallest_incident_id():
    b = book(radius=50.0)
    for source in ("BIN-1", "BIN-2", "BIN-3"):  # far apart: three incidents
        b.handle(alert(source, loc=near({"BIN-1": 0, "BIN-2": 60, "BIN-3": 120}[source])))
    merged = b.handle(alert("BIN-4", loc=near(60)))  # 60 m from both: only BIN-2 is within 50
    assert merged[0].incident_id == b.incident_of("BIN-2/r")
    tie = book(radius=50.0)
    for source, metres in (("BIN-1", -30), ("BIN-3", 30)):
        tie.handle(alert(source, loc=near(metres)))
    ids = sorted(tie.incident_of(k) for k in ("BIN-1/r", "BIN-3/r"))
    assert tie.handle(alert("BIN-2", loc=near(0)))[0].incident_id == ids[0]


# -- the merge index gives the full scan's answer ---------------------------------------

_CENTRES = [(26.08, 119.3), (0.0, 0.0), (89.9995, 10.0), (-89.99, -120.0), (45.0, 179.9999),
            (-33.9, -179.9995), (70.0, 180.0), (90.0, 0.0), (-12.5, 45.0)]  # fmt: skip


@st.composite
def _places(draw, radius: float) -> list[tuple[float, float]]:
    lat0, lon0 = draw(st.sampled_from(_CENTRES))
    spread = radius * draw(st.sampled_from([0.5, 2.0, 6.0]))
    out = []
    for _ in range(draw(st.integers(1, 25))):
        north = draw(st.floats(-spread, spread))
        east = draw(st.floats(-spread, spread))
        lat = max(-90.0, min(90.0, lat0 + north / 111_195))
        scale = max(math.cos(math.radians(lat)), 1e-6) * 111_195
        lon = lon0 + east / scale
        lon = (lon + 180.0) % 360.0 - 180.0 if abs(lon) > 180 else lon
        out.append((lat, lon))
    return out


def _destination(start: tuple[float, float], bearing: float, metres: float) -> tuple[float, float]:
    """The place ``metres`` from ``start`` along ``bearing`` on the sphere."""
    lat1, lon1 = math.radians(start[0]), math.radians(start[1])
    angle = metres / 6_371_008.8
    lat2 = math.asin(math.sin(lat1) * math.cos(angle)
                     + math.cos(lat1) * math.sin(angle) * math.cos(bearing))  # fmt: skip
    lon2 = lon1 + math.atan2(math.sin(bearing) * math.sin(angle) * math.cos(lat1),
                             math.cos(angle) - math.sin(lat1) * math.sin(lat2))  # fmt: skip
    lon = (math.degrees(lon2) + 180.0) % 360.0 - 180.0
    return max(-90.0, min(90.0, math.degrees(lat2))), lon


def _brute_force(incidents: list[dict], probe: Alert, policy: MergePolicy) -> str | None:
    best = None
    for incident in incidents:
        if incident["status"] != "open" or not incident["merge"] or not incident["alert_keys"]:
            continue
        if incident["class_code"] != probe.class_code:
            continue
        if probe.ts - incident["last_ts"] > policy.window_ms:
            continue
        d = Location(**incident["location"]).distance_m(probe.location)
        if d <= policy.radius_m and (best is None or (d, incident["id"]) < best):
            best = (d, incident["id"])
    return best[1] if best else None


@settings(max_examples=150, deadline=None)
@given(data=st.data(), radius=st.sampled_from([0.0, 5.0, 50.0, 400.0, 30_000.0, 5_000_000.0]))
def test_indexed_merge_search_equals_a_full_scan(data, radius):
    policy = MergePolicy(radius, 3_600_000)
    places = data.draw(_places(radius or 1.0))
    incidents = []
    for n, (lat, lon) in enumerate(places[:-1]):
        incidents.append({
            "id": f"INC-{n:03d}", "status": data.draw(st.sampled_from(["open", "open", "closed"])),
            "class_code": data.draw(st.sampled_from(["06042", "01003"])), "priority": "urgent",
            "location": {"lat": lat, "lon": lon, "address": "", "grid_code": ""},
            "opened_ts": 0, "last_ts": data.draw(st.sampled_from([0, 3_000_000])),
            "alert_keys": [f"K{n}/r"], "commands": 1, "closed_reason": "",
            "merge": data.draw(st.booleans()),
        })  # fmt: skip
    b = IncidentBook(policy)
    for incident in incidents:
        b.load(incident)
    closed = data.draw(st.sets(st.sampled_from([i["id"] for i in incidents] or ["-"])))
    for incident in incidents:
        if incident["id"] in closed and b.close(incident["id"], "test"):
            incident["status"] = "closed"
    lat, lon = places[-1]
    if data.draw(st.booleans()):  # just within the radius of one of them: the cells' edge
        lat, lon = _destination(places[0], data.draw(st.floats(0, 2 * math.pi)),
                                (radius or 1.0) * data.draw(st.floats(0.9, 1.0)))  # fmt: skip
    code = data.draw(st.sampled_from(["06042", "01003"]))
    probe = Alert("P/r", "P", "r", AlertState.FIRING, code, Priority.URGENT, Location(lat, lon),
                  3_700_000)  # fmt: skip
    expected = _brute_force(incidents, probe, policy)
    (command,) = b.handle(probe)
    if expected is None:
        assert command.kind is CommandKind.OPEN
    else:
        assert (command.kind, command.incident_id) == (CommandKind.ATTACH, expected)


def test_an_emptied_index_holds_nothing_even_with_a_0_m_radius():
    """Every row a 0 m radius's cells touch is a new one: nothing may be kept per row once
    its incidents are gone (the index's memory follows the open incidents only)."""
    index = MergeIndex(0.0)
    for n in range(2000):
        index.add(f"INC-{n}", "06042", {"lat": 26.0 + n * 1e-5, "lon": 119.3})
        assert [i for i, _ in index.near("06042", near(0))] in ([], ["INC-0"])
    for n in range(2000):
        index.discard(f"INC-{n}")
    assert {name: len(v) for name, v in vars(index).items() if isinstance(v, dict)} == {
        "_cells": 0, "_aside": 0, "_by_group": 0, "_where": 0}  # fmt: skip


class _Scan(MergeIndex):
    """Every candidate of the group: a scan (as bench/incidents.py's baseline)."""

    asked: ClassVar[list[str]] = []  # the groups asked, in order (all books of this test)

    def near(self, group: str, location: Location) -> list[tuple[str, Location]]:
        _Scan.asked.append(group)
        return self.candidates(group)


def test_a_book_given_a_scan_index_judges_every_alert_as_the_shipped_one():
    _Scan.asked.clear()
    config = MergeSettings.model_validate({
        "families": [{"name": "cp", "classes": ["06042", "06010"], "lead": "06042",
                      "radius_m": 30, "window_s": 7200}],
        "duplicates": {"merge_above": 0.8, "suspect_above": 0.5},
    })  # fmt: skip
    alerts = [
        alert(f"S{n}", code=("06042", "06010", "01003")[n % 3], loc=near(n * 7 % 90),
              ts=n * 400_000)
        for n in range(40)
    ]  # fmt: skip
    shipped = IncidentBook(config.to_policy(), config)
    scanning = IncidentBook(config.to_policy(), config, index_type=_Scan)
    assert [shipped.handle(a) for a in alerts] == [scanning.handle(a) for a in alerts]
    assert shipped.take_suspects() == scanning.take_suspects()
    # Every alert but the first of each radius (30 m: the family; 50 m: 01003), before
    # which no index of that radius exists yet.
    assert len(_Scan.asked) == 38
    assert (_Scan.asked.count("family:cp"), _Scan.asked.count("01003")) == (26, 12)
