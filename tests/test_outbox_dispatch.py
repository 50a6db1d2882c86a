"""The outbox and its dispatcher, in-process, against exact platform replies.

A real SQLite file holds the outbox; the real adapter talks HTTP to a fake platform whose
replies are scripted (``tests/scripted_platform.py``), and, for the one agreement that
matters most (what a 409 for a closed case looks like), to the real bundled platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from scripted_platform import TOKEN, Reply, ScriptedPlatformFake

from case_bridge import outbox
from case_bridge.codes import ClassCatalog
from case_bridge.dispatch import POLICY_COLUMNS, CaseDispatch, load_dispatch
from case_bridge.dispatcher import DOUBTFUL_ATTEMPTS, OutboxDispatcher
from case_bridge.platform import BundledPlatform, CasePlatform
from case_bridge.settings import CaseSettings, RetryPolicy
from domain import Alert, AlertState, CaseCommand, CommandKind, Location, Priority

Runner = Callable[[Coroutine[Any, Any, Any]], Any]
SETTINGS = CaseSettings()
CATALOG = ClassCatalog(SETTINGS.local_classes)
FAST = RetryPolicy(initial_s=0.02, max_s=0.05)
SHANGHAI = ZoneInfo("Asia/Shanghai")
SLOW = RetryPolicy(initial_s=0.5, max_s=15)


def alert(n: int, priority: Priority = Priority.NORMAL, class_code: str = "99101") -> Alert:
    return Alert(
        key=f"WL-{n:03d}/water_high",
        source_id=f"WL-{n:03d}",
        rule_id="water_high",
        state=AlertState.ESCALATED if priority is Priority.CRITICAL else AlertState.FIRING,
        class_code=class_code,
        priority=priority,
        location=Location(31.2989, 120.5853, "人民路 100 号", "320508001001001"),
        ts=1_763_700_000_000 + n,
        values={"level_cm": 31.5},
        summary="water over 30 cm",
    )


def command(
    incident: str,
    n: int,
    kind: CommandKind = CommandKind.OPEN,
    priority: Priority = Priority.NORMAL,
    class_code: str = "99101",
) -> CaseCommand:
    return CaseCommand(f"{incident}/{n}", incident, kind, alert(n, priority, class_code), priority)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
    outbox.ensure_schema(connection)
    yield connection
    connection.close()


def enqueue(conn: sqlite3.Connection, *commands: CaseCommand) -> None:
    for c in commands:
        outbox.enqueue(conn, c, int(time.time() * 1000))


def rows(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT command_id, state, attempts, last_error FROM outbox ORDER BY seq"
    ).fetchall()


def due_ms(conn: sqlite3.Connection, command_id: str) -> int:
    return conn.execute(
        "SELECT next_attempt_ms FROM outbox WHERE command_id = ?", (command_id,)
    ).fetchone()[0]


class Run:
    """A dispatcher on the fake (or any platform) with the handler calls it made."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        platform: CasePlatform,
        retry: RetryPolicy = FAST,
        fail_handler: int = 0,
        refiles: bool = True,
        dispatch: CaseDispatch | None = None,
    ) -> None:
        """``refiles``: what the case-closed handler answers (whether the gateway filed
        the alert afresh)."""
        self.conn = conn
        self.closed: list[tuple[str, CaseCommand]] = []
        self._refiles = refiles
        self.delivered: list[str] = []
        self._fail_handler = fail_handler
        self.platform = platform
        self.dispatcher = OutboxDispatcher(
            conn, platform, CATALOG, SETTINGS, retry, self._closed,
            lambda c, case: self.delivered.append(f"{c.command_id}->{case['id']}"),
            dispatch=dispatch,
        )  # fmt: skip

    def _closed(self, incident_id: str, c: CaseCommand) -> bool:
        self.closed.append((incident_id, c))
        if self._fail_handler:
            self._fail_handler -= 1
            raise OSError("disk full")
        return self._refiles

    async def drain_until_quiet(self, passes: int = 40) -> None:
        """Drain pass after pass, waiting for retries to fall due, until nothing is pending
        (the run loop does the same, on wake-ups and a one-second tick)."""
        for _ in range(passes):
            due = await self.dispatcher.drain_once()
            if outbox.counts(self.conn)["pending"] == 0:
                return
            if due is not None:
                await asyncio.sleep(max(0.0, (due - time.time() * 1000) / 1000) + 0.005)
        raise AssertionError("the outbox did not settle")


def bundled(url: str) -> BundledPlatform:
    return BundledPlatform(url, TOKEN, timeout_s=5)


# --- replies the outbox cannot use -------------------------------------------------------


def test_an_unreadable_2xx_is_sent_again_with_the_same_key_and_then_delivered(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake, run: Runner
) -> None:
    enqueue(conn, command("INC-a", 1))
    fake.script(Reply(200, b"<html>created</html>", {"Content-Type": "text/html"}))
    r = Run(conn, bundled(fake.url), SLOW)

    async def first_pass() -> int | None:
        return await r.dispatcher.drain_once()

    before = int(time.time() * 1000)
    due = run(first_pass())
    after = int(time.time() * 1000)
    reason = "HTTP 200 on POST /api/v1/cases is not JSON: b'<html>created</html>'"
    assert rows(conn) == [("INC-a/1", "pending", 1, reason)]
    # First retry of SLOW: within [initial/2, initial] = [250, 500] ms.
    assert due == due_ms(conn, "INC-a/1")
    assert before + 250 <= due <= after + 500
    assert r.dispatcher.last_error == reason

    r2 = Run(conn, bundled(fake.url), FAST)  # a restart: same row, same key, now answered
    conn.execute("UPDATE outbox SET next_attempt_ms = 0")  # the restart comes after its due
    run(r2.drain_until_quiet())
    assert fake.keys() == ["INC-a/1", "INC-a/1"]
    assert rows(conn) == [("INC-a/1", "delivered", 2, "")]
    assert outbox.case_for(conn, "INC-a") == "C20261121-000001"
    assert r2.delivered == ["INC-a/1->C20261121-000001"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[1, 2]", "HTTP 201 on POST /api/v1/cases is not a JSON object: [1, 2]"),
        (b"{}", "HTTP 201 on POST /api/v1/cases without a usable case id: None"),
        (b'{"id": 7}', "HTTP 201 on POST /api/v1/cases without a usable case id: 7"),
        (
            b'{"id": "../../admin"}',
            "HTTP 201 on POST /api/v1/cases without a usable case id: '../../admin'",
        ),
        (
            b'{"id": "' + b"C" * 65 + b'"}',
            "HTTP 201 on POST /api/v1/cases without a usable case id: '" + "C" * 65 + "'",
        ),
        (b"\xff\xfe{", "HTTP 201 on POST /api/v1/cases is not JSON: b'\\xff\\xfe{'"),
    ],
)
def test_a_2xx_without_a_usable_case_is_retried_then_parked(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake, body: bytes, reason: str, run: Runner
) -> None:
    enqueue(conn, command("INC-a", 1), command("INC-a", 2, CommandKind.ATTACH))
    fake.script(*[Reply(201, body)] * DOUBTFUL_ATTEMPTS)
    r = Run(conn, bundled(fake.url))
    run(r.drain_until_quiet())
    assert rows(conn) == [
        ("INC-a/1", "parked", DOUBTFUL_ATTEMPTS, reason),
        ("INC-a/2", "parked", 1, "no case for this incident: its open command was parked"),
    ]
    assert fake.keys() == ["INC-a/1"] * DOUBTFUL_ATTEMPTS  # the attach never went out
    assert r.dispatcher.stats["doubtful"] == DOUBTFUL_ATTEMPTS
    assert r.dispatcher.stats["parked"] == 2


def test_a_refused_command_is_parked_and_delivered_in_order_once_requeued(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake, run: Runner
) -> None:
    enqueue(
        conn,
        command("INC-a", 1),
        command("INC-a", 2, CommandKind.ESCALATE, Priority.CRITICAL),
        command("INC-b", 3),
    )
    refusal = {"detail": "class_code: must be exactly 5 digits"}
    fake.script(Reply(422, refusal))
    r = Run(conn, bundled(fake.url))
    run(r.drain_until_quiet())
    parked = 'HTTP 422 on POST /api/v1/cases: {"detail": "class_code: must be exactly 5 digits"}'
    assert rows(conn) == [
        ("INC-a/1", "parked", 1, parked),
        ("INC-a/2", "parked", 1, "no case for this incident: its open command was parked"),
        ("INC-b/3", "delivered", 1, ""),
    ]
    assert outbox.requeue_parked(conn) == 2
    run(r.drain_until_quiet())
    assert [(q.method, q.path, q.key) for q in fake.requests] == [
        ("POST", "/api/v1/cases", "INC-a/1"),
        ("POST", "/api/v1/cases", "INC-b/3"),
        ("POST", "/api/v1/cases", "INC-a/1"),
        ("POST", "/api/v1/cases/C20261121-000002/evidence", "INC-a/2"),
    ]
    assert fake.requests[-1].body["priority"] == "critical"
    assert [state for _, state, _, _ in rows(conn)] == ["delivered"] * 3


# --- Retry-After -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "header", "wait_ms"),
    [
        (503, "120", (120_000, 120_000)),
        (429, "in-a-date", None),  # due at the date itself
        (503, "86400", (900_000, 900_000)),  # honoured up to 15 minutes
        (503, "-3", (250, 500)),  # refused: the backoff alone
    ],
)
def test_retry_after_as_seconds_or_an_http_date_is_honoured(
    conn: sqlite3.Connection,
    fake: ScriptedPlatformFake,
    status: int,
    header: str,
    wait_ms: tuple[int, int] | None,
    run: Runner,
) -> None:
    enqueue(conn, command("INC-a", 1), command("INC-b", 2))
    date_s = int(time.time()) + 300  # an HTTP date has whole seconds
    if header == "in-a-date":
        header = format_datetime(datetime.fromtimestamp(date_s, UTC), usegmt=True)
    fake.script(Reply(status, {"detail": "busy"}, {"Retry-After": header}))
    r = Run(conn, bundled(fake.url), SLOW)
    before = int(time.time() * 1000)
    due = run(r.dispatcher.drain_once())
    after = int(time.time() * 1000)
    assert due == due_ms(conn, "INC-a/1")
    if wait_ms is None:  # a date: due then, however long the request took
        assert abs(due - date_s * 1000) <= 1000  # the time between parsing and scheduling
    else:
        assert before + wait_ms[0] <= due <= after + wait_ms[1]
    # The platform is failing: the pass stopped, the other incident was not tried either.
    assert fake.keys() == ["INC-a/1"]
    assert rows(conn)[1] == ("INC-b/2", "pending", 0, "")


# --- 409 on evidence ---------------------------------------------------------------------


def test_evidence_for_a_closed_case_hands_each_stranded_alert_back_and_drops_nothing(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake, run: Runner
) -> None:
    attach = command("INC-a", 2, CommandKind.ATTACH)
    escalate = command("INC-a", 3, CommandKind.ESCALATE, Priority.CRITICAL)
    enqueue(conn, command("INC-a", 1), attach, escalate)
    closed = {"detail": "case is closed (结案)", "case_status": "closed"}
    fake.script(Reply(201, {"id": "C20261121-000042"}), *[Reply(409, closed)] * 3)
    r = Run(conn, bundled(fake.url), fail_handler=1)
    run(r.drain_until_quiet())
    # The handler failed once (disk full): the escalation stayed pending and was tried again.
    assert r.closed == [("INC-a", attach), ("INC-a", attach), ("INC-a", escalate)]
    assert r.closed[-1][1].priority is Priority.CRITICAL
    handed_back = "case closed on the platform; alert handed back to be re-filed"
    assert rows(conn) == [
        ("INC-a/1", "delivered", 1, ""),
        ("INC-a/2", "refiled", 2, handed_back),
        ("INC-a/3", "refiled", 1, handed_back),
    ]
    assert fake.keys() == ["INC-a/1", "INC-a/2", "INC-a/2", "INC-a/3"]
    assert outbox.requeue_parked(conn) == 0  # a re-filed command is never sent again
    assert r.dispatcher.stats["refiled"] == 2
    assert r.dispatcher.stats["internal_errors"] == 1


def test_evidence_the_gateway_keeps_when_the_case_is_final_is_labelled_refused_not_refiled(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake, run: Runner
) -> None:
    """A closure flag's evidence (or a clear) refused on a closed case: handed back, and
    the gateway files nothing again, so the row says so."""
    flag = command("INC-a", 2, CommandKind.ATTACH)
    enqueue(conn, command("INC-a", 1), flag)
    closed = {"detail": "case is closed (结案)", "case_status": "closed"}
    fake.script(Reply(201, {"id": "C20261121-000042"}), Reply(409, closed))
    r = Run(conn, bundled(fake.url), refiles=False)
    run(r.drain_until_quiet())
    assert r.closed == [("INC-a", flag)]
    assert rows(conn) == [
        ("INC-a/1", "delivered", 1, ""),
        ("INC-a/2", "refused_closed", 1, "case closed on the platform; refused, nothing re-filed"),
    ]
    assert outbox.counts(conn) == {
        "pending": 0, "delivered": 1, "parked": 0, "refiled": 0, "refused_closed": 1
    }  # fmt: skip
    assert outbox.requeue_parked(conn) == 0
    assert [row["state"] for row in outbox.listing(conn, "refused_closed", 10)] == [
        "refused_closed"
    ]
    assert (r.dispatcher.stats["refused_closed"], r.dispatcher.stats["refiled"]) == (1, 0)


def test_a_409_that_does_not_say_the_case_is_final_is_a_conflict_not_a_closure(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake, run: Runner
) -> None:
    enqueue(conn, command("INC-a", 1), command("INC-a", 2, CommandKind.ESCALATE, Priority.URGENT))
    conflict = Reply(409, {"detail": "case is being edited", "case_status": "handling"})
    fake.script(Reply(201, {"id": "C20261121-000042"}), conflict, Reply(409, b"busy"))
    r = Run(conn, bundled(fake.url))
    run(r.drain_until_quiet())
    assert r.closed == []
    assert rows(conn)[1] == ("INC-a/2", "delivered", 3, "")
    assert fake.keys() == ["INC-a/1", "INC-a/2", "INC-a/2", "INC-a/2"]


def test_the_bundled_platform_s_409_for_a_void_case_is_recognised(
    conn: sqlite3.Connection, tmp_path: Path, run: Runner
) -> None:
    from test_platform import TOKEN as PLATFORM_TOKEN
    from test_platform import move, running_platform

    escalate = command("INC-a", 2, CommandKind.ESCALATE, Priority.CRITICAL)
    with running_platform(tmp_path / "cases.db") as client:
        base_url = str(client.base_url)
        enqueue(conn, command("INC-a", 1))
        r = Run(conn, BundledPlatform(base_url, PLATFORM_TOKEN, 5))
        run(r.drain_until_quiet())
        case_id = outbox.case_for(conn, "INC-a")
        assert case_id is not None
        assert move(client, case_id, "void").status_code == 200
        enqueue(conn, escalate)
        run(r.drain_until_quiet())
    assert r.closed == [("INC-a", escalate)]
    assert rows(conn)[1] == (
        "INC-a/2",
        "refiled",
        1,
        "case void on the platform; alert handed back to be re-filed",
    )


def test_the_bundled_platform_takes_a_closure_flag_on_a_closed_case(
    conn: sqlite3.Connection, tmp_path: Path, run: Runner
) -> None:
    """A closure check's evidence (the alert's ``closure_check``) reaches a closed case as
    a note and is delivered; a plain sighting after it is still refused and handed back."""
    from test_platform import TOKEN as PLATFORM_TOKEN
    from test_platform import move, running_platform

    flagged = CaseCommand("INC-a/2", "INC-a", CommandKind.ATTACH,
                          replace(alert(2), closure_check="closed"), Priority.NORMAL)  # fmt: skip
    sighting = command("INC-a", 3, CommandKind.ATTACH)
    with running_platform(tmp_path / "cases.db") as client:
        enqueue(conn, command("INC-a", 1))
        r = Run(conn, BundledPlatform(str(client.base_url), PLATFORM_TOKEN, 5), refiles=False)
        run(r.drain_until_quiet())
        case_id = outbox.case_for(conn, "INC-a")
        for status in ("registered", "dispatched", "handling", "verifying", "closed"):
            assert move(client, str(case_id), status).status_code == 200
        enqueue(conn, flagged, sighting)
        run(r.drain_until_quiet())
        case = client.get(f"/api/v1/cases/{case_id}").json()
    assert r.closed == [("INC-a", sighting)]
    assert [row[:2] for row in rows(conn)] == [
        ("INC-a/1", "delivered"), ("INC-a/2", "delivered"), ("INC-a/3", "refused_closed")
    ]  # fmt: skip
    assert r.delivered == [f"INC-a/1->{case_id}", f"INC-a/2->{case_id}"]
    assert case["status"] == "closed"
    assert [(e["ts"], e.get("flag"), e.get("checked_status")) for e in case["evidence"]] == [
        (alert(1).ts, None, None), (alert(2).ts, "closure_check", "closed")
    ]  # fmt: skip
    assert [h["action"] for h in case["history"]][-2:] == ["close", "closure_check"]


# --- order and robustness ----------------------------------------------------------------


def test_a_later_command_of_an_incident_never_overtakes_one_that_waits(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake, run: Runner
) -> None:
    enqueue(
        conn,
        command("INC-a", 1, class_code="99999"),  # not in the catalog: fails inside the gateway
        command("INC-a", 2, CommandKind.ATTACH),
        command("INC-b", 3),
        command("INC-b", 4, CommandKind.ATTACH),
    )
    r = Run(conn, bundled(fake.url))
    run(r.dispatcher.drain_once())
    # INC-a waits on its own failure; INC-b is not held up by it.
    assert fake.keys() == ["INC-b/3", "INC-b/4"]
    assert rows(conn)[:2] == [
        ("INC-a/1", "pending", 1, "internal: KeyError: '99999'"),
        ("INC-a/2", "pending", 0, ""),
    ]
    run(r.drain_until_quiet())
    assert rows(conn)[0] == ("INC-a/1", "parked", DOUBTFUL_ATTEMPTS, "internal: KeyError: '99999'")
    assert fake.keys() == ["INC-b/3", "INC-b/4"]  # INC-a/2 never went before its case
    assert r.dispatcher.stats["internal_errors"] == DOUBTFUL_ATTEMPTS


def test_a_transient_failure_keeps_the_incident_s_order(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake, run: Runner
) -> None:
    enqueue(conn, command("INC-a", 1), command("INC-a", 2, CommandKind.ATTACH))
    fake.script(Reply(502, b"bad gateway"), Reply(504, b""))
    r = Run(conn, bundled(fake.url))
    run(r.drain_until_quiet())
    assert fake.keys() == ["INC-a/1", "INC-a/1", "INC-a/1", "INC-a/2"]
    assert [state for _, state, _, _ in rows(conn)] == ["delivered", "delivered"]


def test_a_long_queue_of_one_waiting_incident_does_not_starve_the_others(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake, run: Runner
) -> None:
    enqueue(conn, *[command("INC-a", n) for n in range(1, 451)], command("INC-b", 451))
    conn.execute(
        "UPDATE outbox SET next_attempt_ms = ? WHERE incident_id = 'INC-a'",
        (int(time.time() * 1000) + 60_000,),
    )
    r = Run(conn, bundled(fake.url))
    run(r.dispatcher.drain_once())
    assert fake.keys() == ["INC-b/451"]


class RaisingPlatformFake:
    """A fake: the real adapter, except that the first ``open_case`` raises something no
    adapter should (a bug), so the dispatcher's own guard is what is tested."""

    honours_idempotency_key = True

    def __init__(self, inner: BundledPlatform) -> None:
        self._inner = inner
        self.raised = 0

    async def open_case(self, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        if not self.raised:
            self.raised += 1
            raise RuntimeError("adapter bug")
        return await self._inner.open_case(body, idempotency_key)

    async def find_case(self, external_key: str, body: dict[str, Any]) -> str | None:
        return await self._inner.find_case(external_key, body)

    async def add_evidence(self, case_id: str, body: dict, idempotency_key: str) -> dict:
        return await self._inner.add_evidence(case_id, body, idempotency_key)

    async def changed_cases(self, since: str | None, after: str | None) -> Any:
        return await self._inner.changed_cases(since, after)

    async def aclose(self) -> None:
        await self._inner.aclose()


def test_an_exception_from_the_platform_costs_a_retry_not_the_loop(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake, run: Runner
) -> None:
    enqueue(conn, command("INC-a", 1), command("INC-b", 2))
    broken = sqlite3.connect(conn.execute("PRAGMA database_list").fetchone()[2])
    broken.execute(
        "INSERT INTO outbox (command_id, incident_id, kind, body, created_ms)"
        " VALUES ('INC-c/3', 'INC-c', 'open', '{\"command_id\": ', 0)"
    )
    broken.commit()
    broken.close()
    r = Run(conn, RaisingPlatformFake(bundled(fake.url)))

    async def run_until_settled() -> bool:
        task = asyncio.create_task(r.dispatcher.run())
        deadline = time.monotonic() + 10
        while [s for _, s, _, _ in rows(conn)] != ["delivered", "delivered", "parked"]:
            assert time.monotonic() < deadline, rows(conn)
            assert not task.done()
            await asyncio.sleep(0.02)
        alive = not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return alive

    assert run(run_until_settled())
    assert fake.keys() == ["INC-b/2", "INC-a/1"]
    assert rows(conn)[2] == (
        "INC-c/3",
        "parked",
        1,
        "internal: unreadable outbox row: JSONDecodeError: Expecting value: line 1 column 16"
        " (char 15)",
    )
    assert r.dispatcher.stats["internal_errors"] == 1


def test_an_escalation_follows_the_policy_of_the_class_its_case_was_filed_under(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake, run: Runner, tmp_path: Path
) -> None:
    # A 06010 alert (rubbish beside the bin) escalates the collection point's 06042 case:
    # the deadline is 06042's 特急 limit (6 h), not 06010's (4 h) nor 特急's plain 2 h.
    policy = tmp_path / "policy.tsv"
    policy.write_text(
        "\t".join(POLICY_COLUMNS) + "\n06042\t特急\t6\tno\n06010\t特急\t4\tno\n",
        encoding="utf-8",
    )
    dispatch = load_dispatch(CaseSettings(class_policy_file=policy), "Asia/Shanghai")
    opened = command("INC-a", 1, CommandKind.OPEN, Priority.URGENT, "06042")
    # The incident book names the case's class on every command of the incident.
    escalated = replace(
        command("INC-a", 2, CommandKind.ESCALATE, Priority.CRITICAL, "06010"), case_class="06042"
    )
    enqueue(conn, opened, escalated)
    r = Run(conn, bundled(fake.url), dispatch=dispatch)
    run(r.drain_until_quiet())

    def due(hours: int) -> str:
        moment = datetime.fromtimestamp(escalated.alert.ts / 1000 + hours * 3600, SHANGHAI)
        return moment.isoformat(timespec="seconds")

    assert [(q.key, q.body.get("deadline")) for q in fake.requests] == [
        ("INC-a/1", due(12)),  # 06042 at 紧急, not its class's priority: the plain 12 h
        ("INC-a/2", due(6)),
    ]
    # A command stored before the case's class was kept on it: the alert's own class.
    enqueue(conn, replace(escalated, command_id="INC-a/3", case_class=""))
    run(r.drain_until_quiet())
    assert (fake.requests[-1].key, fake.requests[-1].body["deadline"]) == ("INC-a/3", due(4))
