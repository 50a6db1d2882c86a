"""Filing on a platform that keeps no idempotency keys: a case is filed exactly once
whatever happens between the send and the answer.

The platform is real HTTP on loopback (``tests/keyless_platform.py``): it files a case for
every post and ignores ``Idempotency-Key``; the adapter is the real one, told the platform
keeps no keys. The outbox is a real SQLite file; "the gateway restarts" is a new connection,
adapter and dispatcher on that file, or a real process killed with SIGKILL during the send.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from keyless_platform import Filed, KeylessBundled, KeylessPlatformFake
from scripted_platform import CUT, HANG, TOKEN, Answer, Reply
from test_outbox_dispatch import CATALOG, FAST, SETTINGS, Run, command, enqueue, rows
from test_platform import TOKEN as PLATFORM_TOKEN
from test_platform import running_platform

from case_bridge import outbox
from case_bridge.case_model import open_case_body
from case_bridge.platform import BundledPlatform
from domain import CommandKind

Runner = Callable[[Coroutine[Any, Any, Any]], Any]
TESTS = Path(__file__).parent
# Long enough for a loopback answer, short enough that a held request costs little.
SHORT_TIMEOUT_S = 0.3


@pytest.fixture
def keyless() -> Iterator[KeylessPlatformFake]:
    with KeylessPlatformFake() as server:
        yield server


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


def connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None)
    outbox.ensure_schema(conn)
    return conn


def gateway(conn: sqlite3.Connection, url: str) -> Run:
    return Run(conn, KeylessBundled(url, TOKEN, timeout_s=SHORT_TIMEOUT_S), FAST)


def filed_as(n: int) -> Filed:
    """Filed, and answered as a good platform answers (the fake numbers cases from 1)."""
    return Filed(Reply(201, {"id": f"C20261121-{n:06d}"}))


def maybe_filed(conn: sqlite3.Connection) -> list[int]:
    return [m for (m,) in conn.execute("SELECT maybe_filed FROM outbox ORDER BY seq")]


# --- the platform acted, the answer was lost -----------------------------------------------


@pytest.mark.parametrize(
    "lost",
    [
        HANG,  # read timeout after the request went out
        CUT,  # connection closed before any answer
        Reply(504, b"upstream timed out"),  # a gateway in front gave up waiting
        Reply(502, b"bad gateway"),
        Reply(200, b"<html>created</html>", {"Content-Type": "text/html"}),  # unreadable
        Reply(201, {"ok": True}),  # no case id
    ],
    ids=["timeout", "cut", "504", "502", "html", "no-id"],
)
def test_a_case_filed_before_the_answer_was_lost_is_found_not_filed_again(
    db: Path, keyless: KeylessPlatformFake, lost: Answer, run: Runner
) -> None:
    conn = connect(db)
    enqueue(conn, command("INC-b", 1), command("INC-c", 2), command("INC-d", 3))
    enqueue(conn, command("INC-a", 4), command("INC-a", 5, CommandKind.ATTACH))
    keyless.script(filed_as(1), filed_as(2), filed_as(3), Filed(lost))
    r = gateway(conn, keyless.url)
    run(r.drain_until_quiet())
    assert keyless.filed() == {"INC-b": 1, "INC-c": 1, "INC-d": 1, "INC-a": 1}
    # Two cases a page: INC-a's, the fourth, is on the second.
    assert keyless.calls() == [
        "POST INC-b", "POST INC-c", "POST INC-d", "POST INC-a", "GET", "GET",
        "POST /api/v1/cases/C20261121-000004/evidence",
    ]  # fmt: skip
    lookups = keyless.requests[4:6]
    assert [q.query.get("after") for q in lookups] == [None, "C20261121-000002"]
    assert {q.query["class_code"] for q in lookups} == {"99101"}
    assert outbox.case_for(conn, "INC-a") == "C20261121-000004"
    assert [state for _, state, _, _ in rows(conn)] == ["delivered"] * 5
    assert r.dispatcher.stats["found_by_lookup"] == 1
    assert r.delivered[3:] == [
        "INC-a/4->C20261121-000004",
        "INC-a/5->C20261121-000004",
    ]


def test_a_send_lost_before_the_platform_acted_is_posted_again_once(
    db: Path, keyless: KeylessPlatformFake, run: Runner
) -> None:
    conn = connect(db)
    enqueue(conn, command("INC-a", 1))
    keyless.script(HANG)  # held, and nothing filed
    r = gateway(conn, keyless.url)
    run(r.drain_until_quiet())
    assert keyless.calls() == ["POST INC-a", "GET", "POST INC-a"]
    assert keyless.filed() == {"INC-a": 1}
    assert rows(conn) == [("INC-a/1", "delivered", 2, "")]
    assert r.dispatcher.stats["lookups"] == 1
    assert r.dispatcher.stats["found_by_lookup"] == 0


def test_an_answer_that_says_the_platform_did_not_act_needs_no_lookup(
    db: Path, keyless: KeylessPlatformFake, run: Runner
) -> None:
    conn = connect(db)
    enqueue(conn, command("INC-a", 1))
    keyless.script(Reply(503, b"down for maintenance"), Reply(429, b"slow down"))
    r = gateway(conn, keyless.url)
    run(r.dispatcher.drain_once())
    assert maybe_filed(conn) == [0]
    run(r.drain_until_quiet())
    assert keyless.calls() == ["POST INC-a"] * 3
    assert keyless.filed() == {"INC-a": 1}
    assert r.dispatcher.stats["lookups"] == 0


# --- the lookup itself fails ---------------------------------------------------------------


def test_a_failing_lookup_is_retried_and_never_becomes_a_second_post(
    db: Path, keyless: KeylessPlatformFake, run: Runner
) -> None:
    conn = connect(db)
    enqueue(conn, command("INC-a", 1))
    keyless.script(
        Filed(HANG),
        Reply(503, b"busy"),  # the lookups: unavailable,
        CUT,  # cut,
        Reply(200, b"not json"),  # unreadable,
        HANG,  # timed out; then answered
    )
    r = gateway(conn, keyless.url)
    run(r.drain_until_quiet())
    assert keyless.calls() == ["POST INC-a"] + ["GET"] * 5
    assert keyless.filed() == {"INC-a": 1}
    assert rows(conn) == [("INC-a/1", "delivered", 6, "")]
    assert r.dispatcher.stats["lookup_failures"] == 4
    assert r.dispatcher.stats["found_by_lookup"] == 1


def test_a_refused_lookup_parks_the_command_and_a_requeue_looks_again(
    db: Path, keyless: KeylessPlatformFake, run: Runner
) -> None:
    conn = connect(db)
    enqueue(conn, command("INC-a", 1), command("INC-b", 2))
    keyless.script(Filed(CUT), Reply(404, {"detail": "no such route"}))
    r = gateway(conn, keyless.url)
    run(r.drain_until_quiet())
    reason = (
        'looking up an unclear send: HTTP 404 on GET /api/v1/cases: {"detail": "no such route"}'
    )
    assert rows(conn) == [("INC-a/1", "parked", 2, reason), ("INC-b/2", "delivered", 1, "")]
    assert maybe_filed(conn) == [1, 0]  # still unclear: a requeue looks again
    assert outbox.requeue_parked(conn) == 1
    run(r.drain_until_quiet())
    assert keyless.calls() == ["POST INC-a", "GET", "POST INC-b", "GET"]
    assert keyless.filed() == {"INC-a": 1, "INC-b": 1}
    assert outbox.case_for(conn, "INC-a") == "C20261121-000001"


# --- the gateway restarts between the send and the retry ----------------------------------


def test_a_restart_after_the_send_timed_out_looks_the_case_up_first(
    db: Path, keyless: KeylessPlatformFake, run: Runner
) -> None:
    conn = connect(db)
    enqueue(conn, command("INC-a", 1))
    keyless.script(Filed(HANG))
    first = gateway(conn, keyless.url)
    run(first.dispatcher.drain_once())
    assert rows(conn)[0][:3] == ("INC-a/1", "pending", 1)
    run(first.platform.aclose())
    conn.close()

    conn = connect(db)  # the restarted gateway: nothing of the first but the file
    conn.execute("UPDATE outbox SET next_attempt_ms = 0")  # it comes after the retry's due
    second = gateway(conn, keyless.url)
    run(second.drain_until_quiet())
    assert keyless.calls() == ["POST INC-a", "GET"]
    assert keyless.filed() == {"INC-a": 1}
    assert second.delivered == ["INC-a/1->C20261121-000001"]


CRASHING_GATEWAY = """
import asyncio, sqlite3, sys
from keyless_platform import KeylessBundled
from scripted_platform import TOKEN
from case_bridge.codes import ClassCatalog
from case_bridge.dispatcher import OutboxDispatcher
from case_bridge.settings import CaseSettings, RetryPolicy

settings = CaseSettings()
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
platform = KeylessBundled(sys.argv[2], TOKEN, timeout_s=60)
dispatcher = OutboxDispatcher(
    conn, platform, ClassCatalog(settings.local_classes), settings, RetryPolicy(),
    on_case_closed=lambda *_: None,
)
asyncio.run(dispatcher.drain_once())
"""


def test_a_gateway_killed_during_the_send_looks_the_case_up_after_restart(
    db: Path, keyless: KeylessPlatformFake, run: Runner
) -> None:
    conn = connect(db)
    enqueue(conn, command("INC-a", 1), command("INC-b", 2))
    keyless.script(Filed(HANG))  # filed; the answer never comes
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_GATEWAY, str(db), keyless.url], env=env
    )
    try:
        keyless.wait_filed(1, timeout_s=30)
        assert child.poll() is None  # still waiting for the answer
    finally:
        child.kill()  # SIGKILL
        child.wait()
    # What the killed gateway left: the send marked, nothing else.
    assert rows(conn) == [("INC-a/1", "pending", 0, ""), ("INC-b/2", "pending", 0, "")]
    assert maybe_filed(conn) == [1, 0]

    restarted = gateway(conn, keyless.url)
    run(restarted.drain_until_quiet())
    assert keyless.calls() == ["POST INC-a", "GET", "POST INC-b"]
    assert keyless.filed() == {"INC-a": 1, "INC-b": 1}
    assert [state for _, state, _, _ in rows(conn)] == ["delivered", "delivered"]
    assert restarted.dispatcher.stats["found_by_lookup"] == 1


def test_an_outbox_from_before_lookups_gains_the_mark(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    conn.executescript(outbox.SCHEMA.replace(",\n    maybe_filed INTEGER NOT NULL DEFAULT 0", ""))
    conn.execute(
        "INSERT INTO outbox (command_id, incident_id, kind, body, created_ms)"
        " VALUES ('INC-a/1', 'INC-a', 'open', '{}', 0)"
    )
    outbox.ensure_schema(conn)
    outbox.ensure_schema(conn)  # and again, as every start does
    assert maybe_filed(conn) == [0]


# --- the bundled platform's own lookup ---------------------------------------------------


def test_the_bundled_platform_finds_a_case_by_external_key(tmp_path: Path, run: Runner) -> None:
    wanted = command("INC-a", 1)
    other_class = command("INC-b", 2, class_code="99201")
    with running_platform(tmp_path / "cases.db") as client:
        platform = BundledPlatform(str(client.base_url), PLATFORM_TOKEN, 5)

        async def file_and_find() -> list[str | None]:
            bodies = [open_case_body(c, CATALOG, SETTINGS) for c in (other_class, wanted)]
            for c, body in zip((other_class, wanted), bodies, strict=True):
                await platform.open_case(body, c.command_id)
            missing = open_case_body(command("INC-z", 3), CATALOG, SETTINGS)
            found = [
                await platform.find_case("INC-a", bodies[1]),
                await platform.find_case("INC-b", bodies[1]),  # another class: not listed
                await platform.find_case("INC-z", missing),
            ]
            await platform.aclose()
            return found

        found = run(file_and_find())
        listed = client.get("/api/v1/cases").json()["cases"]
    ids = {case["external_key"]: case["id"] for case in listed}
    assert found == [ids["INC-a"], None, None]
    assert Counter(case["external_key"] for case in listed) == {"INC-a": 1, "INC-b": 1}


def test_no_connection_at_all_is_not_a_send_that_may_have_acted(db: Path, run: Runner) -> None:
    with socket.socket() as placeholder:  # bound, not listening: connections are refused
        placeholder.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{placeholder.getsockname()[1]}"
        conn = connect(db)
        enqueue(conn, command("INC-a", 1))
        r = gateway(conn, url)
        run(r.dispatcher.drain_once())
    assert rows(conn)[0][:3] == ("INC-a/1", "pending", 1)
    assert rows(conn)[0][3].startswith("ConnectError: ")
    assert maybe_filed(conn) == [0]


# --- a possible match: a case of the same class nearby, without our key --------------------

ALERT_AT = datetime.fromtimestamp(command("INC-a", 1).alert.ts / 1000, UTC)


@pytest.mark.parametrize(("north_m", "parked"), [(10, True), (100, False)])
def test_a_case_of_our_class_near_our_place_and_time_parks_the_command(
    db: Path, keyless: KeylessPlatformFake, run: Runner, north_m: int, parked: bool
) -> None:
    """The send is cut before the platform acted; the lookup finds no case under our key
    but a citizen's case of the same class 10 m away two minutes later: that may be ours
    (a key lost on the way), so it is parked for an operator at once (asking again finds
    the same candidate), never filed again. At 100 m
    it is no candidate: posted again, filed once."""
    conn = connect(db)
    enqueue(conn, command("INC-a", 1))
    citizen = keyless.filed_elsewhere(
        class_code="99101",
        location={"lat": 31.2989 + north_m / 111_195, "lon": 120.5853},
        created_at=(ALERT_AT + timedelta(seconds=120)).isoformat(),
    )
    keyless.script(CUT)  # sent, nothing filed, no answer
    r = gateway(conn, keyless.url)
    run(r.drain_until_quiet())
    if parked:
        [(_, state, _, reason)] = rows(conn)
        assert state == "parked"
        assert f"possible match {citizen} (10 m, +120 s): not filed again" in reason
        assert keyless.filed() == {None: 1}
        assert keyless.calls() == ["POST INC-a", "GET"]  # one lookup, parked at once
        assert r.dispatcher.stats["lookup_failures"] == 1
    else:
        assert [state for _, state, _, _ in rows(conn)] == ["delivered"]
        assert keyless.filed() == {None: 1, "INC-a": 1}
        assert keyless.calls() == ["POST INC-a", "GET", "POST INC-a"]
