"""Whatever a platform answers, the adapter gives a usable case or a PlatformError.

Property tests throw arbitrary statuses, headers and body bytes at the reply parsing, and
at the real adapter over real HTTP (the scripted platform of ``tests/scripted_platform.py``);
example tests pin the bounds on what is read.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scripted_platform import CUT, HANG, TOKEN, Answer, Reply, ScriptedPlatformFake

from case_bridge.platform import (
    CASE_ID,
    MAX_CASE_REPLY_BYTES,
    BundledPlatform,
    CasePage,
    Failure,
    NearbySettings,
    PlatformError,
    case_reply,
    error_for,
    found_case,
    nearby_of,
    page_reply,
)

BODY = {"class_code": "99101"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
# Bodies that look like cases often enough to reach every branch.
case_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.from_regex(CASE_ID, fullmatch=True), json_values),
        "status": json_values,
        "updated_at": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    case_like.map(lambda v: json.dumps(v).encode()),
    st.lists(case_like, max_size=5).map(lambda v: json.dumps({"cases": v}).encode()),
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@settings(max_examples=600, deadline=None)
@given(status=st.integers(100, 599), body=bodies, retry_after=st.none() | header_text,
       evidence=st.booleans())  # fmt: skip
def test_parsing_any_reply_gives_a_case_a_page_or_a_platform_error(
    status: int, body: bytes, retry_after: str | None, evidence: bool
) -> None:
    if not 200 <= status < 300:
        error = error_for(status, body, "POST /x", retry_after, evidence=evidence)
        assert isinstance(error, PlatformError)
        assert len(error.reason) <= len("HTTP 599 on POST /x: ") + 300 * 3
        assert error.failure is not Failure.CASE_FINAL or (status == 409 and evidence)
        return
    try:
        case = case_reply(status, body, "POST /x")
    except PlatformError as exc:
        assert exc.failure is Failure.DOUBTFUL
    else:
        assert CASE_ID.fullmatch(case["id"])
    try:
        page = page_reply(status, body, "GET /x")
    except PlatformError as exc:
        assert exc.failure is Failure.DOUBTFUL
    else:
        assert isinstance(page, CasePage)
        assert all(CASE_ID.fullmatch(c.id) for c in page.cases)


@pytest.fixture(scope="module")
def fake() -> Iterator[ScriptedPlatformFake]:
    with ScriptedPlatformFake() as server:
        yield server


@pytest.fixture(scope="module")
def adapter(fake: ScriptedPlatformFake) -> Iterator[tuple[asyncio.Runner, BundledPlatform]]:
    with asyncio.Runner() as runner:
        platform = BundledPlatform(fake.url, TOKEN, timeout_s=5)
        yield runner, platform
        runner.run(platform.aclose())


def call(adapter: tuple[asyncio.Runner, BundledPlatform], evidence: bool = False) -> Any:
    runner, platform = adapter
    if evidence:
        return runner.run(platform.add_evidence("C20261121-000001", BODY, "INC-x/2"))
    return runner.run(platform.open_case(BODY, "INC-x/1"))


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(status=st.sampled_from([200, 201, 204, 301, 400, 404, 409, 413, 422, 429, 500, 503]),
       body=bodies, retry_after=st.none() | header_text, evidence=st.booleans())  # fmt: skip
def test_the_adapter_over_http_gives_a_case_or_a_platform_error(
    fake: ScriptedPlatformFake,
    adapter: tuple[asyncio.Runner, BundledPlatform],
    status: int,
    body: bytes,
    retry_after: str | None,
    evidence: bool,
) -> None:
    if status == 204:
        body = b""
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    fake.script(Reply(status, body, headers))
    try:
        case = call(adapter, evidence)
    except PlatformError as exc:
        assert not (200 <= status < 300) or exc.failure is Failure.DOUBTFUL
        if exc.failure is Failure.TRANSIENT:
            assert exc.retry_after_s is None or 0 <= exc.retry_after_s <= 86_400
    else:
        assert 200 <= status < 300
        assert CASE_ID.fullmatch(case["id"])


def test_a_reply_over_the_bound_is_doubtful_whether_declared_or_inflated(
    fake: ScriptedPlatformFake, adapter: tuple[asyncio.Runner, BundledPlatform]
) -> None:
    big = json.dumps({"id": "C20261121-000001", "pad": "x" * MAX_CASE_REPLY_BYTES}).encode()
    bomb = gzip.compress(big)
    assert len(bomb) < 10_000  # small on the wire, over the bound once inflated
    fake.script(Reply(201, big), Reply(201, bomb, {"Content-Encoding": "gzip"}))
    for _ in range(2):
        with pytest.raises(PlatformError) as caught:
            call(adapter)
        assert caught.value.failure is Failure.DOUBTFUL
        assert caught.value.reason == (
            "HTTP 201 on POST /api/v1/cases: reply larger than 2097152 bytes"
        )


def test_an_error_reply_is_read_only_as_far_as_its_detail(
    fake: ScriptedPlatformFake, adapter: tuple[asyncio.Runner, BundledPlatform]
) -> None:
    fake.script(Reply(500, b"E" * (5 * 1024 * 1024)), Reply(302, b"", {"Location": "/login"}))
    with pytest.raises(PlatformError) as caught:
        call(adapter)
    assert caught.value.failure is Failure.TRANSIENT
    assert caught.value.reason == "HTTP 500 on POST /api/v1/cases: " + "E" * 300
    with pytest.raises(PlatformError) as redirected:
        call(adapter)
    assert (redirected.value.failure, redirected.value.reason) == (
        Failure.DOUBTFUL,
        "HTTP 302 on POST /api/v1/cases: ",
    )


def test_no_answer_at_all_is_transient() -> None:
    async def unreachable() -> None:
        platform = BundledPlatform("http://127.0.0.1:9", TOKEN, timeout_s=1)
        try:
            await platform.open_case(BODY, "INC-x/1")
        finally:
            await platform.aclose()

    with pytest.raises(PlatformError) as caught:
        asyncio.run(unreachable())
    assert caught.value.failure is Failure.TRANSIENT
    assert caught.value.reason.startswith("ConnectError: ")
    assert caught.value.may_have_acted is False  # nothing was sent


@pytest.mark.parametrize(
    ("answer", "failure", "may_have_acted"),
    [
        (Reply(503, b"maintenance"), Failure.TRANSIENT, False),
        (Reply(500, b"oops"), Failure.TRANSIENT, False),
        (Reply(429, b"slow down"), Failure.TRANSIENT, False),
        (Reply(401, b"token"), Failure.TRANSIENT, False),
        (Reply(502, b"bad gateway"), Failure.TRANSIENT, True),
        (Reply(504, b"gateway timeout"), Failure.TRANSIENT, True),
        (Reply(422, b"invalid"), Failure.REFUSED, False),
        (Reply(201, b"<html>"), Failure.DOUBTFUL, True),
        (Reply(303, b"", {"Location": "/api/v1/cases/C1"}), Failure.DOUBTFUL, True),
        (CUT, Failure.TRANSIENT, True),
    ],
)
def test_a_failure_says_whether_the_platform_may_have_acted(
    fake: ScriptedPlatformFake,
    adapter: tuple[asyncio.Runner, BundledPlatform],
    answer: Answer,
    failure: Failure,
    may_have_acted: bool,
) -> None:
    fake.script(answer)
    with pytest.raises(PlatformError) as caught:
        call(adapter)
    assert (caught.value.failure, caught.value.may_have_acted) == (failure, may_have_acted)


def test_a_timeout_after_sending_may_have_acted(fake: ScriptedPlatformFake) -> None:
    async def held() -> None:
        platform = BundledPlatform(fake.url, TOKEN, timeout_s=0.2)
        try:
            await platform.open_case(BODY, "INC-x/1")
        finally:
            await platform.aclose()

    fake.script(HANG)
    with pytest.raises(PlatformError) as caught:
        asyncio.run(held())
    assert caught.value.reason.startswith("ReadTimeout")
    assert (caught.value.failure, caught.value.may_have_acted) == (Failure.TRANSIENT, True)


listed = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.from_regex(CASE_ID, fullmatch=True), json_values),
        "external_key": st.sampled_from(["INC-a", "INC-b", ""]) | json_values,
        # What a possible match is judged by: class, place, time.
        "class_code": st.sampled_from(["99101", "06042"]) | json_values,
        "location": st.fixed_dictionaries(
            {"lat": st.sampled_from([31.2989, 31.3, 91]) | json_values,
             "lon": st.sampled_from([120.5853, "120.5853"]) | json_values}
        ) | json_values,
        "created_at": st.sampled_from(
            ["2025-11-21T04:40:30+00:00", "2025-11-21T04:40:30", "x" * 70]
        ) | json_values,
    },
)  # fmt: skip
NEAR = nearby_of(
    NearbySettings(),
    {"location": {"lat": 31.2989, "lon": 120.5853}, "evidence": [{"ts": 1_763_700_000_000}]},
    "99101",
)
pages = st.one_of(
    bodies,
    st.fixed_dictionaries(
        {"cases": st.lists(listed, max_size=5)},
        optional={"next": st.none() | st.text(max_size=70) | json_values},
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=150, deadline=None)
@given(body=pages)
def test_a_lookup_page_gives_the_case_the_next_page_or_a_doubtful_error(body: bytes) -> None:
    try:
        found = found_case(200, body, "GET /x", "INC-a", NEAR)
    except PlatformError as exc:
        assert exc.failure is Failure.DOUBTFUL
        return
    case_id, next_after = found.case_id, found.next_after
    page = json.loads(body)
    keyed = [item for item in page["cases"] if item.get("external_key") == "INC-a"]
    if keyed:
        assert (case_id, next_after) == (keyed[0]["id"], None)
        assert CASE_ID.fullmatch(case_id)
    else:
        assert case_id is None
        assert next_after == page.get("next")
        assert next_after is None or 0 < len(next_after) <= 64
        keyless = [i for i in page["cases"] if i.get("external_key") in (None, "")]
        assert all(c.id in [i.get("id") for i in keyless] for c in found.candidates)
        assert all(c.distance_m <= 30 and abs(c.offset_s) <= 3600 for c in found.candidates)
        unread = [i for i in page["cases"] if not isinstance(i.get("external_key"), str | None)]
        assert found.unreadable == len(unread)
