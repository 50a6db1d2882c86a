"""The API's own limits on connections and requests, over real loopback HTTP: a connection
that never completes a request head is closed (no token needed to open one, so none may
hold a slot for ever), and requests beyond the in-flight cap are refused while /healthz
still answers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway import http_deadline
from gateway.api_guard import ApiGuard
from gateway.http_deadline import DeadlineH11Protocol
from simulators.mosquitto import free_port

TOKEN = "connection-limit-token"
release = threading.Event()


async def _slow(request) -> PlainTextResponse:
    while not release.is_set():
        await asyncio.sleep(0.01)
    return PlainTextResponse("done")


async def _ok(request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _serve(max_in_flight: int):
    app = Starlette(routes=[Route("/slow", _slow), Route("/healthz", _ok), Route("/ok", _ok)])
    guarded = ApiGuard(app, TOKEN, {"/healthz"}, 4096, 65536, max_in_flight=max_in_flight)
    port = free_port()
    config = uvicorn.Config(guarded, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off", http=DeadlineH11Protocol)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    return server, thread, port


@pytest.fixture
def served(monkeypatch):
    monkeypatch.setattr(http_deadline, "HEAD_TIMEOUT_S", 0.5)
    release.clear()
    servers = []

    def start(max_in_flight: int = 64) -> int:
        server, thread, port = _serve(max_in_flight)
        servers.append((server, thread))
        return port

    yield start
    release.set()
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def _closed_by_server(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False


def test_a_connection_without_a_complete_request_head_is_closed(served):
    port = served()
    silent = socket.create_connection(("127.0.0.1", port))
    half = socket.create_connection(("127.0.0.1", port))
    half.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n")  # never finished
    for _ in range(5):  # trickling bytes does not re-arm the deadline
        time.sleep(0.05)
        half.sendall(b"X-Slow: 1\r\n")
    assert _closed_by_server(silent, 5)
    assert _closed_by_server(half, 5)
    silent.close()
    half.close()


def test_a_kept_alive_connection_serves_requests_and_is_closed_once_idle(served):
    port = served()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(5)
    for _ in range(2):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"\r\n\r\nok"):  # head and body may come apart
            chunk = sock.recv(1024)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")
    assert _closed_by_server(sock, 5)
    sock.close()


def test_requests_beyond_the_in_flight_cap_are_refused_but_healthz_answers(served):
    port = served(max_in_flight=2)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    results: list[int] = []
    slow = [
        threading.Thread(
            target=lambda: results.append(httpx.get(f"{base}/slow", headers=auth, timeout=10)
                                          .status_code)
        )
        for _ in range(2)
    ]  # fmt: skip
    for thread in slow:
        thread.start()
    deadline = time.monotonic() + 5
    busy = httpx.get(f"{base}/ok", headers=auth, timeout=5)
    while busy.status_code != 503 and time.monotonic() < deadline:  # until both slow ones run
        time.sleep(0.02)
        busy = httpx.get(f"{base}/ok", headers=auth, timeout=5)
    assert (busy.status_code, busy.headers["retry-after"]) == (503, "1")
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    release.set()
    for thread in slow:
        thread.join(10)
    assert results == [200, 200]
    assert httpx.get(f"{base}/ok", headers=auth, timeout=5).status_code == 200
