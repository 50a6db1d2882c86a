"""The gateway process: wires devices, cameras → rules → case bridge on one loop.

Only this module knows all the packages. MQTT ingest runs on paho's thread and cameras on
their own threads; everything that writes — batch processing and its commit, video alerts,
outbox delivery, status sync and the HTTP API — runs on the asyncio loop, so the store has
exactly one writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace

import uvicorn

from case_bridge.codes import ClassCatalog
from case_bridge.dispatcher import OutboxDispatcher
from case_bridge.platform import BundledPlatform
from case_bridge.status_sync import StatusSync
from detectors.backends import load_detector
from devices.fleet import MessageRouter
from devices.mqtt_ingest import MqttIngest
from devices.registry import load_registry
from devices.rejections import Rejection
from devices.replay_guard import ReplayGuard
from devices.serial import SerialAdapters, check_registry, start_serial
from domain import Alert, AlertState, CaseCommand, Location, Observation, Priority, Reading
from gateway import history, store
from gateway.api import create_api
from gateway.config import GatewayConfig
from gateway.evidence import save_evidence
from gateway.influx_sink import InfluxSink
from gateway.pipeline import Pipeline, restore
from gateway.video import VideoRuntime
from rules.device_health import DeviceHealth
from rules.engine import RuleEngine
from rules.incidents import IncidentBook, MergePolicy
from rules.video_rules import VideoRuleEngine

log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self.registry = load_registry(config.devices.registry)
        check_registry(config.serial, self.registry)
        self.catalog = ClassCatalog(config.cases.local_classes)
        self.engine = RuleEngine(config.rules)
        self.health = DeviceHealth(config.rules.health)
        for d in self.registry.values():
            self.engine.add_source(d.device_id, d.kind, d.location, d.part_code, d.overrides)
            self.health.add_device(d.device_id, d.kind, d.location, d.part_code, d.overrides)
        self.video_engine = VideoRuleEngine(config.video.rules)
        self.video = self._build_video(config) if config.video.cameras else None
        self.evidence_dir = config.store.path.parent / "evidence"

        self.conn = store.connect(config.store.path, config.store.synchronous)
        self.guard = ReplayGuard()
        merge = config.merge
        self.incidents = IncidentBook(MergePolicy(merge.radius_m, int(merge.window_s * 1000)))
        rule_states = {
            "rule": self.engine.states,
            "video": self.video_engine.states,
            "health": self.health.states,
        }
        restore(self.conn, self.guard, self.incidents, rule_states)
        skew_ms = int(config.ingest.max_future_skew_s * 1000)
        self.router = MessageRouter(config.devices.fleets)
        self.pipeline = Pipeline(
            self.conn, self.registry, self.guard, self.engine, self.incidents, skew_ms,
            rule_states, self.health, self.router,
        )  # fmt: skip
        influx = config.history.influxdb
        kinds = {d.device_id: d.kind for d in self.registry.values()}
        self.influx = InfluxSink(self.conn, influx, config.gateway_id, kinds) if influx else None

        platform = config.case_platform
        self.platform = BundledPlatform(str(platform.url), platform.token, platform.timeout_s)
        self.dispatcher = OutboxDispatcher(
            self.conn, self.platform, self.catalog, config.cases, platform.retry,
            on_case_closed=self._on_case_closed_early,
        )  # fmt: skip
        self.status_sync = StatusSync(
            self.conn, self.platform, platform.status_sync_s, self._on_case_final
        )
        self.ingest: MqttIngest | None = None
        self.serial: SerialAdapters | None = None
        self._serial_results: list[tuple[str, bytes, Reading | Rejection]] = []
        self.upkeep_last: dict = {}
        self.started_ms = int(time.time() * 1000)

    def _build_video(self, config: GatewayConfig) -> VideoRuntime:
        """Load the model now, so that a bad model file is a clear error at start."""
        settings = config.video.detector
        assert settings is not None  # the config validator guarantees it with cameras
        detector = load_detector(settings.model, settings.backend, settings.conf, settings.iou)
        runtime = VideoRuntime(
            config.video.cameras, detector, settings.class_map,
            deliver=self._on_loop(self._on_observations),
            on_status=self._on_loop(self._on_camera_status),
            recheck_s=config.video.recheck_s,
        )  # fmt: skip
        for camera in config.video.cameras:
            analyser = runtime.analysers[camera.id]
            for zone in analyser.zones:
                self.video_engine.add_zone(
                    camera.id, zone.id, zone.type, zone.location, zone.class_code,
                    analyser.schedule(zone.id),
                )  # fmt: skip
        return runtime

    def _on_loop(self, handler: Callable[..., None]) -> Callable[..., None]:
        """A thread-safe callback that runs ``handler`` on the event loop (the one writer)."""

        def call(*args: object) -> None:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(handler, *args)

        return call

    async def run(self, stop: asyncio.Event) -> None:
        loop = self._loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        mqtt = self.config.mqtt
        self.ingest = MqttIngest(
            mqtt.url, mqtt.client_id, self.router.subscriptions(), mqtt.qos, loop, ready,
            mqtt.keepalive_s, security=mqtt,
        )  # fmt: skip
        tasks = [
            asyncio.create_task(self._consume(ready), name="consume"),
            asyncio.create_task(self._keep_history(), name="history"),
            asyncio.create_task(self.dispatcher.run(), name="dispatch"),
            asyncio.create_task(self.status_sync.run(), name="status-sync"),
            asyncio.create_task(self._watch_health(), name="health"),
        ]
        if self.influx is not None:
            tasks.append(asyncio.create_task(self.influx.run(), name="influxdb"))
        server = None
        if self.config.api.enabled:
            api = self.config.api
            server = uvicorn.Server(
                uvicorn.Config(
                    create_api(self), host=api.host, port=api.port, log_level="warning",
                    lifespan="off",
                )
            )  # fmt: skip
            tasks.append(asyncio.create_task(server.serve(), name="api"))
        self.ingest.start()
        if self.config.serial.ports:
            on_result = self._on_loop(self._on_serial_result)
            self.serial = start_serial(self.config.serial, self.registry, on_result)
        if self.video is not None:
            self.video.start()
        cameras = len(self.config.video.cameras)
        log.info("gateway %s running: %d devices, %d cameras", self.config.gateway_id,
                 len(self.registry), cameras)  # fmt: skip
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        self.ingest.stop()
        if self.serial is not None:
            await asyncio.to_thread(self.serial.stop)
        if self.video is not None:
            await asyncio.to_thread(self.video.stop)
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
                if self.influx is not None:
                    self.influx.notify()
                if commands:
                    self.dispatcher.wake()
                await asyncio.sleep(0)  # let delivery and the API breathe between batches

    async def _keep_history(self) -> None:
        """Retention and downsampling, off the loop on a connection of its own: upkeep
        works in small transactions, so ingest commits get through in between."""
        settings, path = self.config.history, self.config.store.path
        synchronous = self.config.store.synchronous

        def upkeep_once() -> dict:
            conn = store.connect(path, synchronous)
            try:
                return history.upkeep(conn, settings, int(time.time() * 1000))
            finally:
                conn.close()

        while True:
            try:
                self.upkeep_last = await asyncio.to_thread(upkeep_once)
            except sqlite3.Error as exc:  # e.g. disk full: ingest must go on; try next time
                self.upkeep_last = {"error": str(exc)}
                log.error("history upkeep failed: %s", exc)
            await asyncio.sleep(settings.upkeep_every_s)

    async def _watch_health(self) -> None:
        """Silence has no reading to trigger on: look for it on a timer."""
        self.health.start(int(time.time() * 1000))
        while True:
            if alerts := self.health.tick(int(time.time() * 1000)):
                self._apply(alerts)
            await asyncio.sleep(self.config.rules.health.check_every_s)

    def _on_serial_result(self, origin: str, raw: bytes, result: Reading | Rejection) -> None:
        """Serial results arrive one by one from the port threads; the first of a burst
        schedules one commit for all that arrive before it runs."""
        self._serial_results.append((origin, raw, result))
        if len(self._serial_results) == 1:
            asyncio.get_running_loop().call_soon(self._commit_serial)

    def _commit_serial(self) -> None:
        items, self._serial_results = self._serial_results, []
        if self.pipeline.process_decoded(items, int(time.time() * 1000)):
            self.dispatcher.wake()
        if self.influx is not None:
            self.influx.notify()

    def _apply(self, alerts: list[Alert]) -> None:
        if self.pipeline.apply_alerts(alerts, int(time.time() * 1000)):
            self.dispatcher.wake()

    def _on_observations(self, camera_id: str, ts_ms: int, observations: list[Observation]) -> None:
        alerts = self.video_engine.process(camera_id, ts_ms, observations)
        self._apply([self._with_evidence(alert, observations) for alert in alerts])

    def _with_evidence(self, alert: Alert, observations: list[Observation]) -> Alert:
        """Firing and escalating video alerts carry the frame with boxes and zone drawn,
        and the zone's "before" frame (what it looked like before the object came)."""
        if alert.state is AlertState.CLEARED or self.video is None:
            return alert
        camera_id, zone_id, _rule = alert.key.split("/")
        try:
            drawn, before = self.video.evidence(camera_id, zone_id, observations)
        except LookupError:
            return alert
        return replace(alert, media=save_evidence(self.evidence_dir, alert, drawn, before))

    def _on_camera_status(self, camera_id: str, status: str, detail: str, ts_ms: int) -> None:
        """A camera down for ``offline_after_s`` is a maintenance problem of its own; its
        recovery clears it."""
        if status not in ("offline", "online"):
            return
        log.warning("camera %s %s: %s", camera_id, status, detail)
        camera = next(c for c in self.config.video.cameras if c.id == camera_id)
        zone = camera.zones[0]
        self._apply([
            Alert(
                key=f"{camera_id}/camera_offline",
                source_id=camera_id,
                rule_id="camera_offline",
                state=AlertState.FIRING if status == "offline" else AlertState.CLEARED,
                class_code=self.config.video.camera_offline_class,
                priority=Priority.LOW,
                location=Location(zone.lat, zone.lon, zone.address, zone.grid_code),
                ts=ts_ms,
                summary=f"camera {status}: {detail}",
                origin="video",
            )
        ])  # fmt: skip

    def _on_case_final(self, incident_id: str, status: str) -> None:
        self.pipeline.close_incident(incident_id, f"case {status} on the platform")

    def _on_case_closed_early(self, incident_id: str, command: CaseCommand) -> None:
        self.pipeline.close_incident(incident_id, "case closed before evidence arrived")
