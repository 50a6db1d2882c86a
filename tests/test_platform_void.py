"""Voiding a merged duplicate's case (作废) through the outbox, over real loopback HTTP.

The bundled platform (served by uvicorn on loopback, its own SQLite file) voids a case
through its workflow transition, behind the guarded wrapper's breaker and rate limit; a
void sent again is done; a closed case needs none (done, nothing handed back); a case past
where the workflow allows a void parks with the words to do it by hand. The Open311
adapter (against the same platform's Open311 face) and a mapped REST platform without a
void endpoint refuse with the same words.
"""

from __future__ import annotations

import asyncio
import copy
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import test_open311
from served_app import ServedApp
from test_mapped_rest import BASE_DATA

from case_bridge import outbox
from case_bridge.codes import ClassCatalog
from case_bridge.dispatcher import OutboxDispatcher
from case_bridge.guarded_platform import DeliverySettings, GuardedPlatform
from case_bridge.mapped_rest import MappedRestPlatform
from case_bridge.mapped_rest_settings import MappedRestSettings
from case_bridge.open311 import Open311Platform, Open311Settings
from case_bridge.platform import BundledPlatform, CasePlatform, Failure, PlatformError
from case_bridge.settings import CaseSettings, RetryPolicy
from domain import Alert, AlertState, CaseCommand, CommandKind, Location, Priority
from simulators.platform.api import create_app
from simulators.platform.open311 import OPEN311_PREFIX, Open311Options

TOKEN = "void-test-token"
CASES = CaseSettings()
CATALOG = ClassCatalog(CASES.local_classes)
FAST = RetryPolicy(initial_s=0.02, max_s=0.05)
Runner = Callable[[Coroutine[Any, Any, Any]], Any]


def command(incident: str, n: int, kind: CommandKind) -> CaseCommand:
    alert = Alert(
        key="BIN-002/full", source_id="BIN-002", rule_id="full", state=AlertState.FIRING,
        class_code="06042", priority=Priority.URGENT,
        location=Location(31.2989, 120.5853, "人民路 100 号", "320508001001001"),
        ts=int(time.time() * 1000) - 60_000, values={"fill_pct": 95.0},
        summary="bin full; duplicate of INC-kept",
    )  # fmt: skip
    return CaseCommand(f"{incident}/{n}", incident, kind, alert, Priority.URGENT)


# The gateway's outbox in a real SQLite file (one event loop per test: conftest's run).
conn = test_open311.conn


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[str, httpx.Client]]:
    """The bundled platform on loopback (with its Open311 face): its URL and a client."""
    app = create_app(str(tmp_path / "cases.db"), TOKEN, open311=Open311Options())
    with ServedApp(app) as served:
        client = httpx.Client(base_url=served.url + "/api/v1",
                              headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        yield served.url, client
        client.close()


class Outbox:
    """The outbox on a real SQLite file drained by the dispatcher, with what it handed back."""

    def __init__(self, conn: sqlite3.Connection, adapter: CasePlatform) -> None:
        self.conn = conn
        self.handed_back: list[str] = []
        self.dispatcher = OutboxDispatcher(conn, adapter, CATALOG, CASES, FAST, self._back)

    def _back(self, incident_id: str, c: CaseCommand) -> bool:
        self.handed_back.append(c.command_id)
        return False

    def send(self, run: Runner, *commands: CaseCommand) -> list[tuple]:
        """Enqueue, drain until nothing is pending; every row (command, state, error)."""
        for c in commands:
            outbox.enqueue(self.conn, c, int(time.time() * 1000))

        async def drain() -> None:
            for _ in range(40):
                due = await self.dispatcher.drain_once()
                if outbox.counts(self.conn)["pending"] == 0:
                    return
                await asyncio.sleep(max(0.0, ((due or 0) - time.time() * 1000) / 1000) + 0.005)
            raise AssertionError("the outbox did not settle")

        run(drain())
        return self.conn.execute(
            "SELECT command_id, state, last_error FROM outbox ORDER BY seq"
        ).fetchall()


def move(client: httpx.Client, case_id: str, *steps: str) -> None:
    for step in steps:
        assert client.post(f"/cases/{case_id}/transition", json={"to": step}).is_success


def test_the_bundled_platform_voids_a_case_once_through_the_guarded_wrapper(
    run: Runner, conn: sqlite3.Connection, platform: tuple[str, httpx.Client]
) -> None:
    url, client = platform
    guarded = GuardedPlatform(BundledPlatform(url, TOKEN, 5), DeliverySettings())
    box = Outbox(conn, guarded)
    box.send(run, command("INC-dup", 1, CommandKind.OPEN))
    case_id = outbox.case_for(conn, "INC-dup")
    assert case_id is not None
    rows = box.send(run, command("INC-dup", 2, CommandKind.VOID),
                    command("INC-dup", 3, CommandKind.VOID))  # fmt: skip
    assert rows == [("INC-dup/1", "delivered", ""), ("INC-dup/2", "delivered", ""),
                    ("INC-dup/3", "delivered", "")]  # fmt: skip
    case = client.get(f"/cases/{case_id}").json()
    assert case["status"] == "void"
    voids = [h for h in case["history"] if h["action"] == "void"]
    assert len(voids) == 1
    assert voids[0]["note"] == (
        "作废: merged as a duplicate into another case (incident INC-dup:"
        " bin full; duplicate of INC-kept)"
    )
    assert guarded.stats()["calls"]["void_case"]["buckets"][-1] == 0
    assert sum(guarded.stats()["calls"]["void_case"]["buckets"]) == 2
    assert box.handed_back == []
    assert box.dispatcher.stats["delivered_void"] == 2


def test_a_closed_case_needs_no_void_and_a_case_in_handling_parks_for_a_person(
    run: Runner, conn: sqlite3.Connection, platform: tuple[str, httpx.Client]
) -> None:
    url, client = platform
    box = Outbox(conn, BundledPlatform(url, TOKEN, 5))
    box.send(run, command("INC-a", 1, CommandKind.OPEN), command("INC-b", 1, CommandKind.OPEN))
    closed, handling = outbox.case_for(conn, "INC-a"), outbox.case_for(conn, "INC-b")
    assert closed is not None and handling is not None
    move(client, closed, "registered", "dispatched", "handling", "verifying", "closed")
    move(client, handling, "registered", "dispatched", "handling")
    rows = box.send(
        run, command("INC-a", 2, CommandKind.VOID), command("INC-b", 2, CommandKind.VOID)
    )
    assert rows[2:] == [
        ("INC-a/2", "delivered", ""),
        ("INC-b/2", "parked",
         f"case {handling} is 'handling', past where the workflow allows a void:"
         f" void case {handling} by hand"),
    ]  # fmt: skip
    assert box.handed_back == []
    assert box.dispatcher.stats["void_case_final"] == 1
    assert client.get(f"/cases/{closed}").json()["status"] == "closed"
    assert client.get(f"/cases/{handling}").json()["status"] == "handling"


def test_the_open311_adapter_refuses_a_void_with_the_case_to_void_by_hand(
    run: Runner, conn: sqlite3.Connection, platform: tuple[str, httpx.Client]
) -> None:
    url, client = platform
    settings = Open311Settings.model_validate(
        {"url": url + OPEN311_PREFIX, "api_key": TOKEN, "services": {"06042": "06042"},
         "timeout_s": 5}
    )  # fmt: skip
    adapter = Open311Platform(settings)
    box = Outbox(conn, adapter)
    rows = box.send(run, command("INC-dup", 1, CommandKind.OPEN),
                    command("INC-dup", 2, CommandKind.VOID))  # fmt: skip
    case_id = outbox.case_for(conn, "INC-dup")
    assert rows == [
        ("INC-dup/1", "delivered", ""),
        ("INC-dup/2", "parked",
         f"platform has no void (Open311 GeoReport v2): void case {case_id} by hand"),
    ]  # fmt: skip
    assert adapter.stats["void_refused"] == 1
    [case] = client.get("/cases").json()["cases"]
    assert (case["id"], case["status"]) == (case_id, "accepted")


def test_a_mapped_platform_without_a_void_endpoint_refuses_before_sending(run: Runner) -> None:
    """Nothing listens at the mapping's URL: a refusal there can only come before a send.
    (The shipped example has a void_case: tests/test_mapped_rest_void.py sends one.)"""
    data = {**copy.deepcopy(BASE_DATA), "upload": None, "void_case": None}
    adapter = MappedRestPlatform(MappedRestSettings.model_validate(data))
    with pytest.raises(PlatformError) as caught:
        run(adapter.void_case("C-1", "duplicate", "INC-dup/2"))
    assert caught.value.failure is Failure.REFUSED
    assert caught.value.reason == (
        "platform has no void (the platform mapping has no void_case): void case C-1 by hand"
    )
    run(adapter.aclose())
