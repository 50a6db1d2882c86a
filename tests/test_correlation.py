"""Correlation timelines: related classes in families, the duplicate likelihood's three
bands at their cut-offs, an operator's merge of a duplicate, and a restart."""

import contextlib
import copy
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domain import Alert, AlertState, CommandKind, Location, Priority
from rules.correlation import Relation, Sources, likelihood
from rules.incidents import IncidentBook
from rules.merge_settings import MergeSettings

BASE = Location(26.0800, 119.3000, "五四路", "350102001001001")
FAMILY = {"name": "collection_point", "classes": ["06042", "06010", "06011"], "lead": "06042",
          "radius_m": 30, "window_s": 7200}  # fmt: skip


def near(metres_north: float) -> Location:
    return Location(BASE.lat + metres_north / 111_195, BASE.lon, "", BASE.grid_code)


def alert(source, code="06042", loc=BASE, ts=0, state=AlertState.FIRING, origin="iot", rule="r"):
    return Alert(f"{source}/{rule}", source, rule, state, code, Priority.URGENT, loc, ts,
                 summary=f"{source} {code}", origin=origin)  # fmt: skip


def camera(source, code="06010", loc=BASE, ts=0):
    return alert(source, code, loc, ts, origin="video", rule="rubbish")


# The registered bin BIN-1 stands at BASE: its rules file 06042, the family's lead.
BIN_SITE = ("06042", BASE)


def book(sites=(BIN_SITE,), **merge) -> IncidentBook:
    config = MergeSettings.model_validate({"families": [FAMILY], **merge})
    return IncidentBook(config.to_policy(), config, lead_sites=sites)


@pytest.mark.parametrize(
    "first,second",
    [
        (camera("CAM-1"), alert("BIN-1", loc=near(10), ts=60_000)),  # camera + sensor
        (alert("BIN-1"), alert("BIN-2", "06011", near(10), 60_000)),  # sensor + sensor
        (camera("CAM-1"), camera("CAM-2", loc=near(10), ts=60_000)),  # camera + camera
    ],
)
def test_related_classes_10_m_apart_are_one_incident_filed_under_the_lead(first, second):
    b = book()
    opened, joined = b.handle(first), b.handle(second)
    assert [c.kind for c in opened + joined] == [CommandKind.OPEN, CommandKind.ATTACH]
    assert opened[0].alert.class_code == "06042"  # at a bin's site: the lead, whoever first
    assert joined[0].incident_id == opened[0].incident_id
    persisting = b.persisting(opened[0].incident_id)
    assert sorted(a.key for a in persisting) == sorted([first.key, second.key])
    assert {a.class_code for a in persisting} == {first.class_code, second.class_code}


def test_camera_rubbish_and_bin_overflow_80_m_apart_are_two_incidents():
    b = book(sites=[("06042", near(80))])
    opened = b.handle(camera("CAM-1"))
    other = b.handle(alert("BIN-1", loc=near(80), ts=60_000))
    assert [c.kind for c in opened + other] == [CommandKind.OPEN, CommandKind.OPEN]
    assert [c.alert.class_code for c in opened + other] == ["06010", "06042"]
    incident = b.take_dirty()[other[0].incident_id]
    assert incident["decisions"] == [
        {"alert_key": "BIN-1/r", "score": 0.0, "outcome": "new", "other": "",
         "reasons": ["no open incident of its class or family within radius and window"]}
    ]  # fmt: skip


def test_the_familys_window_bounds_a_merge_and_an_unrelated_class_never_joins():
    b = book()
    first = b.handle(alert("BIN-1"))[0]
    late = b.handle(camera("CAM-1", loc=near(5), ts=7_200_001))[0]
    unrelated = b.handle(alert("MH-1", "01003", near(1), 60_000))[0]
    assert (late.kind, unrelated.kind) == (CommandKind.OPEN, CommandKind.OPEN)
    assert len({first.incident_id, late.incident_id, unrelated.incident_id}) == 3


def test_rubbish_5_m_from_a_bin_site_opens_a_bin_overflow():
    b = book()
    opened = b.handle(camera("CAM-1", loc=near(5)))
    assert [(c.kind, c.alert.class_code) for c in opened] == [(CommandKind.OPEN, "06042")]
    incident = b.take_dirty()[opened[0].incident_id]
    assert (incident["class_code"], incident["class_reason"]) == (
        "06042", "lead 06042: a 06042 site 5 m away")  # fmt: skip


@pytest.mark.parametrize(
    "sites", [[BIN_SITE], [BIN_SITE, ("06010", near(80)), ("06011", near(80))], []]
)
def test_rubbish_80_m_from_any_site_keeps_its_own_class(sites):
    b = book(sites=sites)
    opened = b.handle(camera("CAM-1", loc=near(80)))
    assert [(c.kind, c.alert.class_code) for c in opened] == [(CommandKind.OPEN, "06010")]
    incident = b.take_dirty()[opened[0].incident_id]
    assert (incident["class_code"], incident["class_reason"]) == (
        "06010", "own class: no 06042 site within 30 m")  # fmt: skip


def test_every_command_of_a_family_incident_names_the_class_its_case_was_filed_under():
    """A camera's 06010 alert joining a bin's 06042 case is evidence of a 06042 case: the
    case bridge dates an escalation by that class's policy, not by the alert's."""
    b = book()
    [opened] = b.handle(alert("BIN-1"))
    [joined] = b.handle(replace(camera("CAM-1", loc=near(5), ts=1_000), priority=Priority.CRITICAL))
    assert [(c.kind, c.alert.class_code, c.case_class) for c in (opened, joined)] == [
        (CommandKind.OPEN, "06042", "06042"), (CommandKind.ESCALATE, "06010", "06042")
    ]  # fmt: skip


def test_new_lead_sites_class_the_incidents_opened_after_them():
    """A threshold change can give a kind another class: the gateway hands the book the
    sites anew, and the next incident is classed by them; one already open keeps its class."""
    b = book(sites=[])
    before = b.handle(camera("CAM-1", loc=near(5)))[0]
    b.set_lead_sites([BIN_SITE])
    # Past the family's 2 h window: a new incident, not a merge into the first.
    after = b.handle(camera("CAM-2", loc=near(5), ts=10_000_000))
    assert [c.alert.class_code for c in (before, *after)] == ["06010", "06042"]


def test_a_site_just_inside_the_family_radius_counts_and_just_outside_does_not():
    b = book(sites=[("06042", near(29.9)), ("06042", near(-30.1))])
    inside = b.handle(camera("CAM-1", loc=BASE))[0]
    outside = b.handle(camera("CAM-2", loc=near(-60.2), ts=1))[0]
    assert (inside.alert.class_code, outside.alert.class_code) == ("06042", "06010")
    assert inside.incident_id != outside.incident_id  # 60 m apart: two incidents


def test_a_bin_alert_beside_a_rubbish_incident_joins_its_case():
    """The bin was registered after the camera's case opened (no site there then): the
    case stays exposed rubbish, and the bin's overflow is evidence on it, not a new case."""
    b = book(sites=[])
    opened = b.handle(camera("CAM-1"))[0]
    joined = b.handle(alert("BIN-9", loc=near(10), ts=60_000))
    assert (opened.kind, opened.alert.class_code) == (CommandKind.OPEN, "06010")
    assert [(c.kind, c.incident_id) for c in joined] == [(CommandKind.ATTACH, opened.incident_id)]
    assert b.open_ids() == [opened.incident_id]
    incident = b.take_dirty()[opened.incident_id]
    assert incident["class_code"] == "06010" and incident["classes"] == ["06010", "06042"]
    assert incident["decisions"][-1]["outcome"] == "merged"


def test_a_lead_class_alert_is_filed_under_its_class_without_any_site():
    b = book(sites=[])
    opened = b.handle(alert("BIN-1"))[0]
    assert opened.alert.class_code == "06042"
    assert b.take_dirty()[opened.incident_id]["class_reason"] == (
        "lead 06042: the alert is of the lead class")  # fmt: skip


def test_without_families_the_same_class_uses_the_global_radius():
    config = MergeSettings(radius_m=50)
    b = IncidentBook(config.to_policy(), config)
    first = b.handle(alert("BIN-1"))[0]
    joined = b.handle(alert("BIN-2", loc=near(45), ts=1))[0]
    apart = b.handle(camera("CAM-1", loc=near(5), ts=2))[0]
    assert joined.incident_id == first.incident_id and apart.kind is CommandKind.OPEN
    assert apart.alert.class_code == "06010"  # no family: its own class


# A second bin 12 m away, 30 minutes after the first: same class, same kind of source.
PROBE = alert("BIN-2", loc=near(12), ts=1_800_000)
SCORE = likelihood(BASE.distance_m(PROBE.location), 30.0, 1_800_000, 7_200_000,
                   Relation.SAME_CLASS, Sources.SAME_KIND).score  # fmt: skip
ABOVE = math.nextafter(SCORE, 1.0)


@pytest.mark.parametrize(
    "merge_above,suspect_above,outcome",
    [(SCORE, SCORE, "merged"), (ABOVE, SCORE, "suspected"), (ABOVE, ABOVE, "new")],
)
def test_the_three_duplicate_bands_at_their_cut_offs(merge_above, suspect_above, outcome):
    b = book(duplicates={"merge_above": merge_above, "suspect_above": suspect_above})
    first = b.handle(alert("BIN-1"))[0]
    second = b.handle(PROBE)[0]
    assert pytest.approx(0.9 * (1 - 0.4 * 12 / 30 * 0.25), abs=1e-6) == SCORE
    merged = outcome == "merged"
    assert second.kind is (CommandKind.ATTACH if merged else CommandKind.OPEN)
    assert (second.incident_id == first.incident_id) is merged
    decision = b.take_dirty()[second.incident_id]["decisions"][-1]
    assert decision == {
        "alert_key": "BIN-2/r", "score": SCORE, "outcome": outcome, "other": first.incident_id,
        "reasons": ["12 m of 30 m", "30 min after last activity (window 2 h)", "same class",
                    "same kind"],
    }  # fmt: skip
    suspects = b.take_suspects()
    if outcome == "suspected":
        assert suspects == [
            {"id": f"{second.incident_id}~{first.incident_id}", "incident_id": second.incident_id,
             "other_incident_id": first.incident_id, "score": SCORE,
             "reasons": decision["reasons"], "ts": 1_800_000}
        ]  # fmt: skip
    else:
        assert suspects == []
    assert b.take_suspects() == []


def test_sources_rank_same_source_then_camera_and_sensor_then_same_kind():
    scores = [
        likelihood(10, 30, 0, 7_200_000, Relation.SAME_CLASS, s).score
        for s in (Sources.SAME_SOURCE, Sources.CAMERA_AND_SENSOR, Sources.SAME_KIND)
    ]
    family = likelihood(10, 30, 0, 7_200_000, Relation.SAME_FAMILY, Sources.SAME_SOURCE, "cp")
    assert scores == [1.0, 0.95, 0.9]
    assert family.score == scores[0] and "same family cp" in family.reasons


@pytest.mark.parametrize(
    "distance_m,gap_ms,score",
    [
        (30, 0, 0.9),  # the radius's edge at once: the radius says one problem
        (0, 7_200_000, 0.9),  # the same spot at the window's end
        (30, 1_800_000, 0.9 * 0.9),  # the edge a quarter of the window later: still merges
        (30, 7_200_000, 0.9 * 0.6),  # far AND late: the one uncertain corner
        (31, 0, 0.0),
        (0, 7_200_001, 0.0),
    ],
)
def test_only_far_and_late_together_take_the_score_down(distance_m, gap_ms, score):
    judged = likelihood(distance_m, 30, gap_ms, 7_200_000, Relation.SAME_FAMILY, Sources.SAME_KIND)
    assert judged.score == pytest.approx(score, abs=1e-12)


DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "gateway.yaml"


def test_the_deploy_sections_collection_point_is_one_incident_and_only_far_late_is_suspected():
    """The shipped ``merge:`` section: a bin fills; the camera sees rubbish 5 m away a
    minute later; a second bin 8 m away fills at 2 min: one incident, no suspects. A bin
    25 m away 100 min in (98 min after the last activity) is far and late: suspected."""
    config = MergeSettings.model_validate(yaml.safe_load(DEPLOY.read_text())["merge"])
    b = IncidentBook(config.to_policy(), config, lead_sites=[BIN_SITE])
    timeline = [alert("BIN-1"), camera("CAM-1", loc=near(5), ts=60_000),
                alert("BIN-2", loc=near(8), ts=120_000)]  # fmt: skip
    commands = [c for a in timeline for c in b.handle(a)]
    assert [(c.kind, c.alert.class_code) for c in commands] == [
        (CommandKind.OPEN, "06042"), (CommandKind.ATTACH, "06010"),
        (CommandKind.ATTACH, "06042")]  # fmt: skip
    assert b.open_ids() == [commands[0].incident_id] and b.take_suspects() == []
    decisions = b.take_dirty()[commands[0].incident_id]["decisions"]
    assert [(d["outcome"], round(d["score"], 4)) for d in decisions[1:]] == [
        ("merged", 0.9495), ("merged", 0.9492)]  # fmt: skip
    late = alert("BIN-3", loc=near(25), ts=6_000_000)
    opened = b.handle(late)[0]
    expected = likelihood(BASE.distance_m(late.location), 30, 5_880_000, 7_200_000,
                          Relation.SAME_CLASS, Sources.CAMERA_AND_SENSOR).score  # fmt: skip
    assert opened.kind is CommandKind.OPEN and round(expected, 4) == 0.6914
    assert [(p["incident_id"], p["other_incident_id"], p["score"]) for p in b.take_suspects()] == [
        (opened.incident_id, commands[0].incident_id, expected)]  # fmt: skip


def suspected_pair(b: IncidentBook):
    first = b.handle(alert("BIN-1"))[0]
    second = b.handle(PROBE)[0]
    assert b.take_suspects()[0]["incident_id"] == second.incident_id
    return first.incident_id, second.incident_id


def test_merging_a_duplicate_rebinds_its_keys_and_voids_its_case():
    b = book(duplicates={"merge_above": ABOVE, "suspect_above": SCORE})
    kept, duplicate = suspected_pair(b)
    commands = b.merge_duplicate(duplicate, kept, at_ms=2_000_000)
    assert [(c.kind, c.incident_id, c.command_id) for c in commands] == [
        (CommandKind.ATTACH, kept, f"{kept}/2"),
        (CommandKind.VOID, duplicate, f"{duplicate}/2"),
    ]
    assert commands[0].alert.summary == f"merged duplicate {duplicate}: BIN-2 06042"
    assert commands[1].alert.summary == f"duplicate of {kept}: BIN-2 06042"
    assert b.incident_of("BIN-2/r") == kept and b.open_ids() == [kept]
    changed = b.take_dirty()
    assert changed[duplicate]["closed_reason"] == f"merged into {kept}"
    assert changed[kept]["decisions"][-1]["outcome"] == "merged"
    assert changed[kept]["decisions"][-1]["score"] == SCORE
    assert changed[kept]["sources"] == {"BIN-1": "iot", "BIN-2": "iot"}
    cleared = b.handle(alert("BIN-2", loc=near(12), ts=2_100_000, state=AlertState.CLEARED))
    assert [(c.kind, c.incident_id) for c in cleared] == [(CommandKind.ATTACH, kept)]
    with pytest.raises(ValueError, match="is not open"):
        b.merge_duplicate(duplicate, kept, at_ms=2_200_000)
    with pytest.raises(ValueError, match="into itself"):
        b.merge_duplicate(kept, kept, at_ms=2_200_000)


def test_a_restart_keeps_families_decisions_and_suspects_resolvable():
    merge = {"duplicates": {"merge_above": ABOVE, "suspect_above": SCORE}}
    b = book(**merge)
    kept, duplicate = suspected_pair(b)
    stored = json.loads(json.dumps(b.take_dirty()))  # as the gateway persists them
    restored = book(**merge)
    for incident in stored.values():
        restored.load(incident)
    # The restored book decides as the one that never stopped.
    [unbroken] = copy.deepcopy(b).handle(camera("CAM-1", loc=near(2), ts=1_900_000))
    joined = restored.handle(camera("CAM-1", loc=near(2), ts=1_900_000))[0]
    assert (joined.incident_id, joined.kind) == (unbroken.incident_id, CommandKind.ATTACH)
    assert joined.incident_id in (kept, duplicate)
    assert stored[duplicate]["decisions"][0]["outcome"] == "suspected"  # kept on the dict
    decision = stored[joined.incident_id]["decisions"][-1]
    assert (decision["alert_key"], decision["outcome"]) == ("CAM-1/rubbish", "merged")
    assert decision["reasons"][2:] == ["same family collection_point", "camera and sensor"]
    assert [c.kind for c in restored.merge_duplicate(duplicate, kept, 2_000_000)] == [
        CommandKind.ATTACH, CommandKind.VOID]  # fmt: skip


@pytest.mark.parametrize(
    "merge",
    [
        {"families": [FAMILY, {**FAMILY, "name": "other"}]},  # a class in two families
        {"families": [{**FAMILY, "lead": "01003"}]},
        {"families": [{**FAMILY, "classes": ["06042", "6010"]}]},
        {"duplicates": {"merge_above": 0.5, "suspect_above": 0.6}},
        {"duplicates": {"merge_above": 1.2}},
        {"storms": {"enabled": True, "per_hour": 0}},
        {"families": [FAMILY] * 65},
        {"window_s": float("inf")},  # would overflow to_policy's milliseconds at start-up
        {"radius_m": 1e9},
    ],
)
def test_settings_refuse_what_cannot_work(merge):
    with pytest.raises(ValidationError):
        MergeSettings.model_validate(merge)


def test_settings_are_a_drop_in_for_the_old_section():
    settings_ = MergeSettings.model_validate({"radius_m": 20, "window_s": 60})
    assert (settings_.to_policy().radius_m, settings_.to_policy().window_ms) == (20.0, 60_000)
    assert MergeSettings().to_policy().window_ms == 86_400_000
    assert settings_.families == [] and settings_.duplicates is None
    assert settings_.storms.enabled is False


STEP = st.tuples(
    st.integers(0, 5),  # source
    st.sampled_from(["06042", "06010", "06011", "01003"]),
    st.sampled_from(list(AlertState)),
    st.one_of(st.integers(0, 60), st.sampled_from([5e6, -3e6])),  # metres north, or far
    st.integers(0, 3_600_000),  # ms since the previous step
    st.integers(0, 9),  # 0: close an incident, 1: merge the latest suspect, else nothing
)


@settings(max_examples=50, deadline=None)
@given(st.lists(STEP, max_size=40), st.booleans())
def test_arbitrary_alerts_never_raise_and_bind_each_key_once(steps, duplicates):
    grids = {"G1": "P", "G2": "P"}
    config = MergeSettings.model_validate({
        "families": [FAMILY], "storms": {"enabled": True, "per_hour": 2},
        **({"duplicates": {"merge_above": 0.8, "suspect_above": 0.3}} if duplicates else {}),
    })  # fmt: skip
    b = IncidentBook(config.to_policy(), config, lambda g: grids.get(g, ""))
    ts = 0
    seen: dict[str, dict] = {}  # every incident handed over (live dicts: current status)
    for source, code, state, north, gap, action in steps:
        ts += gap
        where = Location(near(north).lat, BASE.lon, "", f"G{source % 3}")
        b.handle(alert(f"S{source}", code, where, ts, state, "video" if source > 3 else "iot"))
        suspects = b.take_suspects()
        if action == 1 and suspects:
            pair = suspects[-1]
            with contextlib.suppress(ValueError):  # one of them was closed or merged since
                b.merge_duplicate(pair["incident_id"], pair["other_incident_id"], ts)
        elif action == 0 and b.open_ids():
            b.close(b.open_ids()[0], "closed")
        seen.update(b.take_dirty())
        assert sorted(b.open_ids()) == sorted(i for i, v in seen.items() if v["status"] == "open")
        bound: dict[str, str] = {}
        for incident_id in b.open_ids():
            for key in seen[incident_id]["alert_keys"]:
                assert key not in bound
                bound[key] = incident_id
                assert b.incident_of(key) == incident_id


SITE = st.tuples(
    st.sampled_from(["06042", "06010", "01003"]),
    st.floats(-80, 80),  # metres north
    st.floats(-80, 80),  # metres east
)


@settings(max_examples=50, deadline=None)
@given(st.lists(SITE, max_size=30), st.floats(-80, 80), st.floats(-80, 80))
def test_the_site_index_finds_the_lead_exactly_when_a_scan_would(sites, north, east):
    def at(n: float, e: float) -> Location:
        return Location(BASE.lat + n / 111_195, BASE.lon + e / 100_000, "", BASE.grid_code)

    placed = [(code, at(n, e)) for code, n, e in sites]
    where = at(north, east)
    opened = book(sites=placed).handle(camera("CAM-1", loc=where))[0]
    scan = any(code == "06042" and s.distance_m(where) <= 30 for code, s in placed)
    assert opened.alert.class_code == ("06042" if scan else "06010")


def test_of_equal_scores_the_incident_active_last_is_the_one_judged_against():
    b = book(duplicates={"merge_above": 0.99, "suspect_above": 0.5})
    first = b.handle(alert("BIN-1"))[0]
    second = b.handle(alert("BIN-2", ts=60_000))[0]
    third = b.handle(alert("BIN-3", ts=120_000))[0]  # one spot: 0.9 against either
    assert len({first.incident_id, second.incident_id, third.incident_id}) == 3
    assert [(p["incident_id"], p["other_incident_id"], p["score"]) for p in b.take_suspects()] == [
        (second.incident_id, first.incident_id, 0.9),
        (third.incident_id, second.incident_id, 0.9),
    ]


def test_merging_a_more_urgent_duplicate_escalates_the_kept_case():
    b = book(duplicates={"merge_above": 0.99, "suspect_above": 0.5})
    kept = b.handle(alert("BIN-1"))[0].incident_id
    urgent = replace(alert("BIN-2", ts=60_000), priority=Priority.CRITICAL)
    duplicate = b.handle(urgent)[0].incident_id
    commands = b.merge_duplicate(duplicate, kept, at_ms=120_000)
    assert [(c.kind, c.incident_id, c.priority) for c in commands] == [
        (CommandKind.ESCALATE, kept, Priority.CRITICAL),
        (CommandKind.VOID, duplicate, Priority.CRITICAL),
    ]
    assert b.take_dirty()[kept]["priority"] == str(Priority.CRITICAL)
    # A later alert at the old priority attaches: the kept case stays critical.
    again = b.handle(alert("BIN-1", ts=180_000, state=AlertState.ESCALATED))
    assert [(c.kind, c.priority) for c in again] == [(CommandKind.ATTACH, Priority.CRITICAL)]


def test_an_operators_merge_records_the_pairs_score_given_or_kept_and_never_a_made_up_one():
    merge = {"duplicates": {"merge_above": ABOVE, "suspect_above": SCORE}}
    given_ = book(**merge)
    kept, duplicate = suspected_pair(given_)
    given_.merge_duplicate(duplicate, kept, at_ms=2_000_000, score=0.625)
    assert given_.take_dirty()[kept]["decisions"][-1]["score"] == 0.625
    forgotten = book(**merge)
    kept, duplicate = suspected_pair(forgotten)
    for n in range(20):  # the duplicate's own decision falls out of the 20 it keeps
        forgotten.handle(alert(f"BIN-{n + 10}", loc=near(12), ts=1_800_001 + n))
    assert all(d["other"] != kept for d in forgotten.take_dirty()[duplicate]["decisions"])
    forgotten.merge_duplicate(duplicate, kept, at_ms=2_000_000)
    decision = forgotten.take_dirty()[kept]["decisions"][-1]
    assert (decision["outcome"], decision["score"]) == ("merged", None)
