"""The Open311 adapter over real HTTP: against the bundled platform's Open311 face (every form
it sends and every reply it reads checked against the shared GeoReport v2 schemas), with the
outbox and status sync on top, and against a deviant server on loopback for what real
servers do instead of the spec. The reply readers and the form builder take any input."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from open311_checks import Open311Schemas, Recorder, check_exchanges, needs_schemas
from open311_deviant import DeviantServer
from pydantic import ValidationError
from scripted_platform import Reply
from served_app import ServedApp

import case_bridge.open311 as open311
from case_bridge import outbox
from case_bridge.case_model import open_case_body
from case_bridge.codes import ClassCatalog
from case_bridge.dispatcher import OutboxDispatcher
from case_bridge.open311 import Open311ConfigError, Open311Platform, Open311Settings
from case_bridge.open311_form import BodyError, request_form
from case_bridge.open311_replies import (
    AttributeSpec,
    definition_reply,
    error_reply,
    filed_reply,
    requests_reply,
    services_reply,
    token_reply,
)
from case_bridge.platform import Failure, PlatformError
from case_bridge.settings import CaseSettings, RetryPolicy
from case_bridge.status_sync import StatusSync
from domain import Alert, AlertState, CaseCommand, CommandKind, Location, Priority
from simulators.platform.api import create_app
from simulators.platform.open311 import ATTRIBUTES, OPEN311_PREFIX, Open311Options

TOKEN = "open311-token"
JURISDICTION = "citygw.local"
NATIVE = {"Authorization": f"Bearer {TOKEN}"}
CASES = CaseSettings()
CATALOG = ClassCatalog(CASES.local_classes)
FAST = RetryPolicy(initial_s=0.02, max_s=0.05)
EVERY_ATTRIBUTE = {a.code: a.code for a in ATTRIBUTES}


def command(incident: str, n: int = 1, kind: CommandKind = CommandKind.OPEN) -> CaseCommand:
    alert = Alert(
        key=f"WL-{n:03d}/water_high", source_id=f"WL-{n:03d}", rule_id="water_high",
        state=AlertState.FIRING, class_code="99101", priority=Priority.URGENT,
        location=Location(31.2989, 120.5853, "人民路 100 号", "320508001001001"),
        ts=int(time.time() * 1000) - 60_000, values={"level_cm": 31.5},
        summary="water over 30 cm", media=("http://media.example/WL.jpg",),
    )  # fmt: skip
    return CaseCommand(f"{incident}/{n}", incident, kind, alert, Priority.URGENT)


def body_of(incident: str) -> dict[str, Any]:
    return open_case_body(command(incident), CATALOG, CASES)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """The gateway's outbox in a real SQLite file."""
    connection = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
    outbox.ensure_schema(connection)
    yield connection
    connection.close()


@cache
def shared_schemas() -> Open311Schemas:
    return Open311Schemas()


@pytest.fixture(scope="module")
def schemas() -> Open311Schemas:
    return shared_schemas()


class Bundled:
    """The bundled platform with its Open311 face on loopback, every exchange recorded."""

    def __init__(self, folder: Path, options: Open311Options) -> None:
        self.recorder = Recorder(create_app(str(folder / "cases.db"), TOKEN, open311=options))
        self.served = ServedApp(self.recorder)
        self.url = self.served.url + OPEN311_PREFIX
        self.http = httpx.Client(base_url=self.served.url + "/api/v1", headers=NATIVE)

    def settings(self, **changes: Any) -> Open311Settings:
        return Open311Settings.model_validate(
            {"url": self.url, "api_key": TOKEN, "jurisdiction_id": JURISDICTION,
             "services": {"99101": "99101", "06042": "06042"},
             "attributes": EVERY_ATTRIBUTE, "timeout_s": 5, **changes}
        )  # fmt: skip

    def move(self, case_id: str, *steps: str) -> None:
        for step in steps:
            assert self.http.post(f"/cases/{case_id}/transition", json={"to": step}).is_success

    def cases(self) -> list[dict[str, Any]]:
        return self.http.get("/cases").json()["cases"]

    def posts(self) -> int:
        return sum(
            e.method == "POST" and e.path.startswith(OPEN311_PREFIX)
            for e in self.recorder.exchanges
        )


@pytest.fixture
def bundled(tmp_path: Path, schemas: Open311Schemas) -> Iterator[Bundled]:
    platform = Bundled(tmp_path, Open311Options(jurisdiction_id=JURISDICTION))
    yield platform
    platform.http.close()
    platform.served.close()
    assert check_exchanges(schemas, platform.recorder.exchanges, OPEN311_PREFIX, forms=True)


def failure(run: Callable, call: Coroutine[Any, Any, Any]) -> PlatformError:
    with pytest.raises(PlatformError) as caught:
        run(call)
    return caught.value


# --- against the bundled platform's face ----------------------------------------------


def test_files_finds_and_follows_a_case_on_the_bundled_face(run, bundled: Bundled) -> None:
    adapter = Open311Platform(bundled.settings(updated_after=True))
    run(adapter.start())
    body = body_of("INC-a")
    case = run(adapter.open_case(body, "INC-a/1"))
    [stored] = bundled.cases()
    assert case == {"id": stored["id"], "service_request_id": stored["id"],
                    "service_notice": "to be handled within 12 h (urgent)"}  # fmt: skip
    [post] = [e for e in bundled.recorder.exchanges if e.path.endswith("/requests.json")
              and e.method == "POST"]  # fmt: skip
    assert post.form() == [
        ("api_key", TOKEN), ("jurisdiction_id", JURISDICTION), ("service_code", "99101"),
        ("lat", "31.2989000"), ("long", "120.5853000"), ("address_string", "人民路 100 号"),
        ("description", body["description"] + "\n[citygw ref: INC-a INC-a/1]"),
        ("media_url", "http://media.example/WL.jpg"),
        ("attribute[external_key]", "INC-a"), ("attribute[device_ids]", "WL-001"),
        ("attribute[priority]", "urgent"), ("attribute[source]", "iot"),
        ("attribute[deadline]", body["deadline"]),
        ("attribute[grid_code]", "320508001001001"),
    ]  # fmt: skip
    assert (stored["external_key"], stored["priority"], stored["location"]["lat"]) == (
        "INC-a", "urgent", 31.2989,
    )  # fmt: skip
    assert run(adapter.find_case("INC-a", body)) == stored["id"]
    assert run(adapter.find_case("INC-b", body_of("INC-b"))) is None
    assert run(adapter.add_evidence(stored["id"], {"evidence": []}, "INC-a/2"))["status"] == "open"
    assert adapter.stats["evidence_not_sent"] == 1
    page = run(adapter.changed_cases(None, None))
    assert [(c.id, c.status) for c in page.cases] == [(stored["id"], "open")]
    bundled.move(stored["id"], "registered", "dispatched", "handling", "verifying", "closed")
    page = run(adapter.changed_cases(page.next_since, None))
    assert [(c.id, c.status) for c in page.cases] == [(stored["id"], "closed")]
    assert page.next_after is None
    closed_at = datetime.fromisoformat(bundled.cases()[0]["updated_at"])
    assert closed_at - datetime.fromisoformat(page.next_since) >= timedelta(seconds=5)
    final = failure(run, adapter.add_evidence(stored["id"], {"evidence": []}, "INC-a/3"))
    assert (final.failure, final.case_status) == (Failure.CASE_FINAL, "closed")
    assert bundled.posts() == 1
    run(adapter.aclose())


def test_the_key_in_the_description_alone_finds_the_case(run, bundled: Bundled) -> None:
    adapter = Open311Platform(bundled.settings(attributes={}))
    case = run(adapter.open_case(body_of("INC-d"), "INC-d/1"))
    assert bundled.cases()[0]["external_key"] is None  # no attribute carried it
    assert run(adapter.find_case("INC-d", body_of("INC-d"))) == case["id"]
    assert run(adapter.find_case("INC-d/1", body_of("INC-d"))) == case["id"]
    assert run(adapter.find_case("INC-", body_of("INC-d"))) is None  # whole keys only
    run(adapter.aclose())


def test_a_token_is_resolved_and_never_filed_twice(
    run, tmp_path: Path, schemas: Open311Schemas
) -> None:
    platform = Bundled(tmp_path, Open311Options(token_answers=True, token_delay_s=0.5))
    adapter = Open311Platform(platform.settings(token_poll_s=0.1))
    try:
        pending = failure(run, adapter.open_case(body_of("INC-t"), "INC-t/1"))
        assert (pending.failure, pending.may_have_acted, pending.retry_after_s) == (
            Failure.TRANSIENT, True, 0.1,
        )  # fmt: skip
        assert "has filed the request but assigned no id yet" in pending.reason
        deadline = time.monotonic() + 10
        while True:  # the outbox would retry: open_case, or find_case once marked
            try:
                case = run(adapter.find_case("INC-t", body_of("INC-t")))
                break
            except PlatformError as exc:
                assert exc.failure is Failure.TRANSIENT and time.monotonic() < deadline
                time.sleep(0.05)
        [stored] = platform.cases()
        assert case == stored["id"]
        assert platform.posts() == 1
    finally:
        run(adapter.aclose())
        platform.http.close()
        platform.served.close()
    check_exchanges(schemas, platform.recorder.exchanges, OPEN311_PREFIX, forms=True)


def test_start_up_names_what_the_server_lacks(run, bundled: Bundled) -> None:
    wrong = Open311Platform(bundled.settings(services={"99101": "99101", "06042": "06999"}))
    with pytest.raises(Open311ConfigError) as caught:
        run(wrong.start())
    assert (
        str(caught.value)
        .splitlines()[1]
        .startswith(
            "open311.services.06042: the server has no service_code '06999' (it offers: 01001,"
        )
    )
    # Started without the check (the server was down): only that class is refused.
    refused = failure(run, wrong.open_case(body_of("INC-x") | {"class_code": "06042"}, "X/1"))
    assert (refused.failure, refused.reason) == (Failure.REFUSED, str(caught.value).splitlines()[1])
    assert run(wrong.open_case(body_of("INC-y"), "INC-y/1"))["id"]
    unmapped = failure(run, wrong.open_case(body_of("INC-z") | {"class_code": "01001"}, "Z/1"))
    assert unmapped.reason == "class code '01001' has no service_code in open311.services"
    attributes = Open311Platform(bundled.settings(attributes={"external_key": "ref"}))
    expected = r"open311.attributes.external_key: service_code '06042' has no attribute 'ref'"
    with pytest.raises(Open311ConfigError, match=expected):
        run(attributes.start())
    for adapter in (wrong, attributes):
        run(adapter.aclose())


def test_status_of_filed_and_watched_ids_without_updated_after(
    run, bundled: Bundled, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(open311, "IDS_PER_QUERY", 2)
    native = bundled.http.post("/cases", json={
        "class_code": "06042", "deadline": "2026-11-22T08:00:00+08:00", "source": "video",
        "location": {"lat": 31.3, "lon": 120.6},
    }).json()["id"]  # fmt: skip
    adapter = Open311Platform(bundled.settings(), watched_ids=lambda: [native, "not/an/id"])
    filed = [run(adapter.open_case(body_of(f"INC-{n}"), f"INC-{n}/1"))["id"] for n in range(3)]
    bundled.move(filed[1], "void")
    first = run(adapter.changed_cases(None, None))
    second = run(adapter.changed_cases(None, first.next_after))
    listed = [(c.id, c.status) for c in first.cases + second.cases]
    assert listed == sorted([(native, "open"), (filed[0], "open"), (filed[1], "closed"),
                             (filed[2], "open")])  # fmt: skip
    assert (first.next_after, second.next_after) == (listed[1][0], None)
    asked = [e.query for e in bundled.recorder.exchanges if "service_request_id" in e.query]
    assert len(asked) == 2
    again = run(adapter.changed_cases(None, None))  # the void one is no longer followed
    third = run(adapter.changed_cases(None, again.next_after))
    assert filed[1] not in [c.id for c in again.cases + third.cases]
    run(adapter.aclose())


def test_the_outbox_and_status_sync_through_the_open311_face(
    run, bundled: Bundled, conn: sqlite3.Connection
) -> None:
    adapter = Open311Platform(bundled.settings(updated_after=True))
    run(adapter.start())
    closed: list[tuple[str, str]] = []
    handed_back: list[str] = []
    dispatcher = OutboxDispatcher(
        conn, adapter, CATALOG, CASES, FAST, lambda i, c: handed_back.append(c.command_id)
    )
    sync = StatusSync(
        conn, adapter, 1.0, lambda incident, status: closed.append((incident, status))
    )
    now_ms = int(time.time() * 1000)
    outbox.enqueue(conn, command("INC-o"), now_ms)
    outbox.enqueue(conn, command("INC-o", 2, CommandKind.ATTACH), now_ms)
    run(dispatcher.drain_once())
    [case] = bundled.cases()
    assert outbox.case_for(conn, "INC-o") == case["id"]
    assert outbox.counts(conn)["pending"] == 0
    bundled.move(case["id"], "void")
    run(sync.sync_once())
    assert closed == [("INC-o", "closed")]
    outbox.enqueue(conn, command("INC-o", 3, CommandKind.ATTACH), now_ms)
    run(dispatcher.drain_once())
    assert handed_back == ["INC-o/3"]
    assert bundled.posts() == 1
    run(adapter.aclose())


# --- against a deviant server -----------------------------------------------------------


@pytest.fixture
def deviant() -> Iterator[DeviantServer]:
    with DeviantServer() as server:
        yield server


def deviant_adapter(
    server: DeviantServer, watched_ids: Callable[[], list[str]] | None = None, **changes: Any
) -> Open311Platform:
    return Open311Platform(Open311Settings.model_validate(
        {"url": server.url, "api_key": "k", "services": {"99101": "001", "06042": "002"},
         "timeout_s": 2, "token_poll_s": 0.1, **changes}
    ), watched_ids)  # fmt: skip


def test_lenient_where_a_reply_has_one_reading(run, deviant: DeviantServer) -> None:
    deviant.script("GET", "/services.json", Reply(200, {"services": {"service": [
        {"service_code": 1, "service_name": "", "metadata": "true", "type": ""},
        {"service_code": "001", "service_name": "Flooding", "metadata": "false"},
        {"service_code": "002", "metadata": False, "type": "Realtime"},
        {"service_code": "003", "type": "teleport"},
    ]}}))  # fmt: skip
    adapter = deviant_adapter(deviant, attributes={})
    run(adapter.start())
    deviant.script(
        "POST",
        "/requests.json",
        Reply(201, {"service_request_id": 12345, "token": "", "account_id": ""}),
        Reply(200, {"service_requests": {"request": [{"service_request_id": "7"}]}}),
    )
    assert run(adapter.open_case(body_of("INC-1"), "INC-1/1"))["id"] == "12345"
    assert run(adapter.open_case(body_of("INC-2"), "INC-2/1"))["id"] == "7"
    assert [p.form[2] for p in deviant.posts()] == [("lat", "31.2989000")] * 2  # no jurisdiction
    now = "2026-11-21T08:00:00+08:00"
    deviant.script("GET", "/requests.json", Reply(200, [
        {"service_request_id": 12345, "status": "Closed", "updated_datetime": "",
         "requested_datetime": now},
        {"service_request_id": "7", "status": "in_progress", "requested_datetime": now},
        {"status": "closed"},
        "garbage",
    ]))  # fmt: skip
    page = run(adapter.changed_cases(None, None))
    assert [(c.id, c.status, c.updated_at) for c in page.cases] == [("12345", "closed", now)]
    assert page.skipped == 3
    run(adapter.aclose())


def test_a_token_without_an_endpoint_to_resolve_it_is_refused(run, deviant: DeviantServer) -> None:
    adapter = deviant_adapter(deviant)
    token = [{"service_request_id": "", "token": "tk1"}]
    deviant.script("POST", "/requests.json", Reply(200, token), Reply(200, token))
    deviant.script("GET", "/tokens/tk1.json",
                   Reply(404, [{"code": 404, "description": "token not found"}]),
                   Reply(200, {"token": "tk1", "service_request_id": 99}))  # fmt: skip
    pending = failure(run, adapter.open_case(body_of("INC-1"), "INC-1/1"))
    assert (pending.failure, pending.may_have_acted) == (Failure.TRANSIENT, True)
    assert run(adapter.open_case(body_of("INC-1"), "INC-1/1"))["id"] == "99"
    assert len(deviant.posts()) == 1
    missing = failure(run, adapter.open_case(body_of("INC-2"), "INC-2/1"))  # default: 404 HTML
    assert (missing.failure, missing.may_have_acted) == (Failure.REFUSED, True)
    assert missing.reason == (
        "HTTP 404 on GET tokens/tk1.json: <html>Not Found</html> (the server answered a token"
        " but does not serve tokens/{token}.json)"
    )
    run(adapter.aclose())


@pytest.mark.parametrize(
    ("reply", "kind", "acted", "reason"),
    [
        (Reply(400, [{"code": "SC01", "description": "service_code 9 unknown"},
                     {"code": 400, "description": "lat missing"}]), Failure.REFUSED, False,
         "HTTP 400 on POST requests.json: SC01: service_code 9 unknown; 400: lat missing"),
        (Reply(403, {"errors": {"error": "bad key"}}), Failure.TRANSIENT, False,
         "HTTP 403 on POST requests.json: bad key"),
        (Reply(404, {"detail": "Not Found"}), Failure.REFUSED, False,
         "HTTP 404 on POST requests.json: Not Found"),
        (Reply(500, b"CRM is down", {"Content-Type": "text/plain"}), Failure.TRANSIENT, False,
         "HTTP 500 on POST requests.json: CRM is down"),
        (Reply(504, b""), Failure.TRANSIENT, True, "HTTP 504 on POST requests.json: "),
        (Reply(501, {"message": "POST not implemented"}), Failure.REFUSED, False,
         "HTTP 501 on POST requests.json: POST not implemented"),
        (Reply(302, b"", {"Location": "/login"}), Failure.DOUBTFUL, True,
         "HTTP 302 on POST requests.json: "),
        (Reply(200, b"<?xml version='1.0'?><service_requests/>"), Failure.DOUBTFUL, True,
         "HTTP 200 on POST requests.json is not JSON (only the .json format is read): "
         "b\"<?xml version='1.0'?><service_requests/>\""),
        (Reply(200, []), Failure.DOUBTFUL, True,
         "HTTP 200 on POST requests.json: no request in the answer: b'[]'"),
        (Reply(200, [{"service_request_id": "1"}, {"service_request_id": "2"}]),
         Failure.DOUBTFUL, True, "HTTP 200 on POST requests.json: more than 1 items"),
        (Reply(201, [{"service_request_id": "a/b"}]), Failure.DOUBTFUL, True,
         "HTTP 201 on POST requests.json: unusable id 'a/b'"),
        (Reply(200, [{"service_notice": "thanks"}]), Failure.DOUBTFUL, True,
         "HTTP 200 on POST requests.json: neither service_request_id nor token:"
         " {'service_notice': 'thanks'}"),
    ],
)  # fmt: skip
def test_what_a_filing_answer_means(
    run, deviant: DeviantServer, reply: Reply, kind: Failure, acted: bool, reason: str
) -> None:
    adapter = deviant_adapter(deviant)
    deviant.script("POST", "/requests.json", reply)
    error = failure(run, adapter.open_case(body_of("INC-1"), "INC-1/1"))
    assert (error.failure, error.may_have_acted, error.reason) == (kind, acted, reason)
    run(adapter.aclose())


def test_retry_after_and_missing_endpoints(run, deviant: DeviantServer) -> None:
    adapter = deviant_adapter(deviant)
    deviant.script("GET", "/services.json", Reply(429, b"", {"Retry-After": "7"}),
                   Reply(404, b"<html>Not Found</html>"))  # fmt: skip
    busy = failure(run, adapter.start())
    assert (busy.failure, busy.retry_after_s) == (Failure.TRANSIENT, 7.0)
    missing = failure(run, adapter.start())
    assert (missing.failure, missing.reason) == (
        Failure.REFUSED,
        "HTTP 404 on GET services.json: <html>Not Found</html>",
    )
    assert run(adapter.changed_cases(None, None)).cases == []  # id mode: none filed, none asked
    deviant.script("GET", "/requests.json", Reply(501, b"Not Implemented"))
    following = deviant_adapter(deviant, updated_after=True)
    listing = failure(run, following.changed_cases(None, None))
    assert (listing.failure, listing.reason) == (
        Failure.REFUSED,
        "HTTP 501 on GET requests.json: Not Implemented",
    )
    assert [s.path for s in deviant.seen] == ["/services.json"] * 2 + ["/requests.json"]
    for each in (adapter, following):
        run(each.aclose())


def test_a_server_that_files_and_then_times_out_gets_the_case_once(
    run, deviant: DeviantServer, conn: sqlite3.Connection
) -> None:
    adapter = deviant_adapter(deviant, timeout_s=0.3)
    dispatcher = OutboxDispatcher(conn, adapter, CATALOG, CASES, FAST, lambda i, c: None)
    outbox.enqueue(conn, command("INC-late"), int(time.time() * 1000))
    deviant.hold.clear()  # the server files, then its answer is late
    run(dispatcher.drain_once())
    assert (outbox.counts(conn)["pending"], outbox.case_for(conn, "INC-late")) == (1, None)
    deviant.hold.set()
    while outbox.counts(conn)["pending"]:
        time.sleep(0.03)  # the row's backoff (FAST: at most 50 ms)
        run(dispatcher.drain_once())
    assert outbox.case_for(conn, "INC-late") == "R1"
    assert len(deviant.posts()) == 1 and len(deviant.filed) == 1
    assert dispatcher.stats["found_by_lookup"] == 1
    run(adapter.aclose())


def test_a_lookup_that_cannot_see_everything_does_not_say_not_there(
    run, deviant: DeviantServer
) -> None:
    adapter = deviant_adapter(deviant, listing_cap=2)
    body = body_of("INC-9")
    for n in range(2):
        run(adapter.open_case(body_of(f"INC-{n}"), f"INC-{n}/1"))
    blind = failure(run, adapter.find_case("INC-9", body))
    assert blind.failure is Failure.DOUBTFUL
    assert blind.reason.startswith("GET requests.json: 'INC-9' not among 2 requests listed")
    deviant.script("GET", "/requests.json", Reply(200, [{"service_request_id": "x/y"}]))
    assert failure(run, adapter.find_case("INC-9", body)).failure is Failure.DOUBTFUL
    [lookup] = [s for s in deviant.seen if s.method == "GET" and s.path == "/requests.json"][:1]
    assert lookup.query["service_code"] == "001"
    assert lookup.query["start_date"] < lookup.query["end_date"]
    run(adapter.aclose())


# --- any reply, any body -------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=16,
)
fields = st.sampled_from(
    ["service_request_id", "token", "status", "service_code", "updated_datetime",
     "requested_datetime", "description", "attributes", "metadata", "type", "code",
     "required", "service_requests", "request", "lat", "long"]
)  # fmt: skip
field_values = st.one_of(
    json_values,
    st.sampled_from(["", "R1", 7, "closed", "Open", "2026-11-21T08:00:00Z", "001", "31.29", 1e309]),
)
shaped = st.recursive(
    st.dictionaries(fields, field_values, max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(fields, inner, max_size=2),
    max_leaves=8,
)
replies = st.one_of(
    st.binary(max_size=100), st.one_of(json_values, shaped).map(lambda v: json.dumps(v).encode())
)


@settings(max_examples=300, deadline=None)
@given(status=st.integers(100, 599), body=replies, retry_after=st.none() | st.text(max_size=12))
def test_reading_any_reply_gives_a_result_or_a_platform_error(
    status: int, body: bytes, retry_after: str | None
) -> None:
    error = error_reply(status, body, "X", retry_after)
    assert isinstance(error, PlatformError) and len(error.reason) <= 600
    readers = [
        lambda: services_reply(status, body, "X"),
        lambda: definition_reply(status, body, "X", "001"),
        lambda: filed_reply(status, body, "X"),
        lambda: token_reply(status, body, "X"),
        lambda: requests_reply(status, body, "X"),
    ]
    for read in readers:
        try:
            result = read()
        except PlatformError as exc:
            assert exc.failure is Failure.DOUBTFUL
            continue
        if isinstance(result, tuple) and isinstance(result[0], list):
            assert all(r.status in (None, "open", "closed") for r in result[0])
            for r in result[0]:  # a place is both coordinates, finite and in range, or none
                assert (r.lat is None) == (r.lon is None)
                assert r.lat is None or (abs(r.lat) <= 90 and abs(r.lon or 0) <= 180)


locations = st.fixed_dictionaries({
    "lat": st.one_of(st.floats(-95, 95), st.integers(-100, 100), st.none(), st.text(max_size=3)),
    "lon": st.one_of(st.floats(-190, 190), st.integers(-200, 200), st.booleans()),
    "address": st.one_of(st.text(max_size=30), st.none(), st.integers()),
})  # fmt: skip
case_bodies = st.fixed_dictionaries(
    {"location": st.one_of(locations, json_values)},
    optional={
        "description": st.one_of(st.text(max_size=5000), st.integers()),
        "external_key": st.one_of(st.sampled_from(["INC-1", "a b", "x]"]), st.text(max_size=5)),
        "priority": st.one_of(st.sampled_from(["urgent", ""]), json_values),
        "evidence": st.lists(st.fixed_dictionaries({}, optional={
            "source_id": st.text(max_size=8), "media": st.lists(st.text(max_size=20))}),
            max_size=3),
        "media_url": st.sampled_from(["http://m/a.jpg", "ftp://x", ""]),
    },
)  # fmt: skip


@needs_schemas
@settings(max_examples=150, deadline=None)
@given(body=case_bodies, key=st.sampled_from(["INC-1/1", "k", "bad key"]))
def test_any_case_body_becomes_a_valid_form_or_a_named_refusal(
    body: dict[str, Any], key: str
) -> None:
    defined = {code: AttributeSpec(code, False, True) for code in EVERY_ATTRIBUTE}
    try:
        form = request_form(
            body, key, service_code="99101", api_key="k", jurisdiction_id=JURISDICTION,
            attributes=EVERY_ATTRIBUTE, defined=defined, description_chars=4000,
        )  # fmt: skip
    except BodyError as exc:
        assert str(exc).split(":")[0] in ("location", "location.lat", "location.lon",
                                          "location.address", "description", "priority") or (
            str(exc).startswith("key ")
        )  # fmt: skip
        return
    shared_schemas().check_form(form)
    description = dict(form)["description"]
    assert len(description) <= 4000 and description.endswith("]")


setting_values = st.one_of(
    json_values,
    st.sampled_from(["http://127.0.0.1:9/v2", "secret-key", {"99101": "001"}, {"9910": "001"},
                     {"99101": "a b"}, {"external_key": "k", "class_code": "k"}, 0, 5.0]),
)  # fmt: skip
setting_names = st.sampled_from(
    ["url", "api_key", "services", "attributes", "jurisdiction_id", "timeout_s",
     "listing_cap", "description_chars", "updated_after", "adapter", "token"]
)  # fmt: skip
VALID = {"url": "http://127.0.0.1:9/v2", "api_key": "secret-key", "services": {"99101": "001"}}


@settings(max_examples=200, deadline=None)
@given(changes=st.dictionaries(setting_names, setting_values, max_size=4))
def test_any_settings_are_a_model_or_errors_naming_the_field(changes: dict[str, Any]) -> None:
    try:
        model = Open311Settings.model_validate(VALID | changes)
    except ValidationError as exc:
        assert all(error["loc"][0] in changes for error in exc.errors())
        return
    # The key is never shown (unless the same text is also a field that is shown).
    secret = model.api_key.get_secret_value()
    shown_elsewhere = any(v == secret for k, v in (VALID | changes).items() if k != "api_key")
    assert secret not in repr(model) or shown_elsewhere
    assert model.adapter == "open311"


def test_settings_refuse_what_cannot_be_sent() -> None:
    for changes, field in [
        ({"services": {"9910": "001"}}, "services.9910.[key]"),
        ({"services": {"99101": "a/b"}}, "services.99101"),
        ({"services": {}}, "services"),
        ({"attributes": {"external_key": "k", "class_code": "k"}}, "attributes"),
        ({"attributes": {"colour": "c"}}, "attributes.colour.[key]"),
        ({"token": "x"}, "token"),
    ]:
        with pytest.raises(ValidationError) as caught:
            Open311Settings.model_validate(VALID | changes)
        assert [".".join(map(str, e["loc"])) for e in caught.value.errors()] == [field]
