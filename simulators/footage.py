"""Staged incidents on real footage: composite real objects onto a real street clip at
known times, so tests and trials know exactly what a camera should report.

A footage scenario (YAML) names a background clip, the cameras that watch it (served on
one RTSP mount each), the zones with their geo position, and overlays: an image crop with
a soft edge, where it lies and from when to when, and the case it must cause. A camera
listed under ``places`` shows the same view somewhere else: its zones keep their polygons
and take that place's position, so one clip stages dumping at several places at once.
ffmpeg does the compositing and the H.264 encoding (1 s GOP by default, as cameras are
often set).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

BUILTIN_FOOTAGE = Path(__file__).parent / "scenarios" / "footage_dumping.yaml"
# Beside a checkout of the project: ../shared/assets (never committed: licences vary).
DEFAULT_ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
MIN_CUT_PX = 32  # the soft edge takes ~6-8 px a side


class FootageError(ValueError):
    """A scenario that cannot be built; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Overlay(_Strict):
    image: Path
    crop: tuple[int, int, int, int]  # x1, y1, x2, y2 in the image
    at: tuple[int, int]  # top-left in the output frame
    width: int = Field(gt=0)  # scaled to this many output pixels
    start_s: float = Field(ge=0)
    end_s: float
    label: str
    class_code: str = Field(pattern=r"^\d{5}$")
    priority: str = "urgent"


class Place(_Strict):
    """Where a camera's zones are on the map (detectors.config.ZoneSettings' geo fields)."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    address: str = ""
    grid_code: str = Field("", pattern=r"^(\d{15})?$")


class FootageScenario(_Strict):
    name: str
    clip: Path
    duration_s: int = Field(60, gt=0)
    size: tuple[int, int] = (960, 540)
    fps: int = Field(10, gt=0)
    gop: int = Field(10, gt=0)
    cameras: list[str] = Field(min_length=1)
    zones: list[dict] = Field(min_length=1)  # detectors.config.ZoneSettings fields
    # Cameras showing the same view at another place; the others are where ``zones`` say.
    places: dict[str, Place] = {}
    overlays: list[Overlay] = []

    @model_validator(mode="after")
    def _places_of_cameras(self) -> FootageScenario:
        unknown = sorted(self.places.keys() - set(self.cameras))
        if unknown:
            raise ValueError(f"places of cameras not in cameras: {', '.join(unknown)}")
        return self


def load_footage_scenario(path: Path, assets: Path) -> FootageScenario:
    """Read a scenario; relative media paths are looked up under ``assets``."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        scenario = FootageScenario.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise FootageError(f"{path}: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise FootageError(f"{path}: {problems}") from None
    scenario.clip = assets / scenario.clip
    for overlay in scenario.overlays:
        overlay.image = assets / overlay.image
    for media in [scenario.clip, *(o.image for o in scenario.overlays)]:
        if not media.is_file():
            raise FootageError(f"{path}: media not found: {media} (the shared test assets)")
    return scenario


def build_footage(scenario: FootageScenario, out_dir: Path) -> Path:
    """Render the composited clip to ``out_dir/<name>.mp4`` (H.264, yuv420p)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = ["-stream_loop", "-1", "-i", str(scenario.clip)]
    width, height = scenario.size
    graph = [f"[0:v]scale={width}:{height}[v0]"]
    for n, overlay in enumerate(scenario.overlays, start=1):
        cut = out_dir / f"overlay{n}.png"
        _write_soft_cut(overlay, cut)
        inputs += ["-i", str(cut)]
        x, y = overlay.at
        graph.append(f"[{n}:v]scale={overlay.width}:-1[o{n}]")
        graph.append(
            f"[v{n - 1}][o{n}]overlay=x={x}:y={y}:"
            f"enable='between(t,{overlay.start_s},{overlay.end_s})'[v{n}]"
        )
    last = f"[v{len(scenario.overlays)}]"
    out = out_dir / f"{scenario.name}.mp4"
    command = [
        "ffmpeg", "-loglevel", "error", "-y", *inputs, "-filter_complex", ";".join(graph),
        "-map", last, "-t", str(scenario.duration_s), "-an", "-r", str(scenario.fps),
        "-c:v", "libx264", "-preset", "veryfast", "-g", str(scenario.gop),
        "-pix_fmt", "yuv420p", str(out),
    ]  # fmt: skip
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise FootageError("ffmpeg is not installed (apt-get install ffmpeg)") from exc
    except subprocess.CalledProcessError as exc:
        raise FootageError(f"ffmpeg failed: {exc.stderr.strip()}") from exc
    return out


def _write_soft_cut(overlay: Overlay, path: Path) -> None:
    cv2.imwrite(str(path), soft_cut(overlay.image, overlay.crop))


def soft_cut(image_path: Path, crop: tuple[int, int, int, int]) -> np.ndarray:
    """The crop (x1, y1, x2, y2) of a photo as BGRA with an elliptical, feathered alpha: an
    object, not a pasted rectangle."""
    image = cv2.imread(str(image_path))
    if image is None:
        raise FootageError(f"cannot read the image {image_path}")
    x1, y1, x2, y2 = crop
    height, width = image.shape[:2]
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise FootageError(f"{image_path}: crop {crop} is not inside its {width}x{height} pixels")
    if x2 - x1 < MIN_CUT_PX or y2 - y1 < MIN_CUT_PX:
        raise FootageError(f"{image_path}: crop {crop} is under {MIN_CUT_PX} pixels a side")
    cut = image[y1:y2, x1:x2]
    h, w = cut.shape[:2]
    alpha = np.zeros((h, w), np.float32)
    cv2.ellipse(alpha, (w // 2, h // 2 + 5), (w // 2 - 6, h // 2 - 8), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (31, 31), 0)
    return np.dstack([cut, (alpha * 255).astype(np.uint8)])


def camera_zones(scenario: FootageScenario, camera: str) -> list[dict]:
    """The camera's zones as gateway config: at its place, if it has one."""
    place = scenario.places.get(camera)
    moved = {} if place is None else place.model_dump()
    return [{**zone, **moved} for zone in scenario.zones]


def cameras_by_place(scenario: FootageScenario) -> list[list[str]]:
    """Cameras grouped by where their zones are, in first-camera order: cameras at one
    place see one incident (one case), cameras at different places see one each."""
    groups: dict[str, list[str]] = {}
    for camera in scenario.cameras:
        place = scenario.places.get(camera)
        groups.setdefault("" if place is None else place.model_dump_json(), []).append(camera)
    return [sorted(cameras) for cameras in groups.values()]


def footage_truth(scenario: FootageScenario) -> dict:
    """One expected case per overlay and place, seen by every camera at that place."""
    return {
        "scenario": scenario.name,
        "expected_cases": [
            {"label": o.label, "class_code": o.class_code, "priority": o.priority,
             "devices": cameras}
            for o in scenario.overlays for cameras in cameras_by_place(scenario)
        ],
        "incidents": [
            {"label": o.label, "start_s": o.start_s, "end_s": o.end_s, "cameras": cameras}
            for o in scenario.overlays for cameras in cameras_by_place(scenario)
        ],
    }  # fmt: skip


def write_truth(scenario: FootageScenario, path: Path) -> None:
    path.write_text(
        json.dumps(footage_truth(scenario), ensure_ascii=False, indent=2), encoding="utf-8"
    )
