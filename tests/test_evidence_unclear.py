"""Evidence sent again after a lost answer, on platforms that keep no idempotency keys.

A platform that adds the evidence and then answers 502 (a gateway in front lost its
answer) must not get it twice where it can be asked, and where it cannot, the delivery
setting ``evidence_after_unclear`` decides: ``resend`` (counted) or ``park`` for an
operator. Real HTTP on loopback: the keyless stand-in of the bundled API, here keeping
each case's evidence and serving ``GET /api/v1/cases/{id}`` (``EvidenceKeepingFake``), and
the eGova intake stand-in behind the shipped mapped-REST example (which offers no way to
ask). The outbox is a real SQLite file; the counts are the platform's own.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from egova_intake import EgovaIntakeFake, Forced
from keyless_platform import Filed, KeylessBundled, KeylessPlatformFake
from scripted_platform import HANG, TOKEN, Reply, Request
from served_app import ServedApp
from test_mapped_rest import COMMAND, evidence_store, example_data
from test_outbox_dispatch import CATALOG, FAST, SETTINGS, command, enqueue, rows

from case_bridge import outbox
from case_bridge.case_model import evidence_body, open_case_body
from case_bridge.dispatcher import OutboxDispatcher
from case_bridge.guarded_platform import DeliverySettings, GuardedPlatform
from case_bridge.mapped_rest import MappedRestPlatform
from case_bridge.mapped_rest_settings import MappedRestSettings
from case_bridge.platform import BundledPlatform, CasePlatform, Failure, PlatformError
from domain import CommandKind, Priority
from simulators.platform.api import create_app

Runner = Callable[[Coroutine[Any, Any, Any]], Any]
CASE = "C20261121-000001"
EVIDENCE = f"POST /api/v1/cases/{CASE}/evidence"
LOOKUP = f"GET /api/v1/cases/{CASE}"
LOST = Reply(502, b"bad gateway")


class EvidenceKeepingFake(KeylessPlatformFake):
    """The keyless stand-in keeping each case's evidence items as sent; ``Filed(answer)``
    on an evidence post adds them first, then answers ``answer``."""

    def __init__(self) -> None:
        super().__init__()
        self.evidence: dict[str, list[dict[str, Any]]] = {}

    def items(self) -> int:
        return sum(len(kept) for kept in self.evidence.values())

    def _file(self, request: Request) -> dict[str, Any]:
        if not request.path.endswith("/evidence"):
            return super()._file(request)
        case_id = request.path.split("/")[4]
        with self._changed:
            self.evidence.setdefault(case_id, []).extend(request.body["evidence"])
        return {"id": case_id, "status": "accepted"}

    def _well_behaved(self, request: Request) -> Reply:
        if request.method == "POST" and request.path.endswith("/evidence"):
            return Reply(200, self._file(request))
        if request.method == "GET" and request.path.startswith("/api/v1/cases/"):
            case_id = request.path.split("/")[4]
            with self._changed:
                kept = list(self.evidence.get(case_id, []))
            return Reply(200, {"id": case_id, "status": "accepted", "evidence": kept})
        return super()._well_behaved(request)


class Delivery:
    """A dispatcher on ``platform`` with the delivery settings under test."""

    def __init__(
        self, conn: sqlite3.Connection, platform: CasePlatform, after_unclear: str = "resend"
    ) -> None:
        self.conn = conn
        settings = DeliverySettings(evidence_after_unclear=after_unclear)
        self.dispatcher = OutboxDispatcher(
            conn, platform, CATALOG, SETTINGS, FAST, lambda *_: True, delivery=settings
        )

    async def until_quiet(self) -> None:
        for _ in range(200):
            next_due = await self.dispatcher.drain_once()
            if next_due is None:
                return
            await asyncio.sleep(max(0.0, (next_due - time.time() * 1000) / 1000))
        raise AssertionError("the outbox did not settle")


@pytest.fixture
def keeping() -> Iterator[EvidenceKeepingFake]:
    with EvidenceKeepingFake() as server:
        yield server


def marks(conn: sqlite3.Connection) -> list[int]:
    return [m for (m,) in conn.execute("SELECT maybe_filed FROM outbox ORDER BY seq")]


# --- a platform that can be asked ------------------------------------------------------


def test_evidence_added_before_the_answer_was_lost_is_found_not_sent_again(
    conn: sqlite3.Connection, keeping: EvidenceKeepingFake, run: Runner
) -> None:
    enqueue(conn, command("INC-a", 1), command("INC-a", 2, CommandKind.ATTACH))
    keeping.script(Reply(201, {"id": CASE}), Filed(LOST))
    keeping.cases.append({"id": CASE, "class_code": "99101", "external_key": "INC-a"})
    d = Delivery(conn, KeylessBundled(keeping.url, TOKEN, 0.5), "park")
    run(d.until_quiet())
    assert keeping.calls() == ["POST INC-a", EVIDENCE, LOOKUP]
    assert keeping.items() == 1
    assert [state for _, state, _, _ in rows(conn)] == ["delivered", "delivered"]
    assert marks(conn) == [0, 0]
    stats = d.dispatcher.stats
    assert (stats["evidence_lookups"], stats["evidence_found_by_lookup"]) == (1, 1)
    assert stats["evidence_resent_unclear"] == 0


def test_evidence_lost_before_the_platform_acted_is_sent_again_once(
    conn: sqlite3.Connection, keeping: EvidenceKeepingFake, run: Runner
) -> None:
    enqueue(conn, command("INC-a", 1), command("INC-a", 2, CommandKind.ATTACH))
    keeping.script(Reply(201, {"id": CASE}), HANG)  # held, and nothing added
    d = Delivery(conn, KeylessBundled(keeping.url, TOKEN, 0.3), "park")
    run(d.until_quiet())
    assert keeping.calls() == ["POST INC-a", EVIDENCE, LOOKUP, EVIDENCE]
    assert keeping.items() == 1
    assert rows(conn)[1] == ("INC-a/2", "delivered", 2, "")
    assert d.dispatcher.stats["evidence_found_by_lookup"] == 0


def test_an_escalation_is_sent_again_unmarked_and_never_looked_up(
    conn: sqlite3.Connection, keeping: EvidenceKeepingFake, run: Runner
) -> None:
    """A second raise to the same priority changes nothing: resent as it always was."""
    escalate = command("INC-a", 2, CommandKind.ESCALATE, Priority.CRITICAL)
    enqueue(conn, command("INC-a", 1), escalate)
    keeping.script(Reply(201, {"id": CASE}), Filed(LOST))
    d = Delivery(conn, KeylessBundled(keeping.url, TOKEN, 0.5), "park")
    run(d.until_quiet())
    assert keeping.calls() == ["POST INC-a", EVIDENCE, EVIDENCE]
    assert keeping.items() == 2
    assert [r.key for r in keeping.requests[1:]] == ["INC-a/2", "INC-a/2"]
    assert d.dispatcher.stats["evidence_lookups"] == 0


def test_a_lookup_that_fails_is_retried_and_never_becomes_a_second_send(
    conn: sqlite3.Connection, keeping: EvidenceKeepingFake, run: Runner
) -> None:
    enqueue(conn, command("INC-a", 1), command("INC-a", 2, CommandKind.ATTACH))
    keeping.script(Reply(201, {"id": CASE}), Filed(LOST), Reply(503, b"busy"),
                   Reply(200, {"id": CASE, "evidence": "all of it"}))  # fmt: skip
    d = Delivery(conn, KeylessBundled(keeping.url, TOKEN, 0.5))
    run(d.until_quiet())
    assert keeping.calls() == ["POST INC-a", EVIDENCE, LOOKUP, LOOKUP, LOOKUP]
    assert keeping.items() == 1
    assert d.dispatcher.stats["lookup_failures"] == 2
    assert rows(conn)[1][:3] == ("INC-a/2", "delivered", 4)


# --- a platform that cannot be asked: the eGova example ----------------------------------


@pytest.fixture
def intake() -> Iterator[EgovaIntakeFake]:
    with EgovaIntakeFake() as server:
        yield server


@pytest.fixture
def egova(intake: EgovaIntakeFake, tmp_path: Path, run: Runner) -> Iterator[MappedRestPlatform]:
    settings = MappedRestSettings.model_validate(example_data(intake.url))
    platform = MappedRestPlatform(settings, evidence_store(tmp_path / "evidence").read_linked)
    yield platform
    run(platform.aclose())


def egova_after_502(
    conn: sqlite3.Connection,
    intake: EgovaIntakeFake,
    egova: CasePlatform,
    setting: str,
    run: Runner,
) -> tuple[Delivery, str]:
    """An open and its evidence queued; the report answered as the intake answers it, the
    supplement taken and then answered 502; a dispatcher with ``setting`` run until the
    outbox is quiet. Returns it and the one event the intake filed."""
    opened = replace(COMMAND, command_id="INC-a/1", incident_id="INC-a")
    enqueue(conn, opened, replace(opened, command_id="INC-a/2", kind=CommandKind.ATTACH))
    filed = {"code": 0, "msg": "success", "data": {"eventID": "GL20261121000001"}}
    intake.script(Forced(200, filed, act=True), Forced(502, b"<html>502</html>", act=True))
    d = Delivery(conn, egova, setting)
    run(d.until_quiet())
    [event_id] = intake.events
    return d, event_id


def test_resend_the_egova_supplement_the_platform_took_is_sent_again_and_counted(
    conn: sqlite3.Connection, intake: EgovaIntakeFake, egova: MappedRestPlatform, run: Runner
) -> None:
    d, event_id = egova_after_502(conn, intake, egova, "resend", run)
    assert [s["eventID"] for s in intake.supplements] == [event_id, event_id]
    assert [state for _, state, _, _ in rows(conn)] == ["delivered", "delivered"]
    assert d.dispatcher.stats["evidence_resent_unclear"] == 1
    assert d.dispatcher.stats["evidence_lookups"] == 0


def test_park_the_egova_supplement_waits_for_an_operator_and_is_sent_once(
    conn: sqlite3.Connection, intake: EgovaIntakeFake, egova: MappedRestPlatform, run: Runner
) -> None:
    d, event_id = egova_after_502(conn, intake, egova, "park", run)
    assert [s["eventID"] for s in intake.supplements] == [event_id]
    reason = (
        f"evidence sent to case {event_id} without a clear answer, and the platform cannot"
        " be asked whether it has it: look on the platform and resolve"
    )
    assert rows(conn)[1] == ("INC-a/2", "parked", 2, reason)
    assert marks(conn) == [0, 1]
    sent = len(intake.received)
    assert outbox.requeue_parked(conn) == 1  # parks again, sending nothing
    run(d.until_quiet())
    assert (len(intake.received), rows(conn)[1][1]) == (sent, "parked")
    assert outbox.resolve_found(conn, 2, "INC-a", event_id, int(time.time() * 1000))
    assert [state for _, state, _, _ in rows(conn)] == ["delivered", "delivered"]
    assert (len(intake.supplements), d.dispatcher.stats["evidence_resent_unclear"]) == (1, 0)


# --- behind the gateway's wrapper (breaker and rate limit), as the gateway runs them -------


def test_behind_the_wrapper_a_platform_that_can_be_asked_is_asked_and_counted(
    conn: sqlite3.Connection, keeping: EvidenceKeepingFake, run: Runner
) -> None:
    enqueue(conn, command("INC-a", 1), command("INC-a", 2, CommandKind.ATTACH))
    keeping.script(Reply(201, {"id": CASE}), Filed(LOST))
    guarded = GuardedPlatform(KeylessBundled(keeping.url, TOKEN, 0.5), DeliverySettings())
    d = Delivery(conn, guarded, "park")
    run(d.until_quiet())
    assert keeping.calls() == ["POST INC-a", EVIDENCE, LOOKUP]
    assert [state for _, state, _, _ in rows(conn)] == ["delivered", "delivered"]
    stats = d.dispatcher.stats
    assert (stats["evidence_lookups"], stats["evidence_found_by_lookup"]) == (1, 1)
    assert sum(guarded.stats()["calls"]["find_evidence"]["buckets"]) == 1


def test_behind_the_wrapper_a_platform_that_cannot_be_asked_counts_no_lookup(
    conn: sqlite3.Connection, intake: EgovaIntakeFake, egova: MappedRestPlatform, run: Runner
) -> None:
    """The wrapper offers no lookup for an adapter without one (it used to answer None for
    it, counted as a lookup made): the resend is counted, no lookup."""
    guarded = GuardedPlatform(egova, DeliverySettings())
    assert guarded.find_evidence is None
    d, event_id = egova_after_502(conn, intake, guarded, "resend", run)
    assert [s["eventID"] for s in intake.supplements] == [event_id, event_id]
    stats = d.dispatcher.stats
    assert (stats["evidence_resent_unclear"], stats["evidence_lookups"]) == (1, 0)
    assert "find_evidence" not in guarded.stats()["calls"]


def test_the_bundled_adapter_finds_evidence_on_the_real_bundled_platform(
    tmp_path: Path, run: Runner
) -> None:
    """``find_evidence`` reads the case as the bundled platform really answers it: the
    evidence added is found, an alert it never got is not, an unknown case is refused."""
    opened, attach = command("INC-a", 1), command("INC-a", 2, CommandKind.ATTACH)
    other = command("INC-a", 3, CommandKind.ATTACH)
    with ServedApp(create_app(str(tmp_path / "cases.db"), TOKEN)) as served:
        adapter = BundledPlatform(served.url, TOKEN, 5)

        async def ask() -> tuple[bool, bool, bool, PlatformError]:
            case = await adapter.open_case(open_case_body(opened, CATALOG, SETTINGS), "INC-a/1")
            added = evidence_body(attach, SETTINGS)
            before = await adapter.find_evidence(case["id"], added)
            await adapter.add_evidence(case["id"], added, "INC-a/2")
            after = await adapter.find_evidence(case["id"], added)
            never = await adapter.find_evidence(case["id"], evidence_body(other, SETTINGS))
            with pytest.raises(PlatformError) as unknown:
                await adapter.find_evidence("C20991231-000001", added)
            await adapter.aclose()
            return before, after, never, unknown.value

        before, after, never, unknown = run(ask())
    assert (before, after, never) == (False, True, False)
    assert unknown.failure is Failure.REFUSED
    assert unknown.reason.startswith("HTTP 404 on GET /api/v1/cases/C20991231-000001: ")
