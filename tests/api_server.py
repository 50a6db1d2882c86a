"""The gateway's API app served by uvicorn on a loopback port, in a thread, for tests that
talk to it over real HTTP without running the whole gateway (no broker, no platform)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import uvicorn
import yaml

from gateway.api import create_api
from gateway.config import load_config
from gateway.service import Gateway
from simulators.mosquitto import free_port
from simulators.scenario import BUILTIN_SCENARIO


def gateway_for_api(tmp_path: Path, api: dict | None = None) -> Gateway:
    """A gateway on the builtin registry with its store in ``tmp_path``, never started."""
    config = {
        "gateway_id": "test",
        "mqtt": {"url": "mqtt://127.0.0.1:1"},
        "devices": {"registry": str(BUILTIN_SCENARIO.parent / "devices.csv")},
        "store": {"path": str(tmp_path / "gateway.db")},
        "case_platform": {"url": "http://127.0.0.1:9", "token": "t"},
        "api": api or {},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return Gateway(load_config(path))


class ServedApi:
    """``create_api(gateway)`` in uvicorn, configured as the gateway serves it; ``http`` is
    a client for it that sends ``headers`` (e.g. the bearer token) with every request."""

    def __init__(self, gateway: Gateway, headers: dict[str, str] | None = None) -> None:
        self.gateway = gateway
        self.app = create_api(gateway)
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                           lifespan="off")
        )  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", headers=headers or {}, timeout=5
        )

    def close(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(10)
