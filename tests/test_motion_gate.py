"""The motion gate on real frames: quiet zones skip inference, anything entering a zone
never does, and the slow re-check still comes.

Footage: the 1080p shopping-street clip from ../shared/assets (people walk across most of
the view, never through its lower-left paving), sensor noise and real H.264 compression
added to still frames, and a piece of real rubbish cut from a City of Amsterdam photo.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.config import ZoneSettings
from detectors.motion_gate import MotionGate, MotionGateParams
from detectors.zones import Zone

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
CLIP = ASSETS / "videos" / "socialdist_pedestrians.mp4"
RUBBISH = ASSETS / "images" / "amsterdam_garbage" / "mdc_photo_cdv_photo_084_1469560128313.jpg"
pytestmark = pytest.mark.skipif(not CLIP.is_file(), reason=f"shared assets not at {ASSETS}")

QUIET = [[0.0, 0.72], [0.7, 0.72], [0.7, 1.0], [0.0, 1.0]]  # paving nobody crosses
LOWER_HALF = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]  # people walk through it


def zone(polygon: list[list[float]]) -> Zone:
    return Zone(ZoneSettings(id="Z", type="no_dumping", polygon=polygon, lat=26.08, lon=119.29))


@pytest.fixture(scope="module")
def clip_frames() -> list[np.ndarray]:
    """Every 5th frame of the clip (19 frames, 0.2 s apart: people move a body width)."""
    with av.open(str(CLIP)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    return frames[::5]


def h264_round_trip(images: list[np.ndarray], crf: int) -> list[np.ndarray]:
    """Each image encoded as its own H.264 keyframe and decoded: real compression noise."""
    height, width = images[0].shape[:2]
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = Fraction(1, 25)
    codec.options = {"crf": str(crf), "preset": "ultrafast", "g": "1", "tune": "zerolatency"}
    decoder = av.CodecContext.create("h264", "r")
    out = []
    for index, image in enumerate(images):
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = index
        for packet in codec.encode(frame):
            out += [f.to_ndarray(format="bgr24") for f in decoder.decode(packet)]
    for packet in codec.encode(None):
        out += [f.to_ndarray(format="bgr24") for f in decoder.decode(packet)]
    return out


def still_frames(first: np.ndarray, count: int, noise_sigma: float, crf: int) -> list[np.ndarray]:
    """One real frame, ``count`` times with fresh sensor noise and H.264 compression."""
    rng = np.random.default_rng(7)
    noisy = [
        np.clip(first + rng.normal(0, noise_sigma, first.shape), 0, 255).astype(np.uint8)
        for _ in range(count)
    ]
    return h264_round_trip(noisy, crf)


@pytest.fixture(scope="module")
def still(clip_frames) -> list[np.ndarray]:
    return still_frames(clip_frames[0], 12, noise_sigma=2.5, crf=26)


@pytest.fixture(scope="module")
def rubbish() -> np.ndarray:
    """A piece of bulky waste from a real pavement photo."""
    photo = cv2.imread(str(RUBBISH))
    height, width = photo.shape[:2]
    return photo[height // 3 : 2 * height // 3, width // 4 : 3 * width // 4]


def inferred_at(gate: MotionGate, frames: list[np.ndarray], step_ms: int = 1000) -> list[int]:
    """Indices of the frames the gate sends to the detector, frames ``step_ms`` apart."""
    return [i for i, frame in enumerate(frames) if gate.needs_inference(frame, i * step_ms)]


def with_object(frame: np.ndarray, patch: np.ndarray, centre: tuple[float, float], size_px: int):
    """``frame`` with ``patch`` scaled to ``size_px`` wide standing at normalised ``centre``."""
    height, width = frame.shape[:2]
    patch_h = max(1, round(size_px * patch.shape[0] / patch.shape[1]))
    small = cv2.resize(patch, (size_px, patch_h), interpolation=cv2.INTER_AREA)
    x = min(max(0, round(centre[0] * width - size_px / 2)), width - size_px)
    y = min(max(0, round(centre[1] * height - patch_h / 2)), height - patch_h)
    out = frame.copy()
    out[y : y + patch_h, x : x + size_px] = small
    return out


def test_a_still_scene_gates_all_but_the_rechecks(still):
    """12 noisy, compressed copies of one frame, 1 s apart: inference at 0 s and 10 s only
    (the recheck), 10 of 12 frames gated (83 %) — with zones and without."""
    for zones in ([zone(LOWER_HALF)], []):
        assert inferred_at(MotionGate(zones), still) == [0, 10]


@pytest.mark.parametrize(("noise_sigma", "crf"), [(0.0, 18), (4.0, 30), (6.0, 35)])
def test_noise_alone_gates(clip_frames, noise_sigma, crf):
    frames = still_frames(clip_frames[0], 6, noise_sigma, crf)
    assert inferred_at(MotionGate([zone(LOWER_HALF)]), frames) == [0]


def test_the_recheck_comes_every_recheck_s_without_change(still):
    gate = MotionGate([zone(QUIET)], MotionGateParams(recheck_s=3.0))
    assert inferred_at(gate, still) == [0, 3, 6, 9]


def test_people_walking_only_outside_the_zones_are_gated(clip_frames):
    """The real clip: the whole picture changes every step (nothing gated without zones),
    the paving zone nobody crosses gates every frame but the first and the recheck."""
    assert inferred_at(MotionGate([]), clip_frames) == list(range(len(clip_frames)))
    assert inferred_at(MotionGate([zone(QUIET)]), clip_frames) == [0, 10]


def test_people_walking_through_a_zone_are_never_gated(clip_frames):
    assert inferred_at(MotionGate([zone(LOWER_HALF)]), clip_frames) == list(range(len(clip_frames)))


@settings(max_examples=15, deadline=None)
@given(
    x=st.floats(0.05, 0.65),
    y=st.floats(0.76, 0.96),
    size_px=st.integers(48, 160),
)
def test_an_object_entering_or_leaving_a_zone_is_never_gated(still, rubbish, x, y, size_px):
    """Dumped at frame 2 and taken away at frame 6 anywhere in the zone, from ~1/40 of the
    frame width up: both frames need inference, the frames between are gated."""
    frames = list(still[:8])
    for i in range(2, 6):
        frames[i] = with_object(still[i], rubbish, (x, y), size_px)
    assert inferred_at(MotionGate([zone(QUIET)]), frames) == [0, 2, 6]


@settings(max_examples=10, deadline=None)
@given(x=st.floats(0.78, 0.95), y=st.floats(0.1, 0.9), size_px=st.integers(48, 160))
def test_an_object_appearing_outside_the_zones_is_gated(still, rubbish, x, y, size_px):
    frames = list(still[:4])
    frames[2] = with_object(still[2], rubbish, (x, y), size_px)
    assert inferred_at(MotionGate([zone(QUIET)]), frames) == [0]


def test_an_occupied_zone_is_inferred_every_frame_until_recheck_s_after(still):
    """The detector's answer on a dumped bag flickers between classes; the tracker needs
    every fresh answer while anything is in a zone, so occupancy suspends gating."""
    gate = MotionGate([zone(QUIET)], MotionGateParams(recheck_s=3.0))
    inferred = []
    for i, frame in enumerate(still[:10]):
        if gate.needs_inference(frame, i * 1000):
            inferred.append(i)
        if i in (1, 2):  # the analyses of frames 1 and 2 put an object in the zone
            gate.objects_in_zones(i * 1000, [0])
    assert inferred == [0, 2, 3, 4, 7]


def test_a_settled_object_does_not_hold_its_zone_open(still):
    """A litter bin the model calls a suitcase has stood since the camera came up: only
    the rechecks infer."""
    gate = MotionGate([zone(QUIET)], MotionGateParams(recheck_s=3.0, settled_s=120.0))
    inferred = []
    for i, frame in enumerate(still[:10]):
        if gate.needs_inference(frame, i * 1000):
            inferred.append(i)
        gate.objects_in_zones(i * 1000, [120_000 + i * 1000])
    assert inferred == [0, 3, 6, 9]
