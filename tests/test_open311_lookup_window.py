"""Open311 against a server that caps its listings and holds requests filed elsewhere.

A server that silently cuts ``GET requests`` at ``listing_cap`` (newest change first, the
worst order for a cursor) must not make status sync move its cursor past changes it never
listed: the window is narrowed by ``end_date`` until a listing is whole, and the cursor
moves only to the end of that window. And a lookup that misses our key must not answer
"not there" while a request of our service lies near our place and time without a key of
ours: it names the possible match (DOUBTFUL) so the command waits for an operator.
Real HTTP: the deviant server on loopback.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from open311_deviant import DeviantServer
from test_open311 import body_of, deviant_adapter, failure

from case_bridge import outbox
from case_bridge.platform import Failure, PossibleMatch
from case_bridge.status_sync import StatusSync, cursor_name

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]
METRES_PER_DEGREE_LAT = 111_195


@pytest.fixture
def run() -> Iterator[Run]:
    with asyncio.Runner() as runner:
        yield runner.run


@pytest.fixture
def deviant() -> Iterator[DeviantServer]:
    with DeviantServer() as server:
        yield server


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def test_a_capped_status_listing_is_narrowed_and_the_cursor_never_skips_a_change(
    run: Run, deviant: DeviantServer
) -> None:
    """Seven requests changed 10 s apart; the server lists three at most, newest first.
    Unnarrowed, the first pass would see the last three and move past the other four."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=80)
    for n in range(1, 8):
        at = iso(t0 + timedelta(seconds=10 * n))
        deviant.filed_elsewhere(service_code="001", requested_datetime=at, updated_datetime=at)
    deviant.listing_cap = 3
    adapter = deviant_adapter(deviant, updated_after=True, listing_cap=3)
    since, seen, cursors = iso(t0), set(), []
    for _ in range(4):
        page = run(adapter.changed_cases(since, None))
        seen |= {case.id for case in page.cases}
        assert page.next_since is not None and page.next_after is None
        since = page.next_since
        cursors.append(int((datetime.fromisoformat(since) - t0).total_seconds()))
    assert seen == {f"E{n}" for n in range(1, 8)}
    # The third window ends halfway from 35 s to now (80 s and the test's fraction of a
    # second): 57 or 58 once cut to whole seconds. The last: the newest change less 5 s.
    third = cursors[2]
    assert cursors == [20, 35, third, 65] and third in (57, 58)
    asked = [
        (s.query["updated_after"], s.query.get("end_date"))
        for s in deviant.seen
        if s.path == "/requests.json"
    ]
    offsets = [
        tuple(None if v is None else int((datetime.fromisoformat(v) - t0).total_seconds())
              for v in pair)
        for pair in asked
    ]  # fmt: skip
    assert offsets == [
        (0, None), (0, 40), (0, 20),  # 7 listed (capped), 4 (capped), 2: whole
        (20, None), (20, 50), (20, 35),  # 5, 3, 1
        (35, None), (35, third),  # 4, 2
        (third, None),  # 2: whole, up to now
    ]  # fmt: skip
    assert adapter.stats["sync_narrowed"] == 5
    run(adapter.aclose())


def test_more_changes_in_a_second_than_a_listing_holds_is_a_failure_not_a_skip(
    run: Run, deviant: DeviantServer
) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=80)
    at = iso(t0 + timedelta(seconds=1))
    for _ in range(3):
        deviant.filed_elsewhere(service_code="001", requested_datetime=at, updated_datetime=at)
    deviant.listing_cap = 3
    adapter = deviant_adapter(deviant, updated_after=True, listing_cap=3)
    error = failure(run, adapter.changed_cases(iso(t0), None))
    assert error.failure is Failure.DOUBTFUL
    assert "in windows down to 1 s after" in error.reason and "cannot list them all" in error.reason
    run(adapter.aclose())


def test_requests_filed_before_the_cursor_that_fill_a_listing_make_a_pass_go_by_id(
    run: Run, deviant: DeviantServer, tmp_path: Path
) -> None:
    """Five requests filed 30 days ago changed a minute ago, after the cursor (an hour
    ago); the server lists three at most. ``end_date`` bounds the filing time, so no
    narrower window lists fewer: the pass follows the gateway's open cases by id instead
    (three ids a query: no more than a listing holds), closes the incident whose case
    closed, and moves the cursor to when it started, so the next pass lists whole."""
    now = datetime.now(UTC).replace(microsecond=0)
    for n in range(1, 6):
        deviant.filed_elsewhere(
            service_code="001", status="closed" if n == 2 else "open",
            requested_datetime=iso(now - timedelta(days=30)),
            updated_datetime=iso(now - timedelta(seconds=60 + n)),
        )  # fmt: skip
    deviant.listing_cap = 3
    watched = ["E1", "E2", "E4", "E5"]
    adapter = deviant_adapter(deviant, lambda: watched, updated_after=True, listing_cap=3)
    conn = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
    outbox.ensure_schema(conn)
    for case_id in watched:
        outbox.link_case(conn, f"INC-{case_id}", case_id, 0)
    cursor = cursor_name(adapter.platform_id)
    outbox.save_sync_cursor(conn, cursor, iso(now - timedelta(hours=1)))
    final: list[tuple[str, str]] = []
    other: list[tuple[str, str]] = []
    sync = StatusSync(conn, adapter, 1.0, lambda *c: final.append(c), lambda *c: other.append(c))
    run(sync.sync_once())
    assert final == [("INC-E2", "closed")]
    assert other == [("INC-E1", "open"), ("INC-E4", "open"), ("INC-E5", "open")]
    kept = datetime.fromisoformat(outbox.sync_cursor(conn, cursor) or "")
    assert now - timedelta(seconds=6) <= kept <= datetime.now(UTC) - timedelta(seconds=4)
    run(sync.sync_once())  # the flood changed before the new cursor: listed whole
    asked = [s.query for s in deviant.seen if s.path == "/requests.json"]
    assert [q.get("service_request_id") for q in asked] == [None, "E1,E2,E4", "E5", None]
    assert asked[3]["updated_after"] == iso(kept).replace("+00:00", "Z")
    assert (sync.passes, sync.failures) == (2, 0)
    assert (adapter.stats["sync_by_ids"], adapter.stats["sync_narrowed"]) == (1, 0)
    conn.close()
    run(adapter.aclose())


def first_alert(body: dict[str, Any]) -> datetime:
    """When ``body``'s alert was seen, moved to a whole second (as the server's times are)."""
    body["evidence"][0]["ts"] -= body["evidence"][0]["ts"] % 1000
    return datetime.fromtimestamp(body["evidence"][0]["ts"] / 1000, UTC)


def test_a_request_near_ours_without_our_key_is_a_possible_match(
    run: Run, deviant: DeviantServer
) -> None:
    adapter = deviant_adapter(deviant)
    body = body_of("INC-n")
    citizen = deviant.filed_elsewhere(
        service_code="001", lat="31.2990", long=120.5853, description="路上积水很深",
        requested_datetime=iso(first_alert(body) + timedelta(seconds=90)),
    )  # fmt: skip
    error = failure(run, adapter.find_case("INC-n", body))
    assert isinstance(error, PossibleMatch) and error.failure is Failure.DOUBTFUL
    assert (error.candidate.id, round(error.candidate.offset_s)) == (citizen, 90)
    assert f"possible match {citizen} (11 m, +90 s): not filed again" in error.reason
    run(adapter.aclose())


NEAR = {"service_code": "001", "lat": 31.2989, "long": 120.5853, "description": "积水"}


@pytest.mark.parametrize(
    ("changes", "offset_s", "settings"),
    [
        ({"lat": 31.2989 + 40 / METRES_PER_DEGREE_LAT}, 0, {}),  # 40 m away
        ({"service_code": "002"}, 0, {}),  # another service
        ({"description": "积水\n[citygw ref: INC-7 INC-7/1]"}, 0, {}),  # another case of ours
        ({"attributes": {"external_key": "INC-7"}}, 0, {}),  # another case of ours
        ({}, -3700, {}),  # filed over an hour before our first alert
        ({"lat": "north"}, 0, {}),  # no readable place
        ({}, 0, {"nearby": None}),  # nearby lookups off
    ],
    ids=["40-m", "other-service", "our-marker", "our-attribute", "before-window",
         "no-place", "off"],
)  # fmt: skip
def test_requests_outside_the_net_leave_not_there(
    run: Run,
    deviant: DeviantServer,
    changes: dict[str, Any],
    offset_s: int,
    settings: dict[str, Any],
) -> None:
    body = body_of("INC-n")
    when = iso(first_alert(body) + timedelta(seconds=offset_s))
    deviant.filed_elsewhere(**{**NEAR, "requested_datetime": when, **changes})
    adapter = deviant_adapter(deviant, **settings)
    assert run(adapter.find_case("INC-n", body)) is None
    run(adapter.aclose())
