"""The bundled platform takes a closure check's note (复核提示) on a closed or void case.

A gateway whose closure check finds the problem still there when the case is closed sends
that evidence flagged (``flag: "closure_check"``, ``checked_status``). The platform keeps
it on the case and in its history as a ``closure_check`` note without changing the status;
any other evidence on a final case is refused with 409 as before, and a malformed flag
with 422 naming the field. One real platform on loopback serves the file; each test files
cases of its own, so counts per case are exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_platform import add_evidence, case_body, create, move, running_platform

from case_bridge.case_model import evidence_item
from domain import Alert, AlertState, Location, Priority

TO_CLOSED = ("registered", "dispatched", "handling", "verifying", "closed")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with running_platform(tmp_path_factory.mktemp("platform") / "cases.db") as c:
        yield c


def final_case(client: httpx.Client, status: str) -> dict[str, Any]:
    """A new case moved to ``status`` ("closed" through the whole workflow, or "void")."""
    case = create(client)
    for step in TO_CLOSED if status == "closed" else (status,):
        assert move(client, case["id"], step).status_code == 200
    return client.get(f"/api/v1/cases/{case['id']}").json()


def gateway_note(checked_status: str) -> dict[str, Any]:
    """The evidence item the gateway's closure check sends (case_bridge/case_model.py)."""
    alert = Alert("BIN-001/bin_full", "BIN-001", "bin_full", AlertState.FIRING, "06042",
                  Priority.URGENT, Location(26.08, 119.3), 1_763_700_300_000,
                  {"fill_pct": 97.0}, summary="closure check at closed (结案): problem persists",
                  closure_check=checked_status)  # fmt: skip
    return evidence_item(alert)


def unchanged(client: httpx.Client, before: dict[str, Any]) -> bool:
    return client.get(f"/api/v1/cases/{before['id']}").json() == before


@pytest.mark.parametrize("status", ["closed", "void"])
def test_a_closure_check_note_is_kept_on_a_final_case_without_changing_it(
    client: httpx.Client, status: str
) -> None:
    before = final_case(client, status)
    note = gateway_note(status)
    assert (note["flag"], note["checked_status"]) == ("closure_check", status)
    taken = add_evidence(client, before["id"], {"evidence": [note]}, key="INC-1/4")
    assert taken.status_code == 200, taken.text
    case = taken.json()
    assert case["evidence"] == [*before["evidence"], note]
    assert (case["status"], case["priority"], case["deadline"]) == (
        status, before["priority"], before["deadline"]
    )  # fmt: skip
    assert case["history"][:-1] == before["history"]
    last = case["history"][-1]
    assert {k: last[k] for k in ("action", "from", "to", "note")} == {
        "action": "closure_check", "from": status, "to": status,
        "note": f"1 item(s), 1 复核提示: problem persists at {status}",
    }  # fmt: skip
    # Sent again (a retry with the same key): kept once. The case stays final.
    assert add_evidence(client, before["id"], {"evidence": [note]}, key="INC-1/4").json() == case
    assert move(client, before["id"], "handling").status_code == 409
    assert unchanged(client, case)


def test_other_evidence_on_a_final_case_is_refused_as_before(client: httpx.Client) -> None:
    before = final_case(client, "closed")
    sighting = {"source_id": "BIN-001", "ts": 5}
    refusals = [
        {"evidence": [sighting]},
        {"evidence": [gateway_note("closed"), sighting]},  # a note does not carry a sighting
        {"evidence": [gateway_note("closed")], "priority": "critical"},  # nor an escalation
        {"evidence": [gateway_note("closed")], "deadline": "2026-11-22T01:00:00Z"},
    ]
    for body in refusals:
        refused = add_evidence(client, before["id"], body)
        assert refused.status_code == 409, body
        assert refused.json() == {"detail": "case is closed (结案)", "case_status": "closed"}
    assert unchanged(client, before)


def test_a_note_on_an_open_case_is_recorded_as_one_and_a_sighting_has_no_flag(
    client: httpx.Client,
) -> None:
    case = create(client)
    for step in TO_CLOSED[:-1]:
        move(client, case["id"], step)
    sighting = {"source_id": "BIN-001", "ts": 5, "summary": "bin full"}
    mixed = add_evidence(client, case["id"], {"evidence": [sighting, gateway_note("verifying")]})
    flagged = add_evidence(client, case["id"], {"evidence": [gateway_note("verifying")]}).json()
    assert mixed.json()["evidence"][-2] == sighting  # stored as sent: no "flag": null
    assert [(h["action"], h["note"]) for h in flagged["history"][-2:]] == [
        ("evidence", "2 item(s), 1 复核提示: problem persists at verifying"),
        ("closure_check", "1 item(s), 1 复核提示: problem persists at verifying"),
    ]
    assert (flagged["status"], len(flagged["evidence"])) == ("verifying", 4)


def test_a_malformed_flag_is_refused_naming_the_field(client: httpx.Client) -> None:
    before = final_case(client, "closed")
    both = 'evidence.0: a closure check note needs both "flag": "closure_check" and'
    malformed = [
        ({"flag": "closure-check", "checked_status": "closed"}, "evidence.0.flag: Input should"),
        ({"flag": "closure_check"}, both),
        ({"checked_status": "closed"}, both),
        ({"flag": None, "checked_status": None}, both),
        ({"flag": "closure_check", "checked_status": "handling"},
         "evidence.0.checked_status: must be one of closed, verifying, void"),
        ({"flag": "closure_check", "checked_status": "结案"},
         "evidence.0.checked_status: must be one of closed, verifying, void"),
        ({"flag": "closure_check", "checked_status": 5},
         "evidence.0.checked_status: Input should be a valid string"),
        ({"flag": "closure_check", "checked_status": "c" * 17},
         "evidence.0.checked_status: String should have at most 16 characters"),
        ({"flag": ["closure_check"], "checked_status": "closed"}, "evidence.0.flag: Input should"),
    ]  # fmt: skip
    count = client.get("/api/v1/cases").json()["count"]
    for fields, message in malformed:
        item = {"source_id": "b", "ts": 1, **fields}
        answer = add_evidence(client, before["id"], {"evidence": [item]})
        assert answer.status_code == 422, fields
        assert answer.json()["detail"].startswith(message), answer.json()
        filed = client.post("/api/v1/cases", json=case_body(evidence=[item]))
        assert filed.status_code == 422, fields
        assert filed.json()["detail"].startswith(message), filed.json()
    assert unchanged(client, before)
    assert client.get("/api/v1/cases").json()["count"] == count


_values = (
    st.none()
    | st.integers()
    | st.text(max_size=20)
    | st.sampled_from(["closure_check", "verifying", "closed", "void", "handling", "accepted"])
)
# Half well-formed notes, half anything in the two fields.
_fields = st.builds(
    lambda status: {"flag": "closure_check", "checked_status": status},
    st.sampled_from(["verifying", "closed", "void"]),
) | st.dictionaries(st.sampled_from(["flag", "checked_status"]), _values, min_size=1)


@settings(max_examples=50, deadline=None)
@given(fields=_fields)
def test_any_flag_on_a_closed_case_is_a_note_or_a_4xx_and_never_reopens_it(
    client: httpx.Client, fields: dict[str, Any]
) -> None:
    cases = client.get("/api/v1/cases", params={"status": "closed", "limit": 1}).json()["cases"]
    before = cases[0] if cases else final_case(client, "closed")
    item = {"source_id": "b", "ts": 1, **fields}
    answer = add_evidence(client, before["id"], {"evidence": [item]})
    valid = fields.get("flag") == "closure_check" and fields.get("checked_status") in {
        "verifying", "closed", "void"
    }  # fmt: skip
    assert answer.status_code == (200 if valid else 422), (fields, answer.text)
    after = client.get(f"/api/v1/cases/{before['id']}").json()
    assert after["status"] == "closed"
    assert len(after["evidence"]) == len(before["evidence"]) + valid
