"""An outsider without the token must not be able to close the gateway's API to everyone.

The real gateway (``citygw run``) serves its API with uvicorn. Connections that are opened
and never send a request (or send half a request head and stop) are found by any port
scanner or slowloris script; they need no token. However many of them are open, /healthz
(what an orchestrator's liveness probe asks) and an authorised request must still answer.
"""

from __future__ import annotations

import contextlib
import socket

import httpx

from harness import API_TOKEN

IDLE_CONNECTIONS = 64  # the gateway's uvicorn limit_concurrency


def test_idle_and_half_sent_connections_do_not_lock_out_healthz_or_the_token_holder(stack):
    gateway = stack()
    base = f"http://127.0.0.1:{gateway.api_port}"
    with contextlib.ExitStack() as held:
        for i in range(IDLE_CONNECTIONS):
            sock = held.enter_context(socket.create_connection(("127.0.0.1", gateway.api_port)))
            if i % 2:  # half a request head, never finished
                sock.sendall(b"GET /api/v1/stats HTTP/1.1\r\nHost: x\r\n")
        # Accepted in order: by the time this request is served the ones above are open.
        health = httpx.get(f"{base}/healthz", timeout=10)
        stats = httpx.get(
            f"{base}/api/v1/stats", headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10
        )
    assert health.status_code == 200, health.text
    assert stats.status_code == 200, stats.text
