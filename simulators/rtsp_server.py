"""A real RTSP server (GStreamer's RTSP server) serving live H.264 streams made in Python.

ffmpeg cannot serve RTSP (its ``listen`` mode is input only), so the video simulator uses
GStreamer: each mount is ``appsrc ! videoconvert ! x264enc ! rtph264pay``, fed by one Python
thread per mount that renders the frame for the current scenario time. The media factory is
shared, so every client of a mount sees the same stream, as with a real camera.

Scenario time is wall clock minus a ``scenario_start`` epoch given by the caller: a server
killed and restarted with the same start continues the scenario where it should be, which is
what a camera that reboots looks like to the gateway.

A mount can also loop an MP4 file of real footage (``/name=file:PATH``). The file's H.264 is
sent as it is (no re-encode), so only H.264 MP4 files can be served; transcode others once
with ffmpeg (``ffmpeg -i in.mkv -c:v libx264 -g 25 out.mp4``). The file is demuxed with PyAV
and fed to the same appsrc model at its own pace: GStreamer's ``filesrc ! qtdemux`` stops at
EOS, and looping it needs segment seeks that the RTSP media's own seeking undoes.

Requirements: apt-get ``gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad`` (x264enc is in
-ugly, h264parse in -bad) and ``PyGObject<3.51`` in the venv.

Command line: ``python -m simulators.rtsp_server --port 8554 --mount /cam1=pattern
--mount /street=file:../shared/assets/videos/carcounter_street.mp4``.
"""

from __future__ import annotations

import argparse
import base64
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import cv2
import numpy as np

log = logging.getLogger(__name__)

FrameSource = Callable[[float], np.ndarray]
"""Returns the BGR frame for time t, in seconds since the scenario start."""

_READY_TIMEOUT_S = 60.0  # generous: it only matters when the server never comes up
_ROLE = "viewer"
_STATUS_LINE_MAX = 1024


def pattern_source(size: tuple[int, int] = (640, 360), fps: int = 10) -> FrameSource:
    """A moving box and a frame counter: every frame differs, so a frozen stream shows."""
    width, height = size

    def render(t: float) -> np.ndarray:
        image = np.full((height, width, 3), (40, 90, 40), np.uint8)
        box = max(16, height // 6)
        x = int((t * width / 8) % max(1, width - box))
        y = int((height - box) * (0.5 + 0.4 * np.sin(t)))
        cv2.rectangle(image, (x, y), (x + box, y + box), (0, 200, 255), -1)
        cv2.putText(
            image, f"{int(t * fps)}  t={t:8.2f}", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8,
            (255, 255, 255), 2,
        )  # fmt: skip
        return image

    return render


class _Feeder(threading.Thread):
    """Pushes one mount's buffers to every live ``appsrc`` of that mount.

    A thread per mount, not a GLib timeout, so a slow renderer never delays the RTSP
    protocol handling in the main loop. It renders only while a client is watching.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name=f"feed{name}", daemon=True)
        self._appsrcs: set = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def attach(self, appsrc) -> None:
        with self._lock:
            self._appsrcs.add(appsrc)

    def detach(self, appsrc) -> None:
        with self._lock:
            self._appsrcs.discard(appsrc)

    def stop(self) -> None:
        self._stopping.set()

    def _targets(self) -> list:
        with self._lock:
            return list(self._appsrcs)

    def _push(
        self, data: bytes, stamp: Callable[[object], tuple[int, int] | None] | None = None
    ) -> None:
        """Pushes ``data`` to each appsrc; ``stamp(appsrc)`` gives its (pts, dts) in ns, or
        None for an appsrc that cannot take it yet (skipped for this buffer)."""
        from gi.repository import Gst

        for appsrc in self._targets():
            buffer = Gst.Buffer.new_wrapped(data)
            if stamp:
                stamps = stamp(appsrc)
                if stamps is None:
                    continue
                buffer.pts, buffer.dts = stamps
            appsrc.emit("push-buffer", buffer)


class _PatternFeeder(_Feeder):
    """Renders ``source(t)`` at ``fps``; appsrc stamps each buffer with the running time."""

    def __init__(self, name: str, source: FrameSource, fps: int, size: tuple[int, int],
                 scenario_start: float) -> None:  # fmt: skip
        super().__init__(name)
        self._source, self._fps, self._size = source, fps, size
        self._scenario_start = scenario_start

    def caps(self) -> str:
        width, height = self._size
        return f"video/x-raw,format=BGR,width={width},height={height},framerate={self._fps}/1"

    def run(self) -> None:
        period = 1.0 / self._fps
        next_tick = time.monotonic()
        while not self._stopping.wait(max(0.0, next_tick - time.monotonic())):
            next_tick = max(next_tick + period, time.monotonic() - period)
            if not self._targets():
                continue
            image = self._source(time.time() - self._scenario_start)
            if image.shape[1::-1] != self._size:
                image = cv2.resize(image, self._size)
            self._push(np.ascontiguousarray(image).tobytes())


def check_h264_file(path: Path) -> None:
    """Raises ValueError unless ``path`` is a video file whose video is H.264."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise ValueError(f"{path}: cannot be opened as video ({err})") from err
    with container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        codec = container.streams.video[0].codec_context.name
    if codec != "h264":
        raise ValueError(
            f"{path}: video is {codec}, only H.264 is served as it is; transcode it: "
            "ffmpeg -i IN -c:v libx264 -g 25 OUT.mp4"
        )


class _FileFeeder(_Feeder):
    """Loops an H.264 MP4 file: demuxed packets (Annex B) paced by their own timestamps.

    The position in the file is scenario time modulo its duration, so a restarted server
    continues the footage where it was (from the keyframe before that point).
    """

    def __init__(self, name: str, path: Path, scenario_start: float) -> None:
        super().__init__(name)
        self._path, self._scenario_start = path, scenario_start
        check_h264_file(path)

    def caps(self) -> str:
        return "video/x-h264,stream-format=byte-stream,alignment=au"

    def run(self) -> None:
        while not self._stopping.is_set():
            if not self._targets():
                self._stopping.wait(0.2)
                continue
            try:
                self._play_once()
            except Exception:  # one bad pass must not silence the mount for good
                log.exception("%s: playing the file failed; starting over", self.name)
                self._stopping.wait(0.5)

    def _play_once(self) -> None:
        """Plays from the scenario position to the end of the file, or until stopped.

        Buffers carry the file's own PTS and DTS shifted onto each pipeline's running time:
        the footage may have B-frames, whose presentation order differs from the order sent.
        """
        import av
        from gi.repository import Gst

        with av.open(str(self._path)) as container:
            stream = container.streams.video[0]
            duration_s = float(container.duration or 0) / av.time_base
            offset_s = (time.time() - self._scenario_start) % duration_s if duration_s else 0
            container.seek(int(offset_s / stream.time_base), stream=stream, backward=True)
            to_annexb = av.bitstream.BitStreamFilterContext("h264_mp4toannexb", stream)
            ns = float(stream.time_base) * 1e9
            started, first_dts, bases = time.monotonic(), None, {}
            for packet in container.demux(stream):
                if self._stopping.is_set() or not self._targets():
                    return
                for out in to_annexb.filter(packet if packet.size else None):
                    dts = out.dts if out.dts is not None else out.pts
                    first_dts = dts if first_dts is None else first_dts
                    dts_ns = int((dts - first_dts) * ns)
                    pts_ns = int((out.pts - first_dts) * ns) if out.pts is not None else dts_ns
                    self._stopping.wait(max(0.0, started + dts_ns / 1e9 - time.monotonic()))

                    def stamp(appsrc, pts_ns: int = pts_ns, dts_ns: int = dts_ns) -> tuple | None:
                        if appsrc not in bases:
                            now = appsrc.get_current_running_time()
                            # No clock yet (its pipeline is still starting, slow on a busy
                            # machine): nothing to stamp against; its first buffer comes later.
                            if now == Gst.CLOCK_TIME_NONE:
                                return None
                            bases[appsrc] = now - dts_ns  # this packet plays now
                        base = bases[appsrc]
                        return max(0, base + pts_ns), max(0, base + dts_ns)

                    self._push(bytes(out), stamp)
            # The last frame is shown for one frame time before the loop starts over.
            self._stopping.wait(float(1 / stream.average_rate) if stream.average_rate else 0.04)


def _make_factory(feeder: _Feeder, gop: int):
    """A shared media factory whose pipeline starts at an appsrc fed by ``feeder``."""
    from gi.repository import GstRtspServer

    if isinstance(feeder, _PatternFeeder):
        # One slice per frame (zerolatency would slice per thread): rtph264pay repeats
        # SPS/PPS before every IDR slice, and FFmpeg then splits a keyframe into two frames.
        encode = (
            "videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency "
            f"speed-preset=ultrafast sliced-threads=false key-int-max={gop} ! "
            "video/x-h264,profile=baseline ! "
        )
        # A late raw frame is worth nothing to a live stream: drop the oldest.
        queueing = "do-timestamp=true max-buffers=2 leaky-type=downstream"
    else:
        encode = "h264parse ! "
        # Coded frames reference each other, so none may be dropped; the feeder's pacing
        # keeps the queue short (appsrc only signals when it passes max-bytes).
        queueing = "do-timestamp=false"
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( appsrc name=src is-live=true format=time caps={feeder.caps()} {queueing} ! "
        f"{encode}rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    factory.set_shared(True)

    def configure(_factory, media) -> None:
        appsrc = media.get_element().get_child_by_name("src")
        feeder.attach(appsrc)
        media.connect("unprepared", lambda _media: feeder.detach(appsrc))

    factory.connect("media-configure", configure)
    return factory


def _basic_auth(user: str, password: str):
    """An RTSPAuth that lets ``user`` (and nobody else) play every mount."""
    from gi.repository import GstRtspServer

    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, _ROLE)
    auth = GstRtspServer.RTSPAuth()
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    return auth


def serve_rtsp(
    mounts: dict[str, FrameSource | Path],
    port: int,
    fps: int = 10,
    size: tuple[int, int] = (640, 360),
    gop: int | None = None,
    host: str = "127.0.0.1",
    scenario_start: float | None = None,
    credentials: tuple[str, str] | None = None,
) -> None:
    """Serves ``rtsp://host:port/<mount>`` for each mount until SIGTERM or SIGINT.

    A mount maps to a frame source (rendered at ``fps``, encoded with a keyframe every
    ``gop`` frames, default one per second) or to an H.264 MP4 file looped as it is.
    With ``credentials`` (user, password) clients must log in (Basic), as on real cameras.
    """
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    start = time.time() if scenario_start is None else scenario_start
    server = GstRtspServer.RTSPServer()
    server.set_address(host)
    server.set_service(str(port))
    if credentials:
        server.set_auth(_basic_auth(*credentials))
    feeders: list[_Feeder] = []
    for mount, source in mounts.items():
        feeder: _Feeder
        if isinstance(source, Path):
            feeder = _FileFeeder(mount, source, start)
        else:
            feeder = _PatternFeeder(mount, source, fps, size, start)
        feeders.append(feeder)
        factory = _make_factory(feeder, gop or fps)
        if credentials:
            factory.add_role_from_structure(
                Gst.Structure.new_from_string(
                    f"{_ROLE}, media.factory.access=(boolean)true, "
                    "media.factory.construct=(boolean)true"
                )
            )
        server.get_mount_points().add_factory(mount, factory)
    if server.attach(None) == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    for feeder in feeders:
        feeder.start()
    print(f"serving rtsp://{host}:{port} mounts {', '.join(mounts)}", flush=True)
    try:
        loop.run()
    finally:
        for feeder in feeders:
            feeder.stop()


def describe_status(url: str, timeout_s: float = 2.0) -> int:
    """The status code an RTSP ``DESCRIBE`` of ``url`` gets; raises OSError if none comes.

    200 means the mount is served and its stream has started: the server answers with the
    SDP, which it can write only once the media's pipeline has produced its caps. 404 is no
    such mount, 401 a missing or wrong login (credentials in the URL are sent as Basic). A
    DESCRIBE sets nothing up, so the probe leaves no stream playing.
    """
    parts = urlsplit(url)
    target = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()  # no login
    request = f"DESCRIBE {target} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n"
    if parts.username is not None:
        login = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        request += f"Authorization: Basic {base64.b64encode(login.encode()).decode()}\r\n"
    with socket.create_connection((parts.hostname, parts.port or 554), timeout_s) as sock:
        sock.settimeout(timeout_s)
        sock.sendall(f"{request}\r\n".encode())
        reply = b""
        while b"\r\n" not in reply and len(reply) < _STATUS_LINE_MAX:
            chunk = sock.recv(_STATUS_LINE_MAX)
            if not chunk:
                break
            reply += chunk
    version, _, rest = reply.partition(b"\r\n")[0].partition(b" ")
    code = rest[:3]
    if version != b"RTSP/1.0" or not code.isdigit():
        raise ConnectionError(f"no RTSP answer from {parts.hostname}:{parts.port}: {reply[:80]!r}")
    return int(code)


def parse_mount(spec: str, size: tuple[int, int], fps: int) -> tuple[str, FrameSource | Path]:
    """``/cam1=pattern`` or ``/street=file:PATH`` → (mount path, source)."""
    mount, sep, what = spec.partition("=")
    if not sep or not mount.startswith("/"):
        raise ValueError(f"mount {spec!r} is not /NAME=pattern or /NAME=file:PATH")
    if what == "pattern":
        return mount, pattern_source(size, fps)
    if what.startswith("file:"):
        path = Path(what.removeprefix("file:"))
        if not path.is_file():
            raise ValueError(f"mount {mount}: no such file {path}")
        check_h264_file(path)
        return mount, path
    raise ValueError(f"mount {spec!r}: source must be 'pattern' or 'file:PATH'")


class RtspServerProcess:
    """``serve_rtsp`` in a subprocess, for tests: start, kill like a power cut, restart.

    The scenario start is fixed at construction, so a restarted server continues the
    scenario instead of starting it over.
    """

    def __init__(self, mounts: list[str], port: int, fps: int = 10,
                 size: tuple[int, int] = (640, 360), gop: int | None = None,
                 log: Path | None = None, scenario_start: float | None = None,
                 credentials: tuple[str, str] | None = None) -> None:  # fmt: skip
        self.port = port
        self.mounts = [spec.partition("=")[0] for spec in mounts]
        self.scenario_start = time.time() if scenario_start is None else scenario_start
        self.log = log
        self._login = ":".join(quote(part, safe="") for part in credentials) if credentials else ""
        self.args = [
            sys.executable, "-m", "simulators.rtsp_server", "--port", str(port),
            "--fps", str(fps), "--size", f"{size[0]}x{size[1]}",
            "--scenario-start", repr(self.scenario_start),
            *(["--gop", str(gop)] if gop else []),
            *(["--auth", ":".join(credentials)] if credentials else []),
            *(arg for mount in mounts for arg in ("--mount", mount)),
        ]  # fmt: skip
        self.proc: subprocess.Popen | None = None

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}{mount}"

    def start(self, timeout_s: float = _READY_TIMEOUT_S) -> None:
        """Starts the server and returns once every mount answers a DESCRIBE with 200.

        A port that accepts is not enough: the answer proves the RTSP loop runs, the mount
        exists and its stream has started.
        """
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        finally:
            if self.log:
                out.close()
        deadline = time.monotonic() + timeout_s
        waiting, last = list(self.mounts), "no answer yet"
        while waiting:
            if self.proc.poll() is not None:
                raise RuntimeError(f"RTSP server exited with {self.proc.returncode}; {self.log}")
            # A loaded machine may take seconds to start a stream: a try may take as long.
            try_s = max(1.0, min(10.0, deadline - time.monotonic()))
            try:
                status = describe_status(self._probe_url(waiting[0]), try_s)
            except OSError as err:
                status, last = 0, f"{waiting[0]}: {err}"
            else:
                last = f"{waiting[0]}: DESCRIBE answered {status}"
            if status == 200:
                waiting.pop(0)
                continue
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"RTSP server on {self.port} not ready in {timeout_s} s: {last}")
            time.sleep(0.1)

    def _probe_url(self, mount: str) -> str:
        url = self.url(mount)
        return url.replace("rtsp://", f"rtsp://{self._login}@") if self._login else url

    def kill(self) -> None:
        """SIGKILL: no RTSP TEARDOWN, clients see the connection drop, like a power cut."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> RtspServerProcess:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT of pattern mounts")
    parser.add_argument("--gop", type=int, help="frames between keyframes (default: fps)")
    parser.add_argument("--scenario-start", type=float, help="epoch seconds (default: now)")
    parser.add_argument("--auth", help="USER:PASSWORD clients must log in with (Basic)")
    parser.add_argument("--mount", action="append", required=True,
                        help="/NAME=pattern or /NAME=file:PATH (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    width, _, height = args.size.partition("x")
    size = (int(width), int(height))
    try:
        mounts = dict(parse_mount(spec, size, args.fps) for spec in args.mount)
    except ValueError as err:
        parser.error(str(err))
    user, colon, password = (args.auth or "").partition(":")
    if args.auth and not (user and colon):
        parser.error("--auth must be USER:PASSWORD")
    credentials = (user, password) if args.auth else None
    serve_rtsp(
        mounts, args.port, args.fps, size, args.gop, args.host, args.scenario_start, credentials
    )


if __name__ == "__main__":
    main()
