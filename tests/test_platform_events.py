"""The gateway's ``POST /platform/events`` over real HTTP: the API app in uvicorn on loopback,
its webhook secret loaded from a file by the real config loader, events signed here by the
test's own writing of the format (tests/signed_events.py). Each refusal is checked with its
status and its counter, and hypothesis throws arbitrary requests at the route: never a
5xx, and nothing reaches the handler without a valid signature."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from served_app import ServedApp, write_gateway_config
from signed_events import SECRET, event_body, signature, signed_headers
from starlette.datastructures import Headers

from case_bridge.platform_settings import WebhookSettings
from gateway import pg_store
from gateway.api import create_api
from gateway.api_platform_events import EVENTS_PATH, REASONS, PlatformEvents
from gateway.config import ConfigError, load_config
from gateway.service import Gateway
from simulators.postgres import PostgresServer

API_TOKEN = "0123456789abcdef-api-token"
NOW_S = 1_800_000_000.0
ZERO = dict.fromkeys(REASONS, 0)


def gateway(folder: Path, webhook: dict | None) -> Gateway:
    """A gateway (never started) whose config has this ``case_platform.webhook``."""
    path = write_gateway_config(folder, {"token_file": "api-token"})
    (folder / "api-token").write_text(API_TOKEN + "\n")
    config = yaml.safe_load(path.read_text())
    if webhook is not None:
        config["case_platform"]["webhook"] = webhook
    path.write_text(yaml.safe_dump(config))
    return Gateway(load_config(path))


class Receiver:
    """The API with its platform events on loopback; the handler records each call and
    fails while ``failing`` is set. ``clock`` is the route's time (seconds), None for now."""

    def __init__(self, folder: Path, clock: float | None = NOW_S, **webhook: object) -> None:
        """The gateway's store is ``folder``'s: a second ``Receiver`` on the same folder is
        the gateway restarted."""
        (folder / "webhook.key").write_text(SECRET + "\n")
        self.gateway = gateway(folder, {"secret_file": "webhook.key", **webhook})
        settings = self.gateway.config.case_platform.webhook
        assert settings is not None
        self.calls: list[tuple[str, str, str]] = []
        self.failing = False
        self.clock = clock  # None: the wall clock
        self.events = PlatformEvents(settings, self._handle, self._now_s, self.gateway.conn)
        self.served = ServedApp(create_api(self.gateway, self.events))
        self.http = httpx.Client(base_url=self.served.url, timeout=5)

    def _now_s(self) -> float:
        return time.time() if self.clock is None else self.clock

    def _handle(self, case_id: str, status: str, updated_at: str) -> None:
        if self.failing:
            raise RuntimeError("the store is busy")
        self.calls.append((case_id, status, updated_at))

    def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.http.post(EVENTS_PATH, content=body, headers=headers)

    def signed(self, body: bytes, at_s: float = NOW_S, secret: str = SECRET) -> httpx.Response:
        return self.post(body, signed_headers(body, at_s, secret))

    def close(self) -> None:
        self.http.close()
        self.served.close()
        self.gateway.conn.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(tmp_path)
    yield r
    r.close()


def test_a_signed_event_reaches_the_handler_once(receiver: Receiver) -> None:
    answer = receiver.signed(event_body())
    assert (answer.status_code, answer.json()) == (
        200,
        {"accepted": "0f1e2d3c4b5a69788796a5b4c3d2e1f0"},
    )
    assert receiver.calls == [("C20261121-000001", "closed", "2026-11-21T08:00:00.000000+00:00")]
    again = receiver.signed(event_body())  # the same event: a replay, or the platform's retry
    assert (again.status_code, again.json()["reason"]) == (409, "replayed")
    assert len(receiver.calls) == 1
    assert receiver.events.stats() == {
        "accepted": 1,
        "refused": {**ZERO, "replayed": 1},
        "handler_errors": 0,
    }


def test_each_refusal_has_its_status_and_its_counter(receiver: Receiver) -> None:
    body = event_body()
    signed = signed_headers(body, NOW_S)
    other_ts = {**signed, "X-Citygw-Timestamp": str(int(NOW_S) + 1)}
    cases: list[tuple[bytes, dict[str, str], int, str]] = [
        (body, {"Content-Type": "application/json"}, 401, "unsigned"),
        (body, {**signed, "X-Citygw-Signature": "sha1=" + "0" * 40}, 401, "unsigned"),
        (body, {**signed, "X-Citygw-Timestamp": "1.8e9"}, 401, "unsigned"),
        (body, signed_headers(body, NOW_S, secret="another-secret-0123456789"), 401,
         "bad_signature"),
        (body.replace(b"closed", b"void"), signed, 401, "bad_signature"),
        (body, other_ts, 401, "bad_signature"),
        (body, signed_headers(body, NOW_S - 301), 401, "stale"),
        (body, signed_headers(body, NOW_S + 301), 401, "stale"),
        (b"{" + b" " * 4096 + b"}", signed, 413, "too_large"),
        (b"not json", signed_headers(b"not json", NOW_S), 422, "malformed_json"),
        (b"[" * 5000, signed_headers(b"[" * 5000, NOW_S), 413, "too_large"),
        (b"[" * 4000, signed_headers(b"[" * 4000, NOW_S), 422, "malformed_json"),
        (b"\xff\xfe", signed_headers(b"\xff\xfe", NOW_S), 422, "malformed_json"),
    ]  # fmt: skip
    wrong_fields = [
        b"[]",
        event_body(case_id=5),
        event_body(case_id=""),
        event_body(case_id="C-1\n"),
        event_body(case_id="C" * 65),
        event_body(status="s" * 33),
        event_body(updated_at="2026-11-21T08:00:00"),
        event_body(updated_at="yesterday"),
        event_body(event_id="has space"),
        json.dumps({"case_id": "C-1", "status": "closed"}).encode(),
    ]
    cases += [(b, signed_headers(b, NOW_S), 422, "bad_fields") for b in wrong_fields]
    for sent, headers, status, reason in cases:
        answer = receiver.post(sent, headers)
        assert (answer.status_code, answer.json()["reason"]) == (status, reason), sent[:80]
        assert SECRET not in answer.text
    assert receiver.calls == []
    expected = {**ZERO, "unsigned": 3, "bad_signature": 3, "stale": 2, "too_large": 2,
                "malformed_json": 3, "bad_fields": 10}  # fmt: skip
    assert receiver.events.stats() == {"accepted": 0, "refused": expected, "handler_errors": 0}
    edge = receiver.signed(event_body(), NOW_S - 300)  # the window's edge is inside it
    assert edge.status_code == 200


def test_a_failing_handler_gets_503_and_the_retry_is_taken(receiver: Receiver) -> None:
    receiver.failing = True
    first = receiver.signed(event_body())
    assert (first.status_code, first.headers["retry-after"]) == (503, "5")
    receiver.failing = False
    assert receiver.signed(event_body()).status_code == 200
    assert len(receiver.calls) == 1
    assert receiver.events.stats() == {"accepted": 1, "refused": ZERO, "handler_errors": 1}


def test_remembered_ids_are_bounded_in_number_and_in_time(tmp_path: Path) -> None:
    r = Receiver(tmp_path, remembered_events=2, tolerance_s=60)
    try:
        ids = ["e1", "e2", "e3"]
        assert [r.signed(event_body(event_id=i)).status_code for i in ids] == [200] * 3
        assert r.signed(event_body(event_id="e3")).status_code == 409
        assert r.signed(event_body(event_id="e1")).status_code == 200  # forgotten: the bound
        r.clock = NOW_S + 121  # e1..e3 are older than twice the window: forgotten too
        assert r.signed(event_body(event_id="e4"), NOW_S + 121).status_code == 200
        assert r.signed(event_body(event_id="e3"), NOW_S + 121).status_code == 200
        assert len(r.events._seen) == 2
    finally:
        r.close()


def kept_ids(r: Receiver) -> list[str]:
    rows = r.gateway.conn.execute("SELECT event_id FROM webhook_events ORDER BY seen_ms, 1")
    return [event_id for (event_id,) in rows]


def test_a_replay_after_a_restart_is_refused_and_the_bounds_hold_across_it(tmp_path: Path):
    first = Receiver(tmp_path, remembered_events=2, tolerance_s=60)
    try:
        for n in (1, 2, 3):
            first.clock = NOW_S + n
            assert first.signed(event_body(event_id=f"e{n}"), NOW_S + n).status_code == 200
        assert kept_ids(first) == ["e2", "e3"]  # the bound: e1 forgotten in the store too
    finally:
        first.close()
    again = Receiver(tmp_path, NOW_S + 30, remembered_events=2, tolerance_s=60)
    try:
        replay = again.signed(event_body(event_id="e3"), NOW_S + 30)  # inside the tolerance
        assert (replay.status_code, replay.json()["reason"]) == (409, "replayed")
        assert again.signed(event_body(event_id="e1"), NOW_S + 30).status_code == 200
        assert again.calls == [("C20261121-000001", "closed", "2026-11-21T08:00:00.000000+00:00")]
        assert kept_ids(again) == ["e3", "e1"]  # e2, the oldest, forgotten
    finally:
        again.close()
    # Twice the tolerance after e1: all forgotten when read back.
    later = Receiver(tmp_path, NOW_S + 151, remembered_events=2, tolerance_s=60)
    try:
        assert (len(later.events._seen), kept_ids(later)) == (0, [])
    finally:
        later.close()


def test_the_ids_are_kept_the_same_way_in_postgresql() -> None:
    """The route's SQL on the cluster's store: kept, bounded, read back after a restart."""
    settings = WebhookSettings(secret=SECRET, remembered_events=2, tolerance_s=60)
    calls: list[str] = []
    with PostgresServer() as server:
        conn = pg_store.connect(server.create_database("events"))
        pg_store.ensure_schema(conn)

        def receive(events: PlatformEvents, event_id: str, at_s: float) -> int:
            body = event_body(event_id=event_id)
            headers = Headers(signed_headers(body, at_s))  # as the route hands them over
            return events.receive(headers, body).status_code

        try:
            for n in (1, 2, 3):
                events = PlatformEvents(settings, lambda *e: calls.append(e[0]),
                                        lambda n=n: NOW_S + n, conn)  # fmt: skip
                assert receive(events, f"e{n}", NOW_S + n) == 200
            restarted = PlatformEvents(settings, lambda *e: calls.append(e[0]),
                                       lambda: NOW_S + 30, conn)  # fmt: skip
            assert [receive(restarted, i, NOW_S + 30) for i in ("e3", "e2", "e1")] == [
                409, 409, 200,
            ]  # fmt: skip
            rows = conn.execute("SELECT event_id FROM webhook_events ORDER BY seen_ms, event_id")
            assert [event_id for (event_id,) in rows] == ["e3", "e1"]
            assert len(calls) == 4
        finally:
            conn.close()


def test_an_id_the_store_refuses_to_keep_gets_503_and_its_retry_is_kept(
    receiver: Receiver,
) -> None:
    conn = receiver.gateway.conn
    conn.execute(
        "CREATE TEMP TRIGGER webhook_events_refused BEFORE INSERT ON webhook_events"
        " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    refused = receiver.signed(event_body())
    assert (refused.status_code, refused.headers["retry-after"]) == (503, "5")
    conn.execute("DROP TRIGGER webhook_events_refused")
    assert receiver.signed(event_body()).status_code == 200  # the retry: handled again
    assert receiver.signed(event_body()).status_code == 409
    assert len(receiver.calls) == 2  # the status writes are idempotent
    assert kept_ids(receiver) == ["0f1e2d3c4b5a69788796a5b4c3d2e1f0"]
    assert receiver.events.stats() == {
        "accepted": 1, "refused": {**ZERO, "replayed": 1}, "handler_errors": 1
    }  # fmt: skip


def test_without_a_webhook_secret_the_route_is_not_there(tmp_path: Path) -> None:
    gw = gateway(tmp_path, None)
    assert gw.config.case_platform.webhook is None
    body = event_body()
    with ServedApp(create_api(gw)) as served, httpx.Client(base_url=served.url) as http:
        unsigned = http.post(EVENTS_PATH, content=body, headers=signed_headers(body))
        assert unsigned.status_code == 401  # the guard: not a public path
        auth = {"Authorization": f"Bearer {API_TOKEN}", **signed_headers(body)}
        assert http.post(EVENTS_PATH, content=body, headers=auth).status_code == 404
    gw.conn.close()


def test_the_webhook_path_opens_nothing_else(receiver: Receiver) -> None:
    body = event_body()
    for path in ("/api/v1/stats", EVENTS_PATH + "/x", "/platform"):
        answer = receiver.http.post(path, content=body, headers=signed_headers(body, NOW_S))
        assert answer.status_code == 401, path


def test_the_secret_comes_from_a_variable_and_stays_out_of_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYGW_WEBHOOK_SECRET", SECRET)
    gw = gateway(tmp_path, {"secret_env": "CITYGW_WEBHOOK_SECRET", "tolerance_s": 60})
    assert gw.config.case_platform.webhook == WebhookSettings(secret=SECRET, tolerance_s=60)
    gw.conn.close()
    short = "short-secret"
    with pytest.raises(ConfigError) as refused:
        gateway(tmp_path, {"secret": short})
    assert "case_platform.webhook.secret" in str(refused.value)
    assert short not in str(refused.value)
    with pytest.raises(ConfigError, match="give one of secret, secret_env"):
        gateway(tmp_path, {"secret": SECRET, "secret_env": "CITYGW_WEBHOOK_SECRET"})
    with pytest.raises(ConfigError, match=r"case_platform\.webhook\.tolerance_s"):
        gateway(tmp_path, {"secret": SECRET, "tolerance_s": 0})


# -- hypothesis ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    r = Receiver(tmp_path_factory.mktemp("events"))
    yield r
    r.close()


HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80).map(
    str.strip
)
SIGNED_OR_NOT = st.one_of(
    st.none(),
    HEADER_TEXT,
    st.builds(lambda b: signature(SECRET, str(int(NOW_S)), b), st.binary(max_size=64)),
)
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.text(max_size=70), st.sampled_from(["closed", "2026-11-21T08:00:00+08:00", "e-1"]),
    st.lists(st.integers(), max_size=3),
)  # fmt: skip
SETTINGS = settings(max_examples=50, deadline=None)
EVENTS = st.dictionaries(
    st.sampled_from(["case_id", "status", "updated_at", "event_id", "extra"]), VALUES
)


@SETTINGS
@given(
    body=st.one_of(st.binary(max_size=300), st.builds(event_body)),
    timestamp=st.one_of(st.none(), HEADER_TEXT, st.just(str(int(NOW_S)))),
    sig=SIGNED_OR_NOT,
)
def test_nothing_unsigned_gets_through_and_nothing_is_a_server_error(
    shared: Receiver, body: bytes, timestamp: str | None, sig: str | None
) -> None:
    headers = {"X-Citygw-Timestamp": timestamp, "X-Citygw-Signature": sig}
    sent = {name: value for name, value in headers.items() if value is not None}
    calls = len(shared.calls)
    answer = shared.post(body, sent)
    valid = timestamp is not None and sig == signature(SECRET, timestamp, body)
    assert answer.status_code < 500
    if not valid:
        assert answer.status_code in (401, 413)
        assert len(shared.calls) == calls


@SETTINGS
@given(fields=EVENTS, raw=st.booleans(), fresh=st.uuids())
def test_a_signed_body_is_taken_once_or_refused_with_a_4xx(
    shared: Receiver, fields: dict, raw: bool, fresh: uuid.UUID
) -> None:
    body = json.dumps(fields).encode() if raw else event_body(**{"event_id": fresh.hex, **fields})
    calls = len(shared.calls)
    answer = shared.signed(body)
    assert answer.status_code in (200, 409, 422), answer.text
    assert len(shared.calls) == calls + (answer.status_code == 200)
    if answer.status_code == 200:
        event = json.loads(body)
        assert shared.calls[-1] == (event["case_id"], event["status"], event["updated_at"])
        assert shared.signed(body).status_code == 409
