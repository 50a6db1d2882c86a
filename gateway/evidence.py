"""Evidence pictures for video cases: JPEGs beside the store, served by the gateway API."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from domain import Alert

JPEG_QUALITY = 85
URL_PREFIX = "/api/v1/evidence/"


def save_evidence(
    folder: Path, alert: Alert, drawn: np.ndarray, before: np.ndarray | None
) -> tuple[str, ...]:
    """Write the annotated frame (and the "before" frame) and return their API paths."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = alert.key.replace("/", "_") + f"_{alert.ts}"
    pictures = {f"{stem}.jpg": drawn}
    if before is not None:
        pictures[f"{stem}_before.jpg"] = before
    for name, image in pictures.items():
        cv2.imwrite(str(folder / name), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return tuple(URL_PREFIX + name for name in pictures)
