"""Storm control per grid, as timelines: the per-hour bound at its edge, the sliding hour,
parent grids, each site clearing on its own, and a restart."""

import json

from domain import Alert, AlertState, CommandKind, Location, Priority
from rules.incidents import IncidentBook
from rules.merge_settings import MergeSettings

HOUR = 3_600_000
MIN = 60_000
PARENTS = {"G1": "P", "G2": "P"}


def site(n: int, grid="G1", ts=None, state=AlertState.FIRING) -> Alert:
    """Underpass ``n``: 200 m apart from the next, so no two merge by distance."""
    where = Location(26.08 + n * 200 / 111_195, 119.3, f"underpass {n}", grid)
    return Alert(f"WL-{n}/flood", f"WL-{n}", "flood", state, "01003", Priority.URGENT, where,
                 n * MIN if ts is None else ts, summary=f"underpass {n} flooded")  # fmt: skip


def book(per_hour=3, parent_grids=True, enabled=True) -> IncidentBook:
    config = MergeSettings.model_validate(
        {"storms": {"enabled": enabled, "per_hour": per_hour, "parent_grids": parent_grids}}
    )
    return IncidentBook(config.to_policy(), config, lambda grid: PARENTS.get(grid, ""))


def burst(b: IncidentBook, count: int, grid="G1"):
    return [b.handle(site(n, grid))[0] for n in range(count)]


def test_the_nth_is_its_own_and_the_next_starts_the_storm_that_lists_every_site():
    b = book(per_hour=3)
    commands = burst(b, 5)
    assert [(c.kind, c.incident_id.split("-")[0]) for c in commands] == [
        (CommandKind.OPEN, "INC"), (CommandKind.OPEN, "INC"), (CommandKind.OPEN, "INC"),
        (CommandKind.OPEN, "STORM"), (CommandKind.ATTACH, "STORM")]  # fmt: skip
    storm_id = commands[3].incident_id
    assert commands[4].incident_id == storm_id
    assert commands[3].alert.summary == (
        "storm: more than 3 new 01003 within an hour in grid G1; underpass 3 flooded"
    )
    storm = b.take_dirty()[storm_id]
    assert storm["storm"]["grid"] == "G1" and storm["storm"]["class_code"] == "01003"
    assert [(s["key"], s["state"]) for s in storm["storm"]["sites"]] == [
        ("WL-3/flood", "firing"), ("WL-4/flood", "firing")]  # fmt: skip
    assert [(d["alert_key"], d["outcome"], d["reasons"][0]) for d in storm["decisions"]] == [
        ("WL-3/flood", "storm", "past 3 new an hour in grid G1"),
        ("WL-4/flood", "storm", "past 3 new an hour in grid G1"),
    ]
    assert len(b.open_ids()) == 4  # three own incidents and one storm


def test_a_site_clearing_leaves_the_others_in_the_storm():
    b = book(per_hour=3)
    storm_id = burst(b, 6)[3].incident_id
    cleared = b.handle(site(4, ts=10 * MIN, state=AlertState.CLEARED))
    assert [(c.kind, c.incident_id) for c in cleared] == [(CommandKind.ATTACH, storm_id)]
    sites = b.take_dirty()[storm_id]["storm"]["sites"]
    assert [s["state"] for s in sites] == ["firing", "cleared", "firing"]
    assert sorted(a.key for a in b.persisting(storm_id)) == ["WL-3/flood", "WL-5/flood"]
    again = b.handle(site(4, ts=11 * MIN))
    assert [(c.kind, c.incident_id) for c in again] == [(CommandKind.ATTACH, storm_id)]


def test_the_hour_slides_a_new_one_is_its_own_once_the_nth_before_it_is_an_hour_old():
    still = book(per_hour=3)
    storm_id = burst(still, 5)[3].incident_id
    # At 1 min + 1 h the times at 2, 3 and 4 min are within the hour: still a storm.
    assert still.handle(site(10, ts=1 * MIN + HOUR))[0].incident_id == storm_id
    over = book(per_hour=3)
    burst(over, 5)
    # At 2 min + 1 h only 3 and 4 min are: its own incident again.
    own = over.handle(site(10, ts=2 * MIN + HOUR))[0]
    assert own.kind is CommandKind.OPEN and own.incident_id.startswith("INC-")


def test_a_parent_grid_counts_its_grids_together_unless_turned_off():
    b = book(per_hour=3)
    burst(b, 2, "G1")
    first = b.handle(site(5, "G2"))[0]
    storm = b.handle(site(6, "G2"))[0]
    assert first.incident_id.startswith("INC-") and storm.incident_id.startswith("STORM-")
    assert b.take_dirty()[storm.incident_id]["storm"]["grid"] == "P"
    # The case is filed in the storm's grid (its responsible unit), not the first site's.
    assert (storm.kind, storm.alert.location.grid_code) == (CommandKind.OPEN, "P")
    assert storm.alert.location.address == "underpass 6"
    apart = book(per_hour=3, parent_grids=False)
    burst(apart, 2, "G1")
    own = [apart.handle(site(n, "G2"))[0] for n in (5, 6)]
    assert all(c.incident_id.startswith("INC-") for c in own)


def test_storms_are_off_by_default_and_need_a_grid():
    off = book(enabled=False)
    assert all(c.incident_id.startswith("INC-") for c in burst(off, 6))
    gridless = book(per_hour=1)
    assert all(c.incident_id.startswith("INC-") for c in burst(gridless, 3, grid=""))


def test_a_restart_puts_the_storm_back_and_rebuilds_the_counts():
    b = book(per_hour=3)
    storm_id = burst(b, 5)[3].incident_id
    stored = json.loads(json.dumps(b.take_dirty()))
    restored = book(per_hour=3)
    for incident in stored.values():
        restored.load(incident)
    joined = restored.handle(site(7, ts=8 * MIN))
    assert [(c.kind, c.incident_id) for c in joined] == [(CommandKind.ATTACH, storm_id)]
    cleared = restored.handle(site(3, ts=9 * MIN, state=AlertState.CLEARED))
    assert [(c.kind, c.incident_id) for c in cleared] == [(CommandKind.ATTACH, storm_id)]
    assert restored.close(storm_id, "closed") == ["WL-3/flood", "WL-4/flood", "WL-7/flood"]
    # The counts came back with the incidents: still past the bound, so a new storm.
    assert restored.handle(site(8, ts=10 * MIN))[0].incident_id.startswith("STORM-")


def test_a_grid_past_its_bound_joins_the_storm_already_open_for_its_parent():
    """Six in G1 and five in G2 put the parent P past ten: P's storm opens. G1's own count
    reaches ten later, and its sites still join P's storm, not a second one."""
    b = book(per_hour=10)
    commands = [b.handle(site(n, "G1" if n < 6 or n > 10 else "G2"))[0] for n in range(17)]
    storms = {c.incident_id for c in commands if c.incident_id.startswith("STORM-")}
    assert len(storms) == 1
    [storm_id] = storms
    storm = b.take_dirty()[storm_id]["storm"]
    assert storm["grid"] == "P"
    assert [s["key"] for s in storm["sites"]] == [f"WL-{n}/flood" for n in range(10, 17)]


def test_a_storm_lists_its_newest_sites_and_a_restart_counts_them():
    """1,070 sites a minute apart, three a storm's bound: the storm lists the newest 1,000
    (sites 70-1069), so after a restart the last hour's sites still count and the next one
    joins the storm (the first 1,000 listed would all be over an hour old)."""
    b = book(per_hour=3)
    storm_id = [b.handle(site(n))[0] for n in range(1070)][3].incident_id
    stored = json.loads(json.dumps(b.take_dirty()))
    sites = stored[storm_id]["storm"]["sites"]
    assert (len(sites), sites[0]["key"], sites[-1]["key"]) == (1000, "WL-70/flood", "WL-1069/flood")
    restored = book(per_hour=3)
    for incident in stored.values():
        restored.load(incident)
    joined = restored.handle(site(1070))
    assert [(c.kind, c.incident_id) for c in joined] == [(CommandKind.ATTACH, storm_id)]
    early = restored.handle(site(5, ts=1071 * MIN, state=AlertState.CLEARED))  # unlisted now
    assert [(c.kind, c.incident_id) for c in early] == [(CommandKind.ATTACH, storm_id)]
