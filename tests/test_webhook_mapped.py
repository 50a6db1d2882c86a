"""``POST /platform/events`` in the ``mapped`` format, over real HTTP (the API app in uvicorn
on loopback, the settings loaded by the real config loader): the shipped eGova example
(``deploy/platforms/egova-webhook.yaml``) with pushes signed by the stand-in's own writing
of the scheme (``tests/egova_pusher.py``), a hex ``sha256=`` body-only signature, and a
shared token. Each refusal is checked with its status and its counter; hypothesis throws
arbitrary requests and arbitrary signed bodies at the route: never a 5xx, nothing reaches
the handler unsigned, and whatever does reaches it as the mapping reads it."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from egova_pusher import push_body, push_headers
from hypothesis import given, settings
from hypothesis import strategies as st
from signed_events import SECRET
from test_config_schema import DEPLOY, problems, shipped
from test_platform_events import NOW_S, ZERO, Receiver, gateway

from gateway.bounded_yaml import load_yaml_file
from gateway.config import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "platforms" / "egova-webhook.yaml"
NOW_MS = int(NOW_S * 1000)
CASE = "GL20261121000001"
SUCCESS = {"code": 0, "msg": "success"}


def example(**changes: Any) -> dict[str, Any]:
    """The shipped example's settings, its secret from the test's file instead of the
    variable it names; ``changes`` replace keys of its ``mapped`` section."""
    _, data = load_yaml_file(EXAMPLE)
    assert data.pop("secret_env") == "CITYGW_EGOVA_WEBHOOK_SECRET"
    data["mapped"].update(changes)
    return data


def pushed(state: str = "6", msg: str = "PUSH-000001", time: str = "2026-11-21 10:00:05") -> bytes:
    return push_body(CASE, state, time, msg)


def signed(body: bytes, at_ms: int = NOW_MS, secret: str = SECRET) -> dict[str, str]:
    return push_headers(body, at_ms, secret)


@pytest.fixture
def egova(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(tmp_path, **example())
    yield r
    r.close()


def test_the_example_loads_with_its_secret_from_the_variable_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYGW_EGOVA_WEBHOOK_SECRET", SECRET)
    _, data = load_yaml_file(EXAMPLE)
    gw = gateway(tmp_path, data)
    webhook = gw.config.case_platform.webhook
    assert webhook is not None and webhook.mapped is not None
    assert (webhook.format, webhook.secret.get_secret_value()) == ("mapped", SECRET)
    assert webhook.mapped.auth.model_dump() == {
        "type": "hmac_sha256",
        "signature_header": "X-Egova-Signature",
        "timestamp_header": "X-Egova-Timestamp",
        "timestamp_unit": "ms",
        "message": "{timestamp}\n{body}",
        "encoding": "base64",
        "prefix": "",
    }
    assert webhook.mapped.statuses["5"] == "verifying"
    gw.conn.close()


def test_the_example_is_valid_for_the_config_schema() -> None:
    egova = shipped(EXAMPLE)
    config = {**DEPLOY, "case_platform": {**DEPLOY["case_platform"], "webhook": egova}}
    assert problems(config) == []
    wrong = {**egova, "mapped": {**egova["mapped"], "statuses": {"6": "finished"}}}
    config["case_platform"]["webhook"] = wrong
    assert problems(config) == [(["case_platform", "webhook", "mapped", "statuses", "6"], "enum")]


def test_a_pushed_change_reaches_the_handler_in_our_words_once(egova: Receiver) -> None:
    answer = egova.post(pushed(), signed(pushed()))
    assert (answer.status_code, answer.json()) == (200, SUCCESS)
    assert egova.calls == [(CASE, "closed", "2026-11-21T10:00:05+08:00")]
    again = egova.post(pushed(), signed(pushed()))  # a replay, or the platform's retry
    assert (again.status_code, again.json()["reason"]) == (409, "replayed")
    assert egova.events.stats() == {
        "accepted": 1,
        "refused": {**ZERO, "replayed": 1},
        "handler_errors": 0,
    }


def test_each_refusal_has_its_status_and_its_counter(
    egova: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = pushed()
    good = signed(body)
    cases: list[tuple[bytes, dict[str, str], int, str]] = [
        (body, {"Content-Type": "application/json"}, 401, "unsigned"),
        (body, {**good, "X-Egova-Signature": "sha256=" + good["X-Egova-Signature"]}, 401,
         "unsigned"),
        (body, {**good, "X-Egova-Signature": good["X-Egova-Signature"][:-2]}, 401, "unsigned"),
        (body, {**good, "X-Egova-Timestamp": str(NOW_S)}, 401, "unsigned"),
        (body, signed(body, secret="another-secret-0123456789"), 401, "bad_signature"),
        (body.replace(b'"6"', b'"9"'), good, 401, "bad_signature"),
        (body, {**good, "X-Egova-Timestamp": str(NOW_MS + 1)}, 401, "bad_signature"),
        (body, signed(body, NOW_MS - 300_001), 401, "stale"),
        (body, signed(body, NOW_MS + 300_001), 401, "stale"),
        (b"{" + b" " * 4096 + b"}", good, 413, "too_large"),
        (b"not json", signed(b"not json"), 422, "malformed_json"),
        (pushed(state="7"), signed(pushed(state="7")), 422, "unknown_status"),
        (pushed(state="06"), signed(pushed(state="06")), 422, "unknown_status"),
    ]  # fmt: skip
    wrong_fields = [
        b"[]",
        push_body("GL 1", "6", "2026-11-21 10:00:05", "PUSH-1"),
        push_body("", "6", "2026-11-21 10:00:05", "PUSH-2"),
        push_body(CASE, "6", "2026-11-21T10:00:05", "PUSH-3"),  # not the time_format
        push_body(CASE, "6", "yesterday", "PUSH-4"),
        push_body(CASE, "6", "2026-11-21 10:00:05", "has space"),
        json.dumps({"msgID": "PUSH-5", "data": {"eventID": CASE, "stateID": ["6"],
                                                 "updateTime": "2026-11-21 10:00:05"}}).encode(),
        json.dumps({"msgID": "PUSH-6", "data": {"stateID": "6"}}).encode(),
    ]  # fmt: skip
    cases += [(b, signed(b), 422, "bad_fields") for b in wrong_fields]
    for sent, headers, status, reason in cases:
        answer = egova.post(sent, headers)
        assert (answer.status_code, answer.json()["reason"]) == (status, reason), sent[:80]
        assert SECRET not in answer.text
    assert egova.calls == []
    expected = {**ZERO, "unsigned": 4, "bad_signature": 3, "stale": 2, "too_large": 1,
                "malformed_json": 1, "unknown_status": 2, "bad_fields": 8}  # fmt: skip
    assert egova.events.stats() == {"accepted": 0, "refused": expected, "handler_errors": 0}
    edge = egova.post(body, signed(body, NOW_MS - 300_000))  # the window's edge is inside
    assert edge.status_code == 200
    assert SECRET not in caplog.text


def hex_body_only(body: bytes, secret: str = SECRET) -> dict[str, str]:
    """A body-only signature, ``sha256=<hex>`` (written out here, not by the gateway)."""
    return {
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, "sha256").hexdigest()
    }


def test_a_body_only_signature_and_times_as_epoch_ms_without_event_ids(tmp_path: Path) -> None:
    auth = {"type": "hmac_sha256", "signature_header": "X-Hub-Signature-256",
            "message": "{body}", "prefix": "sha256="}  # fmt: skip
    r = Receiver(
        tmp_path,
        **{**example(auth=auth, event_id=None, reply=None, time_format=None), "tolerance_s": 60},
    )
    try:
        change = {"data": {"eventID": 20261121, "stateID": 5, "updateTime": 1_795_226_405_000}}
        body = json.dumps(change).encode()
        answer = r.post(body, hex_body_only(body))
        derived = hashlib.sha256(b"20261121\nverifying\n2026-11-21T10:00:05+08:00").hexdigest()
        assert (answer.status_code, answer.json()) == (200, {"accepted": derived})
        assert r.calls == [("20261121", "verifying", "2026-11-21T10:00:05+08:00")]
        upper = {"X-Hub-Signature-256": hex_body_only(body)["X-Hub-Signature-256"].upper()}
        assert r.post(body, upper).json()["reason"] == "unsigned"  # the prefix is exact
        # No signed time: nothing is stale, and a replay is refused however late it comes.
        r.clock = NOW_S + 86_400
        assert r.post(body, hex_body_only(body)).json()["reason"] == "replayed"
        same_change = json.dumps({**change, "note": "sent again"}).encode()
        assert r.post(same_change, hex_body_only(same_change)).status_code == 409
        iso = json.dumps({"data": {**change["data"], "updateTime": "2026-11-21T02:00:06Z"}})
        assert r.post(iso.encode(), hex_body_only(iso.encode())).status_code == 200
        assert r.calls[-1] == ("20261121", "verifying", "2026-11-21T10:00:06+08:00")
        assert r.events.stats()["refused"] == {**ZERO, "unsigned": 1, "replayed": 2}
    finally:
        r.close()


def test_a_shared_token_instead_of_a_signature(tmp_path: Path) -> None:
    auth = {"type": "token", "header": "Authorization", "prefix": "Bearer "}
    r = Receiver(tmp_path, **example(auth=auth))
    try:
        body = pushed()
        refused = [
            r.post(body, {}),
            r.post(body, {"Authorization": SECRET}),
            r.post(body, {"Authorization": f"Bearer {SECRET}x"}),
            r.post(body, {"Authorization": ("Bearer " + "é" * 8).encode()}),  # type: ignore[dict-item]
        ]
        assert [(a.status_code, a.json()["reason"]) for a in refused] == [
            (401, "unsigned"), (401, "bad_signature"), (401, "bad_signature"),
            (401, "bad_signature"),
        ]  # fmt: skip
        assert all(SECRET not in a.text for a in refused)
        assert r.post(body, {"Authorization": f"Bearer {SECRET}"}).json() == SUCCESS
        assert r.calls == [(CASE, "closed", "2026-11-21T10:00:05+08:00")]
    finally:
        r.close()


@pytest.mark.parametrize(
    ("webhook", "where"),
    [
        ({"format": "mapped"}, "give mapped exactly when format is mapped"),
        ({"format": "citygw", "mapped": example()["mapped"]}, "give mapped exactly"),
        ({"format": "mapped", "mapped": example(statuses={6: "closed"})["mapped"]},
         "quote codes"),
        ({"format": "mapped", "mapped": example(statuses={"6": "finished"})["mapped"]},
         r"statuses\.6"),
        ({"format": "mapped", "mapped": example(timezone="Mars/Olympus")["mapped"]},
         "unknown time zone"),
        ({"format": "mapped", "mapped": example(case_id="data..eventID")["mapped"]},
         r"mapped\.case_id"),
        ({"format": "mapped",
          "mapped": example(auth={**example()["mapped"]["auth"], "message": "{timestamp}"})[
              "mapped"]}, r"give \{body\} once"),
        ({"format": "mapped",
          "mapped": example(auth={**example()["mapped"]["auth"], "message": "{body}"})[
              "mapped"]}, "timestamp_header: give it exactly when"),
        ({"format": "mapped",
          "mapped": example(auth={**example()["mapped"]["auth"], "message": "{ts}{body}"})[
              "mapped"]}, "only printable ASCII"),
        ({"format": "mapped",
          "mapped": example(auth={"type": "token", "header": "bad header"})["mapped"]},
         r"mapped\.auth\.token\.header"),
    ],
)  # fmt: skip
def test_a_mapping_that_cannot_work_is_refused_at_load_naming_its_field(
    tmp_path: Path, webhook: dict, where: str
) -> None:
    with pytest.raises(ConfigError, match=where) as refused:
        gateway(tmp_path, {"secret": SECRET, **webhook})
    assert "case_platform.webhook" in str(refused.value)
    assert SECRET not in str(refused.value)


# -- hypothesis ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    r = Receiver(tmp_path_factory.mktemp("mapped"), **example())
    yield r
    r.close()


SETTINGS = settings(max_examples=50, deadline=None)
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80).map(
    str.strip
)
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=70),
    st.sampled_from(["6", "5", "9", "7", CASE, "2026-11-21 10:00:05", "2026-11-21T10:00:05Z"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers()),
)  # fmt: skip
CHANGES = st.fixed_dictionaries(
    {},
    optional={
        "msgID": VALUES,
        "data": st.fixed_dictionaries(
            {}, optional={"eventID": VALUES, "stateID": VALUES, "updateTime": VALUES}
        ),
    },
)


@SETTINGS
@given(
    body=st.one_of(st.binary(max_size=300), st.builds(pushed)),
    timestamp=st.one_of(st.none(), HEADER_TEXT, st.just(str(NOW_MS))),
    signature=st.one_of(st.none(), HEADER_TEXT, st.builds(lambda b: signed(b)[
        "X-Egova-Signature"], st.binary(max_size=64))),
)  # fmt: skip
def test_nothing_unsigned_gets_through_and_nothing_is_a_server_error(
    shared: Receiver, body: bytes, timestamp: str | None, signature: str | None
) -> None:
    headers = {"X-Egova-Timestamp": timestamp, "X-Egova-Signature": signature}
    sent = {name: value for name, value in headers.items() if value is not None}
    calls = len(shared.calls)
    answer = shared.post(body, sent)
    assert answer.status_code < 500
    valid = timestamp == str(NOW_MS) and signature == signed(body)["X-Egova-Signature"]
    if not valid:
        assert answer.status_code in (401, 413)
        assert len(shared.calls) == calls


@SETTINGS
@given(change=CHANGES, fresh=st.uuids())
def test_a_signed_body_is_taken_once_as_mapped_or_refused_with_a_4xx(
    shared: Receiver, change: dict, fresh: uuid.UUID
) -> None:
    if isinstance(change.get("msgID"), str):
        change["msgID"] = f"{change['msgID'][:20]}{fresh.hex}"
    body = json.dumps(change).encode()
    calls = len(shared.calls)
    answer = shared.post(body, signed(body))
    assert answer.status_code in (200, 409, 422), answer.text
    assert len(shared.calls) == calls + (answer.status_code == 200)
    if answer.status_code == 200:
        data = change["data"]
        case_id, status, _ = shared.calls[-1]
        assert case_id == str(data["eventID"])
        assert (
            status
            == {
                "1": "accepted",
                "2": "registered",
                "3": "dispatched",
                "4": "handling",
                "5": "verifying",
                "6": "closed",
                "9": "void",
            }[str(data["stateID"])]
        )
        assert shared.post(body, signed(body)).status_code == 409


def test_a_time_the_mappings_zone_cannot_write_is_refused_not_a_server_error(
    egova: Receiver,
) -> None:
    """The last second of year 9999 in epoch ms is within bounds in UTC, but past what
    Asia/Shanghai can write: a 422 naming the field, never a 500."""
    push = {"msgID": "PUSH-END", "data": {"eventID": CASE, "stateID": "6",
            "updateTime": 253402300799000}}  # fmt: skip
    body = json.dumps(push).encode()
    answer = egova.post(body, signed(body))
    assert (answer.status_code, answer.json()["reason"]) == (422, "bad_fields")
    assert egova.calls == []
