"""Street trials through the gateway's camera path: composited real footage in, alerts out.

A trial (``simulators.street_trial``) is one camera watching a real street where a real
object is dumped behind the traffic. This feeds its analysed frames through what the
gateway does with each camera frame (``gateway/video.py``: the motion gate, the detector
on frames the gate lets through, the previous detections reused on gated ones, the
camera's analyser, the gate told how long the zones' objects have stood) and then the
video rule engine (``gateway/service.py``), and keeps the FIRING/CLEARED alerts with their
run second. Only public interfaces are used, so it judges whatever those classes do today.

Detector answers are the slow part and the same frame recurs: every start offset and every
trial of a spot shows the same clip frames, with the same object or none. They are kept
per frame key (clip frame + what was pasted), so each distinct picture is inferred once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from detectors.backends import Detection, Detector
from detectors.config import CameraSettings, DetectorSettings, ZoneSettings
from detectors.motion_gate import MotionGate
from detectors.observe import CameraAnalyser
from domain import Category, Observation
from rules.settings import KindSettings, RuleSettings
from rules.video_rules import VideoRuleEngine, VideoRuleParams
from simulators.street_trial import StreetScene, Timing, Trial, TrialFrame, judge

# Event time of a trial's first frame: 2026-01-01 00:00 UTC (any fixed instant will do).
TRIAL_EPOCH_MS = 1_767_225_600_000
ZONE_ID = "Z-DUMP"
DEFAULT_CLASS_MAP: dict[str, Category] = DetectorSettings.model_fields["class_map"].default
MAX_CACHED_FRAMES = 50_000  # detections of this many distinct pictures are kept


class CachedDetector:
    """A detector that answers each distinct picture once: ``key`` must name exactly what
    the picture shows (equal keys, equal pictures)."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self._answers: dict[Hashable, list[Detection]] = {}
        self.inferred = 0
        self.reused = 0

    def detect(self, key: Hashable, image: np.ndarray) -> list[Detection]:
        answer = self._answers.get(key)
        if answer is not None:
            self.reused += 1
            return answer
        if len(self._answers) >= MAX_CACHED_FRAMES:
            self._answers.clear()
        answer = self.detector.detect([image])[0]
        self._answers[key] = answer
        self.inferred += 1
        return answer


@dataclass
class TrialResult:
    """What one trial filed: alerts as ``(run second, "firing"|"cleared")``, how many frames
    were analysed and how many of them the gate kept from the detector, and the share of
    the object visible in each frame it was there."""

    trial: Trial
    alerts: list[tuple[int, str]] = field(default_factory=list)
    frames: int = 0
    gated: int = 0
    visible: list[float] = field(default_factory=list)

    def failure(self, timing: Timing) -> str | None:
        """What is wrong against the ground truth (None: the trial passes)."""
        return judge(self.trial, self.alerts, timing)

    def detect_s(self, timing: Timing) -> int | None:
        """Seconds from the end of the dwell to the first case (None: no case)."""
        firing = [t for t, state in self.alerts if state == "firing"]
        if not firing or self.trial.appear_s is None:
            return None
        return firing[0] - self.trial.appear_s - timing.dwell_s

    def describe(self, timing: Timing) -> str:
        seen = f", object visible {np.mean(self.visible):.0%} on average" if self.visible else ""
        return (
            f"{self.trial.id}: {self.failure(timing) or 'ok'}; alerts {self.alerts}; "
            f"{self.frames} frames, {self.gated} gated{seen}"
        )


def trial_rule_settings(timing: Timing) -> RuleSettings:
    """The default video rule params with the trial's dwell and clear times."""
    video = VideoRuleParams(rubbish_dwell_s=timing.dwell_s, clear_after_s=timing.clear_after_s)
    return RuleSettings(kinds=KindSettings(video=video))


def trial_camera(trial: Trial) -> CameraSettings:
    """One camera at 1 analysed frame/s with the spot's ``no_dumping`` zone."""
    zone = ZoneSettings(
        id=ZONE_ID, type="no_dumping", polygon=list(trial.spot.zone), lat=26.08, lon=119.3
    )
    return CameraSettings(id=f"{trial.clip.name}-{trial.spot.name}", url=trial.clip.video,
                          analyse_fps=1.0, zones=[zone])  # fmt: skip


FrameTrace = Callable[[TrialFrame, bool, list[Observation], list[tuple[int, str]]], None]


def run_trial(
    trial: Trial,
    scene: StreetScene,
    detector: CachedDetector,
    timing: Timing,
    class_map: dict[str, Category] = DEFAULT_CLASS_MAP,
    trace: FrameTrace | None = None,
) -> TrialResult:
    """Play ``trial`` through gate → detector → analyser → video rules, in the gateway's
    order; ``trace(frame, inferred, observations, alerts)`` sees every frame."""
    camera = trial_camera(trial)
    analyser = CameraAnalyser(camera, class_map)
    gate = MotionGate(analyser.zones)
    engine = VideoRuleEngine(trial_rule_settings(timing))
    for zone in analyser.zones:
        engine.add_zone(camera.id, zone.id, zone.type, zone.location, zone.class_code)
    result = TrialResult(trial)
    detections: list[Detection] = []
    for frame in scene.frames(trial):
        ts_ms = TRIAL_EPOCH_MS + frame.t_s * 1000
        inferred = gate.needs_inference(frame.image, ts_ms)
        if inferred:
            detections = detector.detect(frame.key, frame.image)
        observations = analyser.analyse(frame.image, ts_ms, detections)
        gate.objects_in_zones(ts_ms, [obs.stationary_ms for obs in observations if obs.zone_id])
        alerts = [
            (frame.t_s, alert.state.value)
            for alert in engine.process(camera.id, ts_ms, observations)
        ]
        result.alerts += alerts
        result.frames += 1
        result.gated += not inferred
        if trial.present(frame.t_s):
            result.visible.append(frame.visible)
        if trace is not None:
            trace(frame, inferred, observations, alerts)
    return result
