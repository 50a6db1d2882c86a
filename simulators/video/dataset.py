"""A YOLO training set of random street scenes, labelled exactly from the renderer.

Layout (what Ultralytics expects)::

    out_dir/data.yaml
    out_dir/images/{train,val}/000123.jpg
    out_dir/labels/{train,val}/000123.txt   # "class cx cy w h", normalised, one per object

Every image is a function of (seed, split, index) alone, so a set can be regenerated
exactly and split across worker processes in any way. The val split draws from a
different seed stream than train: no val view or scene is ever a train one.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import yaml

from simulators.video.randomise import MOMENT_S, random_scene, random_view
from simulators.video.render import draw, expose

CLASS_NAMES = ("person", "vehicle", "stall", "rubbish")
SPLITS = {"train": 0, "val": 1}
MOMENTS_PER_VIEW = 4  # images sharing one street and camera (and one backdrop render)
INLINE_BELOW = 48  # fewer images than this are not worth starting worker processes


def write_yolo_dataset(
    out_dir: str | Path,
    n_train: int,
    n_val: int,
    seed: int,
    imgsz: int = 640,
    workers: int | None = None,
) -> Path:
    """Render ``n_train`` + ``n_val`` labelled images; returns the ``data.yaml`` path."""
    if imgsz % 2 or not 64 <= imgsz <= 4096:
        raise ValueError("imgsz must be even, 64..4096")
    out = Path(out_dir).resolve()
    jobs = []
    for split, count in (("train", n_train), ("val", n_val)):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for first in range(0, count, MOMENTS_PER_VIEW):
            last = min(first + MOMENTS_PER_VIEW, count)
            jobs.append((out, split, first, last, seed, imgsz))
    workers = workers or min(os.cpu_count() or 1, 8)
    if workers == 1 or n_train + n_val < INLINE_BELOW:
        for job in jobs:
            _write_view(*job)
    else:
        with ProcessPoolExecutor(workers) as pool:
            for _ in pool.map(_write_view, *zip(*jobs, strict=True), chunksize=4):
                pass
    data = out / "data.yaml"
    data.write_text(
        yaml.safe_dump(
            {
                "path": str(out),
                "train": "images/train",
                "val": "images/val",
                "nc": len(CLASS_NAMES),
                "names": list(CLASS_NAMES),
            },
            sort_keys=False,
        ),
        encoding="utf-8",
    )
    return data


def _write_view(out: Path, split: str, first: int, last: int, seed: int, imgsz: int) -> None:
    """Images ``first..last-1`` of a split: one random view, a random moment each."""
    view_rng = np.random.default_rng([seed, SPLITS[split], first // MOMENTS_PER_VIEW, 0])
    street, camera, view_seed = random_view(view_rng, imgsz)
    for index in range(first, last):
        rng = np.random.default_rng([seed, SPLITS[split], index, 1])
        scene = random_scene(rng, street, camera, view_seed, f"{split}{index}-")
        image, objects = draw(scene, camera, MOMENT_S, with_ids=True, supersample=1)
        image = expose(scene, camera, MOMENT_S, image)
        name = f"{index:06d}"
        quality = int(rng.integers(70, 96))  # camera streams are compressed, unevenly
        cv2.imwrite(
            str(out / "images" / split / f"{name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, quality]
        )
        width, height = camera.size
        lines = [
            f"{CLASS_NAMES.index(o.class_name)} {(o.x1 + o.x2) / 2 / width:.6f} "
            f"{(o.y1 + o.y2) / 2 / height:.6f} {(o.x2 - o.x1) / width:.6f} "
            f"{(o.y2 - o.y1) / height:.6f}"
            for o in objects
        ]
        text = "\n".join(lines) + ("\n" if lines else "")
        (out / "labels" / split / f"{name}.txt").write_text(text, encoding="utf-8")
