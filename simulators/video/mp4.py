"""Scenario clips as H.264 MP4 files, for the gateway's file sources and for replays.

Frames are piped raw to ffmpeg (libx264, yuv420p, one keyframe per second with no extra
scene-cut keyframes), so a reader that seeks or skips to keyframes lands on whole seconds
of scenario time, exactly as it would on the live stream.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from simulators.video.render import render_frame
from simulators.video.spec import Scene


class FfmpegMissing(RuntimeError):
    """ffmpeg is not on PATH; ``make system-deps`` installs it."""


def write_mp4(
    scene: Scene, camera_id: str, path: str | Path, start_s: float = 0.0, end_s: float | None = None
) -> Path:
    """Write frames ``start_s <= t < end_s`` (default: to the end) of one camera to ``path``.

    Frame ``i`` shows ``t = (round(start_s * fps) + i) / fps``: the same instants a live
    stream of the scenario shows. Written to a temporary name and renamed, so a reader
    never opens half a file.
    """
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FfmpegMissing("ffmpeg is not installed (apt-get install ffmpeg, or make system-deps)")
    spec = scene.camera(camera_id)
    fps = scene.fps
    first = round(start_s * fps)
    last = round((scene.duration_s if end_s is None else end_s) * fps)
    if last <= first:
        raise ValueError(f"nothing to write: start_s={start_s:g} is not before end_s={end_s}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part.mp4")
    width, height = spec.size
    command = [
        ffmpeg, "-y", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-r", str(fps),
        "-i", "-",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-g", str(fps), "-keyint_min", str(fps), "-sc_threshold", "0",
        "-movflags", "+faststart", str(partial),
    ]  # fmt: skip
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=errors)
        assert proc.stdin is not None
        try:
            for index in range(first, last):
                proc.stdin.write(render_frame(scene, camera_id, index / fps).tobytes())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # ffmpeg died; its exit status and stderr say why
        except BaseException:
            proc.kill()
            proc.wait()
            partial.unlink(missing_ok=True)
            raise
        code = proc.wait()
        if code != 0:
            partial.unlink(missing_ok=True)
            errors.seek(0)
            detail = errors.read().decode(errors="replace").strip()[-2000:]
            raise RuntimeError(f"ffmpeg failed ({code}) writing {path}: {detail}")
    os.replace(partial, path)
    return path
