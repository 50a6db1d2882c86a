"""One camera kept alive in its own thread: reconnects, watchdog, status events, frame drops.

Each camera has a reader thread, which owns its decoder, and a light watchdog thread,
which is the only one that can notice time passing while the reader is blocked in a read:
it interrupts a stalled stream and declares a camera offline. Frames go to a per-camera
drop-oldest queue (or a callback), so one slow consumer or camera never delays another.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

from detectors.config import CameraSettings
from detectors.sources.drop_queue import DropOldestQueue
from detectors.sources.factory import open_source
from detectors.sources.frame import Frame, SourceError, VideoSource
from domain.retry import Backoff

log = logging.getLogger(__name__)

# "connecting" only before the first frame or failure; "ended" when a file is done.
Status = Literal["connecting", "online", "reconnecting", "offline", "ended"]
StatusCallback = Callable[[str, Status, str, int], None]  # camera id, status, detail, epoch ms
FrameSink = Callable[[str, Frame], None]  # camera id, frame; must not block


def _now_ms() -> int:
    return int(time.time() * 1000)


class CameraSupervisor:
    """Reads one camera for as long as it runs, whatever the camera does.

    Statuses go to ``on_status``, once per change:

    - "online" at the first frame of each (re)connection; the detail says "connected" or
      "recovered after N s", plus the new frame size when it changed;
    - "reconnecting" at the first failure, with its reason; retries follow with backoff;
    - "offline" once down ``offline_after_s`` since that failure (a slow first connection
      is not down: opens and reads are bounded by timeouts, so a silent camera does fail),
      or at once on a permanent error (a file that is not a video, a refused password),
      which ends the thread: retrying cannot help, and locks some cameras' accounts;
    - "ended" when a file source reaches its end.

    Frames go to ``sink`` if given (it runs on the reader thread: hand off, don't work),
    else to ``get()``'s queue of ``queue_size``, which drops the oldest frame when full.
    """

    def __init__(
        self,
        camera_id: str,
        open_camera: Callable[[], VideoSource],
        *,
        on_status: StatusCallback | None = None,
        sink: FrameSink | None = None,
        queue_size: int = 2,
        offline_after_s: float = 60.0,
        stall_timeout_s: float = 10.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.camera_id = camera_id
        self.status: Status = "connecting"
        self.last_error = ""
        self.stats = {
            "frames": 0, "dropped": 0, "reconnects": 0, "errors": 0, "stalls": 0,
            "size_changes": 0,
        }  # fmt: skip
        self.queue: DropOldestQueue[Frame] = DropOldestQueue(queue_size)
        self._open_camera = open_camera
        self._on_status = on_status
        self._sink = sink
        self._offline_after_s = offline_after_s
        self._stall_timeout_s = stall_timeout_s
        self._backoff = backoff or Backoff()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # guards status changes and the current source
        self._source: VideoSource | None = None
        self._stalled = False
        self._last_progress = time.monotonic()
        self._down_since: float | None = None
        self._size: tuple[int, int] | None = None
        self._threads = [
            threading.Thread(target=self._read_forever, name=f"cam-{camera_id}", daemon=True),
            threading.Thread(target=self._watch, name=f"cam-{camera_id}-watchdog", daemon=True),
        ]

    @classmethod
    def from_settings(cls, camera: CameraSettings, **kwargs: object) -> CameraSupervisor:
        """A supervisor for a configured camera; a read blocked ``stall_timeout_s`` fails.

        The watchdog waits at least three sampling periods: at 0.1 fps a healthy camera
        yields a frame every 10 s, which is no stall.
        """

        def open_camera() -> VideoSource:
            return open_source(
                camera.url, camera.analyse_fps, decoder=camera.decoder,
                read_timeout_s=camera.stall_timeout_s,
            )  # fmt: skip

        return cls(
            camera.id, open_camera, offline_after_s=camera.offline_after_s,
            stall_timeout_s=max(camera.stall_timeout_s, 3 / camera.analyse_fps),
            **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stops reading; a reader blocked in a read leaves within its read timeout."""
        self._stopping.set()
        with self._lock:
            if self._source is not None:
                self._source.interrupt()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame from the queue, or None after ``timeout`` seconds."""
        return self.queue.get(timeout)

    # The reader thread.

    def _read_forever(self) -> None:
        connections = 0
        while not self._stopping.is_set():
            if connections:
                self.stats["reconnects"] += 1
            connections += 1
            failure = self._read_once()
            if self._stopping.is_set():
                return
            if failure is None:
                self._set_status("ended", "end of file")
                return
            reason, permanent = failure
            self.stats["errors"] += 1
            self.last_error = reason
            if permanent:
                self._set_status("offline", reason)
                return
            self._went_down(reason)
            self._stopping.wait(self._backoff.next_delay())

    def _read_once(self) -> tuple[str, bool] | None:
        """Reads one connection to its end: None if a file ended, else (reason, permanent)."""
        try:
            source = self._open_camera()
        except SourceError as err:
            return err.reason, err.permanent
        except Exception as err:  # a bug in a source must not kill the camera thread
            log.exception("camera %s: opening the source failed", self.camera_id)
            return f"unexpected error opening: {err!r}", False
        with self._lock:
            self._source, self._stalled = source, False
            self._last_progress = time.monotonic()
        try:
            for frame in source.frames():
                self._deliver(frame)
            if self._stalled:
                return f"stalled: no frame for {self._stall_timeout_s:g} s", False
            return ("stream ended", False) if source.live else None
        except SourceError as err:
            return err.reason, err.permanent
        except Exception as err:
            log.exception("camera %s: reading failed", self.camera_id)
            return f"unexpected error reading: {err!r}", False
        finally:
            with self._lock:
                self._source = None
            source.close()

    def _deliver(self, frame: Frame) -> None:
        self._last_progress = time.monotonic()
        self.stats["frames"] += 1
        if self.status != "online":
            self._came_up(frame)
        if self._sink is None:
            if self.queue.put(frame):
                self.stats["dropped"] += 1
            return
        try:
            self._sink(self.camera_id, frame)
        except Exception:
            log.exception("camera %s: frame sink failed", self.camera_id)

    def _came_up(self, frame: Frame) -> None:
        height, width = frame.image.shape[:2]
        detail = "connected"
        if self._down_since is not None and self.stats["reconnects"]:
            detail = f"recovered after {time.monotonic() - self._down_since:.1f} s"
        if self._size is not None and self._size != (width, height):
            self.stats["size_changes"] += 1
            detail += f"; frame size now {width}x{height} (was {self._size[0]}x{self._size[1]})"
        self._size = (width, height)
        self._down_since = None
        self._backoff.reset()
        self._set_status("online", detail)

    def _went_down(self, reason: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
        if self.status in ("connecting", "online"):
            self._set_status("reconnecting", reason)

    def _set_status(
        self, status: Status, detail: str, only_from: tuple[Status, ...] | None = None
    ) -> None:
        """Changes status and tells ``on_status``; ``only_from`` makes it a compare-and-set."""
        with self._lock:
            if status == self.status or (only_from and self.status not in only_from):
                return
            self.status = status
            if self._on_status is None:
                return
            try:
                self._on_status(self.camera_id, status, detail, _now_ms())
            except Exception:
                log.exception("camera %s: status callback failed", self.camera_id)

    # The watchdog thread.

    def _watch(self) -> None:
        interval_s = min(0.5, self._stall_timeout_s / 4, self._offline_after_s / 4)
        while not self._stopping.wait(interval_s):
            now = time.monotonic()
            down_since = self._down_since
            if down_since is not None and now - down_since >= self._offline_after_s:
                why = self.last_error or "no frame yet"
                self._set_status(
                    "offline", f"down for {now - down_since:.0f} s: {why}",
                    only_from=("connecting", "reconnecting"),
                )  # fmt: skip
            with self._lock:
                source = self._source
                stalled = (
                    source is not None
                    and source.live
                    and not self._stalled
                    and now - self._last_progress > self._stall_timeout_s
                )
                if stalled:
                    self._stalled = True
                    self.stats["stalls"] += 1
            if stalled and source is not None:
                log.warning("camera %s: no frame for %g s, restarting the stream",
                            self.camera_id, self._stall_timeout_s)  # fmt: skip
                source.interrupt()
