"""Camera capacity: how many 1080p25 RTSP cameras one gateway analyses at 1 frame/s each on
this machine with nothing dropped, and where the CPU goes.

Each run serves the street clip (bench/video_scene.py, GOP 25) over real RTSP, one mount per
camera, from the project's GStreamer server (the file's H.264 is sent as it is, no
re-encode), and runs the gateway's real ``VideoRuntime`` on N cameras for ``--seconds``
after every camera is online and a settling time. The server runs on the same cores; its CPU
is read from /proc and reported apart, never in the gateway's per-camera figure.

Per camera: analysed frames/s, frames lost between reader and analysis (offered minus
analysed, exact to the one frame in flight at the window's edges), decode-to-observation lag
p50/p99, the share of frames the motion gate spared from inference, and the reader thread's
CPU (RTSP receive, demux, keyframe decode, BGR conversion). Per run: the gateway's CPU per
camera-second split into readers, the detection thread (motion gate, inference, analysis:
static objects and tracker, each timed on that thread; inference includes the backend's
concurrent runs) and the remaining threads (watchdogs, snapshots); how much of the window
the detection thread was busy (it is serial: near 100 % it is the limit); the server's CPU;
and what other processes used meanwhile (the cores are shared: repeat a run where others
were busy).

A run is sustained when every camera is analysed at >= 0.95 frames/s (57 of 60 keyframes:
one at each window edge is the window, not the gateway) and the runtime dropped no frame.

The runtime's own threads are told apart by name; its stages by wrapping the detector and
each camera's analyser (public attributes), not by reaching into the runtime.

Usage: python bench/cameras.py [--cameras 16,24,32,40] [--scenes quiet,busy] [--seconds 60]
       [--repeat 1] [--servers 8] [--threads N] [--runs N] [--model PATH] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from benchmarks_doc import write_report
from video_scene import DEFAULT_MODEL, SCENES, make_stream_file

from detectors.backends import Detector, load_detector
from detectors.config import CameraSettings, DetectorSettings
from gateway.video import VideoRuntime
from simulators.mosquitto import free_port
from simulators.rtsp_server import RtspServerProcess

SECTION = "## Camera capacity (bench/cameras.py)"
MIN_FPS = 0.95
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
# After the last camera is online: decoders warm, and the static-object models have taken
# their first samples (their background starts as a median over several: ~100 ms CPU each).
SETTLE_S = 15.0
ONLINE_TIMEOUT_S = 60.0


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stat_cpu_s(path: str) -> float:
    """utime + stime of a /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat file, seconds."""
    with open(path, encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def thread_cpu_s() -> dict[int, float]:
    """CPU seconds of every thread of this process, by native thread id."""
    times = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            times[int(tid)] = _stat_cpu_s(f"/proc/self/task/{tid}/stat")
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended between listing and reading
    return times


def machine_busy_s() -> float:
    """CPU seconds all processes of the machine have used since boot (all cores)."""
    with open("/proc/stat", encoding="ascii") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (
            int(v) for v in stat.readline().split()[1:9]
        )
    return (user + nice + system + irq + softirq + steal) * TICK_S


class StageClock:
    """CPU time of the detection thread per stage, measured on that thread (thread_time),
    and which frames went to inference, so each camera's gated share can be told."""

    def __init__(self) -> None:
        self.cpu_s: Counter[str] = Counter()
        self.wall_s: Counter[str] = Counter()  # the detection thread's time in each stage
        self.inferred_ids: set[int] = set()
        self.measuring = False

    def timed_detector(self, detector: Detector) -> Detector:
        clock = self

        class TimedDetector:
            names = detector.names
            input_size = detector.input_size

            def detect(self, frames: list[np.ndarray]) -> list:
                started, wall = time.thread_time(), time.perf_counter()
                try:
                    return detector.detect(frames)
                finally:
                    clock.inferred_ids = {id(frame) for frame in frames}
                    if clock.measuring:
                        clock.cpu_s["inference"] += time.thread_time() - started
                        clock.wall_s["inference"] += time.perf_counter() - wall

        return TimedDetector()

    def timed_analyse(self, analyse: Callable, on_frame: Callable[[bool], None]) -> Callable:
        def wrapper(frame_bgr: np.ndarray, ts_ms: int, detections: list) -> list:
            on_frame(id(frame_bgr) in self.inferred_ids)
            self.inferred_ids.discard(id(frame_bgr))  # ids are reused once a frame is freed
            started, wall = time.thread_time(), time.perf_counter()
            try:
                return analyse(frame_bgr, ts_ms, detections)
            finally:
                if self.measuring:
                    self.cpu_s["analysis"] += time.thread_time() - started
                    self.wall_s["analysis"] += time.perf_counter() - wall

        return wrapper


@dataclass
class CameraFigures:
    camera_id: str
    offered: int = 0  # frames the reader handed to the runtime in the window
    lags_ms: list[float] = field(default_factory=list)  # one per analysed frame
    inferred: int = 0
    reader_cpu_s: float = 0.0
    phases_ms: list[int] = field(default_factory=list)  # decode time within the second

    @property
    def analysed(self) -> int:
        return len(self.lags_ms)

    def lag_ms(self, q: float) -> float:
        return float(np.percentile(self.lags_ms, q)) if self.lags_ms else float("nan")

    @property
    def gated_share(self) -> float:
        # max: a frame inferred just before the window opened may be analysed inside it
        return max(0.0, 1 - self.inferred / self.analysed) if self.analysed else float("nan")


@dataclass
class RunFigures:
    cameras: int
    scene: str
    seconds: float
    per_camera: list[CameraFigures]
    gateway_cpu_s: float
    thread_cpu_s: dict[str, float]  # readers, detect thread stages, others
    server_cpu_s: float
    others_cpu_s: float  # every other process on the machine meanwhile
    dropped: int  # frames the runtime replaced before analysing them
    detect_busy: dict[str, float]  # share of the window the detection thread spent per stage
    load_before: float

    def fps(self, camera: CameraFigures) -> float:
        return camera.analysed / self.seconds

    @property
    def sustained(self) -> bool:
        return min(self.fps(c) for c in self.per_camera) >= MIN_FPS and not self.dropped

    def per_camera_second(self, cpu: float) -> float:
        return cpu / (self.cameras * self.seconds)


@contextmanager
def rtsp_servers(
    clip: Path, cameras: int, tmp: Path, processes: int
) -> Iterator[list[RtspServerProcess]]:
    """``cameras`` mounts of the clip over ``processes`` server processes, started one after
    another. A mount's stream starts when the server first describes it, so the keyframes of
    one process's mounts fall close together; processes started at different moments spread
    them over the second, as independent cameras are."""
    servers = [
        RtspServerProcess(
            [f"/cam{i}=file:{clip}" for i in range(first, cameras, processes)],
            free_port(),
            log=tmp / f"rtsp{first}.log",
        )
        for first in range(min(processes, cameras))
    ]
    try:
        for server in servers:
            server.start(timeout_s=120)
        yield servers
    finally:
        for server in servers:
            server.stop()


def wait_for_quiet(max_cores: float, timeout_s: float = 900.0) -> float:
    """Waits until the rest of the machine used under ``max_cores`` over 5 s (others share
    these cores); returns the last reading, also when ``timeout_s`` passed without one."""
    deadline = time.monotonic() + timeout_s
    while True:
        busy0 = machine_busy_s()
        time.sleep(5.0)
        cores = (machine_busy_s() - busy0) / 5.0
        if cores < max_cores or time.monotonic() > deadline:
            return cores


def _wait_online(runtime: VideoRuntime) -> None:
    deadline = time.monotonic() + ONLINE_TIMEOUT_S
    while any(s.status != "online" for s in runtime.supervisors):
        if time.monotonic() > deadline:
            down = [s.camera_id for s in runtime.supervisors if s.status != "online"]
            raise TimeoutError(f"cameras not online after {ONLINE_TIMEOUT_S} s: {down}")
        time.sleep(0.2)


def run_cameras(
    servers: list[RtspServerProcess], cameras: int, scene: str, seconds: float,
    model: Path, threads: int | None, runs: int | None,
) -> RunFigures:  # fmt: skip
    urls = [server.url(mount) for server in servers for mount in server.mounts][:cameras]
    settings = [
        CameraSettings(id=f"C{i}", url=url, zones=[SCENES[scene]]) for i, url in enumerate(urls)
    ]
    figures = {c.id: CameraFigures(c.id) for c in settings}
    clock = StageClock()
    lock = threading.Lock()

    def deliver(camera_id: str, ts_ms: int, _observations: list) -> None:
        now_ms = time.time() * 1000
        if clock.measuring:
            with lock:
                figures[camera_id].lags_ms.append(now_ms - ts_ms)
                figures[camera_id].phases_ms.append(ts_ms % 1000)

    before_model = set(thread_cpu_s())
    detector = clock.timed_detector(load_detector(model, threads=threads, concurrent_runs=runs))
    model_pool = set(thread_cpu_s()) - before_model  # ONNX Runtime's intra-op threads
    runtime = VideoRuntime(
        settings, detector, DetectorSettings(model=model).class_map, deliver,
        on_status=lambda *args: None,
    )  # fmt: skip
    for camera_id, analyser in runtime.analysers.items():

        def counted(inferred: bool, camera: CameraFigures = figures[camera_id]) -> None:
            if clock.measuring:
                camera.inferred += inferred

        analyser.analyse = clock.timed_analyse(analyser.analyse, counted)  # type: ignore[method-assign]
    load_before = os.getloadavg()[0]
    runtime.start()
    try:
        _wait_online(runtime)
        time.sleep(SETTLE_S)
        names = {t.native_id: t.name for t in threading.enumerate()}
        offered0 = {s.camera_id: s.stats["frames"] for s in runtime.supervisors}
        dropped0 = runtime.stats["frames_dropped"] + sum(
            s.stats["dropped"] for s in runtime.supervisors
        )
        threads0, server0 = thread_cpu_s(), sum(_stat_cpu_s(f"/proc/{s.proc.pid}/stat")
                                                for s in servers)  # fmt: skip
        machine0, cpu0, wall0 = machine_busy_s(), cpu_s(), time.perf_counter()
        clock.measuring = True
        time.sleep(seconds)
        clock.measuring = False
        wall, cpu = time.perf_counter() - wall0, cpu_s() - cpu0
        machine = machine_busy_s() - machine0
        server = sum(_stat_cpu_s(f"/proc/{s.proc.pid}/stat") for s in servers) - server0
        threads1 = thread_cpu_s()
        dropped = (runtime.stats["frames_dropped"] + sum(
            s.stats["dropped"] for s in runtime.supervisors)) - dropped0  # fmt: skip
        for s in runtime.supervisors:
            figures[s.camera_id].offered = s.stats["frames"] - offered0[s.camera_id]
    finally:
        runtime.stop()

    by_kind: Counter[str] = Counter()
    for tid, spent in threads1.items():
        spent -= threads0.get(tid, 0.0)
        name = names.get(tid, "")
        if name.startswith("cam-") and not name.endswith("-watchdog"):
            figures[name.removeprefix("cam-")].reader_cpu_s += spent
            by_kind["readers"] += spent
        elif name == "detect":
            by_kind["detect"] += spent
        elif tid in model_pool or name.startswith("infer"):
            by_kind["inference workers"] += spent
        else:
            by_kind["other threads"] += spent
    detect = by_kind.pop("detect")
    # On the detection thread, in the backend's concurrent runs and in ONNX Runtime's pool.
    by_kind["inference"] = clock.cpu_s["inference"] + by_kind.pop("inference workers", 0.0)
    by_kind["analysis"] = clock.cpu_s["analysis"]
    by_kind["gate + dispatch"] = detect - clock.cpu_s["inference"] - clock.cpu_s["analysis"]
    return RunFigures(
        cameras=cameras, scene=scene, seconds=wall, per_camera=list(figures.values()),
        gateway_cpu_s=cpu, thread_cpu_s=dict(by_kind), server_cpu_s=server,
        others_cpu_s=max(0.0, machine - cpu - server), dropped=dropped, load_before=load_before,
        detect_busy={stage: spent / wall for stage, spent in clock.wall_s.items()},
    )  # fmt: skip


def phase_spread(run: RunFigures) -> str:
    """How the cameras' keyframes spread over the second: synchronised keyframes make every
    camera's frame arrive at once (the worst case for lag), real cameras are not in step."""
    slots = Counter(
        int(statistics.median(c.phases_ms)) // 100 for c in run.per_camera if c.phases_ms
    )
    return f"keyframes in {len(slots)}/10 100-ms slots, at most {max(slots.values())} in one"


def summary_line(run: RunFigures) -> str:
    fps = [run.fps(c) for c in run.per_camera]
    p50 = statistics.median(lag for c in run.per_camera for lag in c.lags_ms)
    p99 = max(c.lag_ms(99) for c in run.per_camera)
    missing = sum(max(0, c.offered - c.analysed) for c in run.per_camera)
    gated = statistics.mean(c.gated_share for c in run.per_camera)
    cores = run.gateway_cpu_s / run.seconds
    return (
        f"{run.scene:5s} {run.cameras:4d}  {min(fps):5.2f} {statistics.median(fps):5.2f}  "
        f"{run.dropped:5d} {missing:5d}  {p50:6.0f} {p99:6.0f}  {gated:5.0%}  "
        f"{run.per_camera_second(run.gateway_cpu_s):6.4f} {cores:5.2f}  "
        f"{run.server_cpu_s / run.seconds:5.2f}  {run.others_cpu_s / run.seconds:5.2f}  "
        f"{'sustained' if run.sustained else 'NOT sustained'}"
    )


SUMMARY_HEADER = (
    "scene    N  fps/cam     lost        lag ms   gated  gateway CPU    server others\n"
    "                min   med  drop  miss    p50    p99         s/cam-s cores  cores  cores"
)


def stage_lines(run: RunFigures) -> list[str]:
    """Gateway CPU per analysed frame by stage (ms); how busy the detection thread was (it
    is serial: near 100 % it is the limit, whatever the cores have left); the server's CPU
    per camera-second."""
    frames = sum(c.analysed for c in run.per_camera) or 1
    inferred = sum(c.inferred for c in run.per_camera) or 1
    order = ["readers", "gate + dispatch", "inference", "analysis", "other threads"]
    parts = []
    for kind in order:
        ms = run.thread_cpu_s.get(kind, 0.0) * 1000 / frames
        extra = ""
        if kind == "inference":
            extra = f" ({run.thread_cpu_s[kind] * 1000 / inferred:.1f} per inferred frame)"
        parts.append(f"{kind} {ms:.1f}{extra}")
    rest = run.gateway_cpu_s - sum(run.thread_cpu_s.values())
    busy = ", ".join(f"{stage} {share:.0%}" for stage, share in sorted(run.detect_busy.items()))
    server_ms = run.per_camera_second(run.server_cpu_s) * 1000
    return [
        f"  {run.scene} N={run.cameras}: ms CPU per analysed frame: " + ", ".join(parts)
        + f", unattributed {rest * 1000 / frames:.1f}",
        f"    detection thread's wall time in {busy}; RTSP server {server_ms:.1f} ms CPU per "
        f"camera-s; {phase_spread(run)}; load before {run.load_before:.1f}",
    ]  # fmt: skip


def per_camera_lines(run: RunFigures) -> list[str]:
    lines = [
        f"  per camera, {run.scene} scene, N={run.cameras}:",
        "    camera  fps   offered analysed  lag p50  p99 ms  gated  reader CPU s/cam-s",
    ]
    for c in run.per_camera:
        lines.append(
            f"    {c.camera_id:6s} {run.fps(c):5.2f} {c.offered:8d} {c.analysed:8d}  "
            f"{c.lag_ms(50):7.0f} {c.lag_ms(99):7.0f}  {c.gated_share:5.0%}  "
            f"{c.reader_cpu_s / run.seconds:.4f}"
        )
    return lines


def least_disturbed_run(
    args: argparse.Namespace, clip: Path, tmp: Path, cameras: int, scene: str
) -> RunFigures:
    """One run, tried again (up to ``--tries``) while other processes used more than
    ``--quiet-below`` cores during it; the run they disturbed least."""
    tried: list[RunFigures] = []
    for _ in range(args.tries):
        wait_for_quiet(args.quiet_below)
        with rtsp_servers(clip, cameras, tmp, args.servers) as servers:
            run = run_cameras(servers, cameras, scene, args.seconds, args.model, args.threads,
                              args.runs)  # fmt: skip
        print(summary_line(run), *stage_lines(run), sep="\n", flush=True)
        tried.append(run)
        if run.others_cpu_s / run.seconds < args.quiet_below:
            break
    return min(tried, key=lambda run: run.others_cpu_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", default="16,24,32,40", help="camera counts to try")
    parser.add_argument("--scenes", default="quiet,busy", help="quiet, busy or both")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each count and scene")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads per run")
    parser.add_argument("--runs", type=int, help="frames of a batch inferred at once")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument(
        "--servers", type=int, default=8,
        help="RTSP server processes (1: most keyframes at the same moment, the worst case)",
    )  # fmt: skip
    parser.add_argument(
        "--quiet-below", type=float, default=0.3,
        help="start a run once other processes use fewer cores than this (waits up to 15 min)",
    )  # fmt: skip
    parser.add_argument("--tries", type=int, default=3, help="runs while others disturb")
    parser.add_argument("--clip", type=Path, help="an H.264 GOP-25 MP4 to serve instead")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    counts = sorted(int(n) for n in args.cameras.split(","))
    scenes = args.scenes.split(",")
    for scene in scenes:
        if scene not in SCENES:
            parser.error(f"--scenes: unknown scene {scene!r}; expected {sorted(SCENES)}")

    runs: list[RunFigures] = []
    lines = [SUMMARY_HEADER]
    print(lines[0], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.clip or make_stream_file(Path(tmp) / "street1080p.mp4", 120)
        for scene in scenes:
            for cameras in counts:
                for _ in range(args.repeat):
                    run = least_disturbed_run(args, clip, Path(tmp), cameras, scene)
                    runs.append(run)
                    lines.append(summary_line(run))
    lines += [line for run in runs for line in stage_lines(run)]
    best: dict[str, RunFigures] = {}
    for run in runs:
        if run.sustained and run.cameras >= getattr(best.get(run.scene), "cameras", 0):
            best[run.scene] = run
    for run in best.values():
        lines += per_camera_lines(run)
    report = "\n".join(lines)
    print(report)
    if not args.no_record:
        write_report(
            SECTION,
            f"model {args.model.name}, ONNX Runtime threads {args.threads or 1} per run x "
            f"{args.runs or 'one run per core'}, {args.seconds:.0f} s per run after "
            f"{SETTLE_S:.0f} s settling, {args.servers} RTSP server processes, each run tried "
            f"up to {args.tries} times while other processes used over {args.quiet_below} "
            "cores (the least disturbed kept; their cores in the others column).",
            report,
        )


if __name__ == "__main__":
    main()
