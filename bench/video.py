"""Video benchmark: how many 1080p25 H.264 cameras one gateway sustains at 1 analysed
frame/s on this machine, the CPU each costs, inference time per model — next to the raw
full-decode rate of the same stream, measured in the same run.

Streams: a real 1080p25 street clip (../shared/assets/videos/socialdist_pedestrians.mp4)
re-encoded with a 1 s GOP and served in a loop by the project's RTSP server, one mount
per camera. Each camera runs the gateway's real video runtime: PyAV keyframe-only decode,
motion gate, a COCO detector on onnxruntime, per-camera tracker, zones and the static-
object model. A camera is "sustained" when it is analysed at >= 0.9 frames/s (one frame
of a 20 s window is the window edge, not lag), with no frame dropped and a median
decode-to-analysis lag under 1 s. The share of keyframes the motion gate skips, and its
cost per frame, is measured on the same stream for a zone people walk through, a quiet
zone, and no zone.

Usage: python bench/video.py [--cameras 1,2,4,8] [--seconds 20] [--model PATH] [--zone quiet]
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import av
import cv2

from detectors.backends import load_detector
from detectors.config import CameraSettings, DetectorSettings, ZoneSettings
from detectors.motion_gate import MotionGate
from detectors.zones import Zone
from gateway.video import VideoRuntime
from simulators.mosquitto import free_port
from simulators.rtsp_server import RtspServerProcess

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT.parent / "shared" / "assets"
CLIP = ASSETS / "videos" / "socialdist_pedestrians.mp4"
MODELS = ["yolo11n_int8.onnx", "yolox_nano.onnx", "yolov8n_int8.onnx"]
ZONE = {"id": "Z", "type": "no_dumping", "polygon": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]],
        "lat": 26.08, "lon": 119.29}  # fmt: skip
# Paving in the lower left of the clip that nobody crosses, short of the litter bin (which
# the COCO model calls a "suitcase": an object in the zone suspends gating): a quiet zone.
QUIET_ZONE = {**ZONE, "polygon": [[0, 0.75], [0.6, 0.75], [0.6, 1], [0, 1]]}


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_stream_file(out: Path, seconds: int) -> Path:
    """Loop the clip to ``seconds`` and re-encode it H.264 with one keyframe per second."""
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(CLIP),
         "-t", str(seconds), "-an", "-c:v", "libx264", "-preset", "veryfast", "-g", "25",
         "-pix_fmt", "yuv420p", str(out)],
        check=True,
    )  # fmt: skip
    return out


def full_decode_fps(path: Path) -> tuple[float, float]:
    """Frames/s and CPU s per frame of decoding every frame (no colour conversion)."""
    started, cpu0, frames = time.perf_counter(), cpu_s(), 0
    with av.open(str(path)) as container:
        for _frame in container.decode(video=0):
            frames += 1
    wall, cpu = time.perf_counter() - started, cpu_s() - cpu0
    return frames / wall, cpu / frames


def gate_share(path: Path) -> list[str]:
    """Share of 1 frame/s keyframes the motion gate skips, and its cost per frame, for the
    lower-half zone people walk through, the quiet paving zone, and no zone at all."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
    lines = []
    for name, zones in (("lower half (people walk)", [ZONE]), ("quiet paving", [QUIET_ZONE]),
                        ("no zone (whole picture)", [])):  # fmt: skip
        gate = MotionGate([Zone(ZoneSettings(**z)) for z in zones])
        started = time.perf_counter()
        gated = sum(not gate.needs_inference(f, i * 1000) for i, f in enumerate(frames))
        us = (time.perf_counter() - started) / len(frames) * 1e6
        lines.append(
            f"motion gate, zone {name}: {gated}/{len(frames)} keyframes gated"
            f" ({gated / len(frames):.0%}), {us:.0f} us/frame at 1080p"
        )
    return lines


def inference_ms(model: Path, frame) -> float:
    detector = load_detector(model)
    detector.detect([frame])
    times = []
    for _ in range(20):
        started = time.perf_counter()
        detector.detect([frame])
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def run_cameras(
    server: RtspServerProcess, cameras: int, seconds: float, model: Path, zone: dict
) -> dict:
    settings = [
        CameraSettings(id=f"C{i}", url=server.url(f"/cam{i}"), zones=[zone]) for i in range(cameras)
    ]
    detector_settings = DetectorSettings(model=model)
    lags: dict[str, list[float]] = defaultdict(list)
    lock = threading.Lock()

    def deliver(camera_id: str, ts_ms: int, _observations: list) -> None:
        with lock:
            lags[camera_id].append(time.time() * 1000 - ts_ms)

    runtime = VideoRuntime(
        settings, load_detector(model), detector_settings.class_map, deliver,
        on_status=lambda *args: None,
    )  # fmt: skip
    runtime.start()
    time.sleep(4)  # connect and settle; then measure
    with lock:
        lags.clear()
    cpu0, wall0 = cpu_s(), time.perf_counter()
    time.sleep(seconds)
    cpu, wall = cpu_s() - cpu0, time.perf_counter() - wall0
    with lock:
        rates = [len(lags[c.id]) / wall for c in settings]
        all_lags = [lag for c in settings for lag in lags[c.id]]
    runtime.stop()
    return {
        "cameras": cameras,
        "min_fps": min(rates),
        "median_lag_ms": statistics.median(all_lags) if all_lags else float("nan"),
        "cpu_per_camera": cpu / wall / cameras,
        "inferences": runtime.stats["inferences"],
        "gated": runtime.stats["frames_gated"],
        "dropped": sum(s.stats["dropped"] for s in runtime.supervisors)
        + runtime.stats["frames_dropped"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", default="1,2,4,8")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--model", type=Path, default=ASSETS / "models" / MODELS[0])
    parser.add_argument(
        "--zone",
        choices=["busy", "quiet"],
        default="busy",
        help="busy: lower half, people walk through; quiet: paving nobody crosses",
    )
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    counts = [int(n) for n in args.cameras.split(",")]
    zone = QUIET_ZONE if args.zone == "quiet" else ZONE

    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_stream_file(Path(tmp) / "street1080p.mp4", 60)
        decode_fps, decode_cpu = full_decode_fps(clip)
        lines.append(
            f"raw full decode (PyAV, all frames): {decode_fps:.0f} frames/s on the machine,"
            f" {decode_cpu * 1000:.1f} ms CPU/frame -> {1 / (decode_cpu * 25):.1f} cameras of"
            " 1080p25 per CPU core if every frame were decoded"
        )
        lines += gate_share(clip)
        with av.open(str(clip)) as container:
            frame = next(container.decode(video=0)).to_ndarray(format="bgr24")
        for name in MODELS:
            path = ASSETS / "models" / name
            lines.append(f"inference {name}: {inference_ms(path, frame):.1f} ms/frame (1080p in)")
        mounts = [f"/cam{i}=file:{clip}" for i in range(max(counts))]
        server = RtspServerProcess(mounts, free_port(), log=Path(tmp) / "rtsp.log")
        server.start()
        try:
            lines.append(
                f"analysis at 1 frame/s, model {args.model.name}, {args.seconds:.0f} s,"
                f" {args.zone} zone:"
            )
            lines.append("  cameras  min fps/cam  median lag ms  CPU cores/cam  inferences"
                         "  gated  dropped")  # fmt: skip
            for cameras in counts:
                r = run_cameras(server, cameras, args.seconds, args.model, zone)
                sustained = r["min_fps"] >= 0.9 and not r["dropped"] and r["median_lag_ms"] < 1000
                lines.append(
                    f"  {cameras:7d}  {r['min_fps']:11.2f}  {r['median_lag_ms']:13.0f}  "
                    f"{r['cpu_per_camera']:13.3f}  {r['inferences']:10d}  {r['gated']:5d}  "
                    f"{r['dropped']:7d}  {'sustained' if sustained else 'NOT sustained'}"
                )
                print(lines[-1], flush=True)
        finally:
            server.stop()
    report = "\n".join(lines)
    print(report)
    if not args.no_record:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        with (ROOT / "BENCHMARKS.md").open("a", encoding="utf-8") as out:
            out.write(f"\n## bench/video.py — {stamp} ({platform.machine()}, "
                      f"{platform.python_version()}, cv2 {cv2.__version__})\n\n"
                      f"```\n{report}\n```\n")  # fmt: skip


if __name__ == "__main__":
    main()
