"""Each way a platform fails, with the exact cases it holds at the end.

The platform is real HTTP on loopback and keeps no idempotency keys
(``tests/keyless_platform.py``), so a duplicate would show as a second case; the adapter is
the real one behind the real rate limit and circuit breaker
(``case_bridge/guarded_platform.py``), the outbox a real SQLite file. Cool-downs are short
and the time the breaker kept the platform alone is read from the platform's own arrival
times: lower bounds, which a slow machine cannot break.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from keyless_platform import Filed, KeylessBundled, KeylessPlatformFake
from scripted_platform import HANG, TOKEN, Reply
from test_outbox_dispatch import FAST, Run, command, enqueue, rows

from case_bridge import outbox
from case_bridge.breaker import BreakerSettings, BreakerState
from case_bridge.dispatcher import DOUBTFUL_ATTEMPTS
from case_bridge.guarded_platform import DeliverySettings, GuardedPlatform
from case_bridge.rate_limit import RateLimitSettings
from case_bridge.status_sync import StatusSync
from domain import CommandKind

Runner = Callable[[Coroutine[Any, Any, Any]], Any]
COOLDOWN_S = 0.15
UNLIMITED = RateLimitSettings(requests_per_s=10_000, burst=10_000)


@pytest.fixture
def keyless() -> Iterator[KeylessPlatformFake]:
    with KeylessPlatformFake() as server:
        yield server


def guarded(url: str, threshold: int = 3, rate: RateLimitSettings = UNLIMITED) -> GuardedPlatform:
    breaker = BreakerSettings(failure_threshold=threshold, cooldown_s=COOLDOWN_S)
    return GuardedPlatform(
        KeylessBundled(url, TOKEN, timeout_s=0.3),
        DeliverySettings(breaker=breaker, rate_limit=rate),
    )


def attempts(conn: sqlite3.Connection) -> int:
    return sum(row[2] for row in rows(conn))


async def until(check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Polls ``check`` on the event loop (the dispatcher runs between polls)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(r: Run):  # type: ignore[no-untyped-def]
    """The dispatcher's own loop, as the gateway runs it; it must still run at the end."""
    task = asyncio.create_task(r.dispatcher.run())
    try:
        yield task
        assert not task.done(), task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_a_5xx_storm_opens_the_breaker_and_every_case_is_filed_once_after_it(
    conn: sqlite3.Connection, keyless: KeylessPlatformFake, run: Runner
) -> None:
    incidents = [f"INC-{n}" for n in range(1, 6)]
    enqueue(conn, *[command(incident, n) for n, incident in enumerate(incidents, 1)])
    keyless.script(*[Reply(503, b"overloaded"), Reply(500, b"oops")] * 2, Reply(503, b""))
    platform = guarded(keyless.url, threshold=3)
    r = Run(conn, platform, FAST)
    run(r.drain_until_quiet(passes=100))

    assert keyless.filed() == dict.fromkeys(incidents, 1)
    arrivals = [q.at for q in keyless.requests]
    assert len(arrivals) == 10  # 5 failed (3 to open, 2 failed probes), then 5 filed
    # Opened after the third failure, again after each failed probe: nothing meanwhile.
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals[2:6])]
    assert min(gaps) >= COOLDOWN_S
    assert platform.stats()["breaker_opened"] == 3
    assert platform.stats()["breaker_state"] == "closed"
    # The breaker's refusals sent nothing and cost no command an attempt.
    assert attempts(conn) == 10
    assert r.dispatcher.stats["held_by_breaker"] == platform.stats()["breaker_rejected"]
    assert r.dispatcher.stats["lookups"] == 0  # a 5xx of its own: the platform did not act


def test_a_refused_case_is_parked_requeued_and_filed_once_without_opening_the_breaker(
    conn: sqlite3.Connection, keyless: KeylessPlatformFake, run: Runner
) -> None:
    enqueue(
        conn,
        command("INC-a", 1),
        command("INC-a", 2, CommandKind.ATTACH),
        command("INC-b", 3),
        command("INC-c", 4),
    )
    refusal = Reply(422, {"detail": "class_code: unknown"})
    keyless.script(refusal, refusal, refusal)  # more refusals than the breaker's threshold
    platform = guarded(keyless.url, threshold=2)
    r = Run(conn, platform, FAST)
    run(r.drain_until_quiet())
    parked = 'HTTP 422 on POST /api/v1/cases: {"detail": "class_code: unknown"}'
    assert rows(conn) == [
        ("INC-a/1", "parked", 1, parked),
        ("INC-a/2", "parked", 1, "no case for this incident: its open command was parked"),
        ("INC-b/3", "parked", 1, parked),
        ("INC-c/4", "parked", 1, parked),
    ]
    assert keyless.filed() == {}
    assert platform.stats()["breaker_opened"] == 0  # a refusal is an answer: the platform is up

    assert outbox.requeue_parked(conn) == 4
    run(r.drain_until_quiet())
    assert keyless.filed() == {"INC-a": 1, "INC-b": 1, "INC-c": 1}
    # A refusal says the platform did not act: no lookup before the second post.
    assert keyless.calls() == [
        "POST INC-a", "POST INC-b", "POST INC-c", "POST INC-a",
        "POST /api/v1/cases/C20261121-000001/evidence", "POST INC-b", "POST INC-c",
    ]  # fmt: skip


def test_a_timeout_after_filing_leaves_one_case_behind_the_breaker_too(
    conn: sqlite3.Connection, keyless: KeylessPlatformFake, run: Runner
) -> None:
    enqueue(conn, command("INC-a", 1), command("INC-b", 2))
    keyless.script(Filed(HANG), HANG)  # filed then held; the first lookup held too
    platform = guarded(keyless.url, threshold=2)
    r = Run(conn, platform, FAST)
    run(r.drain_until_quiet())
    # Two timeouts in a row opened the breaker; its probe was the next lookup.
    assert platform.stats()["breaker_opened"] == 1
    assert keyless.calls() == ["POST INC-a", "GET", "GET", "POST INC-b"]
    assert keyless.filed() == {"INC-a": 1, "INC-b": 1}
    assert keyless.requests[2].at - keyless.requests[1].at >= COOLDOWN_S
    assert outbox.case_for(conn, "INC-a") == "C20261121-000001"


def test_an_unreadable_reply_parks_its_command_with_the_reason_and_delivery_goes_on(
    conn: sqlite3.Connection, keyless: KeylessPlatformFake, run: Runner
) -> None:
    enqueue(conn, command("INC-a", 1), command("INC-b", 2), command("INC-c", 3))
    garbage = Reply(200, b"<html>ok</html>", {"Content-Type": "text/html"})
    keyless.script(*[garbage, Reply(200, {"cases": [], "next": None})] * (DOUBTFUL_ATTEMPTS - 1))
    keyless.script(garbage)  # and never files anything
    r = Run(conn, guarded(keyless.url), FAST)

    async def deliver() -> None:
        async with running(r):
            await until(lambda: outbox.counts(conn)["pending"] == 0, "the queue to settle")

    run(deliver())
    reason = "HTTP 200 on POST /api/v1/cases is not JSON: b'<html>ok</html>'"
    assert rows(conn) == [
        ("INC-a/1", "parked", DOUBTFUL_ATTEMPTS, reason),
        ("INC-b/2", "delivered", 1, ""),
        ("INC-c/3", "delivered", 1, ""),
    ]
    assert keyless.filed() == {"INC-b": 1, "INC-c": 1}
    # Each re-post of INC-a came after a lookup that found nothing.
    calls = [c for c in keyless.calls() if c in ("POST INC-a", "GET")]
    assert calls == ["POST INC-a"] + ["GET", "POST INC-a"] * (DOUBTFUL_ATTEMPTS - 1)

    assert outbox.requeue_parked(conn) == 1
    run(deliver())
    assert keyless.calls()[-2:] == ["GET", "POST INC-a"]  # still unclear: looked up first
    assert keyless.filed() == {"INC-a": 1, "INC-b": 1, "INC-c": 1}


def test_a_platform_down_past_the_breaker_is_probed_once_a_cool_down_and_misses_nothing(
    conn: sqlite3.Connection, run: Runner
) -> None:
    incidents = [f"INC-{n}" for n in range(1, 5)]
    enqueue(conn, *[command(incident, n) for n, incident in enumerate(incidents, 1)])
    placeholder = socket.socket()  # bound, not listening: every connection is refused
    placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    placeholder.bind(("127.0.0.1", 0))
    port = placeholder.getsockname()[1]
    platform = guarded(f"http://127.0.0.1:{port}", threshold=2)
    r = Run(conn, platform, FAST)

    async def outage_then_recovery() -> KeylessPlatformFake:
        async with running(r):
            await until(lambda: platform.breaker.opened >= 3, "two failed probes")
            assert outbox.counts(conn)["pending"] == 4
            placeholder.close()
            fake = KeylessPlatformFake(port).__enter__()
            await until(lambda: outbox.counts(conn)["delivered"] == 4, "delivery")
            return fake

    fake = run(outage_then_recovery())
    try:
        assert fake.filed() == dict.fromkeys(incidents, 1)
        assert fake.calls() == [f"POST {incident}" for incident in incidents]  # no lookups
    finally:
        fake.__exit__()
    opened = platform.stats()["breaker_opened"]
    # Refused connections: the threshold, one per failed probe; then the four filed.
    assert attempts(conn) == 2 + (opened - 1) + 4
    assert platform.breaker.state is BreakerState.CLOSED
    assert r.dispatcher.stats["parked"] == 0


def test_status_sync_sends_nothing_while_the_breaker_is_open(
    conn: sqlite3.Connection, keyless: KeylessPlatformFake, run: Runner
) -> None:
    keyless.script(Reply(503, b"down"))
    platform = guarded(keyless.url, threshold=1)
    sync = StatusSync(conn, platform, interval_s=1, on_case_final=lambda *_: None)
    run(sync.sync_once())
    run(sync.sync_once())
    assert (len(keyless.requests), sync.failures, platform.stats()["breaker_rejected"]) == (1, 2, 1)


def test_the_rate_limit_makes_every_kind_of_request_wait_its_turn(
    conn: sqlite3.Connection, keyless: KeylessPlatformFake, run: Runner
) -> None:
    enqueue(conn, *[command("INC-a", n, CommandKind.ATTACH if n > 1 else CommandKind.OPEN)
                    for n in range(1, 5)])  # fmt: skip
    rate = RateLimitSettings(requests_per_s=10, burst=2)
    platform = guarded(keyless.url, rate=rate)
    r = Run(conn, platform, FAST)
    sync = StatusSync(conn, platform, interval_s=1, on_case_final=lambda *_: None)

    async def deliver_and_sync() -> float:
        started = time.monotonic()
        await r.drain_until_quiet()
        await sync.sync_once()
        return time.monotonic() - started

    elapsed = run(deliver_and_sync())
    # 5 requests, 2 at once, then 10 a second: at least 3/10 s, and all of them answered.
    assert elapsed >= 3 / 10
    assert [state for _, state, _, _ in rows(conn)] == ["delivered"] * 4
    evidence = "POST /api/v1/cases/C20261121-000001/evidence"
    assert keyless.calls() == ["POST INC-a", evidence, evidence, evidence, "GET"]
    assert platform.stats()["rate_limit_waits"] >= 1  # exact counts: test_breaker_rate_limit
