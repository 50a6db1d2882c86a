"""Status sync against exact listings: pages followed, final and other statuses handed to
their handlers, bad items counted and skipped, a bad page or a failing handler never ends
the task, and the cursor kept across a restart. Real SQLite, real HTTP, scripted platform
(``tests/scripted_platform.py``) and a small Open311 server (``tests/open311_deviant.py``)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from open311_deviant import DeviantServer
from scripted_platform import TOKEN, Reply, ScriptedPlatformFake

from case_bridge import outbox
from case_bridge.open311 import Open311Platform, Open311Settings
from case_bridge.platform import BundledPlatform
from case_bridge.status_sync import StatusSync, cursor_name

T0 = "2026-11-21T08:00:00.000000+00:00"
T1 = "2026-11-21T08:00:05.000000+00:00"
T2 = "2026-11-21T08:00:09.000000+00:00"


def case(case_id: object, status: object = "closed", updated_at: object = T1) -> dict:
    return {"id": case_id, "status": status, "updated_at": updated_at}


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
    outbox.ensure_schema(connection)
    for n in range(1, 5):
        outbox.link_case(connection, f"INC-{n}", f"C20261121-00000{n}", 0)
    yield connection
    connection.close()


class Sync:
    def __init__(
        self, conn: sqlite3.Connection, url: str, fail_on: str = "", others: bool = False
    ) -> None:
        self.final: list[tuple[str, str]] = []
        self.other: list[tuple[str, str]] = []
        self._fail_on = fail_on
        self.sync = StatusSync(
            conn, BundledPlatform(url, TOKEN, 5), 0.01, self._final,
            on_case_status=self._other if others else None,
        )  # fmt: skip

    def _final(self, incident_id: str, status: str) -> None:
        if incident_id == self._fail_on:
            raise RuntimeError("store busy")
        self.final.append((incident_id, status))

    def _other(self, incident_id: str, status: str) -> None:
        if incident_id == self._fail_on:
            raise RuntimeError("store busy")
        self.other.append((incident_id, status))


def bundled_cursor(fake: ScriptedPlatformFake) -> str:
    """The name status sync keeps its cursor under for the bundled adapter on ``fake``."""
    return cursor_name(BundledPlatform(fake.url, TOKEN, 5).platform_id)


def queries(fake: ScriptedPlatformFake) -> list[dict[str, str]]:
    return [request.query for request in fake.requests]


def passes(sync: StatusSync, count: int) -> None:
    async def run() -> None:
        for _ in range(count):
            await sync.sync_once()

    asyncio.run(run())


def test_pages_are_followed_and_the_next_pass_lists_from_the_first_page_s_next_since(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake
) -> None:
    fake.script(
        Reply(200, {"cases": [case("C20261121-000001")], "next": "C20261121-000001",
                    "next_since": T0}),
        Reply(200, {"cases": [case("C20261121-000002", "void", T2),
                              case("C20261121-000003", "handling", T2)],
                    "next": None, "next_since": T1}),
        Reply(200, {"cases": [], "next": None, "next_since": T2}),
    )  # fmt: skip
    s = Sync(conn, fake.url)
    passes(s.sync, 2)
    assert s.final == [("INC-1", "closed"), ("INC-2", "void")]
    assert queries(fake) == [
        {"limit": "500"},
        {"limit": "500", "after": "C20261121-000001"},
        {"limit": "500", "since": T0},
    ]
    assert s.sync.stats() == {
        "passes": 2,
        "failures": 0,
        "skipped": 0,
        "handler_errors": 0,
        "store_failures": 0,
    }


def test_other_statuses_of_filed_cases_go_to_their_handler_in_listing_order(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake
) -> None:
    """Verification (核查) and the rest reach ``on_case_status``, every time a case is
    listed (the handler is idempotent); cases we did not file are not handed over; a
    handler that fails on one case is counted and the page goes on."""
    fake.script(
        Reply(200, {"cases": [case("C20261121-000001", "verifying"),
                              case("C20261121-000009", "verifying"),  # not ours
                              case("C20261121-000002", "handling"),
                              case("C20261121-000003", "verifying"),
                              case("C20261121-000004", "closed")], "next": None}),
        Reply(200, {"cases": [case("C20261121-000001", "verifying", T2)], "next": None}),
    )  # fmt: skip
    s = Sync(conn, fake.url, fail_on="INC-3", others=True)
    passes(s.sync, 2)
    assert s.other == [("INC-1", "verifying"), ("INC-2", "handling"), ("INC-1", "verifying")]
    assert s.final == [("INC-4", "closed")]
    assert s.sync.stats() == {
        "passes": 2,
        "failures": 0,
        "skipped": 0,
        "handler_errors": 1,
        "store_failures": 0,
    }


def test_without_next_since_the_newest_updated_at_is_the_next_since(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake
) -> None:
    fake.script(
        Reply(200, {"cases": [case("C20261121-000001", "handling", T2),
                              case("C20261121-000002", "handling", T1)]}),
    )  # fmt: skip
    s = Sync(conn, fake.url)
    passes(s.sync, 2)
    assert queries(fake) == [{"limit": "500"}, {"limit": "500", "since": T2}]


def test_unusable_items_are_counted_and_skipped_and_a_bad_page_is_a_failure(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake
) -> None:
    listing = [
        case("C20261121-000001"),
        case(7),
        "C20261121-000002",
        case("C20261121-000002", ["closed"]),
        case("C20261121-000003", "closed", "x" * 65),
        case("../C20261121-000004"),
        case("C20261121-000004", "void"),
    ]
    fake.script(
        Reply(200, b"<html>maintenance</html>"),
        Reply(200, {"cases": "all of them"}),
        Reply(200, {"cases": [], "next": {"page": 2}}),
        Reply(200, {"cases": [case("C20261121-000001")] * 1001}),
        Reply(503, b""),
        Reply(200, {"cases": listing, "next": None}),
    )
    s = Sync(conn, fake.url, fail_on="INC-1")
    passes(s.sync, 6)
    assert s.final == [("INC-4", "void")]
    assert s.sync.stats() == {
        "passes": 1,
        "failures": 5,
        "skipped": 5,
        "handler_errors": 1,
        "store_failures": 0,
    }


def test_the_run_loop_outlives_a_platform_that_answers_nonsense(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake
) -> None:
    fake.script(
        Reply(200, b"\x00\xff"),
        Reply(200, b"[" * 50_000),
        Reply(200, {"cases": [case("C20261121-000002")], "next": None}),
    )
    s = Sync(conn, fake.url)

    async def run_until_closed() -> None:
        task = asyncio.create_task(s.sync.run())
        while not s.final:
            assert not task.done()
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(asyncio.wait_for(run_until_closed(), 10))
    assert s.final == [("INC-2", "closed")]
    assert s.sync.failures == 2


def kept(conn: sqlite3.Connection, case_id: str) -> list[tuple[str, str, str]]:
    return [
        (k["status"], k["updated_at"], k["source"]) for k in outbox.case_statuses(conn, case_id)
    ]


def test_each_status_of_a_filed_case_is_kept_once_however_it_was_learnt(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake
) -> None:
    """Polled and pushed statuses are kept before they are handed over, each change once:
    listed again, listed with a later time but the same status, or pushed and then polled,
    it adds nothing; an older change learnt late adds nothing; a case we did not file
    keeps nothing."""
    c1, c2 = "C20261121-000001", "C20261121-000002"
    fake.script(
        Reply(200, {"cases": [case(c1, "handling", T0), case(c2, "verifying", T1),
                              case("C20261121-000009", "closed", T1)], "next": None}),
        Reply(200, {"cases": [case(c1, "handling", T0), case(c2, "verifying", T2)],
                    "next": None}),
        Reply(200, {"cases": [case(c1, "verifying", T2)], "next": None}),
    )  # fmt: skip
    s = Sync(conn, fake.url, others=True)
    started_ms = int(time.time() * 1000)

    async def polled_pushed_polled() -> list[str | None]:
        await s.sync.sync_once()
        await s.sync.sync_once()
        pushed = [
            s.sync.pushed(c1, "verifying", T2),
            s.sync.pushed(c2, "accepted", T0),  # older than what is kept
            s.sync.pushed("C20261121-000009", "closed", T2),
        ]
        await s.sync.sync_once()
        return pushed

    assert asyncio.run(polled_pushed_polled()) == ["INC-1", "INC-2", None]
    assert kept(conn, c1) == [("handling", T0, "poll"), ("verifying", T2, "webhook")]
    assert kept(conn, c2) == [("verifying", T1, "poll")]
    assert conn.execute("SELECT count(*) FROM case_statuses").fetchone()[0] == 3
    seen = [k["seen_ms"] for k in outbox.case_statuses(conn, c1)]
    assert started_ms <= seen[0] <= seen[1] <= int(time.time() * 1000)
    assert outbox.latest_status(conn, c1) == {
        "status": "verifying", "updated_at": T2, "seen_ms": seen[1], "source": "webhook"
    }  # fmt: skip
    # Every listing was still handed over: the handlers are idempotent.
    assert s.other == [("INC-1", "handling"), ("INC-2", "verifying"), ("INC-1", "handling"),
                       ("INC-2", "verifying"), ("INC-1", "verifying")]  # fmt: skip


def test_a_status_the_store_refuses_cuts_the_pass_short_and_its_page_is_read_again(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake
) -> None:
    """The store refuses the second page's status (a trigger aborts it, as a full disk
    would): that case is not handed over, the pass ends without moving on, and the next
    pass asks for the same page, keeps the status and hands the case over."""
    c1, c2 = "C20261121-000001", "C20261121-000002"
    second = Reply(200, {"cases": [case(c2, "closed", T1)], "next": None})
    fake.script(Reply(200, {"cases": [case(c1, "verifying")], "next": c1}), second, second)
    conn.execute(
        f"CREATE TEMP TRIGGER refuse BEFORE INSERT ON case_statuses WHEN NEW.case_id = '{c2}'"
        " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    s = Sync(conn, fake.url, others=True)

    async def refused_then_kept() -> tuple:
        await s.sync.sync_once()
        refused = (list(s.other), list(s.final), s.sync.stats())
        conn.execute("DROP TRIGGER refuse")
        await s.sync.sync_once()
        return refused

    other, final, stats = asyncio.run(refused_then_kept())
    assert (other, final) == ([("INC-1", "verifying")], [])
    assert stats == {"passes": 0, "failures": 0, "skipped": 0, "handler_errors": 0,
                     "store_failures": 1}  # fmt: skip
    assert s.final == [("INC-2", "closed")]
    assert kept(conn, c2) == [("closed", T1, "poll")]
    assert queries(fake)[1:] == [{"limit": "500", "after": c1}, {"limit": "500", "after": c1}]
    assert (s.sync.passes, s.sync.store_failures) == (1, 1)


# --- the cursor outlives a restart -----------------------------------------------------


def test_the_cursor_of_a_whole_pass_is_kept_and_a_restart_lists_from_it(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake
) -> None:
    """A whole pass keeps its cursor; a pass cut short keeps nothing new; the gateway
    started again on the same store asks from the kept cursor, not as a first start."""
    fake.script(
        Reply(200, {"cases": [case("C20261121-000001", "handling")], "next": None,
                    "next_since": T0}),
        Reply(200, {"cases": [], "next": "C20261121-000001", "next_since": T1}),
        Reply(503, b"down"),  # the pass from T0 cut short on its second page
    )  # fmt: skip
    passes(Sync(conn, fake.url).sync, 2)
    assert outbox.sync_cursor(conn, bundled_cursor(fake)) == T0
    restarted = Sync(conn, fake.url)
    passes(restarted.sync, 1)
    assert queries(fake) == [
        {"limit": "500"},
        {"limit": "500", "since": T0},
        {"limit": "500", "since": T0, "after": "C20261121-000001"},
        {"limit": "500", "since": T0},
    ]
    assert outbox.sync_cursor(conn, bundled_cursor(fake)) == T0  # the platform named no later one
    assert restarted.sync.passes == 1


def test_a_cursor_the_store_refuses_is_counted_and_no_pass_lists_without_it(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake
) -> None:
    """A refused read skips the pass (a look-back could miss a closure); a refused write
    leaves the pass done, and the next whole pass saves."""
    outbox.save_sync_cursor(conn, bundled_cursor(fake), T0)
    fake.script(
        Reply(200, {"cases": [], "next": None, "next_since": T1}),
        Reply(200, {"cases": [], "next": None, "next_since": T2}),
    )
    s = Sync(conn, fake.url)

    async def refused_read_refused_write_then_saved() -> list[tuple]:
        seen = []
        conn.execute("ALTER TABLE sync_cursors RENAME TO sync_cursors_away")
        await s.sync.sync_once()
        seen.append((len(fake.requests), s.sync.store_failures))
        conn.execute("ALTER TABLE sync_cursors_away RENAME TO sync_cursors")
        conn.execute(
            "CREATE TEMP TRIGGER refuse BEFORE UPDATE ON sync_cursors"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        await s.sync.sync_once()
        seen.append((outbox.sync_cursor(conn, bundled_cursor(fake)), s.sync.store_failures))
        conn.execute("DROP TRIGGER refuse")
        await s.sync.sync_once()
        return seen

    assert asyncio.run(refused_read_refused_write_then_saved()) == [(0, 1), (T0, 2)]
    assert queries(fake) == [{"limit": "500", "since": T0}, {"limit": "500", "since": T1}]
    assert outbox.sync_cursor(conn, bundled_cursor(fake)) == T2
    assert (s.sync.passes, s.sync.store_failures) == (2, 2)


def test_a_closure_during_an_outage_longer_than_the_look_back_is_still_seen(
    conn: sqlite3.Connection,
) -> None:
    """Open311 looks back ``lookup_days`` (2 here) only on a first start. The gateway's
    last pass before a 10-day outage kept its cursor; the case was closed 9 days ago, on
    day 1 of the outage. Started again, the gateway lists from the cursor and closes the
    incident; a first start on a store without the cursor would list from 2 days ago and
    miss it (asserted on a second store, as the control)."""
    now = datetime.now(UTC)
    before_outage, closed_at = now - timedelta(days=10), now - timedelta(days=9)
    with DeviantServer() as server:
        server.filed_elsewhere(
            service_code="001", status="closed",
            requested_datetime=(now - timedelta(days=12)).isoformat(timespec="seconds"),
            updated_datetime=closed_at.isoformat(timespec="seconds"),
        )  # fmt: skip
        outbox.link_case(conn, "INC-gone", "E1", 0)
        settings = Open311Settings.model_validate(
            {"url": server.url, "api_key": "k", "services": {"99101": "001"},
             "updated_after": True, "lookup_days": 2, "timeout_s": 2}
        )  # fmt: skip
        cursor = cursor_name(Open311Platform(settings).platform_id)
        outbox.save_sync_cursor(conn, cursor, before_outage.isoformat())
        fresh = sqlite3.connect(":memory:", isolation_level=None)
        outbox.ensure_schema(fresh)
        outbox.link_case(fresh, "INC-gone", "E1", 0)
        seen: dict[str, list[tuple[str, str]]] = {"restarted": [], "first start": []}

        async def one_pass(store: sqlite3.Connection, which: str) -> None:
            adapter = Open311Platform(settings)
            sync = StatusSync(store, adapter, 1.0, lambda *c: seen[which].append(c))
            await sync.sync_once()
            await adapter.aclose()

        asyncio.run(one_pass(conn, "restarted"))
        asyncio.run(one_pass(fresh, "first start"))
        asked = [s.query["updated_after"] for s in server.seen if s.path == "/requests.json"]
    assert seen == {"restarted": [("INC-gone", "closed")], "first start": []}
    assert datetime.fromisoformat(asked[0]) == before_outage.replace(microsecond=0)
    looked_back = now - datetime.fromisoformat(asked[1])  # sent in whole seconds
    assert timedelta(days=2, seconds=-1) < looked_back < timedelta(days=2, minutes=1)
    kept_since = datetime.fromisoformat(outbox.sync_cursor(conn, cursor) or "")
    assert kept_since == closed_at.replace(microsecond=0) - timedelta(seconds=5)


def test_a_gateway_switched_to_another_platform_does_not_take_the_old_one_s_cursor(
    conn: sqlite3.Connection, fake: ScriptedPlatformFake
) -> None:
    """The cursor is kept per adapter and URL: a gateway pointed at another platform (here
    a second bundled platform, then an Open311 server) lists there as on a first start,
    and finds its cursor again when pointed back."""
    fake.script(Reply(200, {"cases": [], "next": None, "next_since": T1}))
    passes(Sync(conn, fake.url).sync, 1)
    with ScriptedPlatformFake() as other, DeviantServer() as server:
        other.script(Reply(200, {"cases": [], "next": None, "next_since": T2}))
        passes(Sync(conn, other.url).sync, 1)
        adapter = Open311Platform(Open311Settings.model_validate(
            {"url": server.url, "api_key": "k", "services": {"99101": "001"},
             "updated_after": True, "lookup_days": 2, "timeout_s": 2}
        ))  # fmt: skip

        async def one_pass() -> None:
            await StatusSync(conn, adapter, 1.0, lambda *_: None).sync_once()
            await adapter.aclose()

        asyncio.run(one_pass())
        asked_other = queries(other)
        asked_open311 = [s.query for s in server.seen if s.path == "/requests.json"]
        kept = {name: since for name, since in conn.execute("SELECT * FROM sync_cursors")}
        assert kept == {bundled_cursor(fake): T1, bundled_cursor(other): T2}  # Open311: none
    passes(Sync(conn, fake.url).sync, 1)
    assert asked_other == [{"limit": "500"}]  # not since T1, the first platform's
    [open311] = asked_open311
    looked_back = datetime.now(UTC) - datetime.fromisoformat(open311["updated_after"])
    assert timedelta(days=2, seconds=-1) < looked_back < timedelta(days=2, minutes=1)
    assert queries(fake) == [{"limit": "500"}, {"limit": "500", "since": T1}]
