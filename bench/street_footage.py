"""Dumped objects on real street footage: detection rate, false cases and time to detect.

The wide matrix of ``tests/test_street_footage_dumping.py``: both shared clips, every
object and spot of ``simulators.street_trial``'s catalogue, several start offsets, each
detector model asked for; positives held ``--hold`` s past the dwell so that a late case is
measured rather than missed. Each trial runs through the gateway's camera path
(``gateway.footage_trial.run_trial``). Per model and clip it reports the detection rate
(positives that filed exactly one case within the dwell + lateness), how many filed at all,
false cases (an empty zone or an object taken away before the dwell that filed, and extra
cases), time to detect minus the dwell (min / median / max over the positives that filed),
the failures by reason, and writes them to BENCHMARKS.md.

Usage: python bench/street_footage.py [--models yolox_nano.onnx,yolo11n_int8.onnx]
       [--offsets 0,7,13,21] [--dwell 30] [--hold 60] [--no-write]
       python bench/street_footage.py --trace TRIAL_ID   (one trial, frame by frame)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from benchmarks_doc import BENCHMARKS, write_section

from detectors.backends import load_detector
from domain import Observation
from gateway.footage_trial import CachedDetector, TrialResult, run_trial
from simulators.footage import DEFAULT_ASSETS
from simulators.street_trial import (
    CLIPS,
    OBJECTS,
    StreetClip,
    StreetScene,
    Timing,
    Trial,
    TrialFrame,
    standard_trials,
)

HEADING = "## Dumped objects on real street footage (bench/street_footage.py)"
MODELS = DEFAULT_ASSETS / "models"
BENCH = Path(__file__).resolve().parent


def clip_trials(clip: StreetClip, offsets: list[int], timing: Timing, hold_s: int) -> list[Trial]:
    """Every object at every spot; at each spot one object (in turn) also taken away early."""
    trials = []
    for n, spot in enumerate(clip.spots):
        short = [OBJECTS[n % len(OBJECTS)]]
        trials += standard_trials(clip, spot, OBJECTS, offsets, timing, short, hold_s)
    return trials


def scene_for(clip: StreetClip, trials: list[Trial]) -> StreetScene:
    return StreetScene(clip, max(t.start_offset_s + t.duration_s for t in trials))


def summary(results: list[TrialResult], timing: Timing) -> dict[str, object]:
    positives = [r for r in results if r.trial.expected_cases]
    quiet = [r for r in results if not r.trial.expected_cases]
    on_time = [r for r in positives if r.failure(timing) is None]
    filed = [r for r in positives if r.detect_s(timing) is not None]
    delays = sorted(r.detect_s(timing) for r in filed)  # type: ignore[type-var]
    false_cases = sum(1 for r in quiet if r.alerts) + sum(
        max(0, sum(state == "firing" for _, state in r.alerts) - 1) for r in positives
    )
    reasons = Counter((r.failure(timing) or "ok").split(":")[0] for r in results)
    return {
        "runs": f"{len(positives)} positive, {len(quiet)} empty/short",
        "detected": f"{len(on_time)}/{len(positives)}",
        "filed at all": f"{len(filed)}/{len(positives)}",
        "false cases": false_cases,
        "detect - dwell (s)": (
            f"{delays[0]} / {statistics.median(delays):g} / {delays[-1]}" if delays else "-"
        ),
        "outcomes": ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())),
    }


def print_trace(frame: TrialFrame, inferred: bool, obs: list[Observation], alerts: list) -> None:
    seen = " ".join(f"{o.label}#{o.track_id}({o.stationary_ms // 1000}s)" for o in obs if o.zone_id)
    print(f"t={frame.t_s:3d} visible={frame.visible:4.2f} {'infer' if inferred else 'gated'}"
          f"  zone: {seen or '-'}  {alerts or ''}")  # fmt: skip


def trace(trial_id: str, model: str, offsets: list[int], timing: Timing, hold_s: int) -> None:
    for clip in CLIPS:
        for trial in clip_trials(clip, offsets, timing, hold_s):
            if trial.id == trial_id:
                detector = CachedDetector(load_detector(MODELS / model))
                result = run_trial(trial, scene_for(clip, [trial]), detector, timing,
                                   trace=print_trace)  # fmt: skip
                print(result.describe(timing))
                return
    sys.exit(f"no trial {trial_id!r} in this matrix (ids look like carcounter-far_shops-bags-"
             f"positive-at0s; --offsets and --hold must match the run that named it)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="yolox_nano.onnx,yolo11n_int8.onnx")
    parser.add_argument("--offsets", default="0,7,13,21")
    parser.add_argument("--dwell", type=int, default=30)
    parser.add_argument("--hold", type=int, default=60, help="positives stay dwell + this")
    parser.add_argument("--trace", metavar="TRIAL_ID")
    parser.add_argument("--label", default=commit(), help="the code measured (default: HEAD)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    offsets = [int(v) for v in args.offsets.split(",")]
    timing = Timing(dwell_s=args.dwell)
    models = args.models.split(",")
    if args.trace:
        trace(args.trace, models[0], offsets, timing, args.hold)
        return
    rows, failures = [], []
    started = time.perf_counter()
    for clip in CLIPS:
        trials = clip_trials(clip, offsets, timing, args.hold)
        scene = scene_for(clip, trials)
        for model in models:
            detector = CachedDetector(load_detector(MODELS / model))
            clip_started = time.perf_counter()
            results = [run_trial(t, scene, detector, timing) for t in trials]
            row = {"code": args.label, "clip": clip.name, "model": model}
            row.update(summary(results, timing))
            row["wall s"] = f"{time.perf_counter() - clip_started:.0f}"
            row["inferred"] = detector.inferred
            rows.append(row)
            print(" | ".join(f"{k}: {v}" for k, v in row.items()), flush=True)
            failures += [f"{model}: {r.describe(timing)}" for r in results if r.failure(timing)]
    print(f"\n{len(failures)} failing trials:\n" + "\n".join(failures))
    print(f"total {time.perf_counter() - started:.0f} s")
    if not args.no_write:
        write_section(HEADING, report(rows, timing, offsets, args.hold))


def commit() -> str:
    """HEAD's short hash, marked when the working tree has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=BENCH,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            cwd=BENCH,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + changes" if dirty.strip() else "")  # fmt: skip


def earlier_rows(columns: list[str], codes: set[str]) -> list[str]:
    """The table rows of the section as it stands measured on other code (same columns),
    so a before and an after stand side by side until someone removes the before."""
    doc = BENCHMARKS.read_text(encoding="utf-8")
    start = doc.find(HEADING + "\n")
    if start == -1:
        return []
    end = doc.find("\n## ", start + len(HEADING))
    lines = doc[start : None if end == -1 else end].splitlines()
    header = "| " + " | ".join(columns) + " |"
    if header not in lines:
        return []
    table = lines[lines.index(header) + 2 :]
    rows = [line for line in table if line.startswith("| ")]
    return [row for row in rows if row[2:].split(" | ")[0] not in codes]


def report(rows: list[dict], timing: Timing, offsets: list[int], hold_s: int) -> str:
    machine = platform.processor() or platform.machine()
    objects = ", ".join(o.name for o in OBJECTS)
    spots = "; ".join(
        f"{c.name}: " + ", ".join(f"{s.name} ({s.width_src_px} px; {s.passers})" for s in c.spots)
        for c in CLIPS
    )
    columns = list(rows[0])
    return "\n".join([
        HEADING,
        "",
        f"`python bench/street_footage.py`, latest run {datetime.now(UTC):%Y-%m-%d} on {machine};"
        f" code: the commit measured (rows of other commits are kept). Real objects cut from"
        f" the Amsterdam rubbish photos ({objects}) dumped behind the real traffic of both"
        f" shared clips ({spots}), start offsets {offsets} s, 1 analysed frame/s,"
        f" `rubbish_dwell_s` {timing.dwell_s}, `clear_after_s` {timing.clear_after_s};"
        f" positives stay dwell + {hold_s} s, short objects leave {timing.lateness_s} s before"
        f" the dwell. Detected: exactly one case, within dwell + {timing.lateness_s} s, cleared"
        f" after the object left. Detect - dwell: case time minus the dwell (s), min / median /"
        f" max over the positives that filed.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *earlier_rows(columns, {row["code"] for row in rows}),
        *("| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows),
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    main()
