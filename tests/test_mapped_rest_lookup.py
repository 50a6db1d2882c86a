"""The mapped-REST lookup reads the whole listing, or says it cannot tell.

A platform that ignores the key filter (the eGova example warns some do) and pages its
list must not make ``find_case`` answer "not there" after one page: the case would be filed
twice. Against the eGova stand-in on loopback (real HTTP, the shipped example's mapping):
the lookup pages to the end, a listing longer than ``max_pages`` or cut at
``listing_cap``, or an item whose key cannot be read, answers DOUBTFUL; a request of our
service near our place and time without our key is a possible match (DOUBTFUL, named),
never taken and never ignored.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from egova_intake import EgovaIntakeFake, Forced
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from test_mapped_rest import (
    COMMAND,
    Connect,
    adapters,
    case_body,
    evidence_store,
    example_data,
    failure_of,
)
from test_outbox_dispatch import Run

from case_bridge import outbox
from case_bridge.mapped_rest_nearby import item_time_ms
from case_bridge.mapped_rest_settings import MappedRestSettings
from case_bridge.platform import Failure

# Where the example puts COMMAND's case (GCJ-02 of its WGS-84 place, as sent).
X, Y = 119.3013, 26.078393
METRES_PER_DEGREE_LAT = 111_195


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as run:
        yield run


@pytest.fixture
def connect(runner: asyncio.Runner, tmp_path: Path) -> Iterator[Connect]:
    yield from adapters(runner, evidence_store(tmp_path / "evidence"))


@pytest.fixture
def intake() -> Iterator[EgovaIntakeFake]:
    with EgovaIntakeFake() as server:
        yield server


def others(intake: EgovaIntakeFake, count: int) -> None:
    """``count`` events of other incidents of ours, far from COMMAND's place."""
    for n in range(count):
        intake.reported_by_hand(extInfo={"externalKey": f"INC-other-{n}"}, subTypeID="06010",
                                coordinateX=X + 1, coordinateY=Y)  # fmt: skip


def queries(intake: EgovaIntakeFake) -> list[str]:
    return [r.target.split("?")[1] for r in intake.received if "/event/query" in r.target]


def test_a_lookup_pages_to_the_end_of_a_listing_that_ignores_the_key_filter(
    connect: Connect, runner: asyncio.Runner
) -> None:
    with EgovaIntakeFake(ignores_filters=True) as intake:
        platform = connect(example_data(intake.url))
        others(intake, 120)
        assert runner.run(platform.find_case("INC-0042", case_body())) is None
        # 50, 50, 20 and then an empty page: a short page is not the last (pages are
        # capped silently by some platforms), an empty one is.
        assert queries(intake) == [
            f"externalKey=INC-0042&pageNo={n}&pageSize=50" for n in (1, 2, 3, 4)
        ]
        filed = runner.run(platform.open_case(case_body(), "INC-0042/1"))["id"]  # 121st
        assert runner.run(platform.find_case("INC-0042", case_body())) == filed
        assert len(queries(intake)) == 7  # three more pages: ours is on the third


def test_a_listing_longer_than_max_pages_cannot_tell(
    connect: Connect, runner: asyncio.Runner
) -> None:
    with EgovaIntakeFake(ignores_filters=True) as intake:
        data = example_data(intake.url)
        data["find_case"]["max_pages"] = 2
        others(intake, 100)  # two full pages: a third may follow
        error = failure_of(runner, connect(data).find_case("INC-0042", case_body()))
        assert error.failure is Failure.DOUBTFUL
        assert "no case under 'INC-0042' in 2 pages, and the listing goes on" in error.reason
        assert len(queries(intake)) == 2


@pytest.mark.parametrize(("listed", "verdict"), [(4, None), (5, "cut short")])
def test_without_paging_a_listing_as_long_as_its_cap_cannot_tell(
    connect: Connect, runner: asyncio.Runner, listed: int, verdict: str | None
) -> None:
    with EgovaIntakeFake(ignores_filters=True) as intake:
        data = example_data(intake.url)
        del data["find_case"]["page_numbers"]
        data["find_case"]["listing_cap"] = 5
        others(intake, listed)
        platform = connect(data)
        if verdict is None:
            assert runner.run(platform.find_case("INC-0042", case_body())) is None
        else:
            error = failure_of(runner, platform.find_case("INC-0042", case_body()))
            assert error.failure is Failure.DOUBTFUL and verdict in error.reason
        assert queries(intake) == ["externalKey=INC-0042"]


def records(*items: Any) -> Forced:
    return Forced(200, {"code": 0, "msg": "success", "data": {"records": list(items)}})


def test_an_item_whose_key_cannot_be_read_makes_not_there_doubtful(
    connect: Connect, intake: EgovaIntakeFake, runner: asyncio.Runner
) -> None:
    platform = connect(example_data(intake.url))
    ours = {"eventID": "GL9", "externalKey": "INC-0042"}
    intake.script(records({"eventID": "GL1", "externalKey": {"k": "INC-0042"}}, "GL2"))
    error = failure_of(runner, platform.find_case("INC-0042", case_body()))
    assert error.failure is Failure.DOUBTFUL
    assert "2 listed item(s) could not be read" in error.reason
    intake.script(records({"eventID": "GL1", "externalKey": ["?"]}, ours))
    assert runner.run(platform.find_case("INC-0042", case_body())) == "GL9"
    intake.script(records({"eventID": "GL1", "externalKey": None}, {"eventID": "GL2"}))
    assert runner.run(platform.find_case("INC-0042", case_body())) is None  # keyless: not ours


def test_a_request_near_our_place_and_time_without_our_key_is_a_possible_match(
    connect: Connect, runner: asyncio.Runner
) -> None:
    with EgovaIntakeFake(ignores_filters=True) as intake:
        platform = connect(example_data(intake.url))
        # A citizen's report 20 m north, filed a second after our alert (10:00:01 local).
        citizen = intake.reported_by_hand(
            subTypeID="06042", coordinateX=X, coordinateY=Y + 20 / METRES_PER_DEGREE_LAT
        )
        error = failure_of(runner, platform.find_case("INC-0042", case_body()))
        assert error.failure is Failure.DOUBTFUL
        assert f"possible match {citizen} (20 m, +1 s): not filed again" in error.reason
        assert "possible match" in error.reason and error.may_have_acted


@pytest.mark.parametrize(
    "fields",
    [
        {"subTypeID": "06042", "coordinateX": X, "coordinateY": Y + 40 / METRES_PER_DEGREE_LAT},
        {"subTypeID": "06010", "coordinateX": X, "coordinateY": Y},  # another service
        {"subTypeID": "06042", "coordinateX": X, "coordinateY": Y,
         "extInfo": {"externalKey": "INC-7"}},  # another case of ours
        {"subTypeID": "06042", "coordinateX": "?", "coordinateY": Y},  # no readable place
    ],
    ids=["40-m-away", "other-service", "another-key-of-ours", "unreadable-place"],
)  # fmt: skip
def test_requests_outside_the_net_are_no_match(
    connect: Connect, runner: asyncio.Runner, fields: dict[str, Any]
) -> None:
    with EgovaIntakeFake(ignores_filters=True) as intake:
        intake.reported_by_hand(**fields)
        assert (
            runner.run(connect(example_data(intake.url)).find_case("INC-0042", case_body())) is None
        )


def test_a_request_outside_the_window_is_no_match(connect: Connect, runner: asyncio.Runner) -> None:
    with EgovaIntakeFake(ignores_filters=True) as intake:
        data = example_data(intake.url)
        data["find_case"]["nearby"]["window_s"] = 1800
        intake.reported_by_hand(subTypeID="06042", coordinateX=X, coordinateY=Y)
        platform = connect(data)
        too_late = case_body(replace(COMMAND.alert, ts=COMMAND.alert.ts - 1801_000))
        assert runner.run(platform.find_case("INC-0042", too_late)) is None
        in_time = case_body(replace(COMMAND.alert, ts=COMMAND.alert.ts - 1799_000))
        error = failure_of(runner, platform.find_case("INC-0042", in_time))
        assert "(0 m, +1800 s)" in error.reason


class CappedIntake(EgovaIntakeFake):
    """The eGova stand-in listing at most ``CAPPED`` items a page whatever ``pageSize``
    asks, as many platforms do, silently."""

    def _answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> dict[str, Any]:
        capped = re.sub(r"pageSize=(\d+)", lambda m: f"pageSize={min(int(m[1]), CAPPED)}", target)
        return super()._answer(method, capped, headers, body)


CAPPED = 20


@pytest.mark.parametrize(
    ("intake_class", "listed_first"), [(EgovaIntakeFake, 60), (CappedIntake, 30)]
)
def test_through_the_outbox_a_paged_listing_finds_the_case_filed_before_the_timeout(
    connect: Connect, runner: asyncio.Runner, tmp_path: Path,
    intake_class: type[EgovaIntakeFake], listed_first: int,
) -> None:  # fmt: skip
    """The platform files our case, the answer is lost, and its lookup lists other events
    first: 60 of them, 50 a page; or 30, on a platform that lists 20 where 50 are asked
    (a short page that is not the last). The case is found on page 2, filed once."""
    with intake_class(ignores_filters=True) as intake:
        others(intake, listed_first)
        conn = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
        outbox.ensure_schema(conn)
        outbox.enqueue(conn, COMMAND, int(time.time() * 1000))
        gateway = Run(conn, connect(example_data(intake.url)))
        intake.script(Forced(cut=True, act=True))
        runner.run(gateway.drain_until_quiet())
        ours = [e for e, event in intake.events.items()
                if event["extInfo"].get("externalKey") == "INC-0042"]  # fmt: skip
        assert len(ours) == 1 and len(intake.events) == listed_first + 1
        assert gateway.delivered == [f"INC-0042/1->{ours[0]}"]
        assert gateway.dispatcher.stats["found_by_lookup"] == 1
        assert queries(intake) == [f"externalKey=INC-0042&pageNo={n}&pageSize=50" for n in (1, 2)]
        conn.close()


@settings(max_examples=50, deadline=None)
@given(
    value=st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=80),
        st.sampled_from(["2026-11-21 10:00:01", "2026-11-21T02:00:01Z", "2026-13-01 00:00:00"]),
    ),
    time_format=st.sampled_from([None, "%Y-%m-%d %H:%M:%S"]),
)  # fmt: skip
def test_any_listed_time_reads_as_epoch_ms_or_none(value: object, time_format: str | None) -> None:
    moment = item_time_ms(value, time_format, ZoneInfo("Asia/Shanghai"))
    assert moment is None or moment >= 0 or isinstance(value, str)
    if value == "2026-11-21 10:00:01" and time_format is not None:
        assert moment == 1_795_226_401_000
    if value == "2026-11-21T02:00:01Z" and time_format is None:
        assert moment == 1_795_226_401_000


def test_a_cursor_must_go_back_and_be_left_out_of_the_first_page() -> None:
    data = example_data("http://127.0.0.1:9/eUrbanMIS")
    del data["find_case"]["page_numbers"]
    data["find_case"]["next_cursor"] = "data.next"
    with pytest.raises(ValidationError, match="pass the cursor back with a field"):
        MappedRestSettings.model_validate(data)
    data["find_case"]["query"]["cursor"] = {"from": "after"}
    with pytest.raises(ValidationError, match="the first page has no cursor"):
        MappedRestSettings.model_validate(data)
    data["find_case"]["query"]["cursor"] = {"from": "after", "if_missing": "omit"}
    assert MappedRestSettings.model_validate(data).find_case is not None


def test_a_lookup_follows_the_platform_cursor(
    connect: Connect, intake: EgovaIntakeFake, runner: asyncio.Runner
) -> None:
    data = example_data(intake.url)
    del data["find_case"]["page_numbers"]
    data["find_case"]["next_cursor"] = "data.next"
    data["find_case"]["query"]["cursor"] = {"from": "after", "if_missing": "omit"}
    page = {"eventID": "GL1", "externalKey": "INC-1"}
    intake.script(
        Forced(200, {"code": 0, "data": {"records": [page], "next": "c2"}}),
        Forced(200, {"code": 0, "data": {"records": [], "next": ""}}),
    )
    assert runner.run(connect(data).find_case("INC-0042", case_body())) is None
    assert queries(intake) == ["externalKey=INC-0042", "externalKey=INC-0042&cursor=c2"]
