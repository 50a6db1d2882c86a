"""The mapped-REST adapter with the shipped eGova example, against a stand-in intake over
real loopback HTTP (``tests/egova_intake.py``): the exact body and signature a case
becomes, evidence, status sync, lookup by external key, and every failure mode mapped to
its ``Failure`` kind. Property tests throw malformed mappings at the settings loader and
arbitrary replies at the reply reading.
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from egova_intake import KEY_ID, SECRET, TOKEN, EgovaIntakeFake, Forced
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from test_outbox_dispatch import Run

from case_bridge import outbox
from case_bridge.case_model import evidence_body, open_case_body
from case_bridge.codes import ClassCatalog
from case_bridge.coordinates import PlatformCoordinates
from case_bridge.guarded_platform import DeliverySettings, GuardedPlatform
from case_bridge.mapped_rest import (
    MappedRestPlatform,
    RequestBuilder,
    read_case_id,
    read_checked,
    read_found,
    read_page,
)
from case_bridge.mapped_rest_nearby import MappedNearby
from case_bridge.mapped_rest_settings import OPEN_CASE_SOURCES, MappedRestSettings, as_text
from case_bridge.platform import CASE_ID, Failure, PlatformError
from case_bridge.rate_limit import RateLimitSettings
from case_bridge.settings import CaseSettings
from domain import Alert, AlertState, CaseCommand, CommandKind, Location, Priority
from gateway.bounded_yaml import load_yaml_file
from gateway.evidence import EvidenceWriter
from gateway.evidence_links import EvidenceLinks

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "platforms" / "egova.yaml"
CASES = CaseSettings()
CATALOG = ClassCatalog(CASES.local_classes)
TS_MS = 1_795_226_400_000  # 2026-11-21T02:00:00Z, 10:00 in Fuzhou
LINKS = EvidenceLinks(b"evidence-link-secret-".ljust(32, b"0"), 3600, "https://gw.example.cn")

ALERT = Alert(
    key="bin-0042/bin_full",
    source_id="bin-0042",
    rule_id="bin_full",
    state=AlertState.FIRING,
    class_code="06042",
    priority=Priority.URGENT,
    location=Location(26.0815, 119.2965, "福州市鼓楼区五四路158号", "350102001002003"),
    ts=TS_MS,
    values={"fill_pct": 92.0},
    part_code="35010203005000012",
    summary="fill 92% ≥ 85% for 10 min",
)
COMMAND = CaseCommand("INC-0042/1", "INC-0042", CommandKind.OPEN, ALERT, Priority.URGENT)

# What the eGova example must send for COMMAND, in the mapping's order.
EXPECTED_BODY = {
    "eventSrcID": "11",
    "eventTypeID": 2,
    "mainTypeID": 106,
    "subTypeID": "06042",
    "districtID": "350102",
    "cellID": "350102001002003",
    "coordinateX": 119.3013,  # GCJ-02 of 119.2965 E, 26.0815 N (see test_coordinates.py)
    "coordinateY": 26.078393,
    "address": "福州市鼓楼区五四路158号",
    "eventDesc": "物联网感知: 垃圾站（箱）满溢 — bin-0042 @ 福州市鼓楼区五四路158号: "
    "fill 92% ≥ 85% for 10 min",
    "partCode": "35010203005000012",
    "eventUrgent": 2,
    "customDeadline": "2026-11-21 22:00:00",
    "extInfo": {"externalKey": "INC-0042"},
}


def example_data(url: str, **changes: Any) -> dict[str, Any]:
    """The shipped example as the gateway will read it: its secret resolved from where the
    file says (``secret_env``), and the base URL pointed at the stand-in."""
    _, data = load_yaml_file(EXAMPLE)
    assert data["auth"].pop("secret_env") == "CITYGW_EGOVA_SECRET"
    data["auth"]["secret"] = SECRET
    data["url"] = url
    data.update(changes)
    return data


def case_body(alert: Alert = ALERT, incident: str = "INC-0042") -> dict[str, Any]:
    command = CaseCommand(f"{incident}/1", incident, CommandKind.OPEN, alert, alert.priority)
    return open_case_body(command, CATALOG, CASES)


def evidence_store(folder: Path) -> EvidenceWriter:
    """The gateway's own evidence store in ``folder``: what the adapter reads uploads from."""
    return EvidenceWriter(folder, LINKS, max_picture_bytes=2 * 2**20)


@pytest.fixture
def store(tmp_path: Path) -> EvidenceWriter:
    return evidence_store(tmp_path / "evidence")


@pytest.fixture
def intake() -> Iterator[EgovaIntakeFake]:
    with EgovaIntakeFake() as server:
        yield server


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as run:
        yield run


Connect = Callable[[dict[str, Any]], MappedRestPlatform]


@pytest.fixture
def connect(runner: asyncio.Runner, store: EvidenceWriter) -> Iterator[Connect]:
    yield from adapters(runner, store)


def adapters(runner: asyncio.Runner, store: EvidenceWriter) -> Iterator[Connect]:
    """``connect(data)``: the adapter for a mapping, reading evidence from ``store``,
    closed after the test."""
    made: list[MappedRestPlatform] = []

    def make(data: dict[str, Any]) -> MappedRestPlatform:
        settings_ = MappedRestSettings.model_validate(data)
        made.append(MappedRestPlatform(settings_, store.read_linked))
        return made[-1]

    yield make
    for platform in made:
        runner.run(platform.aclose())


def failure_of(runner: asyncio.Runner, call: Any) -> PlatformError:
    with pytest.raises(PlatformError) as caught:
        runner.run(call)
    return caught.value


def test_the_egova_example_files_the_exact_body_signed(
    connect: Connect, intake: EgovaIntakeFake, runner: asyncio.Runner
) -> None:
    platform = connect(example_data(intake.url))
    case = runner.run(platform.open_case(open_case_body(COMMAND, CATALOG, CASES), "INC-0042/1"))
    assert case == {"id": "GL20261121000001"}
    [request] = intake.received
    assert (request.method, request.target) == ("POST", "/eUrbanMIS/api/event/report")
    assert request.authorised  # the signature checked out with the shared secret
    assert request.headers["x-key-id"] == KEY_ID
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    sent = json.loads(request.body)
    for name, value in EXPECTED_BODY.items():
        assert sent.get(name) == value, name
    assert sent == EXPECTED_BODY  # nothing more: no photoUrl without media
    assert (
        request.body
        == json.dumps(EXPECTED_BODY, ensure_ascii=False, separators=(",", ":")).encode()
    )


def test_the_example_in_projected_metres_and_with_a_photo(
    connect: Connect, intake: EgovaIntakeFake, runner: asyncio.Runner
) -> None:
    data = example_data(intake.url, coordinates={"system": "EPSG:4549", "decimals": 3})
    platform = connect(data)
    video = replace(
        ALERT, priority=Priority.CRITICAL, origin="video", part_code="",
        media=("https://gw.example.cn/e/7f3a.jpg",),
    )  # fmt: skip
    runner.run(platform.open_case(case_body(video), "INC-0042/1"))
    sent = json.loads(intake.received[0].body)
    # CGCS2000 / 3-degree Gauss-Kruger CM 120E: easting west of 500 km, northing ~2886 km.
    assert (sent["coordinateX"], sent["coordinateY"]) == (429614.766, 2886053.827)
    assert sent["eventSrcID"] == "12" and sent["eventUrgent"] == 1
    assert "partCode" not in sent
    assert sent["extInfo"] == {
        "externalKey": "INC-0042",
        "photoUrl": "https://gw.example.cn/e/7f3a.jpg",
    }
    assert sent["customDeadline"] == "2026-11-21 12:00:00"  # critical: 2 h


def test_evidence_and_escalation_then_a_closed_case_is_final(
    connect: Connect, intake: EgovaIntakeFake, runner: asyncio.Runner
) -> None:
    platform = connect(example_data(intake.url))
    case_id = runner.run(platform.open_case(case_body(), "INC-0042/1"))["id"]
    escalate = CaseCommand("INC-0042/2", "INC-0042", CommandKind.ESCALATE, ALERT, Priority.CRITICAL)
    reply = runner.run(platform.add_evidence(case_id, evidence_body(escalate, CASES), "INC-0042/2"))
    assert reply == {"id": case_id}
    assert intake.received[1].target == "/eUrbanMIS/api/event/supplement"
    assert intake.received[1].authorised
    assert intake.supplements == [
        {"eventID": case_id, "supplementDesc": "fill 92% ≥ 85% for 10 min", "eventUrgent": 1}
    ]
    intake.set_state(case_id, "6")
    attach = CaseCommand("INC-0042/3", "INC-0042", CommandKind.ATTACH, ALERT, Priority.URGENT)
    error = failure_of(runner, platform.add_evidence(case_id, evidence_body(attach, CASES), "k"))
    assert (error.failure, error.case_status) == (Failure.CASE_FINAL, "closed")
    assert "案件已结案" in error.reason
    assert len(intake.supplements) == 1


def test_a_closure_check_reaches_the_platform_as_a_review_note(
    connect: Connect, intake: EgovaIntakeFake, runner: asyncio.Runner
) -> None:
    """The eGova example maps a closure check's flag and status; other evidence omits them
    (the escalation test above shows a supplement without them)."""
    platform = connect(example_data(intake.url))
    case_id = runner.run(platform.open_case(case_body(), "INC-0042/1"))["id"]
    flagged = replace(ALERT, closure_check="verifying")
    check = CaseCommand("INC-0042/2", "INC-0042", CommandKind.ATTACH, flagged, Priority.URGENT)
    runner.run(platform.add_evidence(case_id, evidence_body(check, CASES), "INC-0042/2"))
    assert intake.supplements == [
        {
            "eventID": case_id,
            "supplementDesc": "fill 92% ≥ 85% for 10 min",
            "reviewFlag": "closure_check",
            "reviewStatus": "verifying",
        }
    ]


def test_status_sync_translates_and_pages(
    connect: Connect, intake: EgovaIntakeFake, runner: asyncio.Runner
) -> None:
    data = example_data(intake.url)
    data["changed_cases"]["page_numbers"]["size"] = 2
    platform = connect(data)
    ids = [
        runner.run(platform.open_case(case_body(incident=f"INC-{n}"), f"INC-{n}/1"))["id"]
        for n in range(3)
    ]
    intake.set_state(ids[0], "6")  # 结案
    intake.set_state(ids[1], "7")  # a state the table lacks: skipped, counted
    first = runner.run(platform.changed_cases(None, None))
    assert [(c.id, c.status) for c in first.cases] == [(ids[2], "accepted"), (ids[0], "closed")]
    assert (first.next_after, first.skipped) == ("2", 0)
    assert first.next_since == "2026-11-21 10:00:06"
    second = runner.run(platform.changed_cases(None, first.next_after))
    # One item where two were asked: not the last page (platforms cap page sizes
    # silently); only an empty page is (test_mapped_rest_paging.py: total, has_more).
    assert (second.cases, second.next_after, second.skipped) == ([], "3", 1)
    assert intake.received[-1].target == "/eUrbanMIS/api/event/changed?pageNo=2&pageSize=2"
    third = runner.run(platform.changed_cases(None, second.next_after))
    assert (third.cases, third.next_after, third.skipped) == ([], None, 0)
    later = runner.run(platform.changed_cases(first.next_since, None))
    assert later.cases == []
    assert later.skipped == 0
    assert all(request.authorised for request in intake.received)


@pytest.mark.parametrize("ignores_filters", [False, True])
def test_find_case_by_external_key(
    connect: Connect, runner: asyncio.Runner, ignores_filters: bool
) -> None:
    with EgovaIntakeFake(ignores_filters=ignores_filters) as intake:
        platform = connect(example_data(intake.url))
        assert not platform.honours_idempotency_key
        runner.run(platform.open_case(case_body(incident="INC-7"), "INC-7/1"))
        filed = runner.run(platform.open_case(case_body(), "INC-0042/1"))["id"]
        assert runner.run(platform.find_case("INC-0042", case_body())) == filed
        assert runner.run(platform.find_case("INC-9", case_body(incident="INC-9"))) is None
        # Two events listed where 50 were asked: only an empty page ends the listing.
        last_page = 2 if ignores_filters else 1
        assert intake.received[-1].target == (
            f"/eUrbanMIS/api/event/query?externalKey=INC-9&pageNo={last_page}&pageSize=50"
        )
    without = example_data(intake.url)
    del without["find_case"]
    error = failure_of(runner, connect(without).find_case("INC-0042", case_body()))
    assert error.failure is Failure.REFUSED and not error.may_have_acted
    assert "no find_case: whether INC-0042 was filed cannot be checked" in error.reason


REPORTED = {"code": 0, "msg": "success", "data": {"eventID": "GL1"}}


T, R, D = Failure.TRANSIENT, Failure.REFUSED, Failure.DOUBTFUL


@pytest.mark.parametrize(
    ("forced", "failure", "may_have_acted", "in_reason"),
    [
        (Forced(500, b"Internal Server Error"), T, False, "HTTP 500"),
        (Forced(503, b"", {"Retry-After": "7"}), T, False, "HTTP 503"),
        (Forced(502, b"Bad Gateway"), T, True, "HTTP 502"),  # the platform's answer lost
        (Forced(400, {"code": 1001}), R, False, "HTTP 400"),
        (Forced(404, b"no such path"), R, False, "no such path"),
        (Forced(302, b"", {"Location": "/login"}), D, True, "HTTP 302"),
        (Forced(200, b"<html>502 Bad Gateway</html>"), D, True, "not JSON"),
        (Forced(200, {"code": 0, "msg": "success", "data": {}}), D, True, "data.eventID"),
        (Forced(200, {"code": 0, "data": {"eventID": "../x"}}), D, True, "usable case id"),
        (Forced(200, {"code": 1002, "msg": "类别不存在"}), R, False, "result '1002': 类别不存在"),
        (Forced(200, {"code": "5000", "msg": "系统繁忙"}), T, False, "系统繁忙"),
        (Forced(200, {"code": 42, "msg": "?"}), D, True, "result '42'"),
        (Forced(200, {"msg": "success"}), D, True, "no result code at code"),
        (Forced(200, {**REPORTED, "pad": "x" * 3_000_000}), D, True, "larger than"),
        (Forced(hold=True), T, True, "ReadTimeout"),  # sent, then no answer
        (Forced(cut=True), T, True, "RemoteProtocolError"),  # sent, then the line dropped
    ],
)
def test_each_failure_mode_maps_to_its_kind(
    connect: Connect,
    intake: EgovaIntakeFake,
    runner: asyncio.Runner,
    forced: Forced,
    failure: Failure,
    may_have_acted: bool,
    in_reason: str,
) -> None:
    # A held reply costs the timeout: short for it, roomy for the rest on a loaded machine.
    platform = connect(example_data(intake.url, timeout_s=1.0 if forced.hold else 10.0))
    intake.script(forced)
    error = failure_of(runner, platform.open_case(case_body(), "INC-0042/1"))
    assert (error.failure, error.may_have_acted) == (failure, may_have_acted)
    assert in_reason in error.reason
    assert error.retry_after_s == (7.0 if forced.headers.get("Retry-After") else None)
    assert runner.run(platform.open_case(case_body(), "INC-0042/1")) == {"id": "GL20261121000001"}


def test_a_platform_not_listening_certainly_did_not_act(
    connect: Connect, runner: asyncio.Runner
) -> None:
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = f"http://127.0.0.1:{port}/eUrbanMIS"
    error = failure_of(runner, connect(example_data(closed)).open_case(case_body(), "k"))
    assert (error.failure, error.may_have_acted) == (Failure.TRANSIENT, False)
    assert "ConnectError" in error.reason


@pytest.mark.parametrize(
    ("lost", "lookups"),
    [
        (Forced(cut=True, act=True), 1),  # filed, then the connection dropped
        (Forced(502, b"Bad Gateway", act=True), 1),  # filed, a proxy lost the answer
        (Forced(503, b"busy"), 0),  # refused before acting: posted again at once
    ],
    ids=["cut-after-filing", "502-after-filing", "503-not-filed"],
)
def test_through_the_outbox_a_case_is_filed_once_whatever_the_answer(
    connect: Connect,
    intake: EgovaIntakeFake,
    runner: asyncio.Runner,
    tmp_path: Path,
    lost: Forced,
    lookups: int,
) -> None:
    conn = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
    outbox.ensure_schema(conn)
    opened = replace(COMMAND, command_id="INC-a/1", incident_id="INC-a")
    attach = replace(opened, command_id="INC-a/2", kind=CommandKind.ATTACH)
    for queued in (opened, attach):
        outbox.enqueue(conn, queued, int(time.time() * 1000))
    gateway = Run(conn, connect(example_data(intake.url)))
    intake.script(lost)
    runner.run(gateway.drain_until_quiet())
    [event_id] = intake.events  # one case on the platform
    assert intake.events[event_id]["extInfo"]["externalKey"] == "INC-a"
    assert outbox.case_for(conn, "INC-a") == event_id
    assert [s["eventID"] for s in intake.supplements] == [event_id]
    assert gateway.delivered == [f"INC-a/1->{event_id}", f"INC-a/2->{event_id}"]
    assert gateway.dispatcher.stats["lookups"] == lookups
    assert gateway.dispatcher.stats["found_by_lookup"] == (1 if lost.act else 0)
    conn.close()


def test_a_wrong_secret_is_refused_by_the_platform(
    connect: Connect, intake: EgovaIntakeFake, runner: asyncio.Runner
) -> None:
    data = example_data(intake.url)
    data["auth"]["secret"] = "not-the-shared-secret"
    error = failure_of(runner, connect(data).open_case(case_body(), "k"))
    assert (error.failure, intake.received[0].authorised) == (Failure.TRANSIENT, False)
    assert "HTTP 401" in error.reason and intake.events == {}


class StrictClockIntake(EgovaIntakeFake):
    """The intake refusing a signature whose timestamp is older than ``TOLERANCE_MS``
    when the request arrives (real platforms allow from seconds to minutes)."""

    def _authorised(self, method: str, target: str, headers: dict[str, str], body: bytes) -> bool:
        age_ms = time.time() * 1000 - int(headers.get("x-timestamp", "0") or 0)
        return super()._authorised(method, target, headers, body) and age_ms <= TOLERANCE_MS


TOLERANCE_MS = 500


def test_a_request_waiting_for_its_rate_limit_token_is_signed_when_it_goes(
    runner: asyncio.Runner, store: EvidenceWriter
) -> None:
    """One request a second: the second case waits a second for its token. Signed before
    the wait, its timestamp would be a second old when it arrived, and refused."""
    with StrictClockIntake() as intake:
        settings_ = MappedRestSettings.model_validate(example_data(intake.url))
        delivery = DeliverySettings(rate_limit=RateLimitSettings(requests_per_s=1, burst=1))
        platform = GuardedPlatform(MappedRestPlatform(settings_, store.read_linked), delivery)
        try:
            for n in (1, 2):
                runner.run(platform.open_case(case_body(incident=f"INC-{n}"), f"INC-{n}/1"))
        finally:
            runner.run(platform.aclose())
        assert [r.authorised for r in intake.received] == [True, True]
        assert intake.received[1].at - intake.received[0].at >= 0.9  # it did wait
        assert len(intake.events) == 2 and platform.bucket.waits == 1


@pytest.mark.parametrize(
    ("auth", "header"), [("bearer", "authorization"), ("api_key", "x-api-key")]
)
def test_bearer_and_api_key_auth(
    connect: Connect, runner: asyncio.Runner, auth: str, header: str
) -> None:
    with EgovaIntakeFake(auth=auth) as intake:
        platform = connect(example_data(intake.url, auth={"type": auth, "secret": TOKEN}))
        assert runner.run(platform.open_case(case_body(), "k")) == {"id": "GL20261121000001"}
        assert intake.received[0].authorised
        assert "x-signature" not in intake.received[0].headers
        assert TOKEN in intake.received[0].headers[header]


def test_a_case_the_mapping_cannot_express_is_refused_before_sending(
    connect: Connect, intake: EgovaIntakeFake, runner: asyncio.Runner
) -> None:
    platform = connect(example_data(intake.url))
    catalog = ClassCatalog({**CASES.local_classes, "99401": "共享单车乱停放"})
    unmapped = replace(COMMAND, alert=replace(ALERT, class_code="99401"))
    error = failure_of(runner, platform.open_case(open_case_body(unmapped, catalog, CASES), "k"))
    assert error.failure is Failure.REFUSED
    assert error.reason == (
        "POST /api/event/report body.eventTypeID: class_code '99401' has no entry in"
        " tables.event_type"
    )
    gridless = replace(ALERT, location=replace(ALERT.location, grid_code=""))
    error = failure_of(runner, platform.open_case(case_body(gridless), "k"))
    assert error.reason == "POST /api/event/report body.cellID: the case has no location.grid_code"
    assert intake.received == []


def test_evidence_without_an_evidence_endpoint_is_refused(
    connect: Connect, intake: EgovaIntakeFake, runner: asyncio.Runner
) -> None:
    data = example_data(intake.url)
    del data["add_evidence"], data["upload"]["add_evidence"]
    error = failure_of(runner, connect(data).add_evidence("GL1", {"evidence": []}, "k"))
    assert error.failure is Failure.REFUSED and "no add_evidence" in error.reason
    assert intake.received == []


# ---------------------------------------------------------------- the settings loader


def loader_errors(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(dotted loc, message) of each problem, as the gateway's config loader reports them."""
    try:
        MappedRestSettings.model_validate(data)
    except ValidationError as exc:
        return [(".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors()]
    return []


def base_data() -> dict[str, Any]:
    return example_data("http://127.0.0.1:9/eUrbanMIS")


BASE_DATA = base_data()


def test_the_shipped_example_covers_every_class_code_and_loads_clean() -> None:
    settings = MappedRestSettings.model_validate(BASE_DATA)
    codes = {f"code {c}": c for c in CATALOG}
    assert len(codes) == 37
    settings.check_class_codes(codes)
    with pytest.raises(ValueError) as caught:
        settings.check_class_codes({"rules.bin.class_code": "06099"})
    assert str(caught.value).split("; ")[0] == (
        "rules.bin.class_code: class code 06099 has no entry in tables.event_type"
        " (used by open_case.body.eventTypeID)"
    )


target_names = st.text(st.sampled_from("aZ_$@-.0é x"), min_size=0, max_size=12)


@settings(max_examples=150, deadline=None)
@given(target=target_names)
def test_loader_refuses_a_malformed_target_path_by_name(target: str) -> None:
    data = copy.deepcopy(BASE_DATA)
    data["open_case"]["body"] = {target: {"const": 1}}
    errors = loader_errors(data)
    segments = target.split(".")
    well_formed = (
        all(s and s[0] in "aZx_$@" and set(s) <= set("aZx_$@-0") for s in segments)
        and len(segments) <= 8
    )
    if well_formed:
        assert errors == []
    else:
        [(loc, message)] = errors
        assert loc == f"open_case.body.{target}.[key]"
        assert "dotted path of at most 8 names" in message


@settings(max_examples=150, deadline=None)
@given(source=st.one_of(
    st.sampled_from(["class_code", "location.grid_code", "evidence.0.media.0", "location",
                     "evidence.x.summary", "location.lat.x", "external_key", "__class__"]),
    st.text(st.sampled_from("abcdeilnost_.0"), max_size=20),
))  # fmt: skip
def test_loader_refuses_a_source_our_case_lacks_by_name(source: str) -> None:
    data = copy.deepcopy(BASE_DATA)
    data["open_case"]["body"]["eventDesc"] = {"from": source}
    errors = loader_errors(data)
    if OPEN_CASE_SOURCES.fullmatch(source):
        assert errors == []
    else:
        [(_, message)] = errors
        assert f"open_case.body.eventDesc.from: our case has no {source!r}" in message


@settings(max_examples=60, deadline=None)
@given(kept=st.sets(st.sampled_from([str(p) for p in Priority])))
def test_loader_names_the_priorities_a_table_lacks(kept: set[str]) -> None:
    data = copy.deepcopy(BASE_DATA)
    data["tables"]["urgency"] = {p: 1 for p in sorted(kept)}
    errors = loader_errors(data)
    missing = sorted({str(p) for p in Priority} - kept)
    if not missing:
        assert errors == []
    elif not kept:
        assert errors[0][0] == "tables.urgency"  # an empty table
    else:
        [(_, message)] = errors
        assert message.endswith(
            f"open_case.body.eventUrgent: tables.urgency has no entry for priority"
            f" {', '.join(missing)}"
        )


@settings(max_examples=80, deadline=None)
@given(codes=st.dictionaries(st.sampled_from(["a", "b", "c"]),
                             st.sampled_from(["06042", "99101", "06099", "1", ""])))  # fmt: skip
def test_class_code_check_names_every_code_a_table_lacks(codes: dict[str, str]) -> None:
    settings_ = MappedRestSettings.model_validate(BASE_DATA)
    lacking = {key: code for key, code in codes.items() if code not in ("06042", "99101")}
    if not lacking:
        settings_.check_class_codes(codes)
        return
    with pytest.raises(ValueError) as caught:
        settings_.check_class_codes(codes)
    for key, code in lacking.items():
        assert f"{key}: class code {code} has no entry in tables.main_type" in str(caught.value)


def _with(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE_DATA)
    *outer, last = path.split(".")
    node = data
    for step in outer:
        node = node[step]
    node[last] = value
    return data


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("path", "value", "loc", "in_message"),
    [
        ("tables.main_type", {f"{n:05d}": 1 for n in range(5001)}, "tables.main_type",
         "at most 5000"),
        ("open_case.body", {f"f{n}": {"const": n} for n in range(101)}, "open_case.body",
         "at most 100"),
        ("open_case.body", {".".join(["a"] * 9): {"const": 1}},
         "open_case.body.a.a.a.a.a.a.a.a.a.[key]", "at most 8 names"),
        ("open_case.body", {"x": {"const": _nested(40)}}, "open_case.body.x.const", ""),
        ("open_case.body", {"x": {"const": "x" * 2001}}, "open_case.body.x", "2000"),
        ("tables", {f"t{n}": {"a": 1} for n in range(33)}, "tables", "at most 32"),
        ("tables.sub_type", {6042: "06042"}, "tables.sub_type", "quote codes"),
        ("open_case.body", {"a": {"const": 1}, "a.b": {"const": 2}}, "",
         "body: a and a.b cannot both be set"),
        ("open_case.body", {"x": {"from": "class_code", "table": "nope"}}, "",
         "open_case.body.x.table: no table 'nope'"),
        ("open_case.body", {"x": {"const": 1, "coordinate": "x"}}, "open_case.body.x",
         "exactly one of"),
        ("add_evidence.body", {"x": {"coordinate": "x"}}, "",
         "add_evidence.body.x: this request has no location"),
        ("open_case.path", "/api/{case_id}", "open_case", "placeholder"),
        ("open_case.path", "/api/../admin", "open_case", "'..'"),
        # Patterns match whole values: a part that fits is not enough.
        ("open_case.path", "http://elsewhere.example/api", "open_case.path", "match pattern"),
        ("idempotency_header", "X-Request Id", "idempotency_header", "match pattern"),
        ("find_case.query", {"key=x&a": {"const": 1}}, "find_case.query", "match pattern"),
        ("auth.key_id", "k\r\nX-Admin: 1", "auth.hmac_sha256.key_id", "match pattern"),
        ("changed_cases.query", {"pageNo": {"const": 1}}, "changed_cases", "page_numbers"),
        ("coordinates", {"system": "EPSG:4490"}, "coordinates",
         "not a projected system in metres"),
        ("timezone", "Mars/Olympus", "", "unknown time zone"),
        ("auth", {"type": "hmac_sha256", "secret": "short"}, "auth.hmac_sha256.secret",
         "at least 16"),
        ("open_case.check.refused", [0], "open_case.check", "both success and refused"),
        ("unknown", 1, "unknown", "Extra inputs"),
    ],
)  # fmt: skip
def test_loader_refuses_huge_deep_and_inconsistent_mappings_by_name(
    path: str, value: Any, loc: str, in_message: str
) -> None:
    errors = loader_errors(_with(path, value))
    assert errors, "should be refused"
    assert any(where.startswith(loc) and in_message in message for where, message in errors), (
        errors[:3]
    )


# ---------------------------------------------------------------- reading replies

SETTINGS = MappedRestSettings.model_validate(BASE_DATA)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 6000) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
ids = st.one_of(st.from_regex(CASE_ID, fullmatch=True), st.integers(0, 10**12), json_values)
records = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "eventID": ids,
            "stateID": st.sampled_from(["1", "6", "9", "7", 6]) | json_values,
            "updateTime": st.sampled_from(["2026-11-21 10:00:00", "", 1795226400]) | json_values,
            "externalKey": st.sampled_from(["INC-1", "INC-2"]) | json_values,
            # What a possible match is judged by (the example's nearby paths).
            "createTime": st.sampled_from(["2026-11-21 10:00:07", "2026-11-21 25:00:00", 0])
            | json_values,
            "subTypeID": st.sampled_from(["06042", "06010", 6042]) | json_values,
            "coordinateX": st.sampled_from([119.3013, "119.3014", "x", 1e308]) | json_values,
            "coordinateY": st.sampled_from([26.078393, "26.0784", -91]) | json_values,
        },
    ),
    max_size=5,
)
egova_replies = st.fixed_dictionaries(
    {},
    optional={
        "code": st.sampled_from([0, "0", 1001, 5000, 2003, 42]) | json_values,
        "msg": json_values,
        "data": st.fixed_dictionaries(
            {},
            optional={"eventID": ids, "records": records | json_values,
                      "queryTime": json_values},
        ),
    },
)  # fmt: skip
reply_bodies = st.one_of(
    st.binary(max_size=100),
    json_values.map(lambda v: json.dumps(v).encode()),
    egova_replies.map(lambda v: json.dumps(v, ensure_ascii=False).encode()),
)
KINDS = {
    "open": {Failure.DOUBTFUL, Failure.REFUSED, Failure.TRANSIENT},
    "evidence": {Failure.DOUBTFUL, Failure.REFUSED, Failure.TRANSIENT, Failure.CASE_FINAL},
}


@settings(max_examples=250, deadline=None)
@given(body=reply_bodies, page=st.none() | st.integers(0, 5))
def test_any_reply_reads_as_a_result_or_a_platform_error(body: bytes, page: int | None) -> None:
    open_case = SETTINGS.open_case
    try:
        reply = read_checked(open_case.check, 200, body, "POST /x")
        case_id = read_case_id(reply, open_case.case_id, 200, "POST /x")
    except PlatformError as exc:
        assert exc.failure in KINDS["open"]
    else:
        assert CASE_ID.fullmatch(case_id)
        assert as_text(json.loads(body)["code"]) == "0"
    evidence = SETTINGS.add_evidence
    assert evidence is not None
    try:
        read_checked(evidence.check, 200, body, "POST /y", case_final=evidence.case_final)
    except PlatformError as exc:
        assert exc.failure in KINDS["evidence"]
        if exc.failure is Failure.CASE_FINAL:
            assert as_text(json.loads(body)["code"]) == "2003"
            assert exc.case_status == "closed"
    try:
        listed = read_page(SETTINGS.changed_cases, 200, body, "GET /z", page)
    except PlatformError as exc:
        assert exc.failure in KINDS["open"]
    else:
        assert all(CASE_ID.fullmatch(c.id) and c.status in {"accepted", "closed", "void"}
                   for c in listed.cases)  # fmt: skip
        assert listed.skipped >= 0 and listed.next_after in (None, str((page or 0) + 1))
    find = SETTINGS.find_case
    assert find is not None and find.nearby is not None
    where = PlatformCoordinates(SETTINGS.coordinates.system)
    near = MappedNearby.of(find.nearby, where, ZoneInfo(SETTINGS.timezone), case_body(), "06042")
    try:
        found = read_found(find, 200, body, "GET /q", "INC-1", page, near)
    except PlatformError as exc:
        assert exc.failure in KINDS["open"]
    else:
        assert found.case_id is None or CASE_ID.fullmatch(found.case_id)
        assert found.next_after in (None, str((page or 0) + 1)) and found.unreadable >= 0
        for candidate in found.candidates:  # within the bounds, never ours
            assert CASE_ID.fullmatch(candidate.id) and found.case_id is None
            assert candidate.distance_m <= 30 and abs(candidate.offset_s) <= 3600


@settings(max_examples=150, deadline=None)
@given(
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    address=st.text(max_size=300),
    grid=st.sampled_from(["", "350102001002003"]),
    class_code=st.sampled_from(list(CATALOG)),
    priority=st.sampled_from(list(Priority)),
    summary=st.text(max_size=600),
)
def test_any_case_becomes_the_mapped_body_or_a_refusal(
    lat: float,
    lon: float,
    address: str,
    grid: str,
    class_code: str,
    priority: Priority,
    summary: str,
) -> None:
    alert = replace(
        ALERT, location=Location(lat, lon, address, grid), class_code=class_code,
        priority=priority, summary=summary,
    )  # fmt: skip
    body = case_body(alert)
    try:
        sent = BUILDER.body(SETTINGS.open_case, body, "POST /r")
    except PlatformError as exc:
        assert grid == "" and exc.failure is Failure.REFUSED
        assert exc.reason == "POST /r body.cellID: the case has no location.grid_code"
        return
    json.dumps(sent, ensure_ascii=False, allow_nan=False)  # carries as JSON
    assert sent["subTypeID"] == SETTINGS.tables["sub_type"][class_code]
    assert sent["eventUrgent"] == {"critical": 1, "urgent": 2}.get(priority, 3)
    assert sent["address"] == (address or None)
    assert len(sent["eventDesc"]) <= 500 and body["description"].startswith(sent["eventDesc"][:-1])
    assert abs(sent["coordinateX"] - lon) < 0.01 and abs(sent["coordinateY"] - lat) < 0.01


BUILDER = RequestBuilder(SETTINGS)


@pytest.fixture(scope="module")
def one_adapter(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[EgovaIntakeFake, asyncio.Runner, MappedRestPlatform]]:
    """One intake and adapter for many hypothesis examples (an HTTP client is not free)."""
    with EgovaIntakeFake() as intake, asyncio.Runner() as runner:
        settings_ = MappedRestSettings.model_validate(example_data(intake.url))
        store = evidence_store(tmp_path_factory.mktemp("evidence"))
        platform = MappedRestPlatform(settings_, store.read_linked)
        yield intake, runner, platform
        runner.run(platform.aclose())


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(status=st.sampled_from([200, 201, 204, 301, 400, 409, 429, 500]), body=reply_bodies)
def test_the_adapter_over_http_gives_an_id_or_a_platform_error(
    one_adapter: tuple[EgovaIntakeFake, asyncio.Runner, MappedRestPlatform],
    status: int,
    body: bytes,
) -> None:
    intake, runner, platform = one_adapter
    intake.script(Forced(status, b"" if status == 204 else body))
    try:
        case = runner.run(platform.open_case(case_body(), "k"))
    except PlatformError as exc:
        assert exc.failure in KINDS["open"]
    else:
        assert 200 <= status < 300 and CASE_ID.fullmatch(case["id"])
