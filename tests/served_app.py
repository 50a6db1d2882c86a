"""Any ASGI app served by uvicorn on a loopback port in a thread, and a gateway config file
that points a client at it: for tests of the API routers and the CLIs' HTTP client over
real HTTP, without the whole gateway."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from simulators.mosquitto import free_port
from simulators.scenario import BUILTIN_SCENARIO


class ServedApp:
    """``app`` served on 127.0.0.1:``port`` until ``close()`` (or the ``with`` block ends)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                           lifespan="off")
        )  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)

    def __enter__(self) -> ServedApp:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def write_gateway_config(folder: Path, api: dict[str, Any]) -> Path:
    """A valid gateway config in ``folder`` (builtin registry) with these ``api`` settings."""
    config = {
        "gateway_id": "test",
        "mqtt": {"url": "mqtt://127.0.0.1:1"},
        "devices": {"registry": str(BUILTIN_SCENARIO.parent / "devices.csv")},
        "store": {"path": str(folder / "gateway.db")},
        "case_platform": {"url": "http://127.0.0.1:9", "token": "t"},
        "api": api,
    }
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
