"""Who a silence or threshold change is recorded under, over loopback HTTP on a real store:
a session's user or a client token's name whatever ``author`` the request carries (and with
none), the machine token's ``author`` as sent, and none from the machine token is the 422
naming the field. The audit log's actor and the stored author agree."""

from __future__ import annotations

import pytest
from api_principals import ADMIN, add_user, one_deployment

SILENCES = "/api/v1/silences"
THRESHOLDS = "/api/v1/thresholds"
NEW_SILENCE = {"matchers": {"device": "BIN-001"}, "reason": "井盖更换", "duration_s": 600}


@pytest.fixture
def served(tmp_path):
    with one_deployment(tmp_path) as api:
        yield api


def stored_silence_authors(served) -> list[tuple[str, list[str]]]:
    silences = served.http.get(SILENCES, headers=ADMIN).json()["silences"]
    return [(s["author"], [c["author"] for c in s["changes"]]) for s in reversed(silences)]


def test_a_session_s_changes_are_recorded_under_its_user_whatever_author_it_sends(served):
    add_user(served, "ana", "operator")
    ana = served.deployments.browser(served)
    assert ana.sign_in("ana").status_code == 200
    forged = ana.request("POST", SILENCES, json={**NEW_SILENCE, "author": "mallory"})
    assert (forged.status_code, forged.json()["author"]) == (201, "ana")
    left_out = ana.request("POST", SILENCES, json=NEW_SILENCE)
    assert (left_out.status_code, left_out.json()["author"]) == (201, "ana")
    extend = {"author": "mallory", "reason": "longer", "duration_s": 3600}
    extended = ana.request("PATCH", f"{SILENCES}/1", json=extend)
    assert extended.json()["changes"][-1]["author"] == "ana"
    removed = ana.request("DELETE", f"{SILENCES}/2", params={"author": "mallory", "reason": "x"})
    assert removed.json()["changes"][-1]["author"] == "ana"
    assert stored_silence_authors(served) == [("ana", ["ana"]), ("ana", ["ana"])]

    change = {"changes": {"bin.fill_fire_pct": 85}, "author": "mallory", "reason": "summer"}
    assert ana.request("PUT", THRESHOLDS, json=change).json()["author"] == "ana"
    back = ana.request("POST", f"{THRESHOLDS}/rollback", json={"version": 1, "reason": "undo"})
    assert (back.status_code, back.json()["author"]) == (200, "ana")
    actors = served.http.get("/api/v1/audit", headers=ADMIN).json()["entries"]
    assert {e["actor"] for e in actors if e["action"] != "session.sign_in"} == {"ana"}


def test_a_client_token_s_changes_carry_the_token_s_name(served):
    made = served.http.post(
        "/api/v1/tokens", headers=ADMIN, json={"name": "night-script", "role": "operator"}
    )
    bearer = {"Authorization": f"Bearer {made.json()['token']}"}
    change = {"changes": {"bin.fill_fire_pct": 80}, "author": "李工", "reason": "night"}
    answer = served.http.put(THRESHOLDS, headers=bearer, json=change)
    assert (answer.status_code, answer.json()["author"]) == (200, "night-script")
    silence = served.http.post(SILENCES, headers=bearer, json=NEW_SILENCE)
    assert (silence.status_code, silence.json()["author"]) == (201, "night-script")


def test_the_machine_token_says_who_acts_and_must(served):
    change = {"changes": {"bin.fill_fire_pct": 80}, "author": "李工", "reason": "r"}
    assert served.http.put(THRESHOLDS, headers=ADMIN, json=change).json()["author"] == "李工"
    silence = served.http.post(SILENCES, headers=ADMIN, json={**NEW_SILENCE, "author": "王工"})
    assert silence.json()["author"] == "王工"
    missing = [
        served.http.put(THRESHOLDS, headers=ADMIN, json={**change, "author": None}),
        served.http.post(f"{THRESHOLDS}/rollback", headers=ADMIN,
                         json={"version": 1, "reason": "r"}),
        served.http.post(SILENCES, headers=ADMIN, json=NEW_SILENCE),
        served.http.patch(f"{SILENCES}/1", headers=ADMIN,
                          json={"reason": "r", "duration_s": 7200}),
        served.http.delete(f"{SILENCES}/1", headers=ADMIN, params={"reason": "r"}),
    ]  # fmt: skip
    assert [(r.status_code, [e["loc"] for e in r.json()["detail"]]) for r in missing] == [
        (422, [["body", "author"]]), (422, [["body", "author"]]), (422, [["body", "author"]]),
        (422, [["body", "author"]]), (422, [["query", "author"]]),
    ]  # fmt: skip
    assert stored_silence_authors(served) == [("王工", [])]
