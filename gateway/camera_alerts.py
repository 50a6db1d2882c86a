"""What cameras' frames and status become: video rule alerts carrying their evidence
pictures, and the camera-offline maintenance alert.

One place for both deployments: the embedded gateway runs every configured camera in one
VideoRuntime; a replica (gateway/replica.py) runs the cameras whose leases it holds, each
in a runtime of its own. Either way the alerts then go through the caller's pipeline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from detectors.backends import Detector
from detectors.config import CameraSettings, DetectorSettings
from detectors.sources.supervisor import StatusCallback
from domain import Alert, AlertState, Location, Observation
from gateway.evidence import EvidenceWriter
from gateway.video import ObservationSink, VideoRuntime
from rules.camera_health import camera_status_alert
from rules.video_rules import VideoRuleEngine, camera_and_zone

log = logging.getLogger(__name__)


def build_runtime(
    cameras: Sequence[CameraSettings],
    detector: Detector,
    settings: DetectorSettings,
    engine: VideoRuleEngine,
    deliver: ObservationSink,
    on_status: StatusCallback,
    recheck_s: float,
) -> VideoRuntime:
    """A runtime for ``cameras``, their zones registered with the video rules."""
    runtime = VideoRuntime(
        list(cameras), detector, settings.class_map, deliver=deliver, on_status=on_status,
        recheck_s=recheck_s,
    )  # fmt: skip
    for camera in cameras:
        for zone in runtime.analysers[camera.id].zones:
            engine.add_zone(camera.id, zone.id, zone.type, zone.location, zone.class_code)
    return runtime


class CameraAlerts:
    """Alerts of the cameras a runtime holds (``video``: set once the runtime is built)."""

    def __init__(
        self,
        cameras: Sequence[CameraSettings],
        engine: VideoRuleEngine,
        evidence: EvidenceWriter,
        offline_class: str,
    ) -> None:
        self._cameras = {camera.id: camera for camera in cameras}
        self._engine = engine
        self._evidence = evidence
        self._offline_class = offline_class
        self.video: VideoRuntime | None = None

    def observed(self, camera_id: str, ts_ms: int, observations: list[Observation]) -> list[Alert]:
        """An analysed frame's alerts; firing and escalating ones carry the frame with boxes
        and zone drawn, and the zone's "before" frame (what it looked like before the
        object came)."""
        alerts = self._engine.process(camera_id, ts_ms, observations)
        return [self._with_evidence(alert, observations) for alert in alerts]

    def status(self, camera_id: str, status: str, detail: str, ts_ms: int) -> list[Alert]:
        """A camera down for ``offline_after_s`` is a maintenance problem of its own; its
        recovery clears it. The offline case shows what the camera still sees, if it
        answers snapshots while its stream is down."""
        camera = self._cameras.get(camera_id)
        if status not in ("offline", "online") or camera is None:
            return []
        log.warning("camera %s %s: %s", camera_id, status, detail, extra={"camera_id": camera_id})
        zone = camera.zones[0]
        where = Location(zone.lat, zone.lon, zone.address, zone.grid_code)
        alert = camera_status_alert(
            camera_id, status == "online", detail, ts_ms, where, self._offline_class
        )
        if status == "offline":
            alert = self.pictured(alert, camera_id, zone.id, [])
        return [alert]

    def after_photo(self, alert: Alert, now_ms: int) -> Alert:
        """A camera zone alert with its zone's current frame (and "before" frame)."""
        camera_id, _, zone_id = alert.zone.partition("/")
        return self.pictured(alert, camera_id, zone_id, []) if zone_id else alert

    def _with_evidence(self, alert: Alert, observations: list[Observation]) -> Alert:
        if alert.state is AlertState.CLEARED:
            return alert
        camera_id, zone_id = camera_and_zone(alert.key)
        return self.pictured(alert, camera_id, zone_id, observations)

    def pictured(
        self, alert: Alert, camera_id: str, zone_id: str, observations: list[Observation]
    ) -> Alert:
        """The alert with the camera's pictures as evidence: its latest analysed frame, or,
        while its stream is down, a snapshot from its ONVIF snapshot URI (none: as it is)."""
        if self.video is None:
            return alert
        try:
            drawn, before = self.video.evidence(camera_id, zone_id, observations)
        except LookupError:
            return alert
        return replace(alert, media=self._evidence.save(alert, drawn, before, int(time.time())))
