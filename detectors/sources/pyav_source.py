"""RTSP and file sources decoded with PyAV (FFmpeg), sampled at the analysis rate.

Decoding is the cost that scales with cameras, so a source decodes as little as it can:
when keyframes come at least as often as samples are wanted, only keyframes are decoded
(``skip_frame = "NONKEY"``; measured ~12x fewer decode seconds on 1080p25 with a 2 s GOP).
Otherwise every frame is decoded, since P-frames need their references, but only the
sampled ones are converted to BGR, which costs about as much again as decoding.

The keyframe interval of a live camera is not known in advance: ``keyframes="auto"``
starts keyframe-only and falls back to full decoding for the rest of the connection as soon
as two keyframes are further apart than the sampling period.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import av
import av.error

from detectors.sources.frame import Frame, Sampler, SourceError
from detectors.sources.urls import redact, redact_url

log = logging.getLogger(__name__)

KeyframeMode = Literal["auto", "always", "never"]

# Keyframe gaps up to this much over the sampling period still count as "often enough":
# container timestamps are rounded (90 kHz RTP clock, 1/30000 s MP4 time bases).
_GOP_SLACK = 0.05
# FFmpeg probes 5 s of a stream by default before the first frame; the decoder reads the
# parameter sets in-band anyway, so a short probe only makes the first frame come sooner
# (measured on the simulator: open in 0.9 s instead of 3 s).
_RTSP_PROBE_US = 500_000


class PyAvSource:
    """A video decoded with PyAV; use ``RtspSource`` or ``FileSource``."""

    def __init__(
        self,
        url: str,
        analyse_fps: float,
        *,
        live: bool,
        options: dict[str, str],
        keyframes: KeyframeMode = "auto",
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
        start_ms: int | None = None,
    ) -> None:
        self.url = url
        self.live = live
        self.keyframes_only = keyframes != "never"
        self.packets = 0  # demuxed video packets
        self.decoded = 0  # frames out of the decoder
        self.decode_errors = 0
        self._auto = keyframes == "auto"
        self._options = options
        self._timeouts = (open_timeout_s, read_timeout_s)
        self._start_ms = start_ms
        self._sampler = Sampler(analyse_fps)
        self._interrupted = threading.Event()
        self._container: av.container.InputContainer | None = None
        self._last_key_s: float | None = None

    def interrupt(self) -> None:
        self._interrupted.set()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def frames(self) -> Iterator[Frame]:
        container = self._open()
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY" if self.keyframes_only else "DEFAULT"
        # One decoding thread per camera, its reader: cameras, not slices, are what runs in
        # parallel, and FFmpeg's own pool would add idle threads per camera for no CPU saved.
        stream.codec_context.thread_count = 1
        start_ms = int(time.time() * 1000) if self._start_ms is None else self._start_ms
        index = 0
        try:
            for packet in container.demux(stream):
                if self._interrupted.is_set():
                    return
                self.packets += 1
                self._watch_keyframe_interval(packet, stream)
                for frame in self._decode(packet):
                    # Sampled by PTS, live too: network jitter moves arrival, not PTS.
                    # A frame without one (RTSP's first, before RTCP sync) can't be placed.
                    if frame.time is None or not self._sampler.take(frame.time):
                        continue
                    if self.live:
                        ts_ms = int(time.time() * 1000)
                    else:
                        ts_ms = start_ms + round(frame.time * 1000)
                    image = frame.to_ndarray(format="bgr24")
                    yield Frame(image, ts_ms, index, bool(frame.key_frame))
                    index += 1
        except av.error.FFmpegError as err:
            raise SourceError(f"reading {redact_url(self.url)} failed: {self._why(err)}") from err
        finally:
            self.close()

    def _open(self) -> av.container.InputContainer:
        try:
            container = av.open(self.url, options=self._options, timeout=self._timeouts)
        except (av.error.FFmpegError, OSError) as err:
            raise self._open_error(err) from err
        if not container.streams.video:
            kinds = sorted({stream.type for stream in container.streams}) or ["no streams"]
            container.close()
            raise SourceError(
                f"{redact_url(self.url)} has no video stream ({', '.join(kinds)})",
                permanent=not self.live,
            )
        self._container = container
        return container

    def _open_error(self, err: Exception) -> SourceError:
        why = self._why(err)
        if not self.live and isinstance(err, av.error.InvalidDataError):
            return SourceError(f"{self.url} is not a video file ({why})", permanent=True)
        if not self.live and isinstance(err, OSError):
            return SourceError(f"cannot open {self.url}: {why}", permanent=True)
        if isinstance(err, av.error.HTTPUnauthorizedError):
            # Not retried: many cameras lock the account after a few failed logins.
            return SourceError(f"{redact_url(self.url)}: authentication failed", permanent=True)
        return SourceError(f"cannot open {redact_url(self.url)}: {why}")

    def _why(self, err: Exception) -> str:
        text = getattr(err, "strerror", None) or str(err) or type(err).__name__
        return redact(text, self.url)

    def _decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        """Decodes one packet; a corrupt packet (lost RTP data) is counted and skipped."""
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            self.decode_errors += 1
            return []
        self.decoded += len(frames)
        return frames

    def _watch_keyframe_interval(self, packet: av.Packet, stream: av.VideoStream) -> None:
        if not (self._auto and self.keyframes_only and packet.is_keyframe):
            return
        if packet.pts is None:
            return
        key_s = float(packet.pts * stream.time_base)
        gap_s = key_s - self._last_key_s if self._last_key_s is not None else 0.0
        self._last_key_s = key_s
        if gap_s > self._sampler.period * (1 + _GOP_SLACK):
            self.keyframes_only = False
            stream.codec_context.skip_frame = "DEFAULT"
            log.info(
                "%s: keyframes %.2f s apart, more than the %.2f s sampling period: decoding all",
                redact_url(self.url), gap_s, self._sampler.period,
            )  # fmt: skip


class RtspSource(PyAvSource):
    """A live RTSP camera over TCP (interleaved RTP: no loss on a busy network, one port).

    ``read_timeout_s`` bounds every blocking read, so a silent camera raises instead of
    hanging its thread; frames are stamped with the wall clock at decode.
    """

    def __init__(
        self,
        url: str,
        analyse_fps: float = 1.0,
        *,
        keyframes: KeyframeMode = "auto",
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
    ) -> None:
        options = {
            "rtsp_transport": "tcp",
            "timeout": str(int(read_timeout_s * 1_000_000)),  # socket I/O, microseconds
            "analyzeduration": str(_RTSP_PROBE_US),
        }
        super().__init__(
            url, analyse_fps, live=True, options=options, keyframes=keyframes,
            open_timeout_s=open_timeout_s, read_timeout_s=read_timeout_s,
        )  # fmt: skip


class FileSource(PyAvSource):
    """A video file, decoded as fast as the CPU allows (for replay and backtests).

    Frames are sampled by their PTS and stamped ``start_ms`` + PTS: ``start_ms`` is when
    the footage was recorded (epoch ms); by default the time the file is opened.
    """

    def __init__(
        self,
        path: str | Path,
        analyse_fps: float = 1.0,
        *,
        start_ms: int | None = None,
        keyframes: KeyframeMode = "auto",
    ) -> None:
        super().__init__(
            str(path), analyse_fps, live=False, options={}, keyframes=keyframes,
            start_ms=start_ms,
        )  # fmt: skip
