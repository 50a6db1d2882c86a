"""Incident correlation: repeats, merges by class/radius/window, escalation, close."""

from domain import Alert, AlertState, CommandKind, Location, Priority
from rules.incidents import IncidentBook, MergePolicy

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
