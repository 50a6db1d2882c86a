"""Page-numbered listings on a platform that caps its page size silently.

Many platforms answer 20 items when 50 were asked. A page shorter than the size asked is
then no sign of the last page: taking it for one made a lookup answer "not there" for a
case on page 2 (the outbox posted it again) and ended a status-sync pass early, moving
the durable cursor past changes on the pages never read. Only an empty page ends a
listing, or the reply's own ``total`` or ``has_more`` where the mapping names one.
Against the eGova stand-in on loopback (real HTTP, the shipped example's mapping), with a
real SQLite outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_mapped_rest_lookup as lookup_tests
from hypothesis import given, settings
from hypothesis import strategies as st
from test_mapped_rest import Connect, case_body, example_data
from test_mapped_rest_lookup import CAPPED, CappedIntake, others, queries

from case_bridge import outbox
from case_bridge.mapped_rest import read_page
from case_bridge.mapped_rest_settings import MappedRestSettings
from case_bridge.status_sync import StatusSync, cursor_name


class ListingIntake(CappedIntake):
    """The capped stand-in, its changed listing newest change first (the worst order for
    a cursor) and, with ``word``, each lookup reply saying ``total`` or ``hasMore`` as
    such platforms do."""

    def __init__(self, word: str | None = None) -> None:
        super().__init__(ignores_filters=True)
        self.word = word

    def _answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> dict[str, Any]:
        answer = super()._answer(method, target, headers, body)
        page = re.search(r"pageNo=(\d+)", target)
        if self.word is not None and "/event/query" in target and page is not None:
            listed = len(self.events)
            answer["data"][self.word] = listed if self.word == "total" else (
                int(page[1]) * CAPPED < listed
            )  # fmt: skip
        return answer

    def _changed(self, query: dict[str, str]) -> dict[str, Any]:
        begin = query.get("updateTimeBegin", "")
        page, size = int(query["pageNo"]), int(query["pageSize"])
        listed = sorted(
            ((event["updateTime"], event_id) for event_id, event in self.events.items()
             if event["updateTime"] >= begin),
            reverse=True,
        )  # fmt: skip
        records = [self._record(event_id) for _, event_id in listed[(page - 1) * size :][:size]]
        return {"code": 0, "msg": "success", "data": {"records": records}}


runner = lookup_tests.runner  # fixtures
connect = lookup_tests.connect


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    with contextlib.closing(sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)) as c:
        outbox.ensure_schema(c)
        yield c


@pytest.mark.parametrize(
    ("word", "events", "pages"),
    [
        (None, 30, 3),  # 20, 10, then the empty page that ends it
        (None, 40, 3),  # 20, 20, empty
        ("total", 30, 3),  # 20 (of 30), 10 (2 x 10 < 30: maybe capped at 10), empty
        ("total", 40, 2),  # 20, 20: 2 x 20 = 40, all of it
        ("hasMore", 30, 2),  # 20 (more), 10 (no more)
    ],
)
def test_not_there_is_said_after_the_last_page_and_never_before(
    connect: Connect, runner: asyncio.Runner, word: str | None, events: int, pages: int
) -> None:
    with ListingIntake(word) as intake:
        data = example_data(intake.url)
        if word is not None:
            key = "total" if word == "total" else "has_more"
            data["find_case"]["page_numbers"][key] = f"data.{word}"
        others(intake, events)
        assert runner.run(connect(data).find_case("INC-0042", case_body())) is None
        assert len(queries(intake)) == pages


def test_a_status_sync_pass_over_capped_pages_sees_every_change_and_keeps_its_cursor(
    connect: Connect, runner: asyncio.Runner, conn: sqlite3.Connection
) -> None:
    """30 cases closed, listed newest first 20 a page, without ``next_since``: a pass
    that stopped at the short first page would close 20 incidents and keep the newest
    change as its cursor, so the 10 older closures would never be listed again."""
    with ListingIntake() as intake:
        ids = [intake.reported_by_hand(subTypeID="06042") for _ in range(30)]
        for n, case_id in enumerate(ids):
            outbox.link_case(conn, f"INC-{n}", case_id, 0)
            intake.set_state(case_id, "6")
        data = example_data(intake.url)
        del data["changed_cases"]["next_since"]
        platform = connect(data)
        closed: list[str] = []
        sync = StatusSync(conn, platform, 1.0, lambda incident, _: closed.append(incident))
        runner.run(sync.sync_once())
        assert sorted(closed) == sorted(f"INC-{n}" for n in range(30))
        assert (sync.passes, sync.failures) == (1, 0)
        newest = max(event["updateTime"] for event in intake.events.values())
        assert outbox.sync_cursor(conn, cursor_name(platform.platform_id)) == newest
        changed = [r.target for r in intake.received if "/event/changed" in r.target]
        assert changed == [
            f"/eUrbanMIS/api/event/changed?pageNo={n}&pageSize=200" for n in (1, 2, 3)
        ]


SETTINGS = MappedRestSettings.model_validate(example_data("http://127.0.0.1:9/eUrbanMIS"))
words = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**15), st.floats(allow_nan=True),
    st.text(max_size=20), st.sampled_from(["true", "false", "FALSE", "0", "1", "40"]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.none()),
)  # fmt: skip


@settings(max_examples=50, deadline=None)
@given(
    word=st.sampled_from(["total", "has_more"]),
    value=words,
    listed=st.integers(0, 5),
    page=st.integers(1, 4),
)
def test_any_total_or_has_more_ends_a_listing_only_where_it_says_so(
    word: str, value: object, listed: int, page: int
) -> None:
    """An empty page ends the listing; a page with items goes on unless the reply's word
    is a usable "no more" (false, 0) or a total the pages read hold."""
    pages = SETTINGS.changed_cases.page_numbers
    assert pages is not None
    request = SETTINGS.changed_cases.model_copy(
        update={"page_numbers": pages.model_copy(update={word: "data.word"})}
    )
    records = [{"eventID": f"GL{n}", "stateID": "6", "updateTime": "t"} for n in range(listed)]
    reply = {"code": 0, "data": {"records": records, "word": value}}
    body = json.dumps(reply).encode()
    next_after = read_page(request, 200, body, "GET /x", page).next_after
    if listed == 0:
        assert next_after is None
        return
    if word == "has_more":
        says_last = not isinstance(value, dict | list) and str(value).lower() in ("false", "0")
    else:
        text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
        says_last = text.isdigit() and len(text) <= 12 and page * listed >= int(text)
    assert next_after == (None if says_last else str(page + 1))
