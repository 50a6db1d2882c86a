"""The gateway process: wires devices → rules → case bridge and runs them on one loop.

Only this module knows all the packages. Ingest runs on paho's thread; everything else —
batch processing and its commit, outbox delivery, status sync and the HTTP API — runs on
the asyncio loop, so the store has exactly one writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import uvicorn

from case_bridge.codes import ClassCatalog
from case_bridge.dispatcher import OutboxDispatcher
from case_bridge.platform import BundledPlatform
from case_bridge.status_sync import StatusSync
from devices.codec import TOPIC_FILTER
from devices.mqtt_ingest import MqttIngest
from devices.registry import load_registry
from devices.replay_guard import ReplayGuard
from domain import CaseCommand
from gateway import store
from gateway.api import create_api
from gateway.config import GatewayConfig
from gateway.pipeline import Pipeline, restore
from rules.engine import RuleEngine
from rules.incidents import IncidentBook, MergePolicy

log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.registry = load_registry(config.devices.registry)
        self.catalog = ClassCatalog(config.cases.local_classes)
        self.engine = RuleEngine(config.rules)
        for device in self.registry.values():
            self.engine.add_source(
                device.device_id,
                device.kind,
                device.location,
                device.part_code,
                device.overrides,
            )
        self.conn = store.connect(config.store.path, config.store.synchronous)
        self.guard = ReplayGuard()
        self.incidents = IncidentBook(
            MergePolicy(config.merge.radius_m, int(config.merge.window_s * 1000))
        )
        restore(self.conn, self.guard, self.engine, self.incidents)
        self.pipeline = Pipeline(
            self.conn,
            self.registry,
            self.guard,
            self.engine,
            self.incidents,
            int(config.ingest.max_future_skew_s * 1000),
        )
        platform_settings = config.case_platform
        self.platform = BundledPlatform(
            str(platform_settings.url), platform_settings.token, platform_settings.timeout_s
        )
        self.dispatcher = OutboxDispatcher(
            self.conn,
            self.platform,
            self.catalog,
            config.cases,
            platform_settings.retry,
            on_case_closed=self._on_case_closed_early,
        )
        self.status_sync = StatusSync(
            self.conn, self.platform, platform_settings.status_sync_s, self._on_case_final
        )
        self.ingest: MqttIngest | None = None
        self.started_ms = int(time.time() * 1000)

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        self.ingest = MqttIngest(
            self.config.mqtt.url,
            self.config.mqtt.client_id,
            TOPIC_FILTER,
            self.config.mqtt.qos,
            loop,
            ready,
            self.config.mqtt.keepalive_s,
        )
        tasks = [
            asyncio.create_task(self._consume(ready), name="consume"),
            asyncio.create_task(self.dispatcher.run(), name="dispatch"),
            asyncio.create_task(self.status_sync.run(), name="status-sync"),
        ]
        server = None
        if self.config.api.enabled:
            server = uvicorn.Server(
                uvicorn.Config(
                    create_api(self),
                    host=self.config.api.host,
                    port=self.config.api.port,
                    log_level="warning",
                    lifespan="off",
                )
            )
            tasks.append(asyncio.create_task(server.serve(), name="api"))
        self.ingest.start()
        log.info("gateway %s running: %d devices", self.config.gateway_id, len(self.registry))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        self.ingest.stop()
        if server is not None:
            server.should_exit = True
        for task in tasks:
            if task not in done:
                task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task  # re-raises a crashed task's error after the others stopped
        await self.platform.aclose()
        self.conn.close()

    async def _consume(self, ready: asyncio.Event) -> None:
        assert self.ingest is not None
        batch_max = self.config.ingest.batch_max
        while True:
            await ready.wait()
            ready.clear()
            while batch := self.ingest.take(batch_max):
                commands = self.pipeline.process(batch, int(time.time() * 1000))
                self.ingest.ack(batch)
                if commands:
                    self.dispatcher.wake()
                await asyncio.sleep(0)  # let delivery and the API breathe between batches

    def _on_case_final(self, incident_id: str, status: str) -> None:
        self.pipeline.close_incident(incident_id, f"case {status} on the platform")

    def _on_case_closed_early(self, incident_id: str, command: CaseCommand) -> None:
        self.pipeline.close_incident(incident_id, "case closed before evidence arrived")
