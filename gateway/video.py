"""Cameras → detector → per-camera analysers, on worker threads; observations → the loop.

Each camera reads on its own thread (``CameraSupervisor``) and offers its newest frame to
one detection thread. The detection thread takes the latest frame of every camera that has
one, runs each camera's motion gate, batches the frames that need inference into one
detector call, and analyses each camera's frame with that camera's own tracker and zones:
one ``gateway.camera_step.CameraStep`` per camera, the step the footage trials drive too.
A camera whose frame is still waiting when a newer one arrives loses the older one
(counted): under load frames are dropped, never alerts, and one slow camera never delays
another.

Each camera's own figures (``camera_figures``, in ``snapshot()`` beside its reader's) say
how it keeps up: frames analysed and inferred, its share of the detector's time (a batch's
time split evenly over the frames in it), and its lag, the age of its latest frame when its
analysis ended: a camera whose lag grows is analysed slower than its frames arrive. Its
``fps`` (frames read) and ``analysed_fps`` are rates over the last seconds
(gateway/frame_rates.py), there from the first snapshot after its first frame.

While a camera's stream is down, its evidence is its snapshot (a configured
``snapshot_url``, or the URI an ONVIF camera gives), kept fresh by a ``SnapshotKeeper`` on
its own thread, rather than a frame of the past.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from detectors.backends import Detector
from detectors.config import CameraSettings
from detectors.motion_gate import MotionGateParams
from detectors.sources.frame import Frame
from detectors.sources.snapshot_keeper import SnapshotKeeper
from detectors.sources.supervisor import CameraSupervisor, Status, StatusCallback
from domain import Category, Observation
from gateway.camera_step import CameraStep
from gateway.frame_rates import RateMeter

log = logging.getLogger(__name__)

# (camera id, frame ts, observations): called on the detection thread; must hand off.
ObservationSink = Callable[[str, int, list[Observation]], None]


class VideoRuntime:
    def __init__(
        self,
        cameras: Sequence[CameraSettings],
        detector: Detector,
        class_map: dict[str, Category],
        deliver: ObservationSink,
        on_status: StatusCallback,
        recheck_s: float = 10.0,
        snapshot_refresh_s: float = 30.0,
    ) -> None:
        self._detector = detector
        self._deliver = deliver
        gate_params = MotionGateParams(recheck_s=recheck_s)
        self.steps = {c.id: CameraStep(c, class_map, gate_params) for c in cameras}
        self.analysers = {camera_id: step.analyser for camera_id, step in self.steps.items()}
        self.snapshots = SnapshotKeeper(cameras, refresh_s=snapshot_refresh_s)

        def status_changed(camera_id: str, status: Status, detail: str, ts_ms: int) -> None:
            self.snapshots.stream_status(camera_id, status)
            on_status(camera_id, status, detail, ts_ms)

        self.supervisors = [
            CameraSupervisor.from_settings(c, sink=self._offer, on_status=status_changed)
            for c in cameras
        ]
        self._supervisors_by_id = {s.camera_id: s for s in self.supervisors}
        self._latest: dict[str, Frame] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._detect_forever, name="detect", daemon=True)
        self.stats: Counter[str] = Counter()
        # lag_ms joins at a camera's first analysed frame: no frame, no lag to speak of.
        self.camera_figures: dict[str, Counter[str]] = {
            c.id: Counter(frames_analysed=0, inferences=0, inference_ms=0) for c in cameras
        }
        self._read_rates = {c.id: RateMeter() for c in cameras}
        self._analysed_rates = {c.id: RateMeter() for c in cameras}

    def start(self) -> None:
        self._thread.start()
        self.snapshots.start()
        for supervisor in self.supervisors:
            supervisor.start()

    def stop(self) -> None:
        self._stopping.set()
        self._ready.set()
        for supervisor in self.supervisors:
            supervisor.stop()
        self.snapshots.stop()
        self._thread.join(10)

    def snapshot(self) -> dict[str, Any]:
        """Each camera's status and figures, and the analysis totals."""
        cameras = {
            s.camera_id: {
                "status": s.status, "last_error": s.last_error, **s.stats,
                **self.camera_figures[s.camera_id],
                "fps": self._read_rates[s.camera_id].rate(),
                "analysed_fps": self._analysed_rates[s.camera_id].rate(),
            }
            for s in self.supervisors
        }  # fmt: skip
        return {"cameras": cameras, **self.stats, **self.snapshots.stats}

    def evidence(
        self, camera_id: str, zone_id: str, observations: list[Observation]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The zone's current frame with boxes and zone drawn, and its "before" frame.

        While the camera's stream is down, "current" is its latest snapshot with the zone
        drawn: the observations' boxes belong to an older frame, so they are left out."""
        step = self.steps[camera_id]
        analyser = step.analyser
        if self._supervisors_by_id[camera_id].status != "online":
            picture = self.snapshots.latest(camera_id)
            if picture is not None:
                return self._snapshot_evidence(camera_id, zone_id, picture)
        with step.lock:
            current, before = analyser.evidence_frames(zone_id)
            drawn = analyser.draw_evidence(current, observations, zone_id)
        return drawn, before

    def _snapshot_evidence(
        self, camera_id: str, zone_id: str, picture: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        step = self.steps[camera_id]
        analyser = step.analyser
        if zone_id not in {zone.id for zone in analyser.zones}:
            raise LookupError(f"camera {camera_id} has no zone {zone_id!r}")
        height, width = picture.shape[:2]
        with step.lock:
            drawn = analyser.draw_evidence(picture, [], zone_id)
            try:
                before = analyser.evidence_frames(zone_id)[1]
            except LookupError:  # no frame analysed since the start
                before = None
        if before is not None:
            before = cv2.resize(before, (width, height))
        cv2.putText(drawn, "snapshot: stream down", (8, height - 10), cv2.FONT_HERSHEY_SIMPLEX,
                    0.6, (0, 0, 255), 2, cv2.LINE_AA)  # fmt: skip
        return drawn, before

    def _offer(self, camera_id: str, frame: Frame) -> None:
        self._read_rates[camera_id].tick()
        with self._lock:
            if camera_id in self._latest:
                self.stats["frames_dropped"] += 1
            self._latest[camera_id] = frame
        self._ready.set()

    def _detect_forever(self) -> None:
        while not self._stopping.is_set():
            self._ready.wait(1.0)
            with self._lock:
                batch = list(self._latest.items())
                self._latest.clear()
                self._ready.clear()
            if batch:
                try:
                    self._analyse(batch)
                except Exception:  # a bad frame or model hiccup must not stop all cameras
                    self.stats["analysis_errors"] += 1
                    log.exception("video analysis failed; continuing")

    def _analyse(self, batch: list[tuple[str, Frame]]) -> None:
        """Each camera's ``CameraStep`` in its order, the detector run once for the batch."""
        steps = [(self.steps[camera_id], frame) for camera_id, frame in batch]
        to_infer = [
            (step, frame) for step, frame in steps if step.needs_inference(frame.image, frame.ts_ms)
        ]
        if to_infer:
            started = time.perf_counter()
            results = self._detector.detect([frame.image for _, frame in to_infer])
            elapsed_ms = (time.perf_counter() - started) * 1000
            self.stats["inference_ms_total"] += int(elapsed_ms)
            self.stats["inferences"] += len(to_infer)
            for (step, _), detections in zip(to_infer, results, strict=True):
                step.detected(detections)
                figures = self.camera_figures[step.camera_id]
                figures["inferences"] += 1
                figures["inference_ms"] += round(elapsed_ms / len(to_infer), 3)
        self.stats["frames_analysed"] += len(batch)
        self.stats["frames_gated"] += len(batch) - len(to_infer)
        for step, frame in steps:
            observations = step.analyse(frame.image, frame.ts_ms)
            self._deliver(step.camera_id, frame.ts_ms, observations)
            figures = self.camera_figures[step.camera_id]
            figures["frames_analysed"] += 1
            self._analysed_rates[step.camera_id].tick()
            # A file read faster than it plays has frames "from the future": no lag.
            figures["lag_ms"] = max(0, int(time.time() * 1000) - frame.ts_ms)
