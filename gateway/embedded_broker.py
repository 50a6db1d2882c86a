"""An embedded MQTT broker (amqtt) for the demo and single-process trials.

Bound to 127.0.0.1 only: amqtt's own default listens on every interface. A street
deployment runs mosquitto or EMQX instead (see docker-compose.yml); this broker is the
"nothing to install" default.
"""

from __future__ import annotations

import asyncio
import logging

from amqtt.broker import Broker


def broker_config(host: str, port: int) -> dict:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


async def run_broker(host: str, port: int, stop: asyncio.Event) -> None:
    logging.getLogger("amqtt").setLevel(logging.WARNING)
    broker = Broker(broker_config(host, port))
    await broker.start()
    try:
        await stop.wait()
    finally:
        await broker.shutdown()
