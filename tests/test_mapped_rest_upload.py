"""Evidence files uploaded to a mapped-REST platform, with the shipped eGova example, against
the stand-in intake over real loopback HTTP (``tests/egova_intake.py``): pictures written by
the gateway's own evidence store, read back through its reader, checked against their
recorded hash, uploaded as multipart/form-data (the intake parses it strictly, checks the
file's size and SHA-256 against the form and the HMAC over the body as received), and their
ids filed with the case. Failures through the real outbox with exact counts; the settings
section under hypothesis.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import numpy as np
import pytest
import test_mapped_rest
import test_outbox_dispatch
from egova_intake import TOKEN, EgovaIntakeFake, Forced, Uploaded
from evidence_pictures import scene
from hypothesis import given, settings
from hypothesis import strategies as st
from test_mapped_rest import (
    ALERT,
    COMMAND,
    Connect,
    case_body,
    example_data,
    failure_of,
    loader_errors,
)
from test_outbox_dispatch import Run

from case_bridge import outbox
from case_bridge.case_model import evidence_body
from case_bridge.mapped_rest import MappedRestPlatform
from case_bridge.mapped_rest_settings import MappedRestSettings
from case_bridge.platform import Failure
from case_bridge.settings import CaseSettings
from domain import Alert, CaseCommand, CommandKind, Priority
from gateway.evidence import EvidenceWriter

NAME = "bin-0042_bin_full_1795226400000.jpg"  # the store names pictures by alert key and ts
BEFORE = "bin-0042_bin_full_1795226400000_before.jpg"
UPLOAD = ("POST", "/eUrbanMIS/api/file/upload")
REPORT = ("POST", "/eUrbanMIS/api/event/report")
SUPPLEMENT = ("POST", "/eUrbanMIS/api/event/supplement")


# The adapter tests' fixtures: an intake, an event loop, the evidence store, adapters; and
# the outbox tests' SQLite outbox.
intake, runner, store, connect = (
    test_mapped_rest.intake, test_mapped_rest.runner, test_mapped_rest.store,
    test_mapped_rest.connect,
)  # fmt: skip
conn = test_outbox_dispatch.conn


def pictured(store: EvidenceWriter, drawn: np.ndarray, before: np.ndarray | None) -> Alert:
    """A video alert with its pictures written by the gateway's evidence store."""
    alert = replace(ALERT, origin="video", part_code="")
    return replace(alert, media=store.save(alert, drawn, before, int(time.time())))


def flat(height: int = 120, width: int = 160) -> np.ndarray:
    """A flat grey picture: a small JPEG (noise, ``scene``, is a large one)."""
    return np.full((height, width, 3), 128, dtype=np.uint8)


def link(alert: Alert, index: int) -> str:
    return alert.media[index].partition("#")[0]


def on_disk(store: EvidenceWriter, name: str) -> bytes:
    return (store.folder / name).read_bytes()


def form(data: bytes, name: str, **more: str) -> dict[str, str]:
    """The upload form the example must send for a file."""
    return {
        "fileName": name,
        "contentType": "image/jpeg",
        "fileSize": str(len(data)),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bizType": "event",
        **more,
    }


def test_a_case_uploads_its_pictures_signed_and_files_their_ids(
    connect: Connect, intake: EgovaIntakeFake, runner: asyncio.Runner, store: EvidenceWriter
) -> None:
    alert = pictured(store, scene(1, 120, 160), flat())
    platform = connect(example_data(intake.url))
    case = runner.run(platform.open_case(case_body(alert), "INC-0042/1"))
    assert case == {"id": "GL20261121000001"}
    assert [(r.method, r.target) for r in intake.received] == [UPLOAD, UPLOAD, REPORT]
    assert all(r.authorised for r in intake.received)  # the HMAC over the multipart body
    assert intake.received[0].headers["content-type"].startswith("multipart/form-data; boundary=")
    drawn, before = on_disk(store, NAME), on_disk(store, BEFORE)
    assert intake.files == {
        "F000001": Uploaded(form(drawn, NAME), NAME, "image/jpeg", drawn),
        "F000002": Uploaded(form(before, BEFORE), BEFORE, "image/jpeg", before),
    }
    sent = json.loads(intake.received[-1].body)
    assert sent["attachIDs"] == "F000001,F000002"
    assert sent["extInfo"] == {"externalKey": "INC-0042"}  # no link: both went as files
    assert intake.received[-1].body.endswith(b',"attachIDs":"F000001,F000002"}')
    assert platform.upload_stats == {"uploaded": 2}


@pytest.mark.parametrize(
    ("change", "linked", "reason"),
    [("max_file_bytes", 0, "too_large"), ("max_files", 1, "over_max_files")],
)
def test_a_file_past_the_platforms_limits_goes_as_its_link(
    connect: Connect,
    intake: EgovaIntakeFake,
    runner: asyncio.Runner,
    store: EvidenceWriter,
    caplog: pytest.LogCaptureFixture,
    change: str,
    linked: int,
    reason: str,
) -> None:
    alert = pictured(store, scene(1, 120, 160), flat())
    drawn, before = on_disk(store, NAME), on_disk(store, BEFORE)
    assert len(before) < 1024 < len(drawn)
    data = example_data(intake.url)
    data["upload"][change] = {"max_file_bytes": len(drawn) - 1, "max_files": 1}[change]
    platform = connect(data)
    with caplog.at_level(logging.WARNING, "case_bridge.mapped_rest"):
        runner.run(platform.open_case(case_body(alert), "INC-0042/1"))
    uploaded = (before, BEFORE) if linked == 0 else (drawn, NAME)
    assert list(intake.files.values()) == [
        Uploaded(form(*uploaded), uploaded[1], "image/jpeg", uploaded[0])
    ]
    sent = json.loads(intake.received[-1].body)
    assert sent["attachIDs"] == "F000001"
    assert sent["extInfo"] == {"externalKey": "INC-0042", "photoUrl": link(alert, linked)}
    assert platform.upload_stats == {"uploaded": 1, f"linked_{reason}": 1}
    [record] = caplog.records
    assert f"({reason}," in record.getMessage() and "its link is sent" in record.getMessage()
    assert "sig=" not in record.getMessage()  # a signed link is a credential: name only


def test_evidence_for_a_filed_case_uploads_into_it_until_it_is_closed(
    connect: Connect, intake: EgovaIntakeFake, runner: asyncio.Runner, store: EvidenceWriter
) -> None:
    platform = connect(example_data(intake.url))
    case_id = runner.run(platform.open_case(case_body(), "INC-0042/1"))["id"]
    alert = pictured(store, flat(), None)
    attach = CaseCommand("INC-0042/2", "INC-0042", CommandKind.ATTACH, alert, Priority.URGENT)
    body = evidence_body(attach, CaseSettings())
    assert runner.run(platform.add_evidence(case_id, body, "INC-0042/2")) == {"id": case_id}
    data = on_disk(store, NAME)
    assert intake.files == {
        "F000001": Uploaded(form(data, NAME, eventID=case_id), NAME, "image/jpeg", data)
    }
    assert intake.supplements == [
        {"eventID": case_id, "supplementDesc": ALERT.summary, "attachIDs": "F000001"}
    ]
    intake.set_state(case_id, "6")  # 结案: the upload itself is answered 2003
    error = failure_of(runner, platform.add_evidence(case_id, body, "INC-0042/3"))
    assert (error.failure, error.case_status) == (Failure.CASE_FINAL, "closed")
    assert [(r.method, r.target) for r in intake.received] == [REPORT, UPLOAD, SUPPLEMENT, UPLOAD]
    assert (len(intake.files), len(intake.supplements)) == (1, 1)


def test_a_picture_without_a_recorded_hash_goes_as_its_link(
    connect: Connect, intake: EgovaIntakeFake, runner: asyncio.Runner
) -> None:
    older = replace(ALERT, origin="video", media=("https://gw.example.cn/e/7f3a.jpg",))
    platform = connect(example_data(intake.url))
    runner.run(platform.open_case(case_body(older), "INC-0042/1"))
    sent = json.loads(intake.received[0].body)
    assert sent["extInfo"]["photoUrl"] == "https://gw.example.cn/e/7f3a.jpg"
    assert "attachIDs" not in sent and intake.files == {}
    assert platform.upload_stats == {"linked_unhashed": 1}


def test_a_changed_or_missing_file_is_refused_before_anything_is_sent(
    connect: Connect, intake: EgovaIntakeFake, runner: asyncio.Runner, store: EvidenceWriter
) -> None:
    alert = pictured(store, flat(), None)
    recorded = on_disk(store, NAME)
    platform = connect(example_data(intake.url))
    changed = b"\xff\xd8 not the picture"
    (store.folder / NAME).write_bytes(changed)
    error = failure_of(runner, platform.open_case(case_body(alert), "INC-0042/1"))
    assert (error.failure, error.may_have_acted) == (Failure.REFUSED, False)
    assert error.reason == (
        f"evidence file {NAME} is not the one recorded (18 bytes, sha256"
        f" {hashlib.sha256(changed).hexdigest()[:16]}…; recorded"
        f" {len(recorded)} bytes, {hashlib.sha256(recorded).hexdigest()[:16]}…): not uploaded"
    )
    (store.folder / NAME).unlink()
    error = failure_of(runner, platform.open_case(case_body(alert), "INC-0042/1"))
    assert error.reason == (
        f"evidence file {NAME} is not in the gateway's store (removed by retention?):"
        " cannot upload it"
    )
    assert intake.received == []
    assert platform.upload_stats == {"refused_changed": 1, "refused_missing": 1}


@pytest.mark.parametrize(
    ("forced", "failure", "in_reason"),
    [
        (Forced(503, b"busy"), Failure.TRANSIENT, "HTTP 503"),
        (Forced(cut=True), Failure.TRANSIENT, "RemoteProtocolError"),
        (Forced(200, {"code": 5000, "msg": "系统繁忙"}), Failure.TRANSIENT, "系统繁忙"),
        (Forced(200, {"code": 1001, "msg": "参数错误"}), Failure.REFUSED, "参数错误"),
        (Forced(200, b"<html>ok</html>"), Failure.DOUBTFUL, "not JSON"),
        (Forced(200, {"code": 0, "data": {}}), Failure.REFUSED, "at data.fileID: nothing there"),
        (Forced(200, {"code": 0, "data": {"fileID": "F\n1"}}), Failure.REFUSED, "'F\\n1'"),
        (Forced(200, {"code": 0, "data": {"fileID": ["F1"]}}), Failure.REFUSED, "['F1']"),
        (Forced(200, {"code": 0, "data": {"fileID": "F" * 513}}), Failure.REFUSED, "FFF..."),
    ],
)
def test_a_failed_upload_fails_the_filing_and_says_the_case_was_not_sent(
    connect: Connect,
    intake: EgovaIntakeFake,
    runner: asyncio.Runner,
    store: EvidenceWriter,
    forced: Forced,
    failure: Failure,
    in_reason: str,
) -> None:
    alert = pictured(store, flat(), None)
    platform = connect(example_data(intake.url))
    intake.script(forced)
    error = failure_of(runner, platform.open_case(case_body(alert), "INC-0042/1"))
    assert (error.failure, error.may_have_acted) == (failure, False)
    assert error.reason.startswith(f"uploading evidence file {NAME}: ")
    assert in_reason in error.reason
    assert intake.events == {} and intake.files == {}
    assert runner.run(platform.open_case(case_body(alert), "INC-0042/1")) == {
        "id": "GL20261121000001"
    }
    assert json.loads(intake.received[-1].body)["attachIDs"] == "F000001"


@pytest.fixture
def outbox_run(
    conn: sqlite3.Connection, connect: Connect, intake: EgovaIntakeFake
) -> Callable[[Alert], Run]:
    """``outbox_run(alert)``: an open command for the alert and an attach after it queued
    (incident INC-a), and a dispatcher on the example's adapter to drain them."""

    def start(alert: Alert) -> Run:
        opened = replace(COMMAND, command_id="INC-a/1", incident_id="INC-a", alert=alert)
        attach = replace(opened, command_id="INC-a/2", kind=CommandKind.ATTACH)
        for command in (opened, attach):
            outbox.enqueue(conn, command, int(time.time() * 1000))
        return Run(conn, connect(example_data(intake.url)))

    return start


def test_through_the_outbox_failed_uploads_are_retried_and_the_case_filed_once(
    outbox_run: Callable[[Alert], Run], intake: EgovaIntakeFake, runner: asyncio.Runner,
    store: EvidenceWriter,
) -> None:  # fmt: skip
    gateway = outbox_run(pictured(store, scene(1, 120, 160), flat()))
    # A 503 on the first upload; then the line cut after the platform stored the file.
    intake.script(Forced(503, b"busy"), Forced(cut=True, act=True))
    runner.run(gateway.drain_until_quiet())
    [event_id] = intake.events
    assert intake.events[event_id]["attachIDs"] == "F000002,F000003"  # F000001: orphaned
    assert [s["attachIDs"] for s in intake.supplements] == ["F000004,F000005"]
    assert len(intake.files) == 5
    assert gateway.delivered == [f"INC-a/1->{event_id}", f"INC-a/2->{event_id}"]
    stats = gateway.dispatcher.stats
    assert (stats["retries"], stats["lookups"], stats["parked"]) == (2, 0, 0)
    assert gateway.platform.upload_stats == {"uploaded": 4}  # type: ignore[attr-defined]


def test_through_the_outbox_an_upload_reply_without_a_file_id_parks_the_case(
    outbox_run: Callable[[Alert], Run], intake: EgovaIntakeFake, runner: asyncio.Runner,
    store: EvidenceWriter, conn: sqlite3.Connection,
) -> None:  # fmt: skip
    gateway = outbox_run(pictured(store, flat(), None))
    intake.script(Forced(200, {"code": 0, "msg": "success", "data": {"url": "/f/1"}}))
    runner.run(gateway.drain_until_quiet())
    rows = conn.execute("SELECT command_id, state, last_error FROM outbox ORDER BY seq")
    assert rows.fetchall() == [
        ("INC-a/1", "parked", f"uploading evidence file {NAME}: HTTP 200 on POST"
         " /api/file/upload without a readable file id at data.fileID: nothing there"),
        ("INC-a/2", "parked", "no case for this incident: its open command was parked"),
    ]  # fmt: skip
    assert intake.events == {} and gateway.dispatcher.stats["parked"] == 2
    assert [(r.method, r.target) for r in intake.received] == [UPLOAD]


@pytest.mark.parametrize("auth", ["bearer", "api_key"])
def test_uploads_carry_bearer_and_api_key_auth(
    connect: Connect, runner: asyncio.Runner, store: EvidenceWriter, auth: str
) -> None:
    alert = pictured(store, flat(), None)
    with EgovaIntakeFake(auth=auth) as intake:
        platform = connect(example_data(intake.url, auth={"type": auth, "secret": TOKEN}))
        runner.run(platform.open_case(case_body(alert), "k"))
        assert [(r.method, r.target, r.authorised) for r in intake.received] == [
            (*UPLOAD, True),
            (*REPORT, True),
        ]
        assert "x-signature" not in intake.received[0].headers
        assert list(intake.files) == ["F000001"]


def test_a_wrong_secret_fails_the_upload_and_files_nothing(
    connect: Connect, intake: EgovaIntakeFake, runner: asyncio.Runner, store: EvidenceWriter
) -> None:
    data = example_data(intake.url)
    data["auth"]["secret"] = "not-the-shared-secret"
    error = failure_of(
        runner, connect(data).open_case(case_body(pictured(store, flat(), None)), "k")
    )
    assert (error.failure, error.may_have_acted) == (Failure.TRANSIENT, False)
    assert "HTTP 401" in error.reason
    assert (len(intake.received), intake.files, intake.events) == (1, {}, {})


def test_uploads_need_the_gateways_reader(intake: EgovaIntakeFake) -> None:
    settings_ = MappedRestSettings.model_validate(example_data(intake.url))
    with pytest.raises(ValueError, match="upload: the adapter needs the gateway's evidence reader"):
        MappedRestPlatform(settings_)


def test_the_gateways_reader_reads_only_its_own_links(store: EvidenceWriter) -> None:
    alert = pictured(store, flat(), None)
    data = on_disk(store, NAME)
    signed = link(alert, 0)
    assert signed.startswith("https://gw.example.cn/evidence/") and "?exp=" in signed
    assert store.read_linked(signed) == data
    assert store.read_linked(f"/evidence/{NAME}") == data
    assert store.read_linked(f"https://gw.example.cn/base/evidence/{NAME}?exp=1&sig=0") == data
    (store.folder.parent / "secret.jpg").write_bytes(b"x")
    for other in (
        f"https://gw.example.cn/other/{NAME}",
        "/evidence/..%2Fsecret.jpg",
        "/evidence/../secret.jpg",
        f"/evidence/{NAME}/x",
        "/evidence/",
        "not a url at all",
    ):
        assert store.read_linked(other) is None, other


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> bytes:
    """A multipart/form-data body written by hand: (name, file name or None, bytes)."""
    body = b""
    for name, filename, data in parts:
        head = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            head += f'; filename="{filename}"\r\nContent-Type: image/jpeg'
        body += f"--{boundary}\r\n{head}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


PICTURE = b"\xff\xd8 a picture \r\n--b0undar \xff\xd9"
GOOD_FORM = [(k, None, v.encode()) for k, v in form(PICTURE, "p.jpg").items()]
GOOD_FILE = ("file", "p.jpg", PICTURE)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (multipart([*GOOD_FORM, GOOD_FILE]), 0),
        (multipart([*GOOD_FORM[1:], GOOD_FILE]), 1001),  # a field missing
        (multipart([GOOD_FORM[1], GOOD_FORM[0], *GOOD_FORM[2:], GOOD_FILE]), 1001),  # order
        (multipart([*GOOD_FORM, ("upload", "p.jpg", PICTURE)]), 1001),  # not the file field
        (multipart([*GOOD_FORM, ("file", "q.jpg", PICTURE)]), 1001),  # not the name declared
        (multipart([*GOOD_FORM, ("file", "p.jpg", PICTURE[:-1])]), 1006),  # size
        (multipart([*GOOD_FORM, ("file", "p.jpg", PICTURE[:-1] + b"!")]), 1006),  # sha256
        (multipart([*GOOD_FORM, GOOD_FILE])[:-2], 1001),  # cut before the closing CRLF
        (multipart([*GOOD_FORM, GOOD_FILE], boundary="other"), 1001),  # not the declared one
    ],
)
def test_the_intake_takes_only_the_examples_exact_upload(body: bytes, code: int) -> None:
    """The stand-in's checks can fail: hand-written bodies, bearer auth (no signature)."""
    with EgovaIntakeFake(auth="bearer") as intake:
        reply = httpx.post(
            f"{intake.url}/api/file/upload",
            content=body,
            headers={
                "Authorization": f"Bearer {TOKEN}",
                "Content-Type": "multipart/form-data; boundary=b0undary",
            },
        )
        assert reply.json()["code"] == code, reply.json()
        assert len(intake.files) == (1 if code == 0 else 0)


# ---------------------------------------------------------------- the settings section


def upload_errors(upload: dict[str, Any] | None = None, **mapping: Any) -> list[tuple[str, str]]:
    """The loader's errors for the example with ``upload`` and the sections of ``mapping``
    (None: left out)."""
    data = example_data("http://127.0.0.1:9/eUrbanMIS")
    if upload is not None:
        data["upload"] = upload
    for key, value in mapping.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return loader_errors(data)


def example_upload(**changes: Any) -> dict[str, Any]:
    upload = copy.deepcopy(example_data("http://127.0.0.1:9/x")["upload"])
    upload.update(changes)
    return {k: v for k, v in upload.items() if v is not None}


def test_the_shipped_upload_section_loads() -> None:
    assert upload_errors() == []


@pytest.mark.parametrize(
    ("upload", "mapping", "loc", "message"),
    [
        (example_upload(path="/api/event/{case_id}/files"), {}, "upload",
         "open_case: the path names {case_id}, which a case being filed has not got yet"),
        (example_upload(path="/api/event/{case_id}/files", open_case=None), {}, "", ""),
        (example_upload(form={"eventID": {"from": "case_id"}}), {}, "upload",
         "form.eventID: a case being filed has no case_id yet: give if_missing: omit"),
        (example_upload(form={"eventID": {"from": "case_id"}}, open_case=None), {}, "", ""),
        (example_upload(), {"add_evidence": None}, "",
         "upload.add_evidence: the mapping has no add_evidence to carry the files"),
        (example_upload(open_case={"ids": "eventDesc"}), {}, "",
         "upload.open_case: eventDesc is set twice (open_case.body and upload.open_case)"),
        (example_upload(add_evidence={"ids": "a", "links": "a"}), {}, "",
         "upload.add_evidence: a is set twice"),
        (example_upload(open_case={"ids": "extInfo"}), {}, "", "open_case.body with"
         " upload.open_case: extInfo and extInfo.externalKey cannot both be set"),
        (example_upload(body={"x": {"const": 1}}), {}, "upload",
         "an upload is multipart/form-data: give its fields in form, not body"),
        (example_upload(form={"file": {"const": 1}}), {}, "upload",
         "form.file: that name is the file's (file_field)"),
        (example_upload(open_case=None, add_evidence=None), {}, "upload",
         "say where the uploaded files go: open_case, add_evidence or both"),
        (example_upload(form={"x": {"from": "class_code"}}), {}, "",
         "upload.form.x.from: our case has no 'class_code' here"),
        (example_upload(query={"x": {"coordinate": "x"}}), {}, "",
         "upload.query.x: this request has no location for a coordinate"),
        (example_upload(max_file_bytes=33554433), {}, "upload.max_file_bytes",
         "less than or equal to 33554432"),
        (example_upload(method="GET"), {}, "upload.method", "'POST' or 'PUT'"),
        (example_upload(path="/x/{eventID}"), {}, "upload", "the only placeholder is {case_id}"),
        (example_upload(open_case={"ids": "a", "join": ""}), {}, "upload.open_case.join",
         "at least 1"),
        (example_upload(), {"add_evidence": {"method": "GET", "path": "/q"}}, "",
         "upload.add_evidence: add_evidence is a GET, which has no body for the files"),
    ],
)  # fmt: skip
def test_the_upload_section_is_refused_by_name_when_it_cannot_work(
    upload: dict[str, Any], mapping: dict[str, Any], loc: str, message: str
) -> None:
    errors = upload_errors(upload, **mapping)
    if not message:
        assert errors == []
        return
    assert [(where, text) for where, text in errors if message in text] != [], errors
    assert all(where == loc for where, text in errors if message in text), errors


GOOD: dict[str, list[Any]] = {
    "method": ["POST", "PUT", None],
    "path": ["/api/file/upload", "/f"],
    "file_field": ["file", "upload[]", None],
    "form": [{}, {"sha256": {"from": "sha256"}, "n": {"from": "bytes", "if_missing": "omit"}}],
    "file_id": ["data.fileID", "data.files.0.id"],
    "max_file_bytes": [1024, 33554432, None],
    "max_files": [1, 20, None],
    "timeout_s": [0.5, 600, None],
    "open_case": [{"ids": "attachIDs"}, {"ids": "a.b", "links": "a.c", "join": ";"}, None],
    "add_evidence": [{"ids": "fileIds"}, {"ids": "x", "links": "y"}, None],
}
BAD: dict[str, list[Any]] = {
    "method": ["GET", "DELETE", 1, ["POST"]],
    "path": ["api/x", "/a/../b", "/x/{eventID}", "/x/{case_id", "/" + "a/" * 20, 7, ""],
    "file_field": ["", "a b", 'a"b', "x" * 65, 3, {}],
    "form": [{"x": {"from": "class_code"}}, {"x": {"coordinate": "x"}}, {"x": {}}, [],
             {"a b": {"const": 1}}, {"x": {"const": 1, "from": "sha256"}},
             {f"f{n}": {"const": n} for n in range(31)}, {"x": {"from": "sha256", "table": "t"}}],
    "file_id": ["", "a..b", ".".join("a" * 9), 5, None],
    "max_file_bytes": [0, 1023, 33554433, "big", -1, 1.5],
    "max_files": [0, 21, "x", -3],
    "timeout_s": [0, -1, 601, "soon"],
    "open_case": [{"ids": ""}, {"ids": "a", "join": ""}, {"ids": "eventDesc"},
                  {"ids": "extInfo"}, {"links": "x"}, "attachIDs", {"ids": "a", "extra": 1},
                  {"ids": "a", "join": "\n"}],
    "add_evidence": [{"ids": "eventID"}, {}, 3, {"ids": "x", "links": "x"}],
    "body": [{"x": {"const": 1}}],
    "unknown": [1],
}  # fmt: skip


@st.composite
def upload_sections(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    """An upload section with good values but for up to two keys (the spoiled ones),
    which hold bad ones; and those keys."""
    spoiled = draw(st.sets(st.sampled_from(sorted(BAD)), max_size=2))
    section: dict[str, Any] = {}
    for key in sorted(GOOD.keys() | BAD.keys()):
        value = draw(st.sampled_from(BAD[key] if key in spoiled else GOOD.get(key, [None])))
        if key in spoiled or value is not None:
            section[key] = value
    return section, spoiled


@settings(max_examples=80, deadline=None)
@given(drawn=upload_sections())
def test_any_upload_section_loads_or_is_refused_with_errors_naming_it(
    drawn: tuple[dict[str, Any], set[str]],
) -> None:
    section, spoiled = drawn
    errors = upload_errors(section)
    nowhere = "open_case" not in section and "add_evidence" not in section
    if not spoiled and not nowhere:
        assert errors == []
        return
    assert errors, section
    for where, message in errors:
        assert where.startswith("upload") or "upload" in message, (where, message)
        assert 0 < len(message) < 400
    # Nowhere for the files: "say where the uploaded files go: open_case, …"
    named = spoiled | ({"open_case"} if nowhere else set())
    assert any(key in where or key in message for key in named for where, message in errors), (
        spoiled,
        errors,
    )
