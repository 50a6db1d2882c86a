"""Procedural street scenes for simulated city cameras, with exact ground truth.

Frames are pure functions of (scenario, camera, t): a file writer, a live RTSP server
restarted mid-scenario and a test all see the same pixels at the same moment, and the
truth (cases, zones, boxes) comes from the same projection that drew them.
"""

from simulators.video.dataset import CLASS_NAMES, write_yolo_dataset
from simulators.video.mp4 import write_mp4
from simulators.video.render import LabelledBox, frame_labels, frame_objects, render_frame
from simulators.video.scene import BUILTIN_VIDEO_SCENE, SceneError, load_scene, parse_scene
from simulators.video.spec import Scene
from simulators.video.truth import camera_zones, scene_truth

__all__ = [
    "BUILTIN_VIDEO_SCENE",
    "CLASS_NAMES",
    "LabelledBox",
    "Scene",
    "SceneError",
    "camera_zones",
    "frame_labels",
    "frame_objects",
    "load_scene",
    "parse_scene",
    "render_frame",
    "scene_truth",
    "write_mp4",
    "write_yolo_dataset",
]
