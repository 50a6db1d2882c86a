"""Closure check (核查) at the gateway: the decision table, and the real gateway (built from a
config over a real SQLite file, not started) acting on case statuses: a case at
verification or closed while its bin is still full is flagged with the current reading,
once, durably, without a second case; a cleared one is closed and re-armed as before; a
camera's flag carries an "after" photo with its SHA-256."""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from api_server import gateway_for_api
from prometheus_client.parser import text_string_to_metric_families

from case_bridge import outbox
from case_bridge.case_model import evidence_item
from domain import Alert, AlertState, CaseCommand, CommandKind, Location, Priority, Reading
from gateway import store
from gateway.closure_check import Action, ClosureCheck, decide
from gateway.evidence import EvidenceWriter
from gateway.evidence_links import EvidenceLinks
from gateway.service import Gateway

BASE = int(time.time() * 1000) - 10 * 3_600_000  # readings ten hours ago, 5 min apart
MIN_MS = 60_000
STATUSES = ("accepted", "registered", "dispatched", "handling", "verifying", "closed", "void")


def expected_action(status: str, persists: bool, flag: str) -> Action:
    """The table written out once more, case by case."""
    if status in ("closed", "void"):
        return Action.FLAG_AND_CLOSE if persists else Action.CLOSE
    if status == "verifying":
        return Action.FLAG if persists and flag != "verifying" else Action.NOTHING
    return Action.UNFLAG if flag else Action.NOTHING


def test_the_decision_for_every_status_problem_and_standing_flag() -> None:
    table = list(itertools.product(STATUSES, (False, True), ("", "verifying")))
    assert len(table) == 28
    for status, persists, flag in table:
        assert decide(status, persists, flag) is expected_action(status, persists, flag)
    assert decide("verifying", True, "") is Action.FLAG
    assert decide("verifying", True, "verifying") is Action.NOTHING
    assert decide("handling", True, "verifying") is Action.UNFLAG
    assert decide("closed", True, "verifying") is Action.FLAG_AND_CLOSE
    assert decide("closed", False, "") is Action.CLOSE


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    """The gateway on the builtin registry, built but not started."""
    return gateway_for_api(tmp_path)


class Bin:
    """BIN-001's readings through the gateway's pipeline, 5 minutes apart in event time."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.ts = BASE

    def read(self, *fills: float) -> list[CaseCommand]:
        made = []
        for fill in fills:
            self.ts += 5 * MIN_MS
            reading = Reading("BIN-001", "bin", self.ts, {"fill_pct": fill})
            made += self.gateway.pipeline.process_decoded([("t", b"", reading)], self.ts)
        return made

    def filed(self) -> str:
        """Full for 15 minutes: one case, linked as the platform would have filed it."""
        [opened] = self.read(95.0, 95.0, 95.0)
        assert opened.kind is CommandKind.OPEN
        outbox.link_case(self.gateway.conn, opened.incident_id, "C-1", self.ts)
        return opened.incident_id


def incident(gateway: Gateway, incident_id: str) -> dict:
    return dict(store.load_states(gateway.conn, "incident"))[incident_id]


def metric(gateway: Gateway, status: str) -> float:
    text = gateway.metrics.render().decode()
    [family] = [f for f in text_string_to_metric_families(text) if f.name == "citygw_closure_flags"]
    return next(s.value for s in family.samples if s.labels == {"status": status})


def test_a_case_verified_and_closed_while_the_bin_is_full_is_flagged_not_duplicated(
    gateway: Gateway,
) -> None:
    bin_ = Bin(gateway)
    incident_id = bin_.filed()
    bin_.read(97.0)

    [check] = gateway.closure.case_status(incident_id, "verifying")
    at = bin_.ts
    assert (check.command_id, check.kind, check.priority) == (
        f"{incident_id}/2", CommandKind.ATTACH, Priority.URGENT
    )  # fmt: skip
    assert (check.alert.ts, check.alert.values) == (at, {"fill_pct": 97.0})
    # Flagged for the platform, which can tell it from a new sighting (a closed case takes it).
    item = evidence_item(check.alert)
    assert (item["flag"], item["checked_status"]) == ("closure_check", "verifying")
    assert "flag" not in evidence_item(bin_.gateway.pipeline.persisting(incident_id)[0])
    when = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(at / 1000))
    assert check.alert.summary == (
        f"closure check at verifying (核查): problem persists: BIN-001 fill_pct=97.0 at {when}"
    )
    # Listed again (our evidence changed the case), and after a restart: no second flag.
    assert gateway.closure.case_status(incident_id, "verifying") == []
    gateway = Gateway(gateway.config)
    bin_.gateway = gateway
    assert gateway.closure.case_status(incident_id, "verifying") == []
    assert gateway.closure.case_status(incident_id, "registered") == []  # takes it down
    assert incident(gateway, incident_id)["flag"] == ""
    [again] = gateway.closure.case_status(incident_id, "verifying")  # after rework
    assert again.command_id == f"{incident_id}/3"

    [closing] = gateway.closure.case_status(incident_id, "closed")
    assert closing.command_id == f"{incident_id}/4"
    assert closing.alert.summary.startswith("closure check at closed (结案): problem persists:")
    assert closing.alert.closure_check == "closed"
    stored = incident(gateway, incident_id)
    assert (stored["status"], stored["flag"]) == ("closed", "closed")
    assert stored["closed_reason"] == "case closed on the platform while the problem persisted" \
        " (flagged)"  # fmt: skip
    assert [c["status"] for c in stored["closure_checks"]] == ["verifying", "verifying", "closed"]
    rows = outbox.listing(gateway.conn, "pending", 10)
    assert sorted(r["command_id"] for r in rows) == [f"{incident_id}/{n}" for n in (1, 2, 3, 4)]
    assert gateway.closure.case_status(incident_id, "closed") == []  # listed again
    assert dict(gateway.closure.flags) == {"verifying": 1, "closed": 1, "void": 0}
    assert (metric(gateway, "verifying"), metric(gateway, "closed")) == (1.0, 1.0)

    # Still full: the alert was not re-armed, so no second case. Emptied, then full again:
    # the next occurrence files a new case.
    assert bin_.read(98.0, 98.0, 98.0, 98.0) == []
    assert bin_.read(30.0) == []
    [new] = bin_.read(95.0, 95.0, 95.0)
    assert (new.kind, new.incident_id != incident_id) == (CommandKind.OPEN, True)


def test_a_case_closed_after_the_bin_was_emptied_is_closed_and_rearmed(gateway: Gateway) -> None:
    bin_ = Bin(gateway)
    incident_id = bin_.filed()
    [cleared] = bin_.read(30.0)
    assert cleared.alert.state is AlertState.CLEARED
    assert gateway.closure.case_status(incident_id, "verifying") == []
    assert gateway.closure.case_status(incident_id, "closed") == []
    stored = incident(gateway, incident_id)
    assert (stored["status"], stored.get("flag", "")) == ("closed", "")
    [new] = bin_.read(95.0, 95.0, 95.0)
    assert new.kind is CommandKind.OPEN
    assert dict(gateway.closure.flags) == {"verifying": 0, "closed": 0, "void": 0}


def test_a_case_closed_before_evidence_arrived_is_flagged_and_only_a_worse_problem_refiled(
    gateway: Gateway,
) -> None:
    """The platform answers "case closed" to evidence on its way (the dispatcher hands the
    command back): the incident is flagged as status sync would; the stranded evidence and
    the flag's own command are not filed again; an escalation above the case is."""
    bin_ = Bin(gateway)
    incident_id = bin_.filed()
    [alert] = gateway.pipeline.persisting(incident_id)
    stranded = CaseCommand(f"{incident_id}/9", incident_id, CommandKind.ATTACH, alert,
                           Priority.URGENT)  # fmt: skip
    assert not gateway._on_case_closed_early(incident_id, stranded)
    stored = incident(gateway, incident_id)
    assert (stored["status"], stored["flag"]) == ("closed", "closed")
    assert stored["closed_reason"].startswith("case closed before evidence arrived")
    [flag_row] = outbox.listing(gateway.conn, "pending", 10)[:1]
    assert flag_row["command_id"] == f"{incident_id}/2"
    flag_command = CaseCommand.from_dict(
        json.loads(gateway.conn.execute("SELECT body FROM outbox WHERE seq = ?",
                                        (flag_row["seq"],)).fetchone()[0])
    )  # fmt: skip
    assert flag_command.alert.closure_check == "closed"
    assert not gateway._on_case_closed_early(incident_id, flag_command)  # nothing re-filed
    open_ids = [i["id"] for i in store.load_open_incidents(gateway.conn)]
    assert open_ids == []
    escalated = replace(
        alert, state=AlertState.ESCALATED, priority=Priority.CRITICAL, ts=alert.ts + MIN_MS
    )
    worse = CaseCommand(f"{incident_id}/10", incident_id, CommandKind.ESCALATE, escalated,
                        Priority.CRITICAL)  # fmt: skip
    assert gateway._on_case_closed_early(incident_id, worse)  # filed afresh
    assert gateway._on_case_closed_early(incident_id, worse)  # the same answer again
    [new] = store.load_open_incidents(gateway.conn)
    assert (new["priority"], new["id"] != incident_id) == ("critical", True)
    assert dict(gateway.closure.flags) == {"verifying": 0, "closed": 1, "void": 0}


def camera_stand_in(writer: EvidenceWriter):
    """Stands in for the video runtime's current frame of the zone (no camera runs here):
    the gateway's real evidence writer saves it."""
    frame = np.full((120, 160, 3), 90, np.uint8)

    def after_photo(alert: Alert, now_ms: int) -> Alert:
        return replace(alert, media=writer.save(alert, frame, None, now_ms // 1000))

    return after_photo


def test_a_camera_flag_carries_an_after_photo_with_its_hash(
    gateway: Gateway, tmp_path: Path
) -> None:
    writer = EvidenceWriter(tmp_path / "evidence", EvidenceLinks(b"k" * 32, 3600), 2**20)
    check = ClosureCheck(gateway.conn, gateway.pipeline, camera_stand_in(writer))
    rubbish = Alert("CAM-1/zone-a/dumping", "CAM-1", "dumping", AlertState.FIRING, "06010",
                    Priority.URGENT, Location(26.08, 119.3), BASE, origin="video",
                    kind="camera", zone="CAM-1/zone-a")  # fmt: skip
    [opened] = gateway.pipeline.apply_alerts([rubbish], BASE)
    outbox.link_case(gateway.conn, opened.incident_id, "C-2", BASE)

    [flagged] = check.case_status(opened.incident_id, "verifying")
    [picture] = evidence_item(flagged.alert)["media_files"]
    name = picture["url"].split("?")[0].rsplit("/", 1)[1]
    data = (tmp_path / "evidence" / name).read_bytes()
    assert (picture["sha256"], picture["bytes"]) == (hashlib.sha256(data).hexdigest(), len(data))
    assert flagged.alert.summary.startswith(
        "closure check at verifying (核查): problem persists: CAM-1/zone-a after photo "
    )
    assert flagged.alert.closure_check == "verifying"
    assert dict(check.flags) == {"verifying": 1, "closed": 0, "void": 0}
