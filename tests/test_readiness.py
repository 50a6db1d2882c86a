"""``/readyz`` of a running gateway turns 503 for each reason it names, and back to 200 once
the cause is gone: the store refusing commits (SQLite's own "database or disk is full"),
the broker gone, the platform's circuit breaker open (a platform on loopback answering
503). Real mosquitto, a real gateway running on its loop in a thread, the readiness router
served by uvicorn on that same loop (as the gateway serves its API), real HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import uvicorn
import yaml
from fastapi import FastAPI
from paho.mqtt.enums import CallbackAPIVersion
from scripted_platform import TOKEN, Reply, ScriptedPlatformFake

from gateway.api_health import readiness_router
from gateway.config import load_config
from gateway.service import Gateway
from simulators.mosquitto import Mosquitto, free_port
from simulators.scenario import BUILTIN_SCENARIO

from harness import wait_until

ALL_OK = {"store": {"ok": True}, "mqtt": {"ok": True}, "platform": {"ok": True}}


class RunningGateway:
    """``gw`` running on an event loop in a thread, with ``/readyz`` served on that loop."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/readyz"
        app = FastAPI()
        app.include_router(readiness_router(gw))
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                           lifespan="off")
        )  # fmt: skip
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),))
        self.thread.start()
        wait_until(lambda: self.server.started, "the readiness endpoint listening", 30)

    async def _main(self) -> None:
        self.stop_event = asyncio.Event()
        await asyncio.gather(self.gw.run(self.stop_event), self.server.serve())

    def on_loop(self, work: Any) -> Any:
        """``work()`` run on the gateway's loop, where the store's connection is used."""

        async def call() -> Any:
            return work()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(10)

    def readyz(self) -> tuple[int, dict]:
        answer = httpx.get(self.url, timeout=5)
        return answer.status_code, answer.json()

    def close(self) -> None:
        def stop() -> None:
            assert self.stop_event is not None
            self.stop_event.set()
            self.server.should_exit = True

        self.loop.call_soon_threadsafe(stop)
        self.thread.join(30)
        self.loop.close()


def wait_for(running: RunningGateway, status: int, checks: dict, what: str) -> None:
    def holds() -> bool:
        code, body = running.readyz()
        return (code, body["checks"]) == (status, checks)

    wait_until(holds, what, 30)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[RunningGateway, Mosquitto, ScriptedPlatformFake]]:
    broker = Mosquitto(tmp_path)
    broker.start()
    with ScriptedPlatformFake() as platform:
        config = {
            "mqtt": {"url": broker.url, "client_id": "citygw-readiness"},
            "devices": {"registry": str(BUILTIN_SCENARIO.parent / "devices.csv")},
            "store": {"path": str(tmp_path / "gateway.db")},
            "case_platform": {
                "url": platform.url, "token": TOKEN, "status_sync_s": 0.2,
                "delivery": {"breaker": {"failure_threshold": 1, "cooldown_s": 0.5}},
            },
            "api": {"enabled": False},
        }  # fmt: skip
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        gateway = RunningGateway(Gateway(load_config(path)))
        try:
            yield gateway, broker, platform
        finally:
            gateway.close()
            broker.stop()


def publish_readings(port: int, count: int) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bin-001")
    client.connect("127.0.0.1", port)
    client.loop_start()
    now_ms = int(time.time() * 1000)
    try:
        for seq in range(1, count + 1):
            reading = {"ts": now_ms - 60_000 + seq, "seq": seq, "values": {"fill_pct": 40.0}}
            topic = "citygw/v1/BIN-001/telemetry"
            client.publish(topic, json.dumps(reading), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def test_ready_then_not_ready_for_each_named_reason_and_ready_again(running):
    gateway, broker, platform = running
    wait_for(gateway, 200, ALL_OK, "ready once subscribed")
    assert gateway.readyz()[1]["status"] == "ready"

    # The platform answers 503 three times: the breaker (threshold 1) opens, and closes at
    # the first probe the platform answers again.
    platform.script(*[Reply(503, {"detail": "maintenance"})] * 3)
    breaker_open = {**ALL_OK, "platform": {"ok": False, "reason": "circuit breaker open"}}
    wait_for(gateway, 503, breaker_open, "not ready: breaker open")
    assert gateway.readyz()[1]["status"] == "not_ready"
    wait_for(gateway, 200, ALL_OK, "ready: the breaker closed again")

    broker.stop()
    broker_gone = {**ALL_OK, "mqtt": {"ok": False, "reason": "not connected"}}
    wait_for(gateway, 503, broker_gone, "not ready: broker gone")
    broker.start()
    wait_for(gateway, 200, ALL_OK, "ready: reconnected and subscribed again")

    # The store takes no page more: the next batch's commit is refused and kept (the limit
    # is set on the pipeline's own connection, where its commits run; nothing commits now).
    conn = gateway.gw.pipeline_conn
    gateway.on_loop(lambda: conn.execute(
        f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}"
    ))  # fmt: skip
    publish_readings(broker.port, 300)
    refusing = {
        **ALL_OK,
        "store": {"ok": False, "reason": "commits refused; batches kept for retry"},
    }
    wait_for(gateway, 503, refusing, "not ready: store refusing commits")
    gateway.on_loop(lambda: conn.execute("PRAGMA max_page_count = 1073741823"))
    wait_for(gateway, 200, ALL_OK, "ready: the kept batches committed")
    stored = gateway.on_loop(lambda: conn.execute("SELECT count(*) FROM readings").fetchone()[0])
    assert stored == 300  # nothing lost while the store refused: acked only after commit
