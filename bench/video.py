"""Video: the CPU one camera costs per analysed frame, stage by stage, at 1080p25 and one
analysed frame/s — what bench/cameras.py's capacity comes from.

On the street clip (bench/video_scene.py: 1080p25 H.264, one keyframe per second), each
stage of the gateway's path, timed as CPU seconds of this process (so threads a library
starts are counted) and as wall time:

- demux: the 25 packets of one source second (an RTSP camera adds RTP receive on top);
- keyframe decode: PyAV with ``skip_frame="NONKEY"``, the other 24 packets of the GOP fed
  to the decoder and skipped, one decoding thread, as ``PyAvSource`` does; full decoding of
  every frame for comparison;
- colour conversion of the analysed frame to BGR;
- motion gate, with the share of frames it spares from inference, per zone;
- inference per model: one 1-thread run at a time, one 2-thread run, and batches spread
  over 2 concurrent 1-thread runs (the backend's default): CPU and wall both matter, since
  the gateway's detection thread is serial;
- analysis: ``CameraAnalyser.analyse`` (static objects and tracker) on the model's real
  detections of the same frames.

Usage: python bench/video.py [--model PATH] [--no-record]
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
from benchmarks_doc import write_report
from video_scene import DEFAULT_MODEL, OTHER_MODELS, SCENES, make_stream_file

from detectors.backends import load_detector
from detectors.config import CameraSettings, DetectorSettings, ZoneSettings
from detectors.motion_gate import MotionGate
from detectors.observe import CameraAnalyser
from detectors.zones import Zone

SECTION = "## Video: CPU per analysed frame (bench/video.py)"
GOP = 25


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(run: Callable[[], int]) -> tuple[float, float]:
    """(CPU ms, wall ms) per item of ``run()``, which returns how many items it did."""
    cpu0, wall0 = cpu_s(), time.perf_counter()
    count = run()
    return (cpu_s() - cpu0) * 1000 / count, (time.perf_counter() - wall0) * 1000 / count


def decode(path: Path, keyframes_only: bool, keep: list | None = None) -> Callable[[], int]:
    def run() -> int:
        frames = 0
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY" if keyframes_only else "DEFAULT"
            stream.codec_context.thread_count = 1
            for packet in container.demux(stream):
                for frame in packet.decode():
                    frames += 1
                    if keep is not None:
                        keep.append(frame)
        return frames

    return run


def demux(path: Path) -> Callable[[], int]:
    def run() -> int:
        packets = 0
        with av.open(str(path)) as container:
            for _packet in container.demux(video=0):
                packets += 1
        return max(1, packets // GOP)

    return run


def over(items: list, work: Callable) -> Callable[[], int]:
    def run() -> int:
        for index, item in enumerate(items):
            work(index, item)
        return len(items)

    return run


def stage_lines(path: Path, model: Path) -> list[str]:
    keyframes: list[av.VideoFrame] = []
    cost: dict[str, tuple[float, float]] = {
        "demux, one source second (25 packets)": timed(demux(path)),
        "keyframe decode incl. the GOP's 24 skipped packets": timed(decode(path, True)),
    }
    decode(path, True, keyframes)()  # again, keeping the frames: untimed (fresh memory)
    full_cpu, full_wall = timed(decode(path, False))
    cost["  for comparison: full decode, 25 frames"] = (full_cpu * GOP, full_wall * GOP)
    # Each picture let go before the next, as a reader does: kept, every one would be fresh
    # memory, and page faults would double the figure.
    cost["BGR conversion (to_ndarray bgr24)"] = timed(
        over(keyframes, lambda _i, frame: frame.to_ndarray(format="bgr24"))
    )
    images = [frame.to_ndarray(format="bgr24") for frame in keyframes]
    spared: dict[str, float] = {}
    for scene, zone in SCENES.items():
        gate = MotionGate([Zone(ZoneSettings(**zone))])
        verdicts: list[bool] = []
        cost[f"motion gate, {scene} zone"] = timed(
            over(images, lambda i, f, g=gate, v=verdicts: v.append(g.needs_inference(f, i * 1000)))
        )
        spared[scene] = verdicts.count(False) / len(verdicts)
    detections: list = []
    for path_model in [model] + [m for m in OTHER_MODELS if m.name != model.name]:
        for threads, runs, batch in ((1, 1, 1), (2, 1, 1), (1, 2, 8)):
            detector = load_detector(path_model, threads=threads, concurrent_runs=runs)
            detector.detect(images[:batch])
            found: list = []
            batches = [images[i : i + batch] for i in range(0, len(images), batch)]
            how = f"{threads} thread{'s' * (threads > 1)}" + (
                f", batches of {batch} over {runs} concurrent runs" if runs > 1 else ""
            )
            cpu, wall = timed(over(batches, lambda _i, b, d=detector, out=found: out.extend(
                d.detect(b))))  # fmt: skip
            cost[f"inference {path_model.name}, {how}"] = (cpu / batch, wall / batch)
            if path_model == model and (threads, runs) == (1, 1):
                detections = found
    camera = CameraSettings(id="C", url="rtsp://camera/1", zones=[SCENES["busy"]])
    analyser = CameraAnalyser(camera, DetectorSettings(model=model).class_map)
    cost["analysis (static objects + tracker), busy zone"] = timed(
        over(images, lambda i, f: analyser.analyse(f, i * 1000, detections[i]))
    )

    width = max(map(len, cost))
    lines = [f"{'stage':{width}s}  CPU ms  wall ms"]
    lines += [f"{name:{width}s}  {cpu:6.2f}  {wall:7.2f}" for name, (cpu, wall) in cost.items()]
    reader = sum(cost[name][0] for name in list(cost)[:2]) + cost[
        "BGR conversion (to_ndarray bgr24)"][0]  # fmt: skip
    inference = cost[f"inference {model.name}, 1 thread"][0]
    analysis = cost["analysis (static objects + tracker), busy zone"][0]
    for scene, share in spared.items():
        gate = cost[f"motion gate, {scene} zone"][0]
        inferred = (1 - share) * inference
        total = reader + gate + inferred + analysis
        lines.append(
            f"{scene} zone: the gate spares {share:.0%} of frames; one camera-second costs "
            f"{total:.1f} ms CPU (reader {reader:.1f}, gate {gate:.1f}, inference "
            f"{inferred:.1f}, analysis {analysis:.1f}): at most {2000 / total:.0f} cameras on "
            "2 cores before the RTSP server and anything else"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_stream_file(Path(tmp) / "street1080p.mp4", 60)
        lines = stage_lines(clip, args.model)
    report = "\n".join(lines)
    print(report)
    if not args.no_record:
        write_report(
            SECTION,
            f"Python {platform.python_version()}, PyAV {av.__version__}, cv2 "
            f"{cv2.__version__}; one 1080p25 camera, one analysed frame/s, model "
            f"{args.model.name}.",
            report,
        )


if __name__ == "__main__":
    main()
