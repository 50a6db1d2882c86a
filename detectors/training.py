"""Train and export a detector that knows the city's classes (person, vehicle, stall,
rubbish) with Ultralytics, on CPU within a bounded time, then export ONNX for the default
backend. ``citygw detector train --data DATA.yaml`` lets a city retrain on its own footage.

Ultralytics and torch are heavy and needed only here, so they are imported lazily; the
gateway itself runs the exported ONNX with onnxruntime.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class TrainingResult:
    onnx: Path
    weights: Path
    epochs_run: int
    map50: float
    map50_95: float
    settings: dict


def train_detector(
    data_yaml: Path,
    out_dir: Path,
    base: str = "yolov8n.yaml",
    epochs: int = 40,
    imgsz: int = 320,
    batch: int = 16,
    time_budget_h: float | None = None,
    device: str | None = None,
) -> TrainingResult:
    """Train ``base`` (a model YAML builds from scratch offline; a .pt fine-tunes) and
    export the best weights to ONNX next to ``out_dir/best.onnx``."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # weights cannot be downloaded at run time
    os.environ.setdefault("YOLO_CONFIG_DIR", str(out_dir / ".ultralytics"))
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise RuntimeError(
            "training needs Ultralytics: pip install torch==2.14.1 torchvision==0.29.1 ultralytics"
        ) from exc

    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "data": str(data_yaml),
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        "workers": 0,
        "project": str(out_dir),
        "name": "run",
        "exist_ok": True,
        "amp": False,  # fp16 training is flaky on small synthetic sets; CPU ignores it
        "plots": False,
        "verbose": False,
        "seed": 0,
        "deterministic": True,
    }
    if time_budget_h is not None:
        settings["time"] = time_budget_h
    if device is not None:
        settings["device"] = device
    model = YOLO(base)
    trainer_results = model.train(**settings)
    run_dir = Path(trainer_results.save_dir) if trainer_results else out_dir / "run"
    best = run_dir / "weights" / "best.pt"
    trained = YOLO(str(best))
    metrics = trained.val(
        data=str(data_yaml), imgsz=imgsz, batch=batch, plots=False, verbose=False, split="val"
    )
    # fixed 1x3xHxW: the onnxruntime backend needs a concrete output shape to recognise the head
    exported = Path(trained.export(format="onnx", imgsz=imgsz, dynamic=False, simplify=False))
    onnx_path = out_dir / "best.onnx"
    shutil.copyfile(exported, onnx_path)
    epochs_run = _epochs_run(run_dir)
    result = TrainingResult(
        onnx=onnx_path,
        weights=best,
        epochs_run=epochs_run,
        map50=float(metrics.box.map50),
        map50_95=float(metrics.box.map),
        settings={k: v for k, v in settings.items() if k not in ("project", "name")},
    )
    (out_dir / "training.json").write_text(
        json.dumps(asdict(result), default=str, indent=2), encoding="utf-8"
    )
    return result


def _epochs_run(run_dir: Path) -> int:
    results_csv = run_dir / "results.csv"
    if not results_csv.exists():
        return 0
    return max(0, len(results_csv.read_text(encoding="utf-8").splitlines()) - 1)
