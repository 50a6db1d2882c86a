"""End to end, status webhooks: real mosquitto, the gateway process and the bundled platform
started with a webhook target (``Stack(webhooks=True)``), cases moved through the platform's
workflow by hand. Status sync passes once at start-up and not again within the test, so
whatever the gateway learns of a case's status here it learned from a signed webhook.

- A case closed after its bin was emptied closes the gateway's incident within seconds;
  every status change of the case is one event, delivered by the platform and accepted by
  the gateway; the bin is re-armed, so a refill files a new case.
- A case at verification while its bin is still full is flagged with the current reading;
  sent back (返工) and verified again, it is flagged once more: one flag per round.

Both run on one stack (two bins half a kilometre apart: separate incidents)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_e2e_closure_check import FLAG, WORKFLOW, flags_on, incident_of, move, sync_passes
from test_e2e_sensor_cases import cases_of, publish

from gateway.api_platform_events import REASONS

from harness import Stack, wait_until

NO_REFUSALS = dict.fromkeys(REASONS, 0)
# Within this a webhook has done what status sync, an hour apart here, could not.
WEBHOOK_LATENCY_S = 10


@pytest.fixture(scope="module")
def s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A bin is full at its first reading at or above 90 % (no dwell); status sync has made
    its start-up pass before any case exists."""
    stack = Stack(
        tmp_path_factory.mktemp("webhooks"),
        config={"rules": {"bin": {"fire_for_s": 0}}},
        webhooks=True,
    )
    stack.start()
    wait_until(lambda: sync_passes(stack) == 1, "the start-up status sync pass", 30, stack.gateway)
    yield stack
    stack.stop()


def sent(s: Stack) -> dict:
    """The platform's webhook sender's counters."""
    return s.platform_http.get("/api/v1/webhooks").json()


def accepted(s: Stack) -> int:
    return s.gateway_stats()["platform_events"]["accepted"]


def delivered_cases(s: Stack) -> int:
    return s.gateway_stats()["outbox"]["delivered"]


def first_case(s: Stack, bin_id: str, fill_pct: float) -> dict:
    """The case filed for the bin's first reading, full at ``fill_pct``."""
    publish(s, bin_id, 1, {"fill_pct": fill_pct})
    wait_until(lambda: len(cases_of(s, bin_id)) == 1, "the bin's case", 30, s.gateway)
    [case] = cases_of(s, bin_id)
    return case


def checks_of(incident: dict) -> tuple[str, str, list[str]]:
    """An incident's status, standing closure flag and the statuses it was checked at."""
    checks = [check["status"] for check in incident.get("closure_checks", [])]
    return incident["status"], incident.get("flag", ""), checks


def settled(s: Stack, events: int, delivered: int) -> dict:
    """Until the gateway has accepted ``events`` webhook events and delivered ``delivered``
    case commands with none pending; returns its stats."""

    def done() -> bool:
        stats = s.gateway_stats()
        return (
            stats["platform_events"]["accepted"] == events
            and stats["outbox"]["pending"] == 0
            and stats["outbox"]["delivered"] == delivered
        )

    wait_until(done, f"{events} events accepted, {delivered} commands delivered", 30, s.gateway)
    return s.gateway_stats()


def assert_all_delivered(s: Stack, before: dict, events: int) -> None:
    """The platform sent ``events`` more events, each delivered at its first attempt."""
    expected = {**before, "queued": before["queued"] + events}
    expected["delivered"] = before["delivered"] + events
    wait_until(lambda: sent(s) == expected, f"{events} webhooks delivered", 30, s.platform)


def test_a_case_closed_on_the_platform_closes_its_incident_at_once(s: Stack) -> None:
    events, delivered, webhooks = accepted(s), delivered_cases(s), sent(s)
    assert webhooks["enabled"] is True
    case = first_case(s, "BIN-001", 95.0)
    publish(s, "BIN-001", 2, {"fill_pct": 20.0})
    wait_until(lambda: len(cases_of(s, "BIN-001")[0]["evidence"]) == 2, "the clear", 30)

    move(s, case["id"], *WORKFLOW, "closed")

    def closed() -> bool:
        return incident_of(s, case["id"])["status"] == "closed"

    wait_until(closed, "the incident closed by the webhook", WEBHOOK_LATENCY_S, s.gateway)
    stats = settled(s, events + 5, delivered + 2)
    assert stats["platform_events"] == {
        "accepted": events + 5,
        "refused": NO_REFUSALS,
        "handler_errors": 0,
    }
    assert stats["status_sync"]["passes"] == 1
    assert_all_delivered(s, webhooks, 5)
    incident = incident_of(s, case["id"])
    assert checks_of(incident) == ("closed", "", [])
    assert incident["closed_reason"] == "case closed on the platform"
    # Every status of the case came by webhook and is kept, in order, for the console.
    timeline = s.gateway_http.get(f"/api/v1/console/incidents/{incident['id']}").json()
    kept = [
        (e["status"], e["source"]) for e in timeline["events"] if e["type"] == "platform_status"
    ]
    assert kept == [(status, "webhook") for status in (*WORKFLOW, "closed")]
    assert incident["platform_status"]["status"] == "closed"

    # Re-armed: the next occurrence is a new case.
    publish(s, "BIN-001", 3, {"fill_pct": 96.0})
    wait_until(lambda: len(cases_of(s, "BIN-001")) == 2, "a new case for the bin", 30, s.gateway)
    settled(s, events + 5, delivered + 3)
    new = next(c for c in cases_of(s, "BIN-001") if c["id"] != case["id"])
    assert (new["status"], new["class_code"], len(new["evidence"])) == ("accepted", "06042", 1)
    assert sync_passes(s) == 1


def test_a_case_verified_while_the_bin_is_full_is_flagged_each_round(s: Stack) -> None:
    events, delivered, webhooks = accepted(s), delivered_cases(s), sent(s)
    flagged = s.gateway_stats()["closure_flags"]["verifying"]
    case = first_case(s, "BIN-020", 93.0)
    flag = FLAG.format("verifying", "核查", "BIN-020", "93.0") + " at "

    move(s, case["id"], *WORKFLOW)
    wait_until(lambda: flags_on(cases_of(s, "BIN-020")[0]), "the flag", WEBHOOK_LATENCY_S)
    settled(s, events + 4, delivered + 2)
    [first] = flags_on(cases_of(s, "BIN-020")[0])
    assert first.startswith(flag)
    assert checks_of(incident_of(s, case["id"])) == ("open", "verifying", ["verifying"])

    # Sent back (返工) and verified again while still full: flagged again, once.
    move(s, case["id"], "handling", "verifying")
    wait_until(lambda: len(flags_on(cases_of(s, "BIN-020")[0])) == 2, "the second flag", 30)
    stats = settled(s, events + 6, delivered + 3)
    assert [f.startswith(flag) for f in flags_on(cases_of(s, "BIN-020")[0])] == [True, True]
    assert stats["closure_flags"]["verifying"] == flagged + 2
    checks = ("open", "verifying", ["verifying", "verifying"])
    assert checks_of(incident_of(s, case["id"])) == checks
    assert stats["platform_events"]["refused"] == NO_REFUSALS
    assert stats["status_sync"]["passes"] == 1
    assert_all_delivered(s, webhooks, 6)
