"""A recent snapshot of each camera whose stream is down, for evidence pictures.

Evidence is drawn on the camera's latest analysed frame; while the stream is down that
frame is old or missing, so a case would carry a picture of the past or none. Most
cameras serve one JPEG over HTTP that often still answers then: the ``snapshot_url`` in a
camera's settings (any camera, ``rtsp://`` ones included), else an ONVIF camera's
``GetSnapshotUri``. Fetching it when the evidence is asked for would block the gateway's
event loop for up to the fetch timeout, so this keeper fetches on its own thread instead:
when a camera's stream goes down, and again every ``refresh_s`` while it stays down. A
looked-up URI is kept until a fetch fails (the camera may have moved to another address).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from urllib.parse import urlsplit

import numpy as np

from detectors.config import CameraSettings
from detectors.sources.frame import SourceError
from detectors.sources.onvif_uri import parse_onvif_url, resolve_onvif
from detectors.sources.snapshot import SnapshotError, fetch_snapshot
from detectors.sources.urls import split_credentials

log = logging.getLogger(__name__)

DOWN_STATUSES = frozenset({"reconnecting", "offline"})


class SnapshotKeeper:
    """Keeps, per camera whose stream is down, its latest snapshot and its age.

    ``stats`` counts pictures taken, failed fetches, and among those the bodies refused
    by kind (``snapshots_refused_not_jpeg``, ``snapshots_refused_too_large``)."""

    def __init__(
        self, cameras: Sequence[CameraSettings], refresh_s: float = 30.0, timeout_s: float = 5.0
    ) -> None:
        self._cameras = {c.id: c for c in cameras if c.snapshot_url or c.url.startswith("onvif://")}
        self._refresh_s = refresh_s
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._down: set[str] = set()
        self._pictures: dict[str, tuple[float, np.ndarray]] = {}  # monotonic time taken
        self._uris: dict[str, str] = {}
        self.last_error: dict[str, str] = {}
        self.stats: Counter[str] = Counter()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="snapshots", daemon=True)

    def start(self) -> None:
        if self._cameras:
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(self._timeout_s * 2 + 1)

    def stream_status(self, camera_id: str, status: str) -> None:
        """Told every status change of a camera's stream; a stream back online needs no
        snapshot, and its old one is dropped."""
        if camera_id not in self._cameras:
            return
        with self._lock:
            if status in DOWN_STATUSES:
                self._down.add(camera_id)
            else:
                self._down.discard(camera_id)
                self._pictures.pop(camera_id, None)
        self._wake.set()

    def latest(self, camera_id: str) -> np.ndarray | None:
        """The camera's snapshot if it was taken within two refresh periods while down."""
        with self._lock:
            taken = self._pictures.get(camera_id)
        if taken is None or time.monotonic() - taken[0] > 2 * self._refresh_s:
            return None
        return taken[1]

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._refresh_s / 2)
            self._wake.clear()
            with self._lock:
                due = [
                    camera_id
                    for camera_id in self._down
                    if time.monotonic() - self._pictures.get(camera_id, (-1e18,))[0]
                    >= self._refresh_s
                ]
            for camera_id in due:
                if self._stopping.is_set():
                    return
                self._take(camera_id)

    def _take(self, camera_id: str) -> None:
        try:
            picture = self._fetch(camera_id)
        except SourceError as err:
            self._uris.pop(camera_id, None)
            self.stats["snapshot_errors"] += 1
            if isinstance(err, SnapshotError) and err.refusal:
                self.stats[f"snapshots_refused_{err.refusal}"] += 1
            self.last_error[camera_id] = err.reason
            log.warning("camera %s: no snapshot: %s", camera_id, err.reason)
            return
        except Exception:  # a bug here must not end snapshots for every camera
            self.stats["snapshot_errors"] += 1
            log.exception("camera %s: taking a snapshot failed", camera_id)
            return
        self.stats["snapshots"] += 1
        self.last_error.pop(camera_id, None)
        with self._lock:
            if camera_id in self._down:
                self._pictures[camera_id] = (time.monotonic(), picture)

    def _fetch(self, camera_id: str) -> np.ndarray:
        camera = self._cameras[camera_id]
        if camera.snapshot_url:
            return fetch_snapshot(
                camera.snapshot_url, *stream_credentials(camera), timeout_s=self._timeout_s
            )
        host, port, user, password, profile = parse_onvif_url(camera.url)
        uri = self._uris.get(camera_id)
        if uri is None:
            endpoints = resolve_onvif(host, port, user, password, profile, self._timeout_s)
            if endpoints.snapshot_uri is None:
                raise SourceError("the camera has no snapshot URI", permanent=True)
            uri = self._uris[camera_id] = endpoints.snapshot_uri
        return fetch_snapshot(uri, user, password, self._timeout_s)


def stream_credentials(camera: CameraSettings) -> tuple[str, str]:
    """The credentials for a ``snapshot_url`` that carries none: the stream URL's, when
    both are on the same host (a camera has one account for both; another host is
    another machine, and gets no password it was not given)."""
    if camera.snapshot_url is None or split_credentials(camera.snapshot_url)[1]:
        return "", ""
    if urlsplit(camera.snapshot_url).hostname != urlsplit(camera.url).hostname:
        return "", ""
    _, user, password = split_credentials(camera.url)
    return user, password
