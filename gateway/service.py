"""The gateway process: wires devices, cameras → rules → case bridge on one loop.

Only this module knows all the packages. MQTT ingest runs on paho's thread and cameras on
their own threads; everything that changes state — batch processing, video alerts, outbox
delivery, status sync and the HTTP API — runs on the asyncio loop. The pipeline's commits
keep the order in which the loop made them (gateway/commit_queue.py); an MQTT batch's runs
on a thread of its own, on the pipeline's own connection, while the loop prepares the next.
What runs is a list of runtime parts (gateway/parts.py): the gateway starts them, stops
them and reads their figures, and a part's loop that fails is restarted rather than taking
the process down.

On several replicas (gateway/replica.py), the replica holding the desk lease runs this
class as the city's incident desk (``DeskRole``): the store is the shared PostgreSQL,
alerts come from the shared alert log instead of MQTT, and a closed case's re-arms go to
the replicas holding the rule state. The alert flow, incidents, case bridge, status sync
and closure checks are the embedded gateway's own code, not a second copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import uvicorn
from fastapi import FastAPI

from case_bridge import outbox
from case_bridge.codes import ClassCatalog
from case_bridge.dispatcher import OutboxDispatcher
from case_bridge.guarded_platform import GuardedPlatform
from case_bridge.mapped_rest import MappedRestPlatform
from case_bridge.open311 import Open311Platform
from case_bridge.platform import BundledPlatform, CasePlatform, PlatformError
from case_bridge.platform_settings import CasePlatformSettings
from case_bridge.status_sync import StatusSync
from detectors.backends import load_detector
from devices.fleet import MessageRouter
from devices.mqtt_ingest import InboundMessage, MqttIngest
from devices.registry import load_registry
from devices.rejections import Rejection
from devices.replay_guard import ReplayGuard
from devices.serial import SerialAdapters, check_registry, start_serial
from domain import Alert, AlertState, Backoff, CaseCommand, Observation, Reading
from gateway import history, retention, store
from gateway.api import create_api
from gateway.api_duplicates import Write
from gateway.api_platform_events import PlatformEvents
from gateway.camera_alerts import CameraAlerts, build_runtime
from gateway.closure_check import ClosureCheck
from gateway.config import GatewayConfig
from gateway.evidence import EvidenceWriter
from gateway.evidence_links import links_from_settings
from gateway.http_deadline import DeadlineH11Protocol
from gateway.influx_sink import InfluxSink
from gateway.metrics import GatewayMetrics
from gateway.parts import LoopPart, RuntimePart, ThreadedPart, start_all, stop_all
from gateway.pipeline import Pipeline, StoreUnavailable, restore
from gateway.rule_settings import settings_from_files, zone_keys
from gateway.sensor_excerpts import SensorExcerpts, rule_thresholds
from gateway.silences import SilenceStore
from gateway.threshold_versions import ThresholdVersions
from gateway.video import VideoRuntime
from rules.device_health import DeviceHealth
from rules.engine import RuleEngine
from rules.flow import AlertFlow
from rules.incidents import IncidentBook
from rules.settings import RuleSettings
from rules.silences import Silence
from rules.video_rules import VideoRuleEngine

log = logging.getLogger(__name__)

# How often held alerts (silenced, awaiting confirmation) are looked at: a silence that
# ends files its still-firing cases within this.
RELEASE_EVERY_S = 1.0
# Batches prepared while a commit syncs, at most, before the loop waits for it: they go into
# the next commit together, and this bounds that transaction (and the memory it holds).
QUEUED_BATCHES_MAX = 16
# How long a stop waits for the batches prepared to be saved and acknowledged.
STOP_SAVE_S = 10.0


@dataclass(frozen=True)
class DeskRole:
    """The gateway as a cluster's incident desk: ``conn`` is the shared store (fenced by the
    desk lease), ``intake`` the loop feeding it the alert log, ``rearm_elsewhere`` the write
    that queues re-arms for the replicas holding the rule state (Pipeline)."""

    conn: Any
    intake: Callable[[Gateway], Coroutine[Any, Any, None]]
    rearm_elsewhere: Callable[..., object]
    # Asked before every call to the platform: None while the desk lease is surely held,
    # else why not, so a desk paused past its lease sends nothing when it wakes.
    may_send: Callable[[], str | None]
    # A new session on the shared store, fenced like ``conn``, for the upkeep's thread.
    connect: Callable[[], Any]


def _confirm_ms(settings: RuleSettings) -> int:
    return round(settings.kinds.health.confirm_s * 1000)


class Gateway:
    def __init__(
        self, config: GatewayConfig, source: str = "the config file", desk: DeskRole | None = None
    ) -> None:
        """``source`` names the config file in the first threshold version's reason. A desk
        takes its thresholds from the config files alone: versions made through the API
        are the embedded gateway's (its API is not served by replicas)."""
        self.config = config
        self.desk = desk
        self._loop: asyncio.AbstractEventLoop | None = None
        self.registry = load_registry(config.devices.registry)
        check_registry(config.serial, self.registry)
        self.catalog = ClassCatalog(config.cases.local_classes)
        if desk is None:
            self.conn = store.connect(config.store.path, config.store.synchronous)
            # The pipeline's own: its commits run on a thread while the loop goes on.
            self.pipeline_conn = store.connect(config.store.path, config.store.synchronous)
            self.threshold_versions, settings = self._threshold_settings(config, source)
        else:
            self.conn = self.pipeline_conn = desk.conn
            self.threshold_versions, settings = None, settings_from_files(config, self.registry)
        self.engine = RuleEngine(settings, config.tz)
        self.health = DeviceHealth(settings)
        for d in self.registry.values():
            self.engine.add_source(d.device_id, d.kind, d.location, d.part_code)
            self.health.add_device(d.device_id, d.kind, d.location, d.part_code)
        self.video_engine = VideoRuleEngine(settings, config.tz)
        self.evidence_dir = config.evidence.folder(config.store.path.parent)
        self.evidence = EvidenceWriter(
            self.evidence_dir,
            links_from_settings(config.evidence, config.store.path.parent),
            config.evidence.max_picture_bytes,
        )
        video = config.video
        self.cameras = CameraAlerts(
            video.cameras, self.video_engine, self.evidence, video.camera_offline_class
        )
        # A desk runs no camera: replicas hold them by lease (gateway/replica.py).
        self.video = self._build_video(config) if video.cameras and desk is None else None
        self.cameras.video = self.video

        self.guard = ReplayGuard()
        # Grids, responsible units, class priorities and deadlines (case_bridge/dispatch.py).
        self.dispatch = config.dispatch()
        self.incidents = IncidentBook(
            config.merge.to_policy(),
            config.merge,
            grid_parent=self.dispatch.parent_of,
            lead_sites=self.engine.class_sites(),
        )
        self.flow = AlertFlow(self.incidents, config.alerting, _confirm_ms(settings))
        # A desk holds no rule state: the partitions' and cameras' workers do, and a closed
        # case's re-arms reach them through ``desk.rearm_elsewhere``.
        rule_states = (
            {"rule": self.engine.states, "video": self.video_engine.states,
             "health": self.health.states}
            if desk is None
            else {}
        )  # fmt: skip
        restore(self.conn, self.guard if desk is None else None, self.incidents, rule_states,
                self.flow)  # fmt: skip
        skew_ms = int(config.ingest.max_future_skew_s * 1000)
        self.router = MessageRouter(config.devices.fleets, limits=config.ingest.limits)
        kinds = {d.device_id: d.kind for d in self.registry.values()}
        # A device alert that fires or escalates carries its excerpt of readings, after the
        # dispatch's view of it (gateway/sensor_excerpts.py).
        self.excerpts = SensorExcerpts(
            self.conn, self.evidence, config.evidence.sensor_excerpts, kinds,
            rule_thresholds(lambda: self.engine.settings),
            unsaved=lambda device_id: self.pipeline.unsaved_readings(device_id),
        )  # fmt: skip
        self.pipeline = Pipeline(
            self.pipeline_conn, self.registry, self.guard, self.engine, self.incidents,
            skew_ms, rule_states, self.health, self.router, self.flow,
            enrich=self.excerpts.after(self.dispatch.enrich),
            rearm_elsewhere=desk.rearm_elsewhere if desk is not None else None,
            background_commits=desk is None,
        )  # fmt: skip
        self.silences = SilenceStore(self.conn, config.alerting.silences, self._on_silence)
        influx = config.history.influxdb
        self.influx = (
            InfluxSink(self.conn, influx, config.gateway_id, kinds)
            if influx and desk is None
            else None
        )

        platform = config.case_platform
        self._adapter = self._platform_adapter(platform)
        # One wrapper for filing and status sync: they share the breaker and the rate limit.
        self.platform = GuardedPlatform(
            self._adapter, platform.delivery, fresh_link=self.evidence.links.refreshed,
            may_send=desk.may_send if desk is not None else None,
        )  # fmt: skip
        self.dispatcher = OutboxDispatcher(
            self.conn, self.platform, self.catalog, config.cases, platform.retry,
            on_case_closed=self._on_case_closed_early, on_delivered=self._on_delivered,
            dispatch=self.dispatch, delivery=platform.delivery,
        )  # fmt: skip
        self.closure = ClosureCheck(self.conn, self.pipeline, self.cameras.after_photo)
        self.status_sync = StatusSync(
            self.conn, self.platform, platform.status_sync_s, self._on_case_status,
            on_case_status=self._on_case_status,
        )  # fmt: skip
        webhook = platform.webhook
        self.platform_events = (
            PlatformEvents(webhook, self._on_platform_event, conn=self.conn)
            if webhook is not None
            else None
        )
        self.ingest: MqttIngest | None = None
        self.api_app: FastAPI | None = None  # built when the API part starts
        self.serial: SerialAdapters | None = None
        self.parts: list[RuntimePart] = []
        self.metrics = GatewayMetrics(self.stats)
        self._serial_results: list[tuple[str, bytes, Reading | Rejection]] = []
        self.upkeep_last: dict = {}
        # MQTT batches prepared, by ticket, with whether they made case commands: each is
        # acknowledged (and the case bridge woken) once the pipeline has saved it.
        self._unacked: deque[tuple[int, list[InboundMessage], bool]] = deque()
        self._closing = False  # the MQTT connection is closing: take and commit no more

    def _platform_adapter(self, platform: CasePlatformSettings) -> CasePlatform:
        """The adapter ``case_platform.adapter`` names, from its settings."""
        if platform.adapter == "open311":
            assert platform.open311 is not None  # the settings check it
            return Open311Platform(platform.open311, watched_ids=self._watched_case_ids)
        if platform.adapter == "mapped_rest":
            assert platform.mapped_rest is not None
            return MappedRestPlatform(platform.mapped_rest, self.evidence.read_linked)
        assert platform.url is not None and platform.token is not None
        return BundledPlatform(
            str(platform.url), platform.token.get_secret_value(), platform.timeout_s
        )

    def _watched_case_ids(self) -> list[str]:
        """The platform cases of open incidents: what status sync follows on a platform
        that cannot list changes since a time (Open311 without ``updated_after``)."""
        cases = (outbox.case_for(self.conn, incident) for incident in self.incidents.open_ids())
        return [case for case in cases if case is not None]

    def _threshold_settings(
        self, config: GatewayConfig, source: str
    ) -> tuple[ThresholdVersions, RuleSettings]:
        """The thresholds in force: the latest stored version, with any edit of the config
        file or registry since the last start merged on top (gateway/threshold_versions.py)."""
        kinds = {d.device_id: d.kind for d in self.registry.values()}
        from_config = settings_from_files(config, self.registry)
        versions = ThresholdVersions(
            self.conn, kinds, zone_keys(config), settle=lambda: self.pipeline.flush()
        )
        recorded = versions.reconcile(from_config, source)
        if recorded.changed:
            log.info("thresholds: %s", recorded.latest.reason)
        return versions, recorded.latest.settings

    def apply_settings(self, settings: RuleSettings) -> None:
        """A new threshold version, applied between batches (this runs on the loop, which
        orders every write): every engine takes it or, on a ValueError, the caller puts the
        previous version back on all of them."""
        self.engine.reconfigure(settings)
        self.incidents.set_lead_sites(self.engine.class_sites())
        self.health.reconfigure(settings)
        self.video_engine.reconfigure(settings)
        self.flow.reconfigure(_confirm_ms(settings))
        # What the change did to rule state is stored in the version's own transaction:
        # a crash before the next batch must not bring back state the change dropped.
        self.pipeline.write_states(self.conn)

    def merge_duplicate(
        self,
        incident_id: str,
        into_id: str,
        who: str,
        reason: str,
        score: float,
        also: Sequence[Write],
    ) -> list[CaseCommand]:
        """An operator's merge of a suspected duplicate (gateway/api_duplicates.py), on the
        loop like every other write to the incident book; the case bridge is woken for the
        attach and the void it makes."""
        commands = self.pipeline.merge_duplicate(incident_id, into_id, who, reason, score, also)
        if commands:
            self.dispatcher.wake()
        return commands

    def _build_video(self, config: GatewayConfig) -> VideoRuntime:
        """Load the model now, so that a bad model file is a clear error at start."""
        settings = config.video.detector
        assert settings is not None  # the config validator guarantees it with cameras
        detector = load_detector(settings.model, settings.backend, settings.conf, settings.iou)
        return build_runtime(
            config.video.cameras, detector, settings, self.video_engine,
            deliver=self._on_loop(self._on_observations),
            on_status=self._on_loop(self._on_camera_status),
            recheck_s=config.video.recheck_s,
        )  # fmt: skip

    def _on_loop(self, handler: Callable[..., None]) -> Callable[..., None]:
        """A thread-safe callback that runs ``handler`` on the event loop, which orders every
        write."""

        def call(*args: object) -> None:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(handler, *args)

        return call

    async def run(self, stop: asyncio.Event) -> None:
        """Start every part, run until ``stop`` is set, stop them in reverse order."""
        self._loop = asyncio.get_running_loop()
        self.parts = self._build_parts()
        cameras = len(self.config.video.cameras)
        try:
            if isinstance(self._adapter, Open311Platform):
                await self._start_open311(self._adapter)
            await start_all(self.parts)
            log.info("gateway %s running: %d devices, %d cameras", self.config.gateway_id,
                     len(self.registry), cameras)  # fmt: skip
            await stop.wait()
        finally:
            await stop_all(self.parts)
            await self.platform.aclose()
            self.pipeline.close()
            self.conn.close()
            if self.pipeline_conn is not self.conn:
                self.pipeline_conn.close()

    async def _start_open311(self, adapter: Open311Platform) -> None:
        """Service discovery before anything is filed. A mapping the server cannot take
        stops the start with each mismatch named; a server that is down is not a reason
        to stop sensing: discovery then happens at the first filing."""
        try:
            await adapter.start()
        except PlatformError as exc:
            log.warning("open311: discovery failed (%s); retried at the first filing", exc)

    def _build_parts(self) -> list[RuntimePart]:
        """What runs, in start order: consumers before the sources that feed them, so that
        nothing received waits for its handler; stopped the other way round."""
        if self.desk is not None:
            return self._desk_parts(self.desk)
        mqtt = self.config.mqtt
        ready = asyncio.Event()
        assert self._loop is not None
        self.ingest = MqttIngest(
            mqtt.url, mqtt.client_id, self.router.subscriptions(), mqtt.qos, self._loop, ready,
            mqtt.keepalive_s, security=mqtt,
        )  # fmt: skip
        dispatcher, sync, counters = self.dispatcher, self.status_sync, self.pipeline.counters
        parts: list[RuntimePart] = [
            LoopPart("consume", partial(self._consume, ready), lambda: dict(counters)),
            LoopPart("delivery", dispatcher.run,
                     lambda: {**dispatcher.stats, **self.platform.stats(),
                              "last_error": dispatcher.last_error}),
            LoopPart("status_sync", sync.run, sync.stats),
            LoopPart("upkeep", self._upkeep, lambda: dict(self.upkeep_last)),
            LoopPart("health", self._watch_health, self.health.snapshot),
            LoopPart("held", self._release_held, self._held_stats),
        ]  # fmt: skip
        if self.influx is not None:
            parts.append(LoopPart("influxdb", self.influx.run, self.influx.stats))
        parts.append(ThreadedPart("mqtt", self.ingest.start, self._stop_ingest, self.ingest.stats))
        if self.config.serial.ports:
            parts.append(
                ThreadedPart("serial", self._start_serial, self._stop_serial, self._serial_stats)
            )
        if self.video is not None:
            video = self.video
            parts.append(ThreadedPart("video", video.start, video.stop, video.snapshot))
        if self.config.api.enabled:
            parts.append(self._api_part())
        return parts

    def _desk_parts(self, desk: DeskRole) -> list[RuntimePart]:
        """A desk's parts: the alert log in, cases out, statuses back, held alerts due."""
        dispatcher, sync, counters = self.dispatcher, self.status_sync, self.pipeline.counters
        return [
            LoopPart("alert_log", partial(desk.intake, self), lambda: dict(counters)),
            LoopPart("delivery", dispatcher.run,
                     lambda: {**dispatcher.stats, **self.platform.stats(),
                              "last_error": dispatcher.last_error}),
            LoopPart("status_sync", sync.run, sync.stats),
            LoopPart("held", self._release_held, self._held_stats),
            LoopPart("upkeep", self._upkeep, lambda: dict(self.upkeep_last)),
        ]  # fmt: skip

    def _api_part(self) -> LoopPart:
        api = self.config.api
        self.api_app = create_api(self, self.platform_events)
        server = uvicorn.Server(
            uvicorn.Config(
                self.api_app, host=api.host, port=api.port,
                log_level="warning", log_config=None, lifespan="off", server_header=False,
                timeout_keep_alive=5,
                # Open connections (each costs a file descriptor); requests in flight are
                # capped lower by the API's guard, and idle ones closed by the head deadline.
                limit_concurrency=1024, http=DeadlineH11Protocol,
            )
        )  # fmt: skip

        def request_exit() -> None:
            server.should_exit = True

        return LoopPart("api", server.serve, request_exit=request_exit)

    def stats(self) -> dict[str, Any]:
        """Every part's figures under its name, with the store's."""
        figures: dict[str, Any] = {part.name: part.stats() for part in self.parts}
        figures["parts"] = {
            part.name: part.supervision() for part in self.parts if isinstance(part, LoopPart)
        }
        if self.desk is not None:  # the shared store's counts are the cluster's, not ours
            return figures
        figures.update(
            readings_stored=store.count_rows(self.conn, "readings"),
            alerts=store.count_rows(self.conn, "alerts"),
            rejected=store.rejection_counts(self.conn),
            outbox=outbox.counts(self.conn),
            outbox_oldest_pending_ms=outbox.oldest_pending_ms(self.conn),
            incidents_open=len(self.incidents.open_ids()),
            # Readings kept but not given to business rules since start: device suspect.
            suspect_readings=self.pipeline.counters["suspect"],
            evidence_refused=dict(self.evidence.refused),
            evidence_excerpts=dict(self.excerpts.written),
            closure_flags=dict(self.closure.flags),
            # Deadlines a working-hours calendar could not count, filed in plain hours.
            deadlines_in_plain_hours=self.dispatch.stats["deadline_in_plain_hours"],
            platform_events=self.platform_events.stats() if self.platform_events else {},
            api_access=self._api_access(),
            evidence_uploads=(
                dict(self._adapter.upload_stats)
                if isinstance(self._adapter, MappedRestPlatform)
                else {}
            ),
        )
        return figures

    def _api_access(self) -> dict[str, Any]:
        """Sign-ins by outcome and requests the API's guard refused, by reason."""
        if self.api_app is None:
            return {}
        state = self.api_app.state
        return {"sign_ins": dict(state.sign_ins.counts), "refused": dict(state.api_refused)}

    async def _consume(self, ready: asyncio.Event) -> None:
        """Batches from paho's thread through the pipeline. Each is prepared here and
        queued; the pipeline's commit thread commits what is queued, one commit at a time,
        while the loop prepares the next batches, so what arrives while one commit syncs
        goes into the next (gateway/commit_queue.py). A batch's messages are acknowledged
        once it is saved. ``ready`` is set by new messages and by the end of a commit (a
        done-callback): one event to wait on."""
        assert self.ingest is not None and self._loop is not None
        batch_max = self.config.ingest.batch_max
        loop = self._loop

        def commit_ended(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed during a stop
                loop.call_soon_threadsafe(ready.set)

        while True:
            await ready.wait()
            ready.clear()
            while not self._closing:
                if self.pipeline.queued_batches >= QUEUED_BATCHES_MAX:
                    await self._next_commit(commit_ended)
                    if self.pipeline.queued_batches >= QUEUED_BATCHES_MAX:
                        break  # the commit under way wakes this loop when it ends
                    continue
                batch = self.ingest.take(batch_max)
                if not batch:
                    break
                started = time.perf_counter()
                ticket, commands = self.pipeline.prepare(batch, int(time.time() * 1000))
                self.metrics.batch_seconds.observe(time.perf_counter() - started)
                self._unacked.append((ticket, batch, bool(commands)))
                await self._next_commit(commit_ended)
                await asyncio.sleep(0)  # let delivery and the API breathe between batches
            await self._next_commit(commit_ended)

    async def _next_commit(self, on_end: Callable[[object], None]) -> None:
        """Unless a commit is under way: take the last one's outcome, acknowledge what is
        saved, and start committing what is queued (``on_end`` called when it ends)."""
        committing = self.pipeline.committing
        if committing is not None and not committing.done():
            return
        await self._saved_so_far()
        if not self._closing and self.pipeline.start_commit():
            started = self.pipeline.committing
            assert started is not None
            started.add_done_callback(on_end)

    async def _saved_so_far(self) -> None:
        """Wait for the commit under way; acknowledge every batch saved. A commit the store
        refused is retried (``_until_saved``) before anything more is acknowledged."""
        committing = self.pipeline.committing
        if committing is not None:
            waited = asyncio.wrap_future(committing)
            # Its outcome is ``settle``'s to take (the store's text must not reach the log
            # as an unretrieved exception); shielded, a stop cancels this wait, never the
            # commit (``Pipeline.close`` waits for it).
            waited.add_done_callback(lambda done: done.cancelled() or done.exception())
            with contextlib.suppress(Exception):
                await asyncio.shield(waited)
            self.pipeline.settle()
        if self.pipeline.unsaved:
            await self._until_saved()
        self._ack_saved()

    def _ack_saved(self) -> None:
        assert self.ingest is not None
        saved, acked, commands = self.pipeline.saved_upto, [], False
        while self._unacked and self._unacked[0][0] <= saved:
            ticket, batch, made_commands = self._unacked.popleft()
            if self.pipeline.dropped(ticket):  # never saved: the broker sends them again
                continue
            acked.extend(batch)
            commands |= made_commands
        if not acked:
            return
        self.ingest.ack(acked)
        if self.influx is not None:
            self.influx.notify()
        if commands:  # the case bridge need not wait for its next tick
            self.dispatcher.wake()

    def _stop_ingest(self) -> None:
        """(Off the loop, as threaded parts stop.) Save every batch prepared and acknowledge
        it before the MQTT connection closes, then take no more: a batch saved but not
        acknowledged (a later part's write would commit what is queued) would come back
        after the restart as duplicates. A store that refuses gets ``STOP_SAVE_S``."""
        assert self._loop is not None and self.ingest is not None

        async def close() -> None:
            self._closing = True
            await self._saved_so_far()
            if self.pipeline.start_commit():
                await self._saved_so_far()

        saving = asyncio.run_coroutine_threadsafe(close(), self._loop)
        try:
            saving.result(timeout=STOP_SAVE_S)
        except Exception:  # a store that refuses, or a loop that cannot answer: stop anyway
            saving.cancel()
            log.warning("stopping with batches not saved; the broker sends them again")
        self.ingest.stop()

    async def _until_saved(self) -> None:
        """The store refused a commit (disk full, I/O error): retry with backoff until it
        takes the kept batches. Nothing is acknowledged meanwhile, so the broker holds the
        messages; the rest of the gateway keeps running."""
        backoff = Backoff(initial_s=0.5, max_s=30.0)
        while self.pipeline.unsaved:
            await asyncio.sleep(backoff.next_delay())
            with contextlib.suppress(StoreUnavailable):
                self.pipeline.flush()
        log.info("store commits again")

    async def _upkeep(self) -> None:
        """Telemetry retention/downsampling and the other records' retention, off the loop
        on a connection of its own: upkeep works in small transactions, so ingest commits
        get through in between. Dead letters can arrive at line rate, so retention runs more
        often than telemetry upkeep."""
        config = self.config
        path, synchronous = config.store.path, config.store.synchronous
        history_every_s = config.history.upkeep_every_s
        every_s = min(history_every_s, config.retention.every_s)
        last_history = -math.inf
        # A desk keeps the shared store (on a session of its own, fenced by its lease).
        connect = (
            self.desk.connect
            if self.desk is not None
            else partial(store.connect, path, synchronous)
        )

        def upkeep_once(with_history: bool) -> dict:
            conn = connect()
            now_ms = int(time.time() * 1000)
            try:
                report = {"retention": retention.upkeep(
                    conn, config.retention, self.evidence_dir, now_ms)}  # fmt: skip
                if with_history:
                    report["history"] = history.upkeep(conn, config.history, now_ms)
                return report
            finally:
                conn.close()

        while True:
            with_history = time.monotonic() - last_history >= history_every_s
            try:
                self.upkeep_last = await asyncio.to_thread(upkeep_once, with_history)
                if with_history:
                    last_history = time.monotonic()
            except store.DatabaseError as exc:  # disk full, a lost session: try next time
                self.upkeep_last = {"error": str(exc)}
                log.error("store upkeep failed: %s", exc)
            await asyncio.sleep(every_s)

    async def _watch_health(self) -> None:
        """Silence has no reading to trigger on: look for it on a timer."""
        self.health.start(int(time.time() * 1000))
        while True:
            if alerts := self.health.tick(int(time.time() * 1000)):
                self._apply(alerts)
            await asyncio.sleep(self.config.rules.health.check_every_s)

    async def _release_held(self) -> None:
        """Held alerts have no reading to trigger on when their silence ends or their
        confirmation elapses: look on a timer."""
        while True:
            with contextlib.suppress(StoreUnavailable):
                if self.pipeline.release_due(int(time.time() * 1000)):
                    self.dispatcher.wake()
            await asyncio.sleep(RELEASE_EVERY_S)

    def _held_stats(self) -> dict[str, Any]:
        return {
            **self.flow.held(int(time.time() * 1000)),
            "next_due_ms": self.flow.next_due_ms,
        }

    def _on_silence(self, silence: Silence, now_ms: int) -> None:
        """A silence was made, extended or removed through the API: what it held may be
        due now (kept for the next commit if the store refuses this one)."""
        with contextlib.suppress(StoreUnavailable):
            if self.pipeline.update_silence(silence, now_ms):
                self.dispatcher.wake()

    def _start_serial(self) -> None:
        on_result = self._on_loop(self._on_serial_result)
        self.serial = start_serial(self.config.serial, self.registry, on_result)

    def _stop_serial(self) -> None:
        if self.serial is not None:
            self.serial.stop()

    def _serial_stats(self) -> dict[str, Any]:
        return self.serial.stats() if self.serial is not None else {}

    def _on_serial_result(self, origin: str, raw: bytes, result: Reading | Rejection) -> None:
        """Serial results arrive one by one from the port threads; the first of a burst
        schedules one commit for all that arrive before it runs."""
        self._serial_results.append((origin, raw, result))
        if len(self._serial_results) == 1:
            asyncio.get_running_loop().call_soon(self._commit_serial)

    def _commit_serial(self) -> None:
        items, self._serial_results = self._serial_results, []
        with contextlib.suppress(StoreUnavailable):  # kept; saved by the next commit
            if self.pipeline.process_decoded(items, int(time.time() * 1000)):
                self.dispatcher.wake()
        if self.influx is not None:
            self.influx.notify()

    def _apply(self, alerts: list[Alert]) -> None:
        """Alerts of cameras, device health and re-filed commands, committed like readings
        (kept for the next commit if the store refuses this one)."""
        with contextlib.suppress(StoreUnavailable):
            if self.pipeline.apply_alerts(alerts, int(time.time() * 1000)):
                self.dispatcher.wake()

    def _on_observations(self, camera_id: str, ts_ms: int, observations: list[Observation]) -> None:
        self._apply(self.cameras.observed(camera_id, ts_ms, observations))

    def _on_camera_status(self, camera_id: str, status: str, detail: str, ts_ms: int) -> None:
        self._apply(self.cameras.status(camera_id, status, detail, ts_ms))

    def _on_case_status(self, incident_id: str, status: str) -> None:
        """A case's status from status sync: closure check (gateway/closure_check.py);
        kept for the next commit if the store refuses this one."""
        with contextlib.suppress(StoreUnavailable):
            if self.closure.case_status(incident_id, status):
                self.dispatcher.wake()

    def _on_platform_event(self, case_id: str, status: str, updated_at: str) -> None:
        """A signed status webhook (gateway/api_platform_events.py): what status sync would
        find on its next pass, now; polling stays the backstop for a lost event. A store
        that refuses raises, so the route answers 503 and the platform sends it again. The
        status is kept for the console first, as status sync keeps a polled one."""
        incident_id = self.status_sync.pushed(case_id, status, updated_at)
        if incident_id is not None and self.closure.case_status(incident_id, status):
            self.dispatcher.wake()

    def _on_case_closed_early(self, incident_id: str, command: CaseCommand) -> bool:
        """The platform closed the case while this command was on its way: close the
        incident as status sync would (flagged if the problem persists), and file the
        stranded alert as a problem of its own (an escalation keeps its higher priority)
        rather than drop it — unless the closure flag holds it: a flag's own evidence, or
        more of the same problem, must not become a second case. A store that refuses the
        commit raises here, so the case bridge keeps the command and hands it over again.
        Returns whether the alert went to be filed afresh (its outbox row ends ``refiled``,
        else ``refused_closed``): the same answer each time for one command, as a clear or
        an absorbed command files nothing and a re-filing is made once."""
        now_ms = int(time.time() * 1000)
        if self.closure.case_status(incident_id, "closed", "case closed before evidence arrived"):
            self.dispatcher.wake()
        if self.closure.absorbs(incident_id, command):
            return False
        if self.pipeline.refile(command, now_ms):
            self.dispatcher.wake()
        return command.alert.state is not AlertState.CLEARED

    def _on_delivered(self, command: CaseCommand, case: dict) -> None:
        lag_s = time.time() - command.alert.ts / 1000
        if lag_s >= 0:  # event time from a simulated clock may lie ahead
            self.metrics.case_filed_seconds.observe(lag_s)
