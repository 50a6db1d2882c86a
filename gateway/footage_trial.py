"""Street trials through the gateway's camera path: composited real footage in, alerts out.

A trial (``simulators.street_trial``) is one camera watching a real street where a real
object is dumped behind the traffic. This feeds its analysed frames through the step the
live runtime (``gateway/video.py``) runs for each camera frame, ``gateway.camera_step``'s
``CameraStep`` (the motion gate, the detector on frames the gate lets through, the previous
detections reused on gated ones, the camera's analyser, the gate told how long the zones'
objects have stood), then through the video rule engine as ``gateway/service.py`` does,
and keeps the FIRING/CLEARED alerts with their run second. The step is the live one, not a
copy, so a trial judges whatever the gateway does today.

Detector answers are the slow part and the same frame recurs: every start offset and every
trial of a spot shows the same clip frames, with the same object or none. They are kept
per frame key (clip frame + what was pasted), so each distinct picture is inferred once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from detectors.backends import Detection, Detector
from detectors.config import CameraSettings, DetectorSettings, ZoneSettings
from domain import Category, Observation
from gateway.camera_step import CameraStep
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
    """Play ``trial`` through the gateway's camera step (gate → detector → analyser), then
    the video rules; ``trace(frame, inferred, observations, alerts)`` sees every frame."""
    step = CameraStep(trial_camera(trial), class_map)
    engine = VideoRuleEngine(trial_rule_settings(timing))
    step.add_zones_to(engine)
    result = TrialResult(trial)
    for frame in scene.frames(trial):
        ts_ms = TRIAL_EPOCH_MS + frame.t_s * 1000
        inferred, observations = step.run(frame.image, ts_ms, partial(detector.detect, frame.key))
        alerts = [
            (frame.t_s, alert.state.value)
            for alert in engine.process(step.camera_id, ts_ms, observations)
        ]
        result.alerts += alerts
        result.frames += 1
        result.gated += not inferred
        if trial.present(frame.t_s):
            result.visible.append(frame.visible)
        if trace is not None:
            trace(frame, inferred, observations, alerts)
    return result
