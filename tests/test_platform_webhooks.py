"""The bundled platform sends status webhooks: the real app on loopback moves a case and a
real loopback receiver gets the signed event, checked against the test's own writing of
the format (tests/signed_events.py); a receiver that fails first gets the event again, one
that refuses does not; a receiver that hangs never holds up the workflow, and the queue
behind it is bounded with drops counted. End to end, the platform's events are taken by
the gateway's own ``POST /platform/events``, and the platform run as a process takes its
webhook settings from the environment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from loopback_server import LoopbackServer
from served_app import ServedApp
from signed_events import SECRET, signature
from test_platform import AUTH, TOKEN, case_body

from simulators.mosquitto import free_port
from simulators.platform.api import create_app
from simulators.platform.server import serve
from simulators.platform.webhooks import WebhookTarget, target_from_environment

REPO_ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 10.0
WALK = ["registered", "dispatched", "handling", "verifying", "closed"]


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Receiver:
    """A webhook receiver on loopback: records each request; answers with the next status
    of ``script`` (then 200). While ``hold`` is clear, requests wait for it."""

    def __init__(self, script: list[int] | None = None) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.script = deque(script or [])
        self.hold = threading.Event()
        self.hold.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                receiver.hold.wait(WAIT_S)
                status = receiver.script.popleft() if receiver.script else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = LoopbackServer(Handler, "/hooks")
        self.server.start()

    @property
    def url(self) -> str:
        return self.server.url

    def events(self) -> list[dict]:
        return [json.loads(body) for _, body in self.received]

    def close(self) -> None:
        self.hold.set()
        self.server.stop()


class Platform:
    """The platform app on loopback, sending webhooks to ``target``."""

    def __init__(self, folder: Path, target: WebhookTarget | None) -> None:
        self.app = create_app(str(folder / "cases.db"), TOKEN, webhook=target)
        self.served = ServedApp(self.app)
        self.http = httpx.Client(base_url=self.served.url, headers=AUTH, timeout=5)

    def create(self) -> dict:
        answer = self.http.post("/api/v1/cases", json=case_body())
        assert answer.status_code == 201, answer.text
        return answer.json()

    def move(self, case_id: str, to: str) -> dict:
        answer = self.http.post(f"/api/v1/cases/{case_id}/transition", json={"to": to})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def stats(self) -> dict:
        return self.http.get("/api/v1/webhooks").json()

    def close(self) -> None:
        self.http.close()
        if self.app.state.webhooks is not None:
            self.app.state.webhooks.close()
        self.served.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Callable[..., Platform]]:
    made: list[Platform] = []

    def make(url: str, **options: float) -> Platform:
        target = WebhookTarget(url, SECRET.encode(), timeout_s=2, initial_backoff_s=0.02,
                               max_backoff_s=0.1, **options)  # fmt: skip
        folder = tmp_path / f"platform{len(made)}"
        folder.mkdir()
        made.append(Platform(folder, target))
        return made[-1]

    yield make
    for p in made:
        p.close()


def stats(**counts: int) -> dict:
    zero = dict.fromkeys(("queued", "dropped", "delivered", "retried", "refused", "given_up"), 0)
    return {"enabled": True, **zero, "waiting": 0, **counts}


def assert_signed(headers: dict[str, str], body: bytes) -> None:
    timestamp = headers["x-citygw-timestamp"]
    assert abs(int(timestamp) - time.time()) < WAIT_S
    assert headers["x-citygw-signature"] == signature(SECRET, timestamp, body)
    assert headers["content-type"] == "application/json"


def test_a_status_change_is_posted_signed(platform, receiver: Receiver) -> None:
    p = platform(receiver.url)
    case = p.create()
    moved = p.move(case["id"], "registered")
    wait_for(lambda: p.stats()["delivered"] == 1, "the event")
    [(headers, body)] = receiver.received
    assert_signed(headers, body)
    event = json.loads(body)
    assert re.fullmatch(r"[0-9a-f]{32}", event.pop("event_id"))
    assert event == {
        "case_id": case["id"],
        "status": "registered",
        "updated_at": moved["updated_at"],
    }
    assert p.stats() == stats(queued=1, delivered=1)


def test_a_refused_move_and_a_new_case_post_nothing(platform, receiver: Receiver) -> None:
    p = platform(receiver.url)
    case = p.create()
    illegal = p.http.post(f"/api/v1/cases/{case['id']}/transition", json={"to": "closed"})
    assert illegal.status_code == 409
    p.move(case["id"], "void")
    wait_for(lambda: p.stats()["delivered"] == 1, "the event")
    assert [e["status"] for e in receiver.events()] == ["void"]


def test_a_failing_receiver_gets_the_same_event_again(platform) -> None:
    failing = Receiver(script=[503, 500])
    try:
        p = platform(failing.url)
        p.move(p.create()["id"], "registered")
        wait_for(lambda: p.stats()["delivered"] == 1, "the event after two failures")
        assert len(failing.received) == 3
        for headers, body in failing.received:
            assert_signed(headers, body)  # each attempt signed afresh
        assert len({body for _, body in failing.received}) == 1
        assert p.stats() == stats(queued=1, delivered=1, retried=2)
    finally:
        failing.close()


def test_a_refusal_is_final_and_an_unreachable_receiver_is_given_up(platform) -> None:
    refusing = Receiver(script=[400])
    try:
        p = platform(refusing.url)
        p.move(p.create()["id"], "registered")
        wait_for(lambda: p.stats()["refused"] == 1, "the refusal")
        assert len(refusing.received) == 1
        assert p.stats() == stats(queued=1, refused=1)
    finally:
        refusing.close()
    nobody = platform(f"http://127.0.0.1:{free_port()}/hooks", max_attempts=3)
    nobody.move(nobody.create()["id"], "registered")
    wait_for(lambda: nobody.stats()["given_up"] == 1, "giving up")
    assert nobody.stats() == stats(queued=1, retried=2, given_up=1)


def test_a_hanging_receiver_holds_no_request_and_the_queue_is_bounded(
    platform, receiver: Receiver
) -> None:
    receiver.hold.clear()
    p = platform(receiver.url, max_queue=2)
    case = p.create()
    p.move(case["id"], WALK[0])
    wait_for(lambda: len(receiver.received) == 1, "the first event to be in flight")
    for status in WALK[1:]:  # each answered while the receiver still holds the first
        p.move(case["id"], status)
    assert p.stats() == stats(queued=3, dropped=2, waiting=2)
    receiver.hold.set()
    wait_for(lambda: p.stats()["delivered"] == 3, "the queued events")
    assert [e["status"] for e in receiver.events()] == WALK[:3]
    assert p.stats() == stats(queued=3, dropped=2, delivered=3)


def test_without_a_target_nothing_is_sent(tmp_path: Path) -> None:
    p = Platform(tmp_path, None)
    try:
        p.move(p.create()["id"], "registered")
        assert p.stats() == {"enabled": False}
    finally:
        p.close()


# -- the gateway's route as the receiver -----------------------------------------------------


def test_the_gateway_takes_every_status_of_a_walk(platform, tmp_path: Path) -> None:
    from test_platform_events import Receiver as GatewayEvents

    (tmp_path / "gateway").mkdir()
    gateway = GatewayEvents(tmp_path / "gateway")
    gateway.clock = None
    try:
        p = platform(gateway.served.url + "/platform/events")
        case = p.create()
        moved = [p.move(case["id"], status) for status in WALK]
        wait_for(lambda: p.stats()["delivered"] == len(WALK), "every event")
        assert gateway.calls == [(case["id"], m["status"], m["updated_at"]) for m in moved]
        assert gateway.events.stats()["accepted"] == len(WALK)
    finally:
        gateway.close()


# -- settings from the environment -----------------------------------------------------------

URL_ENV = "CITYGW_PLATFORM_WEBHOOK_URL"
SECRET_ENV = "CITYGW_PLATFORM_WEBHOOK_SECRET"
FILE_ENV = "CITYGW_PLATFORM_WEBHOOK_SECRET_FILE"


def test_the_target_comes_from_the_environment(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/hooks"
    assert target_from_environment({}) is None
    assert target_from_environment({URL_ENV: url, SECRET_ENV: SECRET}) == WebhookTarget(
        url, SECRET.encode()
    )
    (tmp_path / "key").write_text(SECRET + "\n")
    from_file = target_from_environment({URL_ENV: url, FILE_ENV: str(tmp_path / "key")})
    assert from_file == WebhookTarget(url, SECRET.encode())
    assert SECRET not in repr(from_file)
    refusals = {
        "missing (": {URL_ENV: url},
        "must be an http": {URL_ENV: "ftp://host/x", SECRET_ENV: SECRET},
        "with a host": {URL_ENV: "http:///x", SECRET_ENV: SECRET},
        "16 to 512": {URL_ENV: url, SECRET_ENV: "short-secret"},
        "not both": {URL_ENV: url, SECRET_ENV: SECRET, FILE_ENV: str(tmp_path / "key")},
        "cannot read": {URL_ENV: url, FILE_ENV: str(tmp_path / "absent")},
    }
    for message, environ in refusals.items():
        with pytest.raises(ValueError, match=re.escape(message)) as refused:
            target_from_environment(environ)
        assert SECRET not in str(refused.value) and "short-secret" not in str(refused.value)


def test_serve_stops_on_a_webhook_setting_it_cannot_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URL_ENV, "http://127.0.0.1:9/hooks")
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv(FILE_ENV, raising=False)
    with pytest.raises(SystemExit, match=r"platform: \$CITYGW_PLATFORM_WEBHOOK_URL is set"):
        serve("127.0.0.1", free_port(), "unused.db", TOKEN)


def test_the_platform_process_sends_what_its_environment_says(
    tmp_path: Path, receiver: Receiver
) -> None:
    port = free_port()
    environ = {**os.environ, URL_ENV: receiver.url, SECRET_ENV: SECRET}
    command = [sys.executable, "-m", "simulators.platform", "--port", str(port),
               "--db", str(tmp_path / "cases.db"), "--token", TOKEN]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=environ, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert process.poll() is None, process.stderr and process.stderr.read()
            try:
                return httpx.get(base + "/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, "the platform process")
        with httpx.Client(base_url=base, headers=AUTH, timeout=5) as http:
            case = http.post("/api/v1/cases", json=case_body()).json()
            http.post(f"/api/v1/cases/{case['id']}/transition", json={"to": "registered"})
            wait_for(lambda: len(receiver.received) == 1, "the process's event")
        [(headers, body)] = receiver.received
        assert_signed(headers, body)
        assert json.loads(body)["status"] == "registered"
    finally:
        process.terminate()
        process.wait(10)
