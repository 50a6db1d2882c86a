"""End to end, an eGova-style platform's own status pushes: real mosquitto and the gateway
process filing through the mapped-REST adapter (``deploy/platforms/egova.yaml``) into a
stand-in eGova intake on loopback, which pushes each state change in its own shape, signed
as ``deploy/platforms/egova-webhook.yaml`` says, to the gateway's ``/platform/events``
(``tests/egova_pusher.py``). Both shipped files are used as they are, but for the base URL
and where the secrets come from. Status sync passes once at start-up and not again within
the test, so what the gateway learns of a case's state here it learned from a push.

- An event closed (结案, state 6) after its bin was emptied closes the gateway's incident
  within seconds; every push is answered ``{"code": 0, "msg": "success"}``; replays, a
  stale push, a forged one and a state code the mapping lacks are refused and counted;
  the bin is re-armed, so a refill files a new event.
- An event at verification (核查, state 5) while its bin is still full gets a supplement
  flagged as a closure check (``reviewFlag``/``reviewStatus``), and the incident stays open.

The bundled platform also runs (the harness starts it); nothing is filed there."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from egova_intake import SECRET as INTAKE_SECRET
from egova_pusher import WEBHOOK_SECRET, EgovaPushingFake, push_headers
from test_e2e_closure_check import incident_of, sync_passes
from test_e2e_sensor_cases import publish

from gateway.api_platform_events import EVENTS_PATH, REASONS
from gateway.bounded_yaml import load_yaml_file

from harness import WEBHOOK_STACK_STATUS_SYNC_S, Stack, wait_until

PLATFORMS = Path(__file__).resolve().parents[1] / "deploy" / "platforms"
SUCCESS = {"code": 0, "msg": "success"}
WORKFLOW = ("2", "3", "4", "5")  # 立案, 派遣, 处置, 核查
# Within this a push has done what status sync, an hour apart here, could not.
PUSH_LATENCY_S = 10
PART_CODES = {"BIN-001": "35010203005000001", "BIN-020": "35010203005000020"}


def case_platform(workdir: Path, intake_url: str) -> dict[str, Any]:
    """``case_platform`` from the two shipped files, the secrets from a file and a value."""
    _, filing = load_yaml_file(PLATFORMS / "egova.yaml")
    filing["auth"].pop("secret_env")
    filing["auth"]["secret"] = INTAKE_SECRET
    filing["url"] = intake_url
    _, webhook = load_yaml_file(PLATFORMS / "egova-webhook.yaml")
    assert webhook.pop("secret_env") == "CITYGW_EGOVA_WEBHOOK_SECRET"
    (workdir / "egova-webhook.key").write_text(WEBHOOK_SECRET + "\n")
    webhook["secret_file"] = str(workdir / "egova-webhook.key")
    return {
        "adapter": "mapped_rest",
        "status_sync_s": WEBHOOK_STACK_STATUS_SYNC_S,
        "retry": {"initial_s": 0.2, "max_s": 2},
        "mapped_rest": filing,
        "webhook": webhook,
    }


class Egova:
    """The stack and the stand-in platform it files into and hears from."""

    def __init__(self, stack: Stack, intake: EgovaPushingFake) -> None:
        self.stack = stack
        self.intake = intake

    def events_of(self, device_id: str) -> list[str]:
        """The ids of the events filed for the device, oldest first."""
        code = PART_CODES[device_id]
        return [i for i, e in self.intake.events.items() if e.get("partCode") == code]

    def supplements_of(self, event_id: str) -> list[dict]:
        return [s for s in self.intake.supplements if s["eventID"] == event_id]

    def first_event(self, device_id: str, fill_pct: float) -> str:
        publish(self.stack, device_id, 1, {"fill_pct": fill_pct})
        wait_until(lambda: len(self.events_of(device_id)) == 1, "the event", 30, self.stack.gateway)
        [event_id] = self.events_of(device_id)
        return event_id

    def move(self, event_id: str, *states: str) -> None:
        """The city's workflow moves the event on; each change is pushed and taken."""
        for state in states:
            answer = self.intake.set_state(event_id, state)
            assert answer is not None
            assert (answer.status_code, answer.json()) == (200, SUCCESS), answer.text

    def events_stats(self) -> dict:
        return self.stack.gateway_stats()["platform_events"]

    def settled(self, accepted: int, delivered: int) -> dict:
        """Until the gateway has accepted ``accepted`` pushes and delivered ``delivered``
        case commands with none pending; returns its stats."""

        def done() -> bool:
            stats = self.stack.gateway_stats()
            return (
                stats["platform_events"]["accepted"] == accepted
                and stats["outbox"]["pending"] == 0
                and stats["outbox"]["delivered"] == delivered
            )

        what = f"{accepted} pushes accepted, {delivered} commands delivered"
        wait_until(done, what, 30, self.stack.gateway)
        return self.stack.gateway_stats()


@pytest.fixture(scope="module")
def egova(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Egova]:
    """A bin is full at its first reading at or above 90 % (no dwell); status sync has made
    its start-up pass before any event exists."""
    workdir = tmp_path_factory.mktemp("egova-webhooks")
    with EgovaPushingFake() as intake:
        config = {"rules": {"bin": {"fire_for_s": 0}}}
        config["case_platform"] = case_platform(workdir, intake.url)
        stack = Stack(workdir, config=config)
        intake.push_url = f"http://127.0.0.1:{stack.api_port}{EVENTS_PATH}"
        stack.start()
        try:
            wait_until(lambda: sync_passes(stack) == 1, "the start-up pass", 30, stack.gateway)
            yield Egova(stack, intake)
        finally:
            stack.stop()


def test_an_event_closed_on_the_platform_closes_its_incident_and_rearms_the_bin(
    egova: Egova,
) -> None:
    before = egova.events_stats()
    delivered = egova.stack.gateway_stats()["outbox"]["delivered"]
    event_id = egova.first_event("BIN-001", 95.0)
    publish(egova.stack, "BIN-001", 2, {"fill_pct": 20.0})
    wait_until(lambda: len(egova.supplements_of(event_id)) == 1, "the clear", 30)

    egova.move(event_id, *WORKFLOW, "6")

    def closed() -> bool:
        return incident_of(egova.stack, event_id)["status"] == "closed"

    wait_until(closed, "the incident closed by the push", PUSH_LATENCY_S, egova.stack.gateway)
    accepted = before["accepted"] + 5
    stats = egova.settled(accepted, delivered + 2)
    incident = incident_of(egova.stack, event_id)
    assert (incident["closed_reason"], incident.get("flag", "")) == (
        "case closed on the platform",
        "",
    )
    timeline = egova.stack.gateway_http.get(f"/api/v1/console/incidents/{incident['id']}")
    kept = [
        (e["status"], e["source"], e["updated_at"])
        for e in timeline.json()["events"]
        if e["type"] == "platform_status"
    ]
    pushed = [json.loads(body)["data"] for body, _ in egova.intake.pushed[-5:]]
    names = ("registered", "dispatched", "handling", "verifying", "closed")
    assert kept == [
        (name, "webhook", push["updateTime"].replace(" ", "T") + "+08:00")
        for name, push in zip(names, pushed, strict=True)
    ]

    # What the platform must not get through: each refused and counted, nothing changed.
    replay_body, _ = egova.intake.pushed[-1]
    unknown = egova.intake.state_body(event_id, state_id="7")
    forged = egova.intake.state_body(event_id, state_id="9")
    refusals = [
        (replay_body, push_headers(replay_body), 409, "replayed"),
        (forged, push_headers(forged, secret="not-the-shared-secret-0000"), 401, "bad_signature"),
        (forged, push_headers(forged, at_ms=1_000_000_000_000), 401, "stale"),
        (forged, {"Content-Type": "application/json"}, 401, "unsigned"),
        (unknown, push_headers(unknown), 422, "unknown_status"),
    ]
    for body, headers, status, reason in refusals:
        answer = egova.intake.push(body, headers)
        assert (answer.status_code, answer.json()["reason"]) == (status, reason)
        assert WEBHOOK_SECRET not in answer.text
    expected = {**before["refused"]}
    for _, _, _, reason in refusals:
        expected[reason] += 1
    stats = egova.settled(accepted, delivered + 2)
    assert stats["platform_events"] == {
        "accepted": accepted,
        "refused": expected,
        "handler_errors": 0,
    }
    assert set(expected) == set(REASONS)
    assert incident_of(egova.stack, event_id)["platform_status"]["status"] == "closed"

    # Re-armed: the next occurrence is a new event.
    publish(egova.stack, "BIN-001", 3, {"fill_pct": 96.0})
    wait_until(lambda: len(egova.events_of("BIN-001")) == 2, "a new event", 30, egova.stack.gateway)
    egova.settled(accepted, delivered + 3)
    new = egova.events_of("BIN-001")[1]
    assert (egova.intake.events[new]["stateID"], egova.intake.events[new]["subTypeID"]) == (
        "1",
        "06042",
    )
    assert sync_passes(egova.stack) == 1


def test_an_event_verified_while_the_bin_is_full_gets_a_flagged_supplement(egova: Egova) -> None:
    accepted = egova.events_stats()["accepted"]
    delivered = egova.stack.gateway_stats()["outbox"]["delivered"]
    event_id = egova.first_event("BIN-020", 93.0)

    egova.move(event_id, *WORKFLOW)
    wait_until(lambda: egova.supplements_of(event_id), "the flag", PUSH_LATENCY_S)
    egova.settled(accepted + 4, delivered + 2)
    [flagged] = egova.supplements_of(event_id)
    assert (flagged["reviewFlag"], flagged["reviewStatus"]) == ("closure_check", "verifying")
    assert flagged["supplementDesc"].startswith(
        "closure check at verifying (核查): problem persists: BIN-020 fill_pct=93.0 at "
    )
    incident = incident_of(egova.stack, event_id)
    assert (incident["status"], incident["flag"]) == ("open", "verifying")
    assert sync_passes(egova.stack) == 1
