"""Detector backends: real COCO models on real images, refusal of unusable models and inputs,
and the numpy pieces (NMS, letterbox) on hand-made cases."""

from collections import Counter
from importlib.util import find_spec
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.backends import Detection, ModelError, load_detector
from detectors.backends.letterbox import PAD_VALUE, Letterbox, letterbox
from detectors.backends.nms import batched_nms, nms
from detectors.backends.onnx_yolo import (
    anchor_count,
    yolox_boxes_look_decoded,
    yolox_scores_need_sigmoid,
)
from detectors.detect_file import InputError, detect_path

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
needs_assets = pytest.mark.skipif(
    not ASSETS.is_dir(), reason=f"third-party test assets not found at {ASSETS}"
)
MODELS = ["yolo11n_int8.onnx", "yolov8n_int8.onnx", "yolox_nano.onnx"]


@pytest.fixture(scope="module", params=MODELS)
def detector(request):
    return load_detector(ASSETS / "models" / request.param)


def image(name: str) -> np.ndarray:
    frame = cv2.imread(str(ASSETS / "images" / name))
    assert frame is not None, name
    return frame


def inside(found: Detection, frame: np.ndarray) -> bool:
    x1, y1, x2, y2 = found.box
    height, width = frame.shape[:2]
    return 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


# --- real models ------------------------------------------------------------------------------


@needs_assets
def test_bus_jpg_one_bus_four_persons(detector):
    frame = image("bus.jpg")
    [found] = detector.detect([frame])
    assert Counter(d.label for d in found) == {"bus": 1, "person": 4}
    assert all(inside(d, frame) for d in found)
    assert all(0.25 < d.score <= 1 for d in found)
    [bus] = [d for d in found if d.label == "bus"]
    assert bus.class_id == 5
    assert bus.box[2] - bus.box[0] > 0.9 * frame.shape[1]


@needs_assets
def test_street_jpg_with_yolov8n():
    frame = image("street.jpg")
    [found] = load_detector(ASSETS / "models" / "yolov8n_int8.onnx").detect([frame])
    assert Counter(d.label for d in found) == {"person": 9, "car": 3, "bicycle": 1, "handbag": 1}
    assert all(inside(d, frame) for d in found)


@needs_assets
def test_batch_gives_the_same_as_one_by_one(detector):
    frames = [image("bus.jpg"), image("street.jpg")]
    assert detector.detect(frames) == [detector.detect([f])[0] for f in frames]
    assert detector.detect([]) == []


@needs_assets
@settings(max_examples=12, deadline=None)
@given(picks=st.lists(st.integers(0, 3), max_size=5), runs=st.integers(1, 4))
def test_concurrent_runs_give_what_one_run_at_a_time_gives(picks, runs):
    pictures = [image("bus.jpg"), image("street.jpg")]
    pictures += [pictures[0][100:500, 50:700], pictures[1][::2, ::2]]
    frames = [pictures[i] for i in picks]
    model = ASSETS / "models" / "yolo11n_int8.onnx"
    one_at_a_time = load_detector(model, concurrent_runs=1)
    expected = [one_at_a_time.detect([frame])[0] for frame in frames]
    assert load_detector(model, concurrent_runs=runs).detect(frames) == expected


def dynamic_batch_onnx(tmp_path: Path) -> Path:
    """An Ultralytics-shaped model with a symbolic batch: [B, 3, 64, 64] -> [B, 4+2, 84],
    the output being the first pixels of the normalised input (boxes and scores that
    differ from frame to frame)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    anchors = anchor_count((64, 64))
    ints = {"flat": [0, -1], "starts": [0], "ends": [6 * anchors], "axes": [1],
            "rows": [0, 6, anchors]}  # fmt: skip
    constants = [
        helper.make_node("Constant", [], [name],
                         value=helper.make_tensor(name, TensorProto.INT64, [len(v)], v))
        for name, v in ints.items()
    ]  # fmt: skip
    graph = helper.make_graph(
        [
            *constants,
            helper.make_node("Reshape", ["images", "flat"], ["flattened"]),
            helper.make_node("Slice", ["flattened", "starts", "ends", "axes"], ["cells"]),
            helper.make_node("Reshape", ["cells", "rows"], ["output"]),
        ],
        "dynamic",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["B", 3, 64, 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["B", 6, anchors])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    path = tmp_path / "dynamic.onnx"
    onnx.save(model, path)
    return path


def test_a_dynamic_batch_is_split_over_the_concurrent_runs(tmp_path):
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(5)]
    path = dynamic_batch_onnx(tmp_path)
    one_at_a_time = load_detector(path, names=["a", "b"], concurrent_runs=1)
    expected = [one_at_a_time.detect([frame])[0] for frame in frames]
    assert sum(map(len, expected)) > 0
    for runs in (1, 2, 3, 8):
        split = load_detector(path, names=["a", "b"], concurrent_runs=runs)
        assert split.detect(frames) == expected


@pytest.mark.parametrize("setting", ["threads", "concurrent_runs"])
@pytest.mark.parametrize("value", [0, -2])
def test_thread_settings_below_one_are_refused(tmp_path, setting, value):
    with pytest.raises(ValueError, match=f"{setting} must be at least 1, got {value}"):
        load_detector(dynamic_batch_onnx(tmp_path), names=["a", "b"], **{setting: value})


@needs_assets
def test_format_metadata_and_input_size():
    v11 = load_detector(ASSETS / "models" / "yolo11n_int8.onnx")
    yolox = load_detector(ASSETS / "models" / "yolox_nano.onnx")
    assert v11.input_size == (320, 320) and yolox.input_size == (416, 416)
    assert len(v11.names) == 80 and v11.names[0] == "person"
    assert yolox.names == v11.names  # YOLOX has no metadata: the shipped COCO-80 list
    # this YOLOX export applies the sigmoid to objectness and classes inside the graph
    assert yolox._head.sigmoid is False


@needs_assets
def test_given_names_replace_the_models():
    names = [f"class{i}" for i in range(80)]
    detector = load_detector(ASSETS / "models" / "yolox_nano.onnx", names=names)
    [found] = detector.detect([image("bus.jpg")])
    assert {d.label for d in found} == {"class0", "class5"}
    with pytest.raises(ModelError, match="80 classes but the given names list 2"):
        load_detector(ASSETS / "models" / "yolox_nano.onnx", names=["a", "b"])


@needs_assets
def test_frames_must_be_bgr_uint8_of_the_right_layout():
    detector = load_detector(ASSETS / "models" / "yolox_nano.onnx")
    with pytest.raises(ValueError, match="BGR uint8"):
        detector.detect([np.zeros((10, 10), np.uint8)])


# --- unusable models --------------------------------------------------------------------------


def test_missing_and_non_onnx_files(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_detector(tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    with pytest.raises(ModelError, match=r"junk\.onnx: expected an ONNX model"):
        load_detector(junk)


def test_unknown_backend():
    with pytest.raises(ModelError, match="unknown backend 'tensorflow'"):
        load_detector("m.onnx", backend="tensorflow")


@pytest.mark.skipif(find_spec("ultralytics") is not None, reason="ultralytics is installed")
def test_ultralytics_missing_says_what_to_install(tmp_path):
    with pytest.raises(ModelError, match=r"pip install ultralytics"):
        load_detector(tmp_path / "yolo11n.pt", backend="ultralytics")


def tiny_onnx(tmp_path: Path, name: str, out_shape: list[int]) -> Path:
    """A valid ONNX model with an image input [1, 3, 64, 64] and an output of `out_shape`."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [len(out_shape)], out_shape)
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["target"], value=shape),
            helper.make_node("Reshape", ["images", "target"], ["output"]),
        ],
        name,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    "out_shape",
    [
        [1, 12288],  # wrong rank: a classifier-like output
        [1, 3, 4096],  # rank 3 but neither [B, 4+C, A] nor [B, A, 5+C]
        [1, 6, 2048],  # 4+C rows but the anchor count does not fit a 64x64 input
    ],
)
def test_valid_onnx_with_a_wrong_output_shape(tmp_path, out_shape):
    path = tiny_onnx(tmp_path, "wrong", out_shape)
    with pytest.raises(ModelError) as caught:
        load_detector(path)
    message = str(caught.value)
    assert str(path) in message
    assert str(out_shape) in message and f"B, 4+C, {anchor_count((64, 64))}" in message


def test_yolox_probes():
    logits = np.full((1, 84, 85), -9.0, np.float32)
    probabilities = 1 / (1 + np.exp(-logits))
    offsets = np.random.default_rng(0).uniform(-3, 3, (1, 84, 2)).astype(np.float32)
    logits[..., :2] = probabilities[..., :2] = offsets
    assert yolox_scores_need_sigmoid(logits) and not yolox_scores_need_sigmoid(probabilities)
    assert not yolox_boxes_look_decoded(logits, (64, 64))
    decoded = logits.copy()
    decoded[..., :2] = np.linspace(4, 60, 84)[None, :, None]
    assert yolox_boxes_look_decoded(decoded, (64, 64))


# --- inputs to detect_path --------------------------------------------------------------------


def test_a_path_that_is_not_image_or_video(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a picture", encoding="utf-8")
    with pytest.raises(InputError, match=r"notes\.txt: neither an image nor a video"):
        detect_path(text, "unused.onnx")
    with pytest.raises(InputError, match="no such file"):
        detect_path(tmp_path / "absent.mp4", "unused.onnx")


@needs_assets
def test_detect_path_on_an_image_and_a_video(tmp_path):
    bus = image("bus.jpg")
    model = load_detector(ASSETS / "models" / "yolox_nano.onnx")
    from_image = list(detect_path(ASSETS / "images" / "bus.jpg", model))
    assert sorted(d["label"] for d in from_image) == ["bus", "person", "person", "person", "person"]

    video = tmp_path / "bus.mp4"
    height, width = bus.shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (width, height))
    for _ in range(5):
        writer.write(bus)
    writer.release()
    found = list(detect_path(video, model, every_n=2))
    assert {d["frame"] for d in found} == {0, 2, 4}
    for record in found:
        assert set(record) == {"frame", "label", "score", "box"}
        assert isinstance(record["score"], float) and record["score"] == round(record["score"], 3)
        assert len(record["box"]) == 4 and all(isinstance(v, int) for v in record["box"])
    assert Counter(d["label"] for d in found if d["frame"] == 2) == {"bus": 1, "person": 4}


@needs_assets
def test_detect_path_loads_a_model_by_path():
    found = list(
        detect_path(
            ASSETS / "videos" / "carcounter_street.mp4",
            ASSETS / "models" / "yolox_nano.onnx",
            conf=0.4,
            every_n=300,
        )
    )
    assert found and {d["frame"] for d in found} <= {0, 300, 600, 900}
    assert all(d["score"] > 0.4 for d in found)


# --- NMS and letterbox ------------------------------------------------------------------------


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array(
        [
            [0, 0, 10, 10],
            [1, 1, 11, 11],  # IoU 0.68 with the first and scores higher: the first goes
            [20, 20, 30, 30],  # apart
            [1, 1, 11, 6],  # IoU 0.5 with the second: kept at 0.6, suppressed at 0.45
            [-2, -2, 8, 8],  # IoU 0.47 only with the first, which was suppressed: stays
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.95, 0.5, 0.3, 0.2], np.float32)
    assert nms(boxes, scores, 0.6).tolist() == [1, 2, 3, 4]
    assert nms(boxes, scores, 0.45).tolist() == [1, 2, 4]
    assert nms(boxes[:0], scores[:0], 0.45).tolist() == []


def test_batched_nms_never_suppresses_across_classes():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 0, 10, 10], [-5, -5, 3, 3]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    class_ids = np.array([0, 1, 0, 1])
    assert sorted(batched_nms(boxes, scores, class_ids, 0.45).tolist()) == [0, 1, 3]
    assert batched_nms(boxes[:0], scores[:0], class_ids[:0], 0.45).tolist() == []


@pytest.mark.parametrize("centre", [True, False])
@pytest.mark.parametrize("frame_hw", [(1080, 810), (336, 596), (100, 100), (2000, 300)])
def test_letterbox_round_trip(centre, frame_hw):
    height, width = frame_hw
    x1, y1, x2, y2 = width // 5, height // 3, width * 3 // 4, height * 4 // 5
    frame = np.zeros((height, width, 3), np.uint8)
    frame[y1:y2, x1:x2] = 255
    padded, box_map = letterbox(frame, (320, 416), centre)
    assert padded.shape == (320, 416, 3)

    box = np.array([[x1, y1, x2, y2]], np.float32)
    assert np.allclose(box_map.to_original(box_map.to_input(box), frame.shape), box, atol=1)
    # the white block is where the mapping says it went
    ys, xs = np.nonzero(padded[..., 0] > 127)
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    assert np.allclose(box_map.to_original(found, frame.shape), box, atol=1 / box_map.scale + 1)

    content_w, content_h = round(width * box_map.scale), round(height * box_map.scale)
    if centre:  # padding split on both sides of the short axis
        assert abs(2 * box_map.pad_x + content_w - 416) <= 1
        assert abs(2 * box_map.pad_y + content_h - 320) <= 1
    else:  # image at the top-left corner, all padding right and bottom
        assert (box_map.pad_x, box_map.pad_y) == (0, 0)
        assert (padded[-1, -1] == PAD_VALUE).all()


def test_letterbox_clips_boxes_to_the_frame():
    box_map = Letterbox(scale=0.5, pad_x=10, pad_y=0)
    out = box_map.to_original(np.array([[0, -4, 400, 60]], np.float32), (100, 200, 3))
    assert out.tolist() == [[0, 0, 200, 100]]
