"""Picks the source for a camera URL: ``rtsp://``, ``onvif://``, or a video file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from detectors.sources.frame import VideoSource
from detectors.sources.onvif_uri import parse_onvif_url, resolve_onvif
from detectors.sources.opencv_source import OpenCvSource
from detectors.sources.pyav_source import FileSource, KeyframeMode, RtspSource

Decoder = Literal["pyav", "opencv"]

_LIVE_SCHEMES = ("rtsp://", "rtsps://")


def open_source(
    url: str,
    analyse_fps: float = 1.0,
    *,
    decoder: Decoder = "pyav",
    keyframes: KeyframeMode = "auto",
    start_ms: int | None = None,
    open_timeout_s: float = 10.0,
    read_timeout_s: float = 10.0,
) -> VideoSource:
    """A source for ``url``; ``onvif://`` URLs are resolved to their RTSP URI here.

    Resolving on every call (the supervisor calls this at each reconnect) follows a camera
    whose stream address changed, e.g. a new DHCP lease. ``start_ms`` is for files only.
    Raises ``SourceError`` (``OnvifError``) when an ONVIF camera cannot be resolved.
    """
    if url.startswith("onvif://"):
        endpoints = resolve_onvif(*parse_onvif_url(url), timeout_s=open_timeout_s)
        url = endpoints.stream_uri
    live = url.startswith(_LIVE_SCHEMES)
    if not live:
        url = str(Path(url.removeprefix("file://")))
    if decoder == "opencv":
        return OpenCvSource(
            url, analyse_fps, live=live, start_ms=start_ms, open_timeout_s=open_timeout_s,
            read_timeout_s=read_timeout_s,
        )  # fmt: skip
    if live:
        return RtspSource(
            url, analyse_fps, keyframes=keyframes, open_timeout_s=open_timeout_s,
            read_timeout_s=read_timeout_s,
        )  # fmt: skip
    return FileSource(url, analyse_fps, start_ms=start_ms, keyframes=keyframes)
