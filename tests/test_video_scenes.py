"""The video scene simulator: pure frames, actors on their timeline, labels on their pixels,
truth from the projection, zones the gateway can use, MP4 files and a YOLO training set."""

import hashlib
import subprocess
import sys
import textwrap

import av
import cv2
import numpy as np
import pytest
import yaml

from detectors.config import ZoneSettings
from simulators.video import (
    BUILTIN_VIDEO_SCENE,
    CLASS_NAMES,
    SceneError,
    camera_zones,
    frame_labels,
    frame_objects,
    load_scene,
    parse_scene,
    render_frame,
    scene_truth,
    write_mp4,
    write_yolo_dataset,
)
from simulators.video import mp4 as mp4_module
from simulators.video.render import projected_box

CAMERAS = ("CAM-A", "CAM-B")


@pytest.fixture(scope="module")
def scene():
    return load_scene()


@pytest.fixture(scope="module")
def empty(scene):
    """The same street, cameras, light and noise, with nobody in it."""
    return scene.model_copy(update={"actors": ()})


def digest(frame: np.ndarray) -> str:
    return hashlib.sha256(frame.tobytes()).hexdigest()


def box_diff(a: np.ndarray, b: np.ndarray, box) -> float:
    x1, y1, x2, y2 = (round(v) for v in box)
    return float(np.abs(a[y1:y2, x1:x2].astype(int) - b[y1:y2, x1:x2].astype(int)).mean())


def test_same_moment_same_pixels_even_in_another_process(scene):
    frame = render_frame(scene, "CAM-B", 33.3)
    assert frame.shape == (360, 640, 3) and frame.dtype == np.uint8
    assert digest(render_frame(scene, "CAM-B", 33.3)) == digest(frame)
    code = textwrap.dedent("""
        import hashlib
        from simulators.video import load_scene, render_frame
        frame = render_frame(load_scene(), "CAM-B", 33.3)
        print(hashlib.sha256(frame.tobytes()).hexdigest())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == digest(frame)


def test_different_moments_differ(scene, empty):
    assert digest(render_frame(scene, "CAM-A", 40.0)) != digest(render_frame(scene, "CAM-A", 40.1))
    # Not only the noise: a passer-by moved. Against the empty street the same noise cancels.
    moved = [
        render_frame(scene, "CAM-A", t).astype(int) - render_frame(empty, "CAM-A", t)
        for t in (40, 41)
    ]
    assert np.abs(moved[0] - moved[1]).max() > 50


@pytest.mark.parametrize("camera", CAMERAS)
@pytest.mark.parametrize(
    ("actor", "before", "during", "after"), [("stall-1", 5, 20, 80), ("rubbish-1", 10, 30, 82)]
)
def test_incidents_appear_and_go_on_time(scene, empty, camera, actor, before, during, after):
    box = projected_box(scene, scene.camera(camera), actor, during)
    frames = {t: render_frame(scene, camera, t) for t in (before, during, after)}
    bare = {t: render_frame(empty, camera, t) for t in (before, during, after)}
    assert box_diff(frames[before], frames[during], box) > 20
    assert box_diff(frames[during], bare[during], box) > 20
    assert box_diff(frames[before], bare[before], box) < 1.0
    assert box_diff(frames[after], bare[after], box) < 1.0


@pytest.mark.parametrize("camera", CAMERAS)
def test_labels_lie_on_what_was_drawn(scene, empty, camera):
    width, height = scene.camera(camera).size
    classes = set()
    for t in (3, 20, 25, 41, 63, 72):
        frame, bare = render_frame(scene, camera, t), render_frame(empty, camera, t)
        labels = frame_labels(scene, camera, t)
        assert labels
        for name, x1, y1, x2, y2 in labels:
            assert name in CLASS_NAMES
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            assert box_diff(frame, bare, (x1, y1, x2, y2)) > 8, (t, name)
            classes.add(name)
    assert classes == set(CLASS_NAMES)
    ids = {o.actor_id for o in frame_objects(scene, camera, 41)}
    assert {"stall-1", "stall-1/vendor", "rubbish-1", "umbrella-1"} <= ids


def test_truth_devices_come_from_the_projection(scene):
    truth = scene_truth(scene)
    assert truth["expected_cases"] == [
        {"label": "stall-1", "class_code": "09006", "priority": "urgent", "devices": list(CAMERAS)},
        {
            "label": "rubbish-1",
            "class_code": "06010",
            "priority": "urgent",
            "devices": list(CAMERAS),
        },
    ]
    timing = {i["label"]: i for i in truth["incidents"]}
    assert timing["stall-1"] == {
        "label": "stall-1", "zone": "Z-STALL", "class_code": "09006",
        "start_s": 10.0, "end_s": 70.0, "cameras": list(CAMERAS),
    }  # fmt: skip
    assert (timing["rubbish-1"]["zone"], timing["rubbish-1"]["start_s"]) == ("Z-DUMP", 15.0)
    # Turn CAM-B away from the pavement: it no longer counts, and the YAML's claim fails.
    data = yaml.safe_load(BUILTIN_VIDEO_SCENE.read_text(encoding="utf-8"))
    data["cameras"][1]["view"]["yaw_deg"] = -120
    data["expected_cases"] = [
        {k: v for k, v in c.items() if k != "devices"} for c in data["expected_cases"]
    ]
    turned = parse_scene(data)
    assert [c["devices"] for c in scene_truth(turned)["expected_cases"]] == [["CAM-A"], ["CAM-A"]]
    data["expected_cases"][0]["devices"] = list(CAMERAS)
    with pytest.raises(
        SceneError, match=r"expected_cases\.0\.devices: declares \['CAM-A', 'CAM-B'\]"
    ):
        parse_scene(data)


def test_a_camera_counts_only_where_the_box_foot_falls_in_the_zone(scene):
    """The stall's centre stays in Z-STALL, but its front edge (the box's bottom-centre,
    which the detector attributes to a zone) is now outside: no camera files it."""
    shrunk = [(10, 2.3), (16, 2.3), (16, 4.7), (10, 4.7)]
    zones = tuple(
        z.model_copy(update={"polygon": shrunk}) if z.id == "Z-STALL" else z for z in scene.zones
    )
    truth = scene_truth(scene.model_copy(update={"zones": zones}))
    assert [c["label"] for c in truth["expected_cases"]] == ["rubbish-1"]
    assert {i["label"]: i["cameras"] for i in truth["incidents"]} == {
        "stall-1": [],
        "rubbish-1": list(CAMERAS),
    }


@pytest.mark.parametrize("camera", CAMERAS)
def test_zones_project_to_normalised_polygons_holding_the_incidents(scene, camera):
    zones = {z["id"]: z for z in camera_zones(scene, camera)}
    assert set(zones) == {"Z-STALL", "Z-DUMP"}
    for zone in zones.values():
        ZoneSettings(**zone)  # what the gateway's camera config will hold
        assert cv2.contourArea(np.array(zone["polygon"], np.float32)) > 0.01
    width, height = scene.camera(camera).size
    boxes = {o.actor_id: o for o in frame_objects(scene, camera, 30)}
    for actor, zone in (("stall-1", "Z-STALL"), ("rubbish-1", "Z-DUMP")):
        box = boxes[actor]
        foot = ((box.x1 + box.x2) / 2 / width, box.y2 / height)  # the detector's rule
        polygon = np.array(zones[zone]["polygon"], np.float32)
        assert cv2.pointPolygonTest(polygon, foot, False) >= 0, (actor, foot)
    # The umbrella near misses really do walk through Z-STALL.
    for walker, times in (("umbrella-1", range(36, 46)), ("umbrella-2", range(70, 78))):
        feet = [
            ((o.x1 + o.x2) / 2 / width, o.y2 / height)
            for t in times
            for o in frame_objects(scene, camera, t)
            if o.actor_id == walker
        ]
        polygon = np.array(zones["Z-STALL"]["polygon"], np.float32)
        assert any(cv2.pointPolygonTest(polygon, f, False) >= 0 for f in feet), walker


def test_mp4_has_the_frames_size_and_keyframes(scene, tmp_path):
    path = write_mp4(scene, "CAM-A", tmp_path / "a.mp4", start_s=18, end_s=21)
    with av.open(str(path)) as container:
        frames = [(f.key_frame, f.to_ndarray(format="bgr24")) for f in container.decode(video=0)]
    assert len(frames) == 30
    assert frames[0][1].shape == (360, 640, 3)
    assert [i for i, (key, _) in enumerate(frames) if key] == [0, 10, 20]
    # Frame 15 shows t = 19.5 s: where people walk it matches that render, not 0.5 s off.
    shown = frames[15][1]
    walkers = [o for o in frame_objects(scene, "CAM-A", 19.5) if o.actor_id.startswith("ped-")]
    assert walkers
    for t, close in ((19.5, True), (19.0, False), (20.0, False)):
        diff = np.mean([box_diff(shown, render_frame(scene, "CAM-A", t), o[1:5]) for o in walkers])
        assert (diff < 10) == close, (t, diff)


def test_mp4_without_ffmpeg_says_so(scene, tmp_path, monkeypatch):
    monkeypatch.setattr(mp4_module.shutil, "which", lambda name: None)
    with pytest.raises(mp4_module.FfmpegMissing, match="ffmpeg is not installed"):
        write_mp4(scene, "CAM-A", tmp_path / "a.mp4", end_s=1)


def test_yolo_dataset_files_and_labels(tmp_path):
    data = write_yolo_dataset(tmp_path / "ds", n_train=12, n_val=4, seed=3, imgsz=320)
    spec = yaml.safe_load(data.read_text(encoding="utf-8"))
    assert spec["names"] == ["person", "vehicle", "stall", "rubbish"]
    assert (tmp_path / "ds" / spec["train"]).is_dir()
    seen = set()
    for split, count in (("train", 12), ("val", 4)):
        images = sorted((tmp_path / "ds" / "images" / split).glob("*.jpg"))
        labels = sorted((tmp_path / "ds" / "labels" / split).glob("*.txt"))
        assert len(images) == len(labels) == count
        assert [p.stem for p in images] == [p.stem for p in labels]
        assert cv2.imread(str(images[0])).shape[1] == 320
        for label in labels:
            for line in label.read_text().splitlines():
                cls, cx, cy, w, h = line.split()
                cx, cy, w, h = map(float, (cx, cy, w, h))
                assert int(cls) in range(4)
                assert 0 < w <= 1 and 0 < h <= 1
                assert cx - w / 2 >= -1e-6 and cx + w / 2 <= 1 + 1e-6
                assert cy - h / 2 >= -1e-6 and cy + h / 2 <= 1 + 1e-6
                seen.add(int(cls))
    assert seen == {0, 1, 2, 3}
    again = write_yolo_dataset(tmp_path / "again", n_train=12, n_val=4, seed=3, imgsz=320)
    first = (tmp_path / "ds" / "labels" / "train" / "000005.txt").read_text()
    assert (again.parent / "labels" / "train" / "000005.txt").read_text() == first
    val = [(tmp_path / "ds" / "labels" / "val" / f"{i:06d}.txt").read_text() for i in range(4)]
    train = [(tmp_path / "ds" / "labels" / "train" / f"{i:06d}.txt").read_text() for i in range(4)]
    assert val != train


def bad(tmp_path, edit) -> str:
    data = yaml.safe_load(BUILTIN_VIDEO_SCENE.read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / "scene.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    with pytest.raises(SceneError) as info:
        load_scene(path)
    return str(info.value)


def _set(path, value):
    def edit(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.pop("duration_s"), "duration_s: Field required"),
        (_set(("actors", 0, "end_s"), 5), "actors.0: Value error, end_s must be after start_s"),
        (_set(("actors", 0, "colour"), "rouge"), "actors.0.colour: Value error, 'rouge' is not"),
        (_set(("zones", 1, "type"), "no_parking"), "zones.1.type: Input should be"),
        (_set(("zones", 0, "grid_code"), "123"), "zones.0.grid_code: String should match"),
        (_set(("cameras", 0, "size"), [641, 360]), "cameras.0.size: Value error, width and height"),
        (_set(("cameras", 1, "id"), "CAM-A"), "cameras.1.id: duplicate id 'CAM-A'"),
        (
            _set(("cameras", 0, "view", "y_m"), -20),
            "cameras.0.view.y_m: must be between the fronts",
        ),
        (_set(("actors", 1, "at"), [21, 9]), "actors.1.at: must lie in the street"),
        (_set(("actors", 5, "start_s"), 95), "actors.5.start_s: 95 s is past the end"),
        (
            _set(("expected_cases", 0, "class_code"), "09005"),
            "expected_cases.0.class_code: Z-STALL",
        ),
        (lambda d: d["expected_cases"].pop(), "rubbish-1 in Z-DUMP makes a 06010 case"),
    ],
)
def test_validation_errors_name_the_field(tmp_path, edit, expected):
    message = bad(tmp_path, edit)
    assert expected in message, message
    assert f"{tmp_path / 'scene.yaml'}:" in message.splitlines()[1]


def test_validation_error_names_the_line(tmp_path):
    text = BUILTIN_VIDEO_SCENE.read_text(encoding="utf-8").replace("hfov_deg: 50", "hfov_deg: 500")
    path = tmp_path / "scene.yaml"
    path.write_text(text, encoding="utf-8")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "hfov_deg: 500" in row)
    with pytest.raises(SceneError, match=rf"scene.yaml:{line}: cameras\.1\.view\.hfov_deg"):
        load_scene(path)
