"""End to end, closure check (核查): real mosquitto, the gateway process and the bundled
platform, bins reported over MQTT and cases moved through the platform's workflow by hand.

- A case verified and closed while its bin is still full is flagged with the current
  reading (on the case at verification, once; at closure on the incident and on the closed
  case, which the bundled platform keeps as a note, 复核提示, without reopening it), and no
  second case is filed while the bin stays full; emptied and full again, the next
  occurrence files a new case.
- A case closed after its bin was emptied re-arms the bin: the next occurrence files a new
  case, and nothing is flagged.
- Through Open311, which refuses evidence on a closed request, the flag stays on the
  incident and its outbox row ends ``refused_closed``: nothing is filed again.

The first two run on one stack (two bins half a kilometre apart: separate incidents); the
Open311 one needs a stack of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_e2e_sensor_cases import cases_of, publish

from harness import Stack, wait_until

WORKFLOW = ("registered", "dispatched", "handling", "verifying")
FLAG = "closure check at {} ({}): problem persists: {} fill_pct={}"


def started(workdir: Path, adapter: str) -> Iterator[Stack]:
    """A bin is full at its first reading at or above 90 % (no dwell), so a case is filed
    within a second of the reading."""
    stack = Stack(workdir, config={"rules": {"bin": {"fire_for_s": 0}}}, adapter=adapter)
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from started(tmp_path_factory.mktemp("closure"), "bundled")


def outbox_counts(**nonzero: int) -> dict[str, int]:
    every = ("pending", "delivered", "parked", "refiled", "refused_closed")
    return {**dict.fromkeys(every, 0), **nonzero}


def move(s: Stack, case_id: str, *statuses: str) -> None:
    for status in statuses:
        reply = s.platform_http.post(f"/api/v1/cases/{case_id}/transition", json={"to": status})
        assert reply.status_code == 200, reply.text


def flags_on(case: dict) -> list[str]:
    return [e["summary"] for e in case["evidence"] if e["summary"].startswith("closure check")]


def incident_of(s: Stack, case_id: str) -> dict:
    incidents = s.gateway_http.get("/api/v1/incidents").json()["incidents"]
    return next(i for i in incidents if i["case_id"] == case_id)


def sync_passes(s: Stack) -> int:
    return s.gateway_stats()["status_sync"]["passes"]


def closure_flags(s: Stack) -> dict[str, float]:
    text = s.gateway_http.get("/metrics").text
    [family] = [f for f in text_string_to_metric_families(text) if f.name == "citygw_closure_flags"]
    return {sample.labels["status"]: sample.value for sample in family.samples}


def settled(s: Stack, readings: int) -> None:
    """Every reading so far stored and every case command answered."""

    def done() -> bool:
        stats = s.gateway_stats()
        return stats["readings_stored"] == readings and stats["outbox"]["pending"] == 0

    wait_until(done, f"{readings} readings stored and the outbox drained", 30, s.gateway)


def test_a_case_closed_while_the_bin_is_still_full_is_flagged_not_duplicated(s: Stack) -> None:
    publish(s, "BIN-001", 1, {"fill_pct": 95.0})
    wait_until(lambda: len(cases_of(s, "BIN-001")) == 1, "the bin's case", 30, s.gateway)
    [case] = cases_of(s, "BIN-001")
    publish(s, "BIN-001", 2, {"fill_pct": 97.0})
    settled(s, 2)

    move(s, case["id"], *WORKFLOW)
    wait_until(lambda: flags_on(cases_of(s, "BIN-001")[0]), "the flag at verification", 30)
    # Our evidence changed the case, so it is listed again at verification: still one flag.
    after = sync_passes(s)
    wait_until(lambda: sync_passes(s) >= after + 2, "two more status sync passes", 30)
    [flag] = flags_on(cases_of(s, "BIN-001")[0])
    assert flag.startswith(FLAG.format("verifying", "核查", "BIN-001", "97.0") + " at ")

    move(s, case["id"], "closed")
    wait_until(lambda: incident_of(s, case["id"])["status"] == "closed", "incident closed", 30)
    incident = incident_of(s, case["id"])
    assert incident["flag"] == "closed"
    assert [c["status"] for c in incident["closure_checks"]] == ["verifying", "closed"]
    [closing] = incident["closure_checks"][1]["summaries"]
    assert closing.startswith(FLAG.format("closed", "结案", "BIN-001", "97.0") + " at ")
    settled(s, 2)
    # The platform keeps the flag on the closed case as a note; the case stays closed.
    [closed] = cases_of(s, "BIN-001")
    assert [(e["values"], e.get("flag"), e.get("checked_status")) for e in closed["evidence"]] == [
        ({"fill_pct": 95.0}, None, None),
        ({"fill_pct": 97.0}, "closure_check", "verifying"),
        ({"fill_pct": 97.0}, "closure_check", "closed"),
    ]
    assert flags_on(closed) == [flag, closing]
    assert closed["status"] == "closed"
    assert [h["action"] for h in closed["history"]] == [
        "create", "register", "dispatch", "handle", "verify", "closure_check", "close",
        "closure_check",
    ]  # fmt: skip
    assert s.gateway_stats()["outbox"] == outbox_counts(delivered=3)

    # Still full: no second case while the problem persists.
    publish(s, "BIN-001", 3, {"fill_pct": 98.0})
    settled(s, 3)
    assert len(cases_of(s, "BIN-001")) == 1
    assert closure_flags(s) == {"verifying": 1.0, "closed": 1.0, "void": 0.0}

    # Emptied, then full again: the next occurrence is a new case.
    publish(s, "BIN-001", 4, {"fill_pct": 20.0})
    publish(s, "BIN-001", 5, {"fill_pct": 96.0})
    wait_until(lambda: len(cases_of(s, "BIN-001")) == 2, "a new case for the bin", 30, s.gateway)
    settled(s, 5)
    new = next(c for c in cases_of(s, "BIN-001") if c["id"] != case["id"])
    assert (new["status"], new["class_code"], len(new["evidence"])) == ("accepted", "06042", 1)


def test_a_case_closed_after_the_bin_was_emptied_rearms_it(s: Stack) -> None:
    flagged_before = closure_flags(s)
    publish(s, "BIN-020", 1, {"fill_pct": 93.0})
    wait_until(lambda: len(cases_of(s, "BIN-020")) == 1, "the bin's case", 30, s.gateway)
    [case] = cases_of(s, "BIN-020")
    publish(s, "BIN-020", 2, {"fill_pct": 10.0})
    wait_until(lambda: len(cases_of(s, "BIN-020")[0]["evidence"]) == 2, "the clear", 30)

    move(s, case["id"], *WORKFLOW, "closed")
    wait_until(lambda: incident_of(s, case["id"])["status"] == "closed", "incident closed", 30)
    assert incident_of(s, case["id"]).get("flag", "") == ""
    publish(s, "BIN-020", 3, {"fill_pct": 94.0})
    wait_until(lambda: len(cases_of(s, "BIN-020")) == 2, "a new case for the bin", 30, s.gateway)
    assert flags_on(next(c for c in cases_of(s, "BIN-020") if c["id"] == case["id"])) == []
    assert closure_flags(s) == flagged_before


@pytest.fixture
def open311(tmp_path: Path) -> Iterator[Stack]:
    yield from started(tmp_path, "open311")


def test_through_open311_a_refused_flag_stays_on_the_incident_and_nothing_is_refiled(
    open311: Stack,
) -> None:
    s = open311
    publish(s, "BIN-001", 1, {"fill_pct": 95.0})
    wait_until(lambda: len(cases_of(s, "BIN-001")) == 1, "the bin's case", 30, s.gateway)
    [case] = cases_of(s, "BIN-001")
    settled(s, 1)

    # GeoReport v2 shows every step before closure as "open": only the closure is checked.
    move(s, case["id"], *WORKFLOW, "closed")
    wait_until(lambda: incident_of(s, case["id"])["status"] == "closed", "incident closed", 30)
    settled(s, 1)
    incident = incident_of(s, case["id"])
    assert (incident["flag"], [c["status"] for c in incident["closure_checks"]]) == (
        "closed", ["closed"]
    )  # fmt: skip
    assert s.gateway_stats()["outbox"] == outbox_counts(delivered=1, refused_closed=1)
    [row] = s.gateway_http.get("/api/v1/outbox?state=refused_closed").json()["commands"]
    assert (row["command_id"], row["kind"], row["last_error"]) == (
        f"{incident['id']}/2", "attach", "case closed on the platform; refused, nothing re-filed"
    )  # fmt: skip
    [closed] = cases_of(s, "BIN-001")
    assert (closed["status"], closed["evidence"]) == ("closed", case["evidence"])

    # Still full: no second case while the problem persists.
    publish(s, "BIN-001", 2, {"fill_pct": 98.0})
    settled(s, 2)
    assert len(s.cases()) == 1
    assert closure_flags(s) == {"verifying": 0.0, "closed": 1.0, "void": 0.0}
