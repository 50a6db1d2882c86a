"""Cameras on several replicas: each camera is a lease (gateway/replica.py), and the
replica holding it runs the camera in a video runtime of its own.

The camera's video rule state (dwell, stationary objects seen) is restored from the shared
store when the lease is taken, its alerts go to the shared alert log in commits fenced by
the camera's lease, and the incident desk merges them like any alert: a zone two cameras on
two replicas see is one case. A camera whose replica dies is taken over at the lease's
expiry; its stream is opened afresh there, so its static objects are learnt again (their
standing time since then), while the rule state carries over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial

from detectors.backends import Detector
from detectors.config import CameraSettings
from devices.replay_guard import ReplayGuard
from domain import Alert, Observation
from gateway import alert_log
from gateway.camera_alerts import CameraAlerts, build_runtime
from gateway.evidence import EvidenceWriter
from gateway.pipeline import Pipeline
from gateway.replica_context import ClusterContext, FencedConnection
from rules.device_health import DeviceHealth
from rules.engine import RuleEngine
from rules.incidents import IncidentBook
from rules.video_rules import VideoRuleEngine

log = logging.getLogger(__name__)


class CameraWorker:
    """One camera while this replica holds its lease. ``on_failure`` is told when a
    commit was refused (a stale lease, the store away): the replica then drops the worker,
    and takes the camera afresh from the store if it still holds the lease."""

    def __init__(
        self,
        context: ClusterContext,
        camera: CameraSettings,
        lease: int,
        conn: FencedConnection,
        detector: Detector,
        evidence: EvidenceWriter,
        loop: asyncio.AbstractEventLoop,
        on_failure: Callable[[CameraWorker], None],
    ) -> None:
        config = context.config
        self.camera_id, self.lease, self.fence, self.conn = camera.id, lease, conn.fence, conn
        self._loop = loop
        self._on_failure = on_failure
        self.engine = VideoRuleEngine(context.rules, config.tz)
        self.alerts = CameraAlerts(
            [camera], self.engine, evidence, config.video.camera_offline_class
        )
        detector_settings = config.video.detector
        assert detector_settings is not None  # the config requires one with cameras
        self.runtime = build_runtime(
            [camera], detector, detector_settings, self.engine,
            deliver=self._threadsafe(self._observed), on_status=self._threadsafe(self._status),
            recheck_s=config.video.recheck_s,
        )  # fmt: skip
        self.alerts.video = self.runtime
        for key, state in alert_log.device_states(conn, "video", [camera.id]):
            self.engine.states.load_state(key, state)
        self.pipeline = Pipeline(
            conn, {}, ReplayGuard(), RuleEngine(context.rules, config.tz),
            IncidentBook(config.merge.to_policy(), config.merge),
            int(config.ingest.max_future_skew_s * 1000), {"video": self.engine.states},
            DeviceHealth(context.rules), context.router,
            forward_alerts=partial(alert_log.append, lease=lease),
        )  # fmt: skip

    def start(self) -> None:
        self.runtime.start()
        log.info("camera %s taken (lease %d, fence %d)", self.camera_id, self.lease, self.fence)

    def stop(self) -> None:
        self.runtime.stop()
        self.conn.close()

    def _threadsafe(self, handler: Callable[..., None]) -> Callable[..., None]:
        """A callback for the camera's threads that runs ``handler`` on the loop."""

        def call(*args: object) -> None:
            self._loop.call_soon_threadsafe(handler, *args)

        return call

    def _observed(self, camera_id: str, ts_ms: int, observations: list[Observation]) -> None:
        self._commit(self.alerts.observed(camera_id, ts_ms, observations))

    def _status(self, camera_id: str, status: str, detail: str, ts_ms: int) -> None:
        self._commit(self.alerts.status(camera_id, status, detail, ts_ms))

    def tick(self) -> None:
        """The desk's re-arms for this camera, on the replica's timer (not per frame)."""
        also = alert_log.take_rearms(self.conn, self.lease, self.pipeline.rearm)
        if also:
            self._apply([], also)

    def _commit(self, alerts: list[Alert]) -> None:
        """The alerts (and any re-arm the desk sent) into the shared alert log; a frame
        with nothing to say costs no query."""
        if alerts:
            self._apply(alerts, alert_log.take_rearms(self.conn, self.lease, self.pipeline.rearm))

    def _apply(self, alerts: list[Alert], also: list) -> None:
        try:
            self.pipeline.apply_alerts(alerts, int(time.time() * 1000), also)
        except Exception as exc:
            log.warning("camera %s: commit refused (%s); taken afresh", self.camera_id, exc)
            self._on_failure(self)
