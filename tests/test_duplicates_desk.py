"""The suspected-duplicates desk (疑似重复): pairs stored with their incidents, listed,
merged and dismissed over the API.

A real gateway's store (SQLite file) and parts, with a pipeline whose incident book judges
duplicates (both cut-offs set so that two bins at one spot are suspected, not merged). The
router is served by uvicorn on loopback behind the gateway's own guard, with an operator's
and a viewer's client tokens; the merge goes through ``Pipeline.merge_duplicate`` as the
gateway wires it, so its commands land in the real outbox.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from served_app import ServedApp, write_gateway_config

from case_bridge import outbox
from domain import Alert, AlertState, Location, Priority
from gateway import audit, duplicates, store
from gateway.api_duplicates import duplicates_router
from gateway.api_guard import ApiGuard
from gateway.audit import AuditTrail
from gateway.client_tokens import ClientTokens
from gateway.config import load_config
from gateway.pipeline import Pipeline
from gateway.service import Gateway
from rules.incidents import IncidentBook
from rules.merge_settings import MergeSettings

NOW = 1_760_000_000_000
PLACE = Location(31.2989, 120.5853, "人民路 100 号 垃圾收集点", "320508001001001")
MERGE = MergeSettings.model_validate({"duplicates": {"merge_above": 0.99, "suspect_above": 0.5}})


def full(device: str, ts: int) -> Alert:
    return Alert(f"{device}/full", device, "full", AlertState.FIRING, "06042", Priority.URGENT,
                 PLACE, ts, values={"fill_pct": 96.0}, summary=f"{device} full",
                 kind="bin")  # fmt: skip


@dataclass
class Desk:
    gw: Gateway
    pipeline: Pipeline
    kept: str  # the first bin's incident
    duplicate: str  # the second bin's, suspected a duplicate of the first
    pair_id: str

    def outbox(self) -> list[tuple[str, str]]:
        return self.gw.conn.execute("SELECT kind, incident_id FROM outbox ORDER BY seq").fetchall()

    def audit(self) -> list[tuple]:
        rows = audit.page(self.gw.conn, 50).rows
        return [(e["actor"], e["role"], e["action"], e["target"], e["reason"]) for e in rows]

    def incident(self, incident_id: str) -> dict:
        found = store.load_states(self.gw.conn, "incident")
        return next(value for key, value in found if key == incident_id)


def make_desk(tmp_path) -> Desk:
    """Two bins at one spot a minute apart: two incidents, two cases, one suspected pair."""
    gw = Gateway(load_config(write_gateway_config(tmp_path, {})))
    book = IncidentBook(MERGE.to_policy(), MERGE)
    rule_states = {"rule": gw.engine.states, "video": gw.video_engine.states,
                   "health": gw.health.states}  # fmt: skip
    pipeline = Pipeline(gw.conn, gw.registry, gw.guard, gw.engine, book, 5000, rule_states,
                        gw.health, gw.router)  # fmt: skip
    first, second = pipeline.apply_alerts([full("BIN-001", NOW), full("BIN-002", NOW + 60_000)],
                                          NOW + 60_000)  # fmt: skip
    for n, command in enumerate((first, second)):
        outbox.link_case(gw.conn, command.incident_id, f"C-{n + 1}", NOW)
    pair_id = f"{second.incident_id}~{first.incident_id}"
    return Desk(gw, pipeline, first.incident_id, second.incident_id, pair_id)


def test_a_suspected_pair_commits_with_its_incidents_and_a_replay_keeps_its_decision(tmp_path):
    desk = make_desk(tmp_path)
    conn = desk.gw.conn
    pair = duplicates.get(conn, desk.pair_id)
    assert (pair["incident_id"], pair["other_incident_id"], pair["status"], pair["ts"]) == (
        desk.duplicate, desk.kept, "open", NOW + 60_000
    )  # fmt: skip
    assert 0.5 <= pair["score"] < 0.99
    assert pair["reasons"] and all(isinstance(r, str) for r in pair["reasons"])
    assert desk.outbox() == [("open", desk.kept), ("open", desk.duplicate)]
    assert store.in_transaction(conn, lambda: duplicates.decide(
        conn, desk.pair_id, "dismissed", "ana", "two bins, two problems", NOW))  # fmt: skip
    replayed = store.Batch()
    for key in ("INC-x", "INC-y"):  # a pair is open only while both incidents are
        replayed.states.append(("incident", key, {"id": key, "status": "open"}))
    replayed.suspects.append({**pair, "score": 0.7, "reasons": ["again"]})
    replayed.suspects.append({**pair, "id": "INC-x~INC-y", "incident_id": "INC-x",
                              "other_incident_id": "INC-y"})  # fmt: skip
    store.commit(conn, replayed)
    again = duplicates.get(conn, desk.pair_id)
    assert (again["status"], again["score"], again["reasons"], again["decided_by"]) == (
        "dismissed", pair["score"], pair["reasons"], "ana"
    )  # fmt: skip
    assert [p["id"] for p in duplicates.page(conn, "open", 10, None).rows] == ["INC-x~INC-y"]
    page_one = duplicates.page(conn, None, 1, None)
    assert [p["id"] for p in page_one.rows] == ["INC-x~INC-y"]
    page_two = duplicates.page(conn, None, 1, page_one.next_cursor)
    assert ([p["id"] for p in page_two.rows], page_two.next_cursor) == ([desk.pair_id], None)


@dataclass
class Served:
    desk: Desk
    operator: httpx.Client
    viewer: httpx.Client


@pytest.fixture
def served(tmp_path) -> Iterator[Served]:
    desk = make_desk(tmp_path)
    conn = desk.gw.conn
    tokens = ClientTokens(conn)
    _, operator_token = tokens.create("ana", "operator", "test", NOW)
    _, viewer_token = tokens.create("vic", "viewer", "test", NOW)

    def merge(duplicate, into, who, reason, score, writes):
        return desk.pipeline.merge_duplicate(duplicate, into, who, reason, score, writes)

    app = FastAPI()
    app.add_middleware(ApiGuard, token=None, public_paths=set(), max_url_bytes=4096,
                       max_body_bytes=16_384, tokens=tokens)  # fmt: skip
    app.include_router(duplicates_router(conn, merge, AuditTrail(conn)))
    with ServedApp(app) as server:

        def client(token: str) -> httpx.Client:
            headers = {"Authorization": f"Bearer {token}"}
            return httpx.Client(base_url=server.url, headers=headers, timeout=10)

        with client(operator_token) as operator, client(viewer_token) as viewer:
            yield Served(desk, operator, viewer)


def test_the_list_shows_both_incidents_and_a_merge_voids_the_duplicate(served: Served):
    desk, http = served.desk, served.operator
    listed = served.viewer.get("/api/v1/duplicates", params={"status": "open"})
    assert listed.status_code == 200, listed.text
    [pair] = listed.json()["duplicates"]
    assert (pair["id"], listed.json()["count"], listed.json()["next_cursor"]) == (
        desk.pair_id, 1, None
    )  # fmt: skip
    for side, incident_id, case_id, device in (("incident", desk.duplicate, "C-2", "BIN-002"),
                                               ("other", desk.kept, "C-1", "BIN-001")):  # fmt: skip
        shown = pair[side]
        assert (shown["id"], shown["case_id"], shown["class_code"], shown["status"]) == (
            incident_id, case_id, "06042", "open"
        )  # fmt: skip
        assert shown["location"]["address"] == PLACE.address
        assert [(e["source_id"], e["summary"]) for e in shown["evidence"]] == [
            (device, f"{device} full")
        ]  # fmt: skip
    by_viewer = served.viewer.post(f"/api/v1/duplicates/{desk.pair_id}/merge",
                                   json={"into": desk.kept, "reason": "one bay"})  # fmt: skip
    assert by_viewer.status_code == 403

    merged = http.post(f"/api/v1/duplicates/{desk.pair_id}/merge",
                       json={"into": desk.kept, "reason": "one bay, one problem"})  # fmt: skip
    assert merged.status_code == 200, merged.text
    body = merged.json()
    assert (body["status"], body["decided_by"], body["reason"], body["commands"]) == (
        "merged", "ana", "one bay, one problem", 2
    )  # fmt: skip
    assert body["incident"]["status"] == "closed"
    assert body["incident"]["closed_reason"] == f"merged into {desk.kept}"
    assert desk.outbox() == [("open", desk.kept), ("open", desk.duplicate),
                             ("attach", desk.kept), ("void", desk.duplicate)]  # fmt: skip
    assert desk.audit() == [
        ("ana", "operator", "duplicate.merge", f"duplicate:{desk.pair_id}", "one bay, one problem")
    ]
    [entry] = audit.page(desk.gw.conn, 1).rows
    assert entry["after"] == {"status": "merged", "into": desk.kept, "voided": desk.duplicate}
    assert "BIN-002/full" in desk.incident(desk.kept)["alert_keys"]
    # The kept incident records the operator's merge with the pair's own score.
    decision = desk.incident(desk.kept)["decisions"][-1]
    assert (decision["score"], decision["other"]) == (pair["score"], desk.duplicate)

    again = http.post(f"/api/v1/duplicates/{desk.pair_id}/merge", json={"into": desk.kept})
    dismiss = http.post(f"/api/v1/duplicates/{desk.pair_id}/dismiss", json={"reason": "no"})
    assert (again.status_code, dismiss.status_code) == (409, 409)
    assert again.json()["detail"] == f"suspected duplicate {desk.pair_id} is merged already"
    assert len(desk.outbox()) == 4 and len(desk.audit()) == 1
    assert http.get("/api/v1/duplicates", params={"status": "open"}).json()["count"] == 0


def test_a_dismissal_keeps_two_cases_and_is_audited(served: Served):
    desk, http = served.desk, served.operator
    dismissed = http.post(f"/api/v1/duplicates/{desk.pair_id}/dismiss",
                          json={"reason": "two bins, both full"})  # fmt: skip
    assert dismissed.status_code == 200, dismissed.text
    assert (dismissed.json()["status"], dismissed.json()["decided_by"]) == ("dismissed", "ana")
    assert desk.audit() == [
        ("ana", "operator", "duplicate.dismiss", f"duplicate:{desk.pair_id}", "two bins, both full")
    ]
    merge = http.post(f"/api/v1/duplicates/{desk.pair_id}/merge", json={"into": desk.kept})
    assert merge.status_code == 409
    assert desk.outbox() == [("open", desk.kept), ("open", desk.duplicate)]
    listed = http.get("/api/v1/duplicates", params={"status": "dismissed"}).json()
    assert [p["id"] for p in listed["duplicates"]] == [desk.pair_id]


def test_a_merge_is_refused_when_an_incident_is_no_longer_open_or_not_of_the_pair(served):
    desk, http = served.desk, served.operator
    path = f"/api/v1/duplicates/{desk.pair_id}/merge"
    stranger = http.post(path, json={"into": "INC-000000000000"})
    assert (stranger.status_code, stranger.json()["detail"]) == (
        400, "into: must be one of the pair's two incidents"
    )  # fmt: skip
    assert http.post(path, content=b"{not json").status_code == 400
    assert http.post(path, json={"into": desk.kept, "extra": 1}).status_code == 400
    assert http.post("/api/v1/duplicates/INC-a~INC-b/merge",
                     json={"into": "INC-a"}).status_code == 404  # fmt: skip
    assert http.get("/api/v1/duplicates/INC-a~INC-b").status_code == 404

    desk.pipeline.close_incident(desk.kept, "case closed on the platform")
    moot = (
        f"suspected duplicate {desk.pair_id} is moot: incident {desk.kept} is closed"
        " (case closed on the platform)"
    )
    refused = http.post(path, json={"into": desk.kept, "reason": "too late"})
    dismissed = http.post(f"/api/v1/duplicates/{desk.pair_id}/dismiss", json={"reason": "no"})
    assert [(a.status_code, a.json()["detail"]) for a in (refused, dismissed)] == [(409, moot)] * 2
    shown = http.get(f"/api/v1/duplicates/{desk.pair_id}").json()
    assert (shown["status"], shown["moot_because"], shown["other"]["status"]) == (
        "moot",
        [{"incident_id": desk.kept, "status": "closed",
          "closed_reason": "case closed on the platform"}],
        "closed",
    )  # fmt: skip
    assert duplicates.get(desk.gw.conn, desk.pair_id)["decided_by"] is None  # nothing stored
    assert [p["id"] for p in listed(http, "moot")] == [desk.pair_id]
    assert listed(http, "open") == []
    assert desk.outbox() == [("open", desk.kept), ("open", desk.duplicate)]
    assert desk.audit() == []


def listed(http: httpx.Client, status: str) -> list[dict]:
    answer = http.get("/api/v1/duplicates", params={"status": status})
    assert answer.status_code == 200, answer.text
    return answer.json()["duplicates"]


def test_a_merge_makes_the_pairs_of_the_voided_incident_moot(served: Served):
    """A third bin at the spot is suspected a duplicate of the second: merging the second
    into the first closes it, and the third's pair can no longer be merged or dismissed."""
    desk, http = served.desk, served.operator
    [third] = desk.pipeline.apply_alerts([full("BIN-003", NOW + 120_000)], NOW + 120_000)
    later = f"{third.incident_id}~{desk.duplicate}"
    assert [p["id"] for p in listed(http, "open")] == [later, desk.pair_id]
    merged = http.post(f"/api/v1/duplicates/{desk.pair_id}/merge", json={"into": desk.kept})
    assert merged.status_code == 200, merged.text

    assert (listed(http, "open"), [p["id"] for p in listed(http, "moot")]) == ([], [later])
    [shown] = listed(http, "moot")
    assert shown["moot_because"] == [{"incident_id": desk.duplicate, "status": "closed",
                                      "closed_reason": f"merged into {desk.kept}"}]  # fmt: skip
    assert shown["incident"]["status"] == "open"
    moot = (
        f"suspected duplicate {later} is moot: incident {desk.duplicate} is closed"
        f" (merged into {desk.kept})"
    )
    for action, body in (("merge", {"into": third.incident_id}), ("dismiss", {})):
        answer = http.post(f"/api/v1/duplicates/{later}/{action}", json=body)
        assert (answer.status_code, answer.json()["detail"]) == (409, moot)
    assert [kind for kind, _ in desk.outbox()] == ["open", "open", "open", "attach", "void"]
    conn = desk.gw.conn
    assert not store.in_transaction(conn, lambda: duplicates.decide(
        conn, later, "dismissed", "ana", "the store refuses it too", NOW))  # fmt: skip
    assert duplicates.get(conn, later)["status"] == "moot"


def test_a_refused_audit_entry_holds_the_merge_back_until_both_commit(served: Served):
    """The store refuses the entry: nothing of the merge is committed (503); the pipeline
    keeps it, and its next commit writes the merge and its entry together."""
    desk, conn = served.desk, served.desk.gw.conn
    conn.execute("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit"
                 " BEGIN SELECT RAISE(ABORT, 'audit refused'); END")  # fmt: skip
    answer = served.operator.post(f"/api/v1/duplicates/{desk.pair_id}/merge",
                                  json={"into": desk.kept, "reason": "one bay"})  # fmt: skip
    assert answer.status_code == 503
    assert duplicates.get(conn, desk.pair_id)["status"] == "open"
    assert (len(desk.outbox()), desk.audit()) == (2, [])
    conn.execute("DROP TRIGGER refuse_audit")
    desk.pipeline.flush()
    assert duplicates.get(conn, desk.pair_id)["status"] == "merged"
    assert [kind for kind, _ in desk.outbox()] == ["open", "open", "attach", "void"]
    assert [row[2] for row in desk.audit()] == ["duplicate.merge"]


def bodies(incident_ids: list[str]) -> st.SearchStrategy[bytes]:
    """Any bytes, or JSON objects of the body's fields (and one more) holding anything,
    the pair's own incident ids included."""
    values = st.one_of(
        st.none(),
        st.integers(),
        st.text(max_size=80),
        st.sampled_from(incident_ids),
        st.lists(st.text(max_size=4), max_size=3),
    )
    fields = st.dictionaries(st.sampled_from(["into", "reason", "x"]), values, max_size=3)
    return st.one_of(st.binary(max_size=64), fields.map(lambda d: json.dumps(d).encode()))


pair_ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=300)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), action=st.sampled_from(["merge", "dismiss"]))
def test_any_body_or_pair_id_is_answered_without_a_server_error(served, data, action):
    """Random ids and the pair's own: a body that happens to be right merges or dismisses
    it once, and every later one is a 409."""
    desk = served.desk
    pair_id = data.draw(st.one_of(st.just(desk.pair_id), pair_ids))
    body = data.draw(bodies([desk.kept, desk.duplicate]))
    path = f"/api/v1/duplicates/{quote(pair_id, safe='')}/{action}"
    before = duplicates.get(desk.gw.conn, desk.pair_id)["status"]
    answer = served.operator.post(path, content=body)
    event(f"HTTP {answer.status_code}")
    assert 200 <= answer.status_code < 500, answer.text
    after = duplicates.get(desk.gw.conn, desk.pair_id)["status"]
    if answer.is_success:  # only the pair's own id, while open, with a right body
        decided = {"merge": "merged", "dismiss": "dismissed"}[action]
        assert (pair_id, before, after) == (desk.pair_id, "open", decided)
    else:
        assert after == before
        if pair_id == desk.pair_id and before != "open":
            assert answer.status_code in (400, 409), answer.text
