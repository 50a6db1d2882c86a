"""The shipped city detector (models/citygw-street-v2.onnx) loads through the project's backend
with the city's four classes and finds the stalls and rubbish in fresh held-out scenes.

The scenes come from `simulators.training_scenes.write_dataset` with a seed never used for
training (val split: held-out background sources and time ranges). RECALL_FLOOR is the recall
measured when the model was shipped (see models/MODEL_CARD.md) minus a margin, so a broken
export or a wrong preprocessing fails this test while run-to-run noise does not.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "citygw-street-v2.onnx"
ASSETS = ROOT.parent / "shared" / "assets"
NAMES = ["person", "vehicle", "stall", "rubbish"]
SEED = 4242  # not a training seed (training used 0 -> val seed 100003)
N_IMAGES = 12
# Measured at conf 0.25, IoU 0.5 on 12 scenes (seeds 4242 / 7 / 99): stall 0.82 / 1.00 / 1.00,
# rubbish 0.58 / 0.50 / 0.60. Floors = worst measured minus a margin. Rubbish recall is weak:
# this model finds about half of the rubbish, not "most" (see models/MODEL_CARD.md).
RECALL_FLOOR = {"stall": 0.6, "rubbish": 0.35}

pytestmark = [
    pytest.mark.skipif(not MODEL.exists(), reason=f"shipped model {MODEL} is absent"),
    pytest.mark.skipif(
        not (ASSETS / "videos").exists(),
        reason=f"{ASSETS} (shared real backgrounds for the scene generator) is absent",
    ),
]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_loads_with_city_names_and_input():
    from detectors.backends import load_detector

    det = load_detector(MODEL)
    assert det.names == NAMES
    assert tuple(det.input_size) == (320, 320)


def test_finds_held_out_stalls_and_rubbish(tmp_path):
    from detectors.backends import load_detector
    from simulators.training_scenes import write_dataset

    write_dataset(tmp_path, n_train=0, n_val=N_IMAGES, seed=SEED)
    det = load_detector(MODEL, conf=0.25)
    found = {"stall": 0, "rubbish": 0}
    total = {"stall": 0, "rubbish": 0}
    for img_path in sorted((tmp_path / "images" / "val").glob("*.jpg")):
        img = cv2.imread(str(img_path))
        h, w = img.shape[:2]
        dets = det.detect([img])[0]
        label_file = tmp_path / "labels" / "val" / f"{img_path.stem}.txt"
        for line in label_file.read_text().split("\n"):
            if not line.strip():
                continue
            c, cx, cy, bw, bh = (float(v) for v in line.split())
            name = NAMES[int(c)]
            if name not in total:
                continue
            truth = np.array(
                [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
            )
            total[name] += 1
            if any(d.label == name and _iou(np.array(d.box), truth) >= 0.5 for d in dets):
                found[name] += 1
    for name in total:
        assert total[name] > 0, f"generator made no {name} in {N_IMAGES} scenes"
        recall = found[name] / total[name]
        assert recall >= RECALL_FLOOR[name], (
            f"{name}: recall {recall:.2f} ({found[name]}/{total[name]}) at IoU 0.5 "
            f"< floor {RECALL_FLOOR[name]}"
        )
