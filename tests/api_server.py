"""The gateway's API app served by uvicorn on a loopback port, in a thread, for tests that
talk to it over real HTTP without running the whole gateway (no broker, no platform)."""

from __future__ import annotations

from pathlib import Path

import httpx
from served_app import ServedApp, write_gateway_config

from gateway.api import create_api
from gateway.config import load_config
from gateway.service import Gateway


def gateway_for_api(tmp_path: Path, api: dict | None = None) -> Gateway:
    """A gateway on the builtin registry with its store in ``tmp_path``, never started."""
    return Gateway(load_config(write_gateway_config(tmp_path, api or {})))


class ServedApi(ServedApp):
    """``create_api(gateway)`` in uvicorn, configured as the gateway serves it; ``http`` is
    a client for it that sends ``headers`` (e.g. the bearer token) with every request."""

    def __init__(self, gateway: Gateway, headers: dict[str, str] | None = None) -> None:
        self.gateway = gateway
        self.app = create_api(gateway)
        super().__init__(self.app)
        self.http = httpx.Client(base_url=self.url, headers=headers or {}, timeout=5)

    def close(self) -> None:
        self.http.close()
        super().close()
