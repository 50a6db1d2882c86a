"""Camera analysis: zones, tracking at 1 fps, new static objects, observations."""

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from detectors.config import CameraSettings, DetectorSettings, ZoneSettings
from detectors.observe import CameraAnalyser
from detectors.static_objects import StaticObjectDetector, StaticObjectParams
from detectors.tracking import Sighting, Tracker
from detectors.zones import Zone
from domain import Category, Location

# The left half of the picture, bottom 60%.
LEFT = ZoneSettings(
    id="z1",
    type="no_vending",
    polygon=[(0.0, 0.4), (0.5, 0.4), (0.5, 1.0), (0.0, 1.0)],
    lat=26.08,
    lon=119.3,
    address="五一路",
    grid_code="350102001001001",
)


# --- zones --------------------------------------------------------------------------------


def test_zone_membership_is_by_bottom_centre():
    z = Zone(LEFT)
    # Canopy reaches far outside (top and right) but it stands inside.
    assert z.contains((200, 50, 400, 300), (640, 480)) is True
    # Overlaps the zone, but stands right of it (bottom-centre x = 340 > 320).
    assert z.contains((300, 250, 380, 300), (640, 480)) is False
    # Stands above the zone's top edge (y = 180 < 192).
    assert z.contains((100, 100, 140, 180), (640, 480)) is False


def test_zone_follows_a_resolution_change():
    z = Zone(LEFT)
    stand = (390.0, 300.0, 410.0, 400.0)  # bottom-centre (400, 400)
    assert z.contains(stand, (640, 480)) is False  # the zone ends at x = 320
    assert z.contains(stand, (1280, 720)) is True  # ...and at x = 640 after a reconnect
    assert z.contains(stand, (640, 480)) is False  # one polygon cached per size
    np.testing.assert_allclose(z.polygon_px((1280, 720))[2], (640.0, 720.0))
    np.testing.assert_allclose(z.polygon_px((640, 480))[2], (320.0, 480.0))


def test_zone_location_and_class_code():
    assert Zone(LEFT).location == Location(26.08, 119.3, "五一路", "350102001001001")
    assert Zone(LEFT).class_code == "09006"
    dumping = LEFT.model_copy(update={"type": "no_dumping", "rubbish_class": "06011"})
    assert Zone(dumping).class_code == "06011"


# --- tracking -----------------------------------------------------------------------------


def box_at(x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
    """Box with bottom-centre (x, y)."""
    return (x - w / 2, y - h, x + w / 2, y)


def test_walker_keeps_its_id_through_one_fps_jumps():
    tracker = Tracker()
    ids, stationary = set(), []
    for second in range(10):  # 80 px a frame: most of a 100 px body height
        (track,) = tracker.update(
            second * 1000,
            [Sighting("person", 0.9, box_at(50 + 80 * second, 300, 40, 100), "person")],
        )
        ids.add(track.track_id)
        stationary.append(track.stationary_ms(second * 1000))
    assert ids == {1}
    assert stationary == [0] * 10


def test_small_fast_object_keeps_its_id():
    tracker = Tracker()
    tracks = [
        tracker.update(
            s * 1000, [Sighting("handbag", 0.5, box_at(20 + 55 * s, 400, 20, 20), "rubbish")]
        )[0]
        for s in range(8)
    ]
    assert {t.track_id for t in tracks} == {1}


def test_stationary_time_survives_jitter_and_resets_on_a_move():
    tracker = Tracker()
    jitter = [0, 3, -3, 2, -2, 3, 0, -3, 1, 2]  # px; tolerance is max(8, 5% of 100) = 8
    got = []
    for s, dx in enumerate(jitter):
        (track,) = tracker.update(
            s * 1000, [Sighting("chair", 0.8, box_at(200 + dx, 300 + dx, 60, 100), "stall_part")]
        )
        got.append(track.stationary_ms(s * 1000))
    assert got == [s * 1000 for s in range(10)]
    (track,) = tracker.update(
        10_000, [Sighting("chair", 0.8, box_at(230, 300, 60, 100), "stall_part")]
    )
    assert (track.track_id, track.stationary_ms(10_000)) == (1, 0)
    (track,) = tracker.update(
        11_000, [Sighting("chair", 0.8, box_at(231, 301, 60, 100), "stall_part")]
    )
    assert track.stationary_ms(11_000) == 1_000


def test_slow_creep_is_not_stationary():
    tracker = Tracker()
    got = []
    for s in range(12):  # 3 px a frame: each step within tolerance, the sum is not
        (track,) = tracker.update(
            s * 1000, [Sighting("person", 0.9, box_at(100 + 3 * s, 300, 40, 100), "person")]
        )
        got.append(track.stationary_ms(s * 1000))
    # re-anchored once 15 px off: past the 8 px tolerance and under 0.5 IoU of a 40 px box
    assert max(got) == 4_000
    assert {track.track_id} == {1}


def test_passer_by_does_not_take_a_missed_stationary_track():
    tracker = Tracker()
    vendor = box_at(300, 300, 40, 100)
    for s in range(6):
        (v,) = tracker.update(s * 1000, [Sighting("person", 0.9, vendor, "person")])
    # The vendor is missed; a walker passes 70 px away (within a moving gate, not a settled one).
    (walker,) = tracker.update(
        6_000, [Sighting("person", 0.9, box_at(370, 300, 40, 100), "person")]
    )
    (again,) = tracker.update(7_000, [Sighting("person", 0.9, vendor, "person")])
    assert (v.track_id, walker.track_id, again.track_id) == (1, 2, 1)
    assert again.stationary_ms(7_000) == 7_000


def test_groups_never_mix_and_labels_go_by_majority():
    tracker = Tracker()
    table = box_at(200, 300, 80, 50)
    labels = ["dining table", "dining table", "chair", "dining table", "chair"]
    for s, label in enumerate(labels):
        person, part = tracker.update(
            s * 1000,
            [
                Sighting("person", 0.9, box_at(200, 300, 40, 100), "person"),
                Sighting(label, 0.6, table, "stall_part"),
            ],
        )
        assert (person.track_id, part.track_id) == (1, 2)
    assert part.label == "dining table"
    assert part.votes == {"dining table": 3, "chair": 2}


def test_tracks_die_after_max_missed_and_ids_keep_increasing():
    tracker = Tracker()
    box = box_at(100, 100, 20, 40)
    (first,) = tracker.update(0, [Sighting("person", 0.9, box, "person")])
    for s in range(1, 12):  # max_missed = 10 analysed frames
        tracker.update(s * 1000, [])
    assert tracker.tracks == []
    (second,) = tracker.update(12_000, [Sighting("person", 0.9, box, "person")])
    assert (first.track_id, second.track_id) == (1, 2)


def test_track_ids_are_per_camera():
    a, b = Tracker(), Tracker()
    near, far = box_at(10, 10, 5, 5), box_at(500, 10, 5, 5)
    assert [
        t.track_id
        for t in a.update(
            0, [Sighting("person", 0.9, near, "person"), Sighting("person", 0.9, far, "person")]
        )
    ] == [1, 2]
    (only,) = b.update(0, [Sighting("person", 0.9, near, "person")])
    assert only.track_id == 1


# --- new static objects -------------------------------------------------------------------

W, H = 320, 240
BLOB = (100, 120, 140, 150)  # x1, y1, x2, y2


def textured_background(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(60, 170, size=(H // 8, W // 8)).astype(np.float32)
    texture = cv2.resize(coarse, (W, H), interpolation=cv2.INTER_CUBIC)
    return np.clip(texture + rng.normal(0, 8, size=(H, W)), 40, 180).astype(np.float32)


def street(base: np.ndarray, t: int, rng: np.random.Generator, blob=None) -> np.ndarray:
    """Frame ``t``: brightness drifting up 0.3% a frame plus an offset, noise σ = 3."""
    grey = base * (1.0 + 0.003 * t) + 0.1 * t
    if blob is not None:
        x1, y1, x2, y2 = blob
        grey = grey.copy()
        grey[y1:y2, x1:x2] = 25.0
    grey = np.clip(grey + rng.normal(0, 3, size=grey.shape), 0, 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def test_drifting_empty_street_gives_no_static_object():
    base, rng = textured_background(), np.random.default_rng(1)
    detector = StaticObjectDetector()
    found = [detector.update(street(base, t, rng), t * 1000, []) for t in range(100)]
    assert sum(len(f) for f in found) == 0


def test_new_blob_is_found_after_confirm_samples_where_it_was_drawn():
    base, rng = textured_background(), np.random.default_rng(2)
    detector = StaticObjectDetector(StaticObjectParams(confirm_samples=8))
    for t in range(30):
        assert detector.update(street(base, t, rng), t * 1000, []) == []
    # Appears at sample 30: unchanged since the previous sample from 31 on, 8 of those at 38.
    found = [detector.update(street(base, t, rng, BLOB), t * 1000, []) for t in range(30, 45)]
    assert [len(f) for f in found] == [0] * 8 + [1] * 7
    box = found[-1][0].box
    assert np.abs(np.array(box) - np.array(BLOB)).max() <= 2
    assert found[-1][0].score == 1.0
    # The "before" picture is the street without the blob, at the frame's size.
    before = detector.background_bgr()
    assert before is not None and before.shape == (H, W, 3)
    x1, y1, x2, y2 = BLOB
    assert before[y1:y2, x1:x2].mean() > 80


def test_moving_blob_is_never_static():
    base, rng = textured_background(), np.random.default_rng(3)
    detector = StaticObjectDetector()
    for t in range(20):
        detector.update(street(base, t, rng), t * 1000, [])
    total = 0
    for t in range(20, 80):
        x = 10 + (12 * t) % 260  # 12 px a sample: no pixel stays covered for 8 samples
        total += len(detector.update(street(base, t, rng, (x, 60, x + 30, 90)), t * 1000, []))
    assert total == 0


def test_blob_behind_a_person_box_is_not_reported():
    base, rng = textured_background(), np.random.default_rng(4)
    detector = StaticObjectDetector()
    for t in range(10):
        detector.update(street(base, t, rng), t * 1000, [])
    person = (95.0, 60.0, 145.0, 152.0)
    found = [detector.update(street(base, t, rng, BLOB), t * 1000, [person]) for t in range(10, 30)]
    assert sum(len(f) for f in found) == 0


def test_objects_present_from_the_start_are_background():
    base, rng = textured_background(), np.random.default_rng(5)
    detector = StaticObjectDetector()
    found = [detector.update(street(base, t, rng, BLOB), t * 1000, []) for t in range(40)]
    assert sum(len(f) for f in found) == 0


# --- observations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Det:
    label: str
    score: float
    box: tuple[float, float, float, float]


def analyser() -> CameraAnalyser:
    camera = CameraSettings(id="cam1", url="file.mp4", zones=[LEFT])
    return CameraAnalyser(camera, DetectorSettings(model="m.onnx").class_map)


def test_analyser_maps_tracks_and_zones_detections():
    cam = analyser()
    frame = np.full((480, 640, 3), 100, np.uint8)
    umbrella = Det("umbrella", 0.7, (100.0, 200.0, 200.0, 400.0))
    passer = Det("person", 0.9, (500.0, 200.0, 540.0, 400.0))
    kite = Det("kite", 0.9, (10.0, 10.0, 20.0, 20.0))  # not in the class map: dropped
    cam.analyse(frame, 0, [umbrella, passer, kite])
    obs = cam.analyse(frame, 1_000, [umbrella, passer, kite])
    assert [(o.label, o.category, o.zone_id, o.track_id, o.stationary_ms) for o in obs] == [
        ("umbrella", Category.STALL_PART, "z1", 1, 1_000),
        ("person", Category.PERSON, "", 2, 1_000),
    ]
    assert {(o.camera_id, o.ts, o.frame_size) for o in obs} == {("cam1", 1_000, (640, 480))}


def doubled(frame: np.ndarray) -> np.ndarray:
    return cv2.resize(frame, (2 * W, 2 * H), interpolation=cv2.INTER_NEAREST)


def test_analyser_reports_dumped_blob_with_evidence():
    cam = analyser()
    base, rng = textured_background(), np.random.default_rng(6)
    for t in range(10):
        assert cam.analyse(doubled(street(base, t, rng)), t * 1000, []) == []
    with pytest.raises(LookupError):
        cam.evidence_frames("nope")
    for t in range(10, 21):
        obs = cam.analyse(doubled(street(base, t, rng, BLOB)), t * 1000, [])
    (blob,) = obs
    assert (blob.label, blob.category, blob.zone_id, blob.stationary_ms) == (
        "static_object",
        Category.STATIC_OBJECT,
        "z1",
        9_000,  # it stood still from the sample after it appeared (t=11), not from its report
    )
    assert np.abs(np.array(blob.box) - 2 * np.array(BLOB)).max() <= 4
    current, before = cam.evidence_frames("z1")
    assert before is not None and before.shape == current.shape == (480, 640, 3)
    x1, y1, x2, y2 = (2 * v for v in BLOB)
    assert current[y1:y2, x1:x2].mean() < 40 < 80 < before[y1:y2, x1:x2].mean()
    drawn = cam.draw_evidence(current, obs, "z1")
    assert drawn.shape == current.shape
    assert not np.array_equal(drawn, current)
    assert np.array_equal(drawn[y1 + 10, x1 + 10], current[y1 + 10, x1 + 10])  # inside kept


def test_a_passer_by_hiding_part_of_a_stall_does_not_restart_its_stationary_time():
    tracker = Tracker()
    stall = (171.0, 69.0, 253.0, 160.0)
    # as measured on the rendered scene: people in front move the box's bottom and sides
    hidden = [(168, 70, 259, 171), (152, 71, 259, 180), (151, 69, 261, 189), (172, 70, 251, 149)]
    for s in range(10):
        (track,) = tracker.update(s * 1000, [Sighting("stall", 0.9, stall, "stall_part")])
    for s, box in enumerate(hidden, start=10):
        (track,) = tracker.update(s * 1000, [Sighting("stall", 0.8, box, "stall_part")])
    assert track.stationary_ms(13_000) == 13_000
    moved = (stall[0] + 60, stall[1], stall[2] + 60, stall[3])  # carried 60 px along
    (track,) = tracker.update(14_000, [Sighting("stall", 0.9, moved, "stall_part")])
    assert track.stationary_ms(14_000) == 0
