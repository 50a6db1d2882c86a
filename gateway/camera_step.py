"""One camera's work on each analysed frame, shared by the live runtime and the footage trials.

The order is: the motion gate decides whether the detector must see the frame; the
detector's answer is kept (a gated frame reuses the last one); the camera's analyser tracks
and zones those detections on the frame; the gate is told how long the zones' objects have
stood (a settled object stops holding the gate open). The observations then go to the video
rules (``rules.video_rules.VideoRuleEngine.process``) for the zones ``add_zones_to`` gave it.

``gateway/video.py`` drives a step per camera on its detection thread, batching the
detector over all cameras between ``needs_inference`` and ``detected``, and hands the
observations to the event loop, where the rules run (and every write is ordered).
``gateway/footage_trial.py`` calls ``run`` frame by frame and the rules right after. Both
go through this class, so a trial judges exactly what runs live. It holds no thread, clock
or metrics of its own: those stay with the runtime.

It keeps the last analysed frame's observations beside the analyser's copy of that frame
(``latest``), replaced at each frame, so the operations console draws exactly what the
rules were given, on the frame they were given it for: one frame and its observations per
camera, never more.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from detectors.backends import Detection
from detectors.config import CameraSettings
from detectors.motion_gate import MotionGate, MotionGateParams
from detectors.observe import CameraAnalyser
from domain import Category, Observation
from rules.video_rules import VideoRuleEngine


@dataclass(frozen=True, slots=True)
class Analysed:
    """What the rules were given for a camera's last analysed frame (event time ``ts_ms``)."""

    ts_ms: int
    observations: tuple[Observation, ...]


class CameraStep:
    """One camera's motion gate, last detections and analyser, used in the order above."""

    def __init__(
        self,
        camera: CameraSettings,
        class_map: dict[str, Category],
        gate_params: MotionGateParams | None = None,
    ) -> None:
        self.camera_id = camera.id
        self.analyser = CameraAnalyser(camera, class_map)
        self.gate = MotionGate(self.analyser.zones, gate_params)
        # Held while the analyser changes: evidence and the console read it on other threads.
        self.lock = threading.Lock()
        self._detections: list[Detection] = []
        self._analysed: Analysed | None = None

    def add_zones_to(self, engine: VideoRuleEngine) -> None:
        """Register this camera's zones with the video rules that will judge its observations."""
        for zone in self.analyser.zones:
            engine.add_zone(self.camera_id, zone.id, zone.type, zone.location, zone.class_code)

    def needs_inference(self, image: np.ndarray, ts_ms: int) -> bool:
        """The gate's answer; True makes this frame its reference, so the caller must run the
        detector on it and pass the answer to ``detected`` before ``analyse``."""
        return self.gate.needs_inference(image, ts_ms)

    def detected(self, detections: list[Detection]) -> None:
        """The detector's answer for the frame the gate let through; gated frames reuse it."""
        self._detections = detections

    def analyse(self, image: np.ndarray, ts_ms: int) -> list[Observation]:
        """The frame's observations from the last detections, and the gate told how long the
        objects in the zones have stood."""
        with self.lock:
            observations = self.analyser.analyse(image, ts_ms, self._detections)
            self._analysed = Analysed(ts_ms, tuple(observations))
        standing = [obs.stationary_ms for obs in observations if obs.zone_id]
        self.gate.objects_in_zones(ts_ms, standing)
        return observations

    @property
    def analysed(self) -> Analysed | None:
        """The last analysed frame's observations, without waiting for the lock: replaced
        whole at each frame, so one read sees one frame's (for the event loop, which must
        not wait while a frame is analysed)."""
        return self._analysed

    def latest(self) -> tuple[np.ndarray, Analysed] | None:
        """The last analysed frame and its observations, taken together under the lock (None
        before the first frame). The frame is the analyser's own copy, which the next frame
        replaces rather than changes, so it may be read after the lock is let go."""
        with self.lock:
            if self._analysed is None:
                return None
            # Every camera has a zone (the config requires one); any zone names the frame.
            frame, _ = self.analyser.evidence_frames(self.analyser.zones[0].id)
            return frame, self._analysed

    def run(
        self, image: np.ndarray, ts_ms: int, detect: Callable[[np.ndarray], list[Detection]]
    ) -> tuple[bool, list[Observation]]:
        """The whole step for a camera on its own: whether ``detect`` ran, and the
        observations."""
        inferred = self.needs_inference(image, ts_ms)
        if inferred:
            self.detected(detect(image))
        return inferred, self.analyse(image, ts_ms)
