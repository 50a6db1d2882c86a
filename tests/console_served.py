"""A gateway's API (the console included) served on loopback for the console's browser tests
that need more than the API settings: a grids file, merge settings, a camera. Never started
(no broker, no platform): tests put readings and alerts through its real pipeline."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from api_principals import TOKEN
from api_server import ServedApi
from served_app import write_gateway_config
from test_e2e_console import CHROMIUM

from gateway.config import load_config
from gateway.service import Gateway


def served_gateway(folder: Path, **sections: Any) -> ServedApi:
    """The test config with these top-level ``sections`` (and a cookie a browser on plain
    HTTP keeps), served; close it with ``close_served``."""
    (folder / "api-token").write_text(TOKEN + "\n")
    path = write_gateway_config(folder, {"token_file": "api-token", "cookie_secure": False})
    data = yaml.safe_load(path.read_text())
    data.update(sections)
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return ServedApi(Gateway(load_config(path)))


def close_served(served: ServedApi, video_started: bool = False) -> None:
    served.close()
    if video_started:
        served.gateway.video.stop()
    served.gateway.conn.close()


@dataclass(frozen=True)
class Msg:
    """An MQTT message as the pipeline takes it."""

    topic: str
    payload: bytes
    retain: bool = False


def telemetry(device: str, ts_ms: int, values: dict[str, Any]) -> Msg:
    body = json.dumps({"ts": ts_ms, "values": values}).encode()
    return Msg(f"citygw/v1/{device}/telemetry", body)


def now_ms() -> int:
    return int(time.time() * 1000)


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's chromium driven by Playwright, closed at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield browser
        finally:
            browser.close()
