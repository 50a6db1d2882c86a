"""YOLO detectors on ONNX Runtime (CPU): the default backend, no torch needed.

Two families of export are recognised from the model itself, never from its file name:

* **Ultralytics** YOLOv8 / YOLO11: input RGB/255 centred-letterboxed, one output
  [B, 4+C, A] (cx, cy, w, h in input pixels, then C class scores; no objectness, no NMS).
  Class names, imgsz and stride come from the ONNX metadata the exporter writes.
* **YOLOX**: input BGR 0..255 unnormalised, top-left letterboxed, one output [B, A, 5+C] with
  the raw head (x, y offsets in grid cells, log w, h, objectness, C class scores) to be
  decoded against the 8/16/32 stride grids. Exports carry no names: COCO-80 unless given.

A is the number of grid cells over strides 8, 16 and 32 for the input size, which is what
tells the two layouts apart and refuses anything else (a classifier, a segmentation model, an
end-to-end export with NMS inside) with a ModelError that names the file and the shapes.

How a batch is spread over the CPU (measured on 2 cores, bench/video.py and bench/cameras.py):
each run is single-threaded and the frames of one ``detect`` call run side by side, one
run per core. Two concurrent 1-thread runs cost the same CPU per frame as one (yolo11n at
320: 10-11.5 ms) in half the wall time, where one 2-thread run costs 15-45 % more CPU for
less gain. Bigger batches do not help a CPU either (the project's model, its batch dimension
made symbolic: 9.4 ms/frame at batch 1, 10.6 at 4, 12.3 at 8), so fixed batch-1 exports lose
nothing. Idle pool threads sleep rather than spin: the cores are shared with the decoders.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from detectors.backends.base import Detection, ModelError
from detectors.backends.letterbox import Letterbox, letterbox
from detectors.backends.nms import batched_nms

STRIDES = (8, 16, 32)
MAX_CONCURRENT_RUNS = 4  # default: one run per core, up to this many
MAX_DETECTIONS = 300  # per frame, as Ultralytics: bounds NMS and downstream cost on busy frames
COCO80 = (Path(__file__).with_name("coco80.txt")).read_text(encoding="utf-8").splitlines()
_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}

Dim = int | str | None  # ONNX Runtime reports a symbolic (dynamic) dimension as str or None


def anchor_count(size: tuple[int, int]) -> int:
    """Grid cells over the three strides for an input of `size` (height, width)."""
    return sum((size[0] // s) * (size[1] // s) for s in STRIDES)


@functools.cache
def yolox_grids(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(A, 2) cell x, y and (A, 1) stride of every YOLOX output row, in the order YOLOX's
    head concatenates them: stride 8 first, row-major within each stride. Cached per size;
    callers must not modify the arrays."""
    grids, strides = [], []
    for stride in STRIDES:
        ys, xs = np.meshgrid(
            np.arange(size[0] // stride), np.arange(size[1] // stride), indexing="ij"
        )
        grids.append(np.stack([xs, ys], axis=-1).reshape(-1, 2))
        strides.append(np.full((grids[-1].shape[0], 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)


def yolox_scores_need_sigmoid(raw: np.ndarray) -> bool:
    """Whether a YOLOX output's objectness/class columns are logits rather than probabilities.

    YOLOX's export keeps the sigmoid in the graph when it leaves out the box decode, but other
    exporters strip it. Probed once at load on a grey frame: logits of background cells are
    far below 0, probabilities never leave [0, 1].
    """
    scores = raw[..., 4:]
    return bool(scores.min() < 0.0 or scores.max() > 1.0)


def yolox_boxes_look_decoded(raw: np.ndarray, size: tuple[int, int]) -> bool:
    """Whether an export already decoded boxes to pixels (YOLOX's decode_in_inference=True).

    Raw x, y are offsets of a few cells at most; decoded centres span the input, so the
    cells in its right/bottom half read well beyond a quarter of its size.
    """
    return bool(np.abs(raw[..., :2]).max() > max(size) / 4)


@dataclass(frozen=True, slots=True)
class _Head:
    """What differs between the two export families: input layout and output decoding."""

    kind: Literal["ultralytics", "yolox"]
    size: tuple[int, int]
    sigmoid: bool = False  # YOLOX only: apply sigmoid to objectness and class scores

    def prepare(self, batch: np.ndarray, dtype: type[np.floating]) -> np.ndarray:
        """(B, H, W, 3) BGR uint8 letterboxed frames → the model's NCHW input tensor."""
        if self.kind == "ultralytics":
            return np.ascontiguousarray(batch[..., ::-1].transpose(0, 3, 1, 2), dtype) / 255
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype)

    def decode(self, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model output → (B, A, 4) cx, cy, w, h in input pixels and (B, A, C) class scores."""
        output = output.astype(np.float32, copy=False)
        if self.kind == "ultralytics":
            rows = output.transpose(0, 2, 1)
            return rows[..., :4], rows[..., 4:]
        grid, stride = yolox_grids(self.size)
        xy = (output[..., :2] + grid) * stride
        wh = np.exp(output[..., 2:4]) * stride
        scores = output[..., 4:]
        if self.sigmoid:
            scores = 1.0 / (1.0 + np.exp(-scores))
        return np.concatenate([xy, wh], axis=-1), scores[..., :1] * scores[..., 1:]


class OnnxYoloDetector:
    """An Ultralytics or YOLOX ONNX export on the CPU execution provider."""

    def __init__(
        self,
        model: str | Path,
        conf: float = 0.25,
        iou: float = 0.45,
        names: list[str] | None = None,
        threads: int | None = None,
        concurrent_runs: int | None = None,
    ) -> None:
        for name, value in (("threads", threads), ("concurrent_runs", concurrent_runs)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.path = Path(model)
        self.conf = conf
        self.iou = iou
        self._session = _open_session(self.path, threads or 1)
        self.concurrent_runs = concurrent_runs or min(MAX_CONCURRENT_RUNS, os.cpu_count() or 1)
        # Its threads start with the first batch of more than one chunk, not here.
        self._runners = ThreadPoolExecutor(self.concurrent_runs, thread_name_prefix="infer")
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f"{self.path}: expected a detector with 1 input and 1 output, found inputs "
                f"{[(i.name, i.shape) for i in inputs]} and outputs "
                f"{[(o.name, o.shape) for o in outputs]}"
            )
        tensor_in, tensor_out = inputs[0], outputs[0]
        metadata = self._session.get_modelmeta().custom_metadata_map
        self._input_name = tensor_in.name
        self._dtype = _FLOAT_TYPES.get(tensor_in.type)
        if self._dtype is None:
            raise ModelError(
                f"{self.path}: expected a float32 or float16 image input, found {tensor_in.type}"
            )
        self.input_size = _input_size(self.path, tensor_in.shape, metadata)
        kind, num_classes = _recognise(self.path, self.input_size, tensor_out.shape, metadata)
        batch = tensor_in.shape[0]
        self._batch = batch if isinstance(batch, int) and batch > 0 else None
        self.names = _class_names(self.path, num_classes, names, metadata)
        self._head = _Head(kind, self.input_size)
        if kind == "yolox":
            self._head = self._probe_yolox()

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Detect objects in BGR uint8 frames of any size; one list per frame, boxes in that
        frame's pixels. The frames run in chunks (a fixed-batch model's batch size; for a
        dynamic one, an equal share per concurrent run), up to ``concurrent_runs`` at once."""
        for frame in frames:
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(
                    f"frames must be BGR uint8 (H, W, 3), got {frame.dtype} {frame.shape}"
                )
        chunk = self._batch or max(1, math.ceil(len(frames) / self.concurrent_runs))
        chunks = [frames[start : start + chunk] for start in range(0, len(frames), chunk)]
        if len(chunks) <= 1:
            return self._detect_chunk(chunks[0]) if chunks else []
        return [found for part in self._runners.map(self._detect_chunk, chunks) for found in part]

    def _detect_chunk(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        placed = [letterbox(f, self.input_size, self._head.kind == "ultralytics") for f in frames]
        batch = np.stack([image for image, _ in placed])
        boxes, scores = self._head.decode(self._run(batch))
        return [
            self._postprocess(boxes[i], scores[i], box_map, frame.shape)
            for i, (frame, (_, box_map)) in enumerate(zip(frames, placed, strict=True))
        ]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Run letterboxed frames, padding a short chunk to a fixed batch size."""
        count = batch.shape[0]
        if self._batch and count < self._batch:
            filler = np.zeros((self._batch - count, *batch.shape[1:]), batch.dtype)
            batch = np.concatenate([batch, filler])
        tensor = self._head.prepare(batch, self._dtype)
        return self._session.run(None, {self._input_name: tensor})[0][:count]

    def _postprocess(
        self,
        cxcywh: np.ndarray,
        class_scores: np.ndarray,
        box_map: Letterbox,
        frame_shape: tuple[int, ...],
    ) -> list[Detection]:
        """Best class per cell, confidence threshold, class-aware NMS, back to frame pixels."""
        class_ids = class_scores.argmax(axis=1)
        scores = class_scores[np.arange(len(class_ids)), class_ids]
        keep = scores > self.conf
        cxcywh, scores, class_ids = cxcywh[keep], scores[keep], class_ids[keep]
        half = cxcywh[:, 2:] / 2
        xyxy = np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1)
        kept = batched_nms(xyxy, scores, class_ids, self.iou)[:MAX_DETECTIONS]
        boxes = box_map.to_original(xyxy[kept], frame_shape)
        return [
            Detection(
                self.names[int(c)],
                int(c),
                float(s),
                (float(b[0]), float(b[1]), float(b[2]), float(b[3])),
            )
            for b, s, c in zip(boxes, scores[kept], class_ids[kept], strict=True)
        ]

    def _probe_yolox(self) -> _Head:
        """Run one grey frame to learn what this YOLOX export left in its graph (see
        yolox_scores_need_sigmoid); refuse an export whose boxes are already decoded."""
        grey = np.full((1, *self.input_size, 3), 114, np.uint8)
        raw = self._run(grey).astype(np.float32)
        if yolox_boxes_look_decoded(raw, self.input_size):
            raise ModelError(
                f"{self.path}: YOLOX output looks already decoded to pixels; expected the raw "
                "head (export with decode_in_inference=False)"
            )
        return _Head("yolox", self.input_size, sigmoid=yolox_scores_need_sigmoid(raw))


def _open_session(path: Path, threads: int) -> ort.InferenceSession:
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # A spinning pool burns CPU while it waits, taken from the decoders: 32 busy cameras on
    # 2 cores (bench/cameras.py) cost 28.7 ms CPU per inference with ONNX Runtime's default
    # spinning 2-thread pool, 12.9 ms with single-threaded runs that never spin.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ModelError(
            f"{path}: expected an ONNX model, onnxruntime cannot load it ({exc}); .pt weights, "
            "OpenVINO folders and TensorRT engines need backend='ultralytics'"
        ) from exc


def _input_size(path: Path, shape: list[Dim], metadata: dict[str, str]) -> tuple[int, int]:
    """(height, width) from a fixed NCHW input, else from Ultralytics' imgsz metadata."""
    if len(shape) != 4 or shape[1] != 3:
        raise ModelError(f"{path}: expected an image input [N, 3, H, W], found {shape}")
    height, width = shape[2], shape[3]
    if isinstance(height, int) and isinstance(width, int):
        return height, width
    if "imgsz" in metadata:
        imgsz = json.loads(metadata["imgsz"])
        return int(imgsz[0]), int(imgsz[1])
    raise ModelError(
        f"{path}: input {shape} has a dynamic height/width and no imgsz metadata; export with "
        "a fixed image size"
    )


def _recognise(
    path: Path, size: tuple[int, int], shape: list[Dim], metadata: dict[str, str]
) -> tuple[Literal["ultralytics", "yolox"], int]:
    """Which export family the output shape belongs to, and its class count."""
    anchors = anchor_count(size)
    if len(shape) == 3:
        rows, cols = shape[1], shape[2]
        # a dynamic anchor dimension is trusted only beside the Ultralytics exporter's metadata
        cols_are_anchors = cols == anchors or (not isinstance(cols, int) and "names" in metadata)
        if cols_are_anchors and isinstance(rows, int) and rows > 4:
            return "ultralytics", rows - 4
        if rows == anchors and isinstance(cols, int) and cols > 5:
            return "yolox", cols - 5
    raise ModelError(
        f"{path}: output shape {shape} is not a YOLO detection head for input {size}: expected "
        f"Ultralytics [B, 4+C, {anchors}] or YOLOX [B, {anchors}, 5+C]"
    )


def _class_names(
    path: Path, num_classes: int, given: list[str] | None, metadata: dict[str, str]
) -> list[str]:
    """Names given by the caller, else the exporter's metadata, else COCO-80 for 80 classes."""
    if given is not None:
        names, source = list(given), "the given names"
    elif "names" in metadata:
        table = ast.literal_eval(metadata["names"])
        names, source = [str(table[i]) for i in sorted(table)], "the model's names metadata"
    elif num_classes == len(COCO80):
        return list(COCO80)
    else:
        raise ModelError(
            f"{path}: the model has {num_classes} classes and no names metadata; pass names"
        )
    if len(names) != num_classes:
        raise ModelError(
            f"{path}: the model outputs {num_classes} classes but {source} list {len(names)}"
        )
    return names
