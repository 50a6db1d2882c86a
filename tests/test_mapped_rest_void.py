"""A mapped REST platform voids (作废) a merged duplicate's case through the mapping's
``void_case`` request: the shipped eGova example against the stand-in intake over real
loopback HTTP, driven through the outbox as the gateway drives it. A void is sent signed
with the exact body; a void sent again finds the case void already and is done; a refusal
parks with the platform's reason. The example also names the responsible unit of a case
built with the gateway's dispatch data. The loader checks a void request like the others.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from egova_intake import BASE, EgovaIntakeFake, Forced
from pydantic import ValidationError
from test_mapped_rest import (
    ALERT,
    CASES,
    CATALOG,
    COMMAND,
    Connect,
    adapters,
    evidence_store,
    example_data,
)
from test_outbox_dispatch import Run

from case_bridge import outbox
from case_bridge.case_model import open_case_body
from case_bridge.dispatch import load_dispatch
from case_bridge.dispatcher import void_reason
from case_bridge.mapped_rest_settings import MappedRestSettings
from domain import CaseCommand, CommandKind, Priority
from gateway.evidence import EvidenceWriter

_INVALID = re.compile(r"/api/event/([^/?]+)/invalid")


class VoidingIntake(EgovaIntakeFake):
    """The stand-in intake with an invalidate call: an event that exists and is not final
    becomes 作废 (stateID 9); a final one answers the intake's 2003/2004, an unknown one
    1004. ``voids`` keeps each accepted body."""

    def __init__(self) -> None:
        super().__init__()
        self.voids: list[dict[str, Any]] = []

    def _answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> dict[str, Any]:
        found = _INVALID.fullmatch(target.removeprefix(BASE))
        if method != "POST" or found is None:
            return super()._answer(method, target, headers, body)
        event_id = found.group(1)
        request = json.loads(body)
        if request.get("eventID") != event_id:
            return {"code": 1001, "msg": "参数错误: eventID"}
        if refusal := self._not_open(event_id):
            return refusal
        self.voids.append(request)
        self.events[event_id]["stateID"] = "9"
        self.events[event_id]["updateTime"] = self._clock()
        return {"code": 0, "msg": "success", "data": {"eventID": event_id}}


@pytest.fixture
def intake() -> Iterator[VoidingIntake]:
    with VoidingIntake() as server:
        yield server


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as run:
        yield run


@pytest.fixture
def store(tmp_path: Path) -> EvidenceWriter:
    return evidence_store(tmp_path / "evidence")


@pytest.fixture
def connect(runner: asyncio.Runner, store: EvidenceWriter) -> Iterator[Connect]:
    yield from adapters(runner, store)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
    outbox.ensure_schema(db)
    yield db
    db.close()


def void(n: int) -> CaseCommand:
    return CaseCommand(f"INC-0042/{n}", "INC-0042", CommandKind.VOID, ALERT, Priority.URGENT)


def drain(runner: asyncio.Runner, gateway: Run, *commands: CaseCommand) -> list[tuple]:
    """Enqueue, drain until nothing is pending; every row (command, state, error)."""
    for command in commands:
        outbox.enqueue(gateway.conn, command, int(time.time() * 1000))
    runner.run(gateway.drain_until_quiet())
    return gateway.conn.execute(
        "SELECT command_id, state, last_error FROM outbox ORDER BY seq"
    ).fetchall()


def filed(
    connect: Connect, intake: VoidingIntake, runner: asyncio.Runner, conn: sqlite3.Connection
) -> tuple[Run, str]:
    """The outbox on the example mapping, with COMMAND's case filed: the case's id."""
    gateway = Run(conn, connect(example_data(intake.url)))
    drain(runner, gateway, COMMAND)
    case_id = outbox.case_for(conn, "INC-0042")
    assert case_id is not None
    return gateway, case_id


def test_a_void_is_sent_signed_and_a_repeat_is_done_without_a_second(
    connect: Connect, intake: VoidingIntake, runner: asyncio.Runner, conn: sqlite3.Connection
) -> None:
    gateway, case_id = filed(connect, intake, runner, conn)
    rows = drain(runner, gateway, void(2), void(3))
    assert rows == [("INC-0042/1", "delivered", ""), ("INC-0042/2", "delivered", ""),
                    ("INC-0042/3", "delivered", "")]  # fmt: skip
    assert intake.voids == [{"eventID": case_id, "invalidReason": void_reason(void(2))}]
    assert intake.events[case_id]["stateID"] == "9"
    invalidations = [r for r in intake.received if r.target.endswith("/invalid")]
    assert [r.target for r in invalidations] == [f"{BASE}/api/event/{case_id}/invalid"] * 2
    assert all(r.method == "POST" and r.authorised for r in invalidations)
    assert gateway.dispatcher.stats["void_case_final"] == 1  # the repeat: void already
    assert gateway.closed == []  # nothing handed back to be filed again


def test_a_closed_case_needs_no_void(
    connect: Connect, intake: VoidingIntake, runner: asyncio.Runner, conn: sqlite3.Connection
) -> None:
    gateway, case_id = filed(connect, intake, runner, conn)
    intake.set_state(case_id, "6")  # 结案
    assert drain(runner, gateway, void(2))[1] == ("INC-0042/2", "delivered", "")
    assert (intake.voids, intake.events[case_id]["stateID"]) == ([], "6")
    assert gateway.dispatcher.stats["void_case_final"] == 1


@pytest.mark.parametrize(
    ("forced", "reason"),
    [
        (Forced(400, {"code": 1001, "msg": "参数错误"}), "HTTP 400 on POST /api/event/{}/invalid"),
        (Forced(200, {"code": 1003, "msg": "无权作废"}),
         "HTTP 200 on POST /api/event/{}/invalid: result '1003': 无权作废"),
    ],
    ids=["http-400", "refused-code"],
)  # fmt: skip
def test_a_refused_void_parks_with_the_platforms_reason(
    connect: Connect,
    intake: VoidingIntake,
    runner: asyncio.Runner,
    conn: sqlite3.Connection,
    forced: Forced,
    reason: str,
) -> None:
    gateway, case_id = filed(connect, intake, runner, conn)
    intake.script(forced)
    [_, (command_id, state, error)] = drain(runner, gateway, void(2))
    assert (command_id, state) == ("INC-0042/2", "parked")
    assert error.startswith(reason.format(case_id)), error
    assert intake.voids == [] and intake.events[case_id]["stateID"] == "1"


def test_the_example_names_the_responsible_unit_from_the_dispatch_data(
    connect: Connect, intake: VoidingIntake, runner: asyncio.Runner
) -> None:
    dispatch = load_dispatch(CASES, "Asia/Shanghai")
    unit = dispatch.responsible_unit(ALERT.class_code, ALERT.location.grid_code)
    assert unit  # the fallback unit at least
    body = open_case_body(COMMAND, CATALOG, CASES, dispatch)
    runner.run(connect(example_data(intake.url)).open_case(body, "INC-0042/1"))
    [event] = intake.events.values()
    assert event["dealDeptName"] == unit
    without = open_case_body(COMMAND, CATALOG, CASES)  # no dispatch data: left out
    runner.run(connect(example_data(intake.url)).open_case(without, "INC-0042/1"))
    assert "dealDeptName" not in list(intake.events.values())[1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"body": {"eventID": {"from": "class_code"}}},
         "void_case.body.eventID.from: our case has no 'class_code' here"),
        ({"path": "/api/event/{event_id}/invalid"},
         "the only placeholder is {case_id}, in add_evidence, void_case and upload"),
        ({"check": None}, "case_final needs check"),
        ({"body": {"x": {"coordinate": "x"}}},
         "void_case.body.x: this request has no location for a coordinate"),
    ],
)  # fmt: skip
def test_the_loader_checks_a_void_request_by_name(change: dict[str, Any], message: str) -> None:
    data = example_data("http://127.0.0.1:9/eUrbanMIS")
    data["void_case"] = {**data["void_case"], **change}
    with pytest.raises(ValidationError) as caught:
        MappedRestSettings.model_validate(data)
    assert message in str(caught.value)
