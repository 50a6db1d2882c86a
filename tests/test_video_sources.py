"""Video sources against real streams: a GStreamer RTSP server in a subprocess (killed and
restarted), real files, PyAV and OpenCV decoding, and an ONVIF service answered over HTTP."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import random
import shutil
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from detectors.config import CameraSettings, ZoneSettings
from detectors.sources import (
    CameraSupervisor,
    DropOldestQueue,
    FileSource,
    Frame,
    OnvifError,
    RtspSource,
    Sampler,
    SourceError,
    open_source,
    parse_onvif_url,
    resolve_onvif,
)
from domain.retry import Backoff
from simulators.mosquitto import free_port
from simulators.rtsp_server import RtspServerProcess

STREET = Path(__file__).resolve().parents[2] / "shared/assets/videos/carcounter_street.mp4"
USER, PASSWORD = "admin", "p@ss:w"  # characters that must be escaped inside a URL
QUOTED = "admin:p%40ss%3Aw"


def _gst_rtsp_server_missing() -> bool:
    try:
        import gi

        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GstRtspServer  # noqa: F401
    except (ImportError, ValueError):
        return True
    return False


needs_rtsp = pytest.mark.skipif(
    _gst_rtsp_server_missing(), reason="GStreamer RTSP server (gir1.2-gst-rtsp-server-1.0)"
)


@pytest.fixture(scope="module")
def rtsp_server(tmp_path_factory) -> Iterator[RtspServerProcess]:
    """Two pattern cameras behind a password, as real cameras are."""
    if _gst_rtsp_server_missing():
        pytest.skip("GStreamer RTSP server not installed")
    log = tmp_path_factory.mktemp("rtsp") / "server.log"
    server = RtspServerProcess(
        ["/cam1=pattern", "/cam2=pattern"], free_port(), log=log, credentials=(USER, PASSWORD)
    )
    server.start()
    try:
        yield server
    finally:
        server.kill()


def authed(server: RtspServerProcess, mount: str) -> str:
    return server.url(mount).replace("rtsp://", f"rtsp://{QUOTED}@")


def read_frames(source: RtspSource | FileSource, count: int | None = None) -> list[Frame]:
    frames: list[Frame] = []
    with contextlib.closing(source.frames()) as stream:
        for frame in stream:
            frames.append(frame)
            if len(frames) == count:
                break
    return frames


def wait_for(check, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class StatusLog:
    """Collects ``on_status`` calls from the supervisor's threads."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, int]] = []

    def __call__(self, camera_id: str, status: str, detail: str, ts_ms: int) -> None:
        self.events.append((camera_id, status, detail, ts_ms))

    @property
    def statuses(self) -> list[str]:
        return [status for _, status, _, _ in self.events]


@pytest.fixture
def no_thread_crash(monkeypatch) -> list[threading.ExceptHookArgs]:
    """Records any exception that escapes a thread (the test then asserts there is none)."""
    escaped: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    return escaped


# Live RTSP.


@needs_rtsp
def test_two_mounts_read_at_one_fps_decoding_only_keyframes(rtsp_server):
    sources = {mount: RtspSource(authed(rtsp_server, mount), 1.0) for mount in ("/cam1", "/cam2")}
    results: dict[str, list[Frame]] = {}
    readers = [
        threading.Thread(target=lambda m=mount, s=source: results.update({m: read_frames(s, 4)}))
        for mount, source in sources.items()
    ]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(60)
    for mount, source in sources.items():
        frames = results[mount]
        assert len(frames) == 4, mount
        assert all(frame.keyframe for frame in frames)
        assert all(frame.image.shape == (360, 640, 3) for frame in frames)
        gaps_s = np.diff([frame.ts_ms for frame in frames]) / 1000
        assert all(0.5 <= gap <= 1.5 for gap in gaps_s), gaps_s  # decode time varies
        assert 0.9 <= gaps_s.mean() <= 1.1, gaps_s
        assert [frame.index for frame in frames] == [0, 1, 2, 3]
        assert not np.array_equal(frames[0].image, frames[-1].image)  # the pattern moves
        # Keyframe-only decoding: one decoded frame per 10-frame GOP, not all of them.
        assert source.keyframes_only
        assert source.packets >= 5 * source.decoded, (source.packets, source.decoded)


@needs_rtsp
def test_wrong_password_is_a_permanent_error_without_the_password(rtsp_server):
    url = rtsp_server.url("/cam1").replace("rtsp://", "rtsp://admin:hunter2@")
    with pytest.raises(SourceError) as info:
        read_frames(RtspSource(url), 1)
    assert "authentication failed" in info.value.reason
    assert info.value.permanent
    assert "hunter2" not in info.value.reason


@needs_rtsp
def test_supervisor_rides_out_a_server_restart(tmp_path, no_thread_crash):
    server = RtspServerProcess(["/cam=pattern"], free_port(), log=tmp_path / "server.log")
    statuses = StatusLog()
    supervisor = CameraSupervisor(
        "cam", lambda: RtspSource(server.url("/cam"), 1.0, read_timeout_s=3),
        on_status=statuses, offline_after_s=1.0, stall_timeout_s=5.0,
        backoff=Backoff(0.2, 1.0, random.Random(1)),
    )  # fmt: skip
    try:
        server.start()
        supervisor.start()
        assert supervisor.get(timeout=30) is not None
        server.kill()
        killed = time.monotonic()
        wait_for(lambda: supervisor.status == "offline", "offline", 15)
        # The outage lasts ~3 s in all: its length is part of the scenario, not a wait.
        time.sleep(max(0.0, killed + 3.0 - time.monotonic()))
        restarted_ms = int(time.time() * 1000)
        server.start()
        wait_for(lambda: supervisor.status == "online", "online again", 30)
        frame = supervisor.get(timeout=10)
        while frame is not None and frame.ts_ms < restarted_ms:
            frame = supervisor.get(timeout=10)
        assert frame is not None, "frames did not resume"
    finally:
        supervisor.stop()
        server.kill()
    # From the first frame on (a first connection that a loaded machine lets time out is
    # the setup, not the scenario): up, the outage, and back.
    since_up = statuses.statuses[statuses.statuses.index("online") :]
    assert since_up == ["online", "reconnecting", "offline", "online"]
    assert statuses.events[-1][2].startswith("recovered after")
    assert supervisor.stats["reconnects"] >= 1
    assert not no_thread_crash


def test_unreachable_camera_backs_off_and_never_raises(no_thread_crash):
    url = f"rtsp://admin:secret@127.0.0.1:{free_port()}/cam"  # nothing listens there
    statuses = StatusLog()
    supervisor = CameraSupervisor(
        "gone", lambda: RtspSource(url, read_timeout_s=1), on_status=statuses,
        offline_after_s=0.5, backoff=Backoff(0.1, 0.4, random.Random(7)),
    )  # fmt: skip
    supervisor.start()
    time.sleep(2.5)
    supervisor.stop()
    reconnects = supervisor.stats["reconnects"]
    # Refused connections fail at once: without backoff this would be thousands.
    assert 3 <= reconnects <= 40, reconnects
    assert supervisor.stats["errors"] in (reconnects, reconnects + 1)
    assert statuses.statuses == ["reconnecting", "offline"]
    assert "refused" in supervisor.last_error.lower()
    assert all("secret" not in detail for _, _, detail, _ in statuses.events)
    assert not any(thread.is_alive() for thread in supervisor._threads)
    assert not no_thread_crash


@needs_rtsp
def test_slow_consumer_loses_oldest_frames_and_never_blocks_the_reader(rtsp_server):
    supervisor = CameraSupervisor(
        "busy", lambda: RtspSource(authed(rtsp_server, "/cam1"), 10.0), queue_size=1
    )
    supervisor.start()
    try:
        assert supervisor.get(timeout=30) is not None
        wait_for(lambda: supervisor.stats["frames"] >= 3, "full-rate decoding", 15)
        before = supervisor.stats["frames"]
        time.sleep(2.0)  # a consumer stuck in a slow inference
        read_meanwhile = supervisor.stats["frames"] - before
        frame = supervisor.get(timeout=1)
        assert frame is not None
        age_ms = time.time() * 1000 - frame.ts_ms
    finally:
        supervisor.stop()
    assert read_meanwhile >= 10, read_meanwhile  # ~10 fps kept flowing
    assert supervisor.stats["dropped"] >= read_meanwhile - 2
    assert supervisor.queue.dropped == supervisor.stats["dropped"]
    assert age_ms < 1000, age_ms  # the newest frame, not one waiting for 2 s


# Files.


@pytest.mark.skipif(not STREET.exists(), reason="shared video assets are absent")
@pytest.mark.parametrize("keyframes", ["auto", "never"])
def test_file_source_samples_one_frame_per_second_of_video(keyframes):
    start_ms = 1_700_000_000_000
    source = FileSource(STREET, 1.0, start_ms=start_ms, keyframes=keyframes)
    frames = read_frames(source)
    assert 29 <= len(frames) <= 31  # 29.9 s of video
    assert frames[0].ts_ms == start_ms
    gaps_ms = np.diff([frame.ts_ms for frame in frames])
    assert all(900 <= gap <= 1100 for gap in gaps_ms), gaps_ms
    assert frames[0].image.shape == (336, 596, 3)
    if keyframes == "auto":  # keyframes every 1/3 s: only they are decoded
        assert source.keyframes_only and all(frame.keyframe for frame in frames)
        assert source.decoded <= 100
    else:
        assert not source.keyframes_only
        assert source.decoded >= 850  # all 895 frames decoded, 30 converted


@pytest.mark.skipif(not STREET.exists(), reason="shared video assets are absent")
def test_opencv_decoder_samples_the_same_file():
    source = open_source(str(STREET), 1.0, decoder="opencv", start_ms=0)
    frames = read_frames(source)
    assert 29 <= len(frames) <= 31
    gaps_ms = np.diff([frame.ts_ms for frame in frames])
    assert all(750 <= gap <= 1250 for gap in gaps_ms), gaps_ms
    assert not any(frame.keyframe for frame in frames)  # OpenCV cannot tell


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")
def test_long_gop_falls_back_to_decoding_every_frame(tmp_path):
    clip = tmp_path / "gop2s.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
         "-t", "8", "-c:v", "libx264", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0",
         str(clip)],
        check=True, timeout=60,
    )  # fmt: skip
    source = FileSource(clip, 1.0, start_ms=0)
    frames = read_frames(source)
    assert not source.keyframes_only  # keyframes 2 s apart cannot give 1 fps
    # Keyframe-only until the second keyframe (t=2 s) shows the gap: t=1 is missed, once;
    # then any 25 fps frame from 0.1 s before each grid point on.
    times_s = [frame.ts_ms / 1000 for frame in frames]
    assert np.allclose(times_s, [0, 2, 2.92, 3.92, 4.92, 5.92, 6.92, 7.92], atol=0.002), times_s


def test_not_a_video_file_is_reported_with_its_reason(tmp_path, no_thread_crash):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n")
    with pytest.raises(SourceError) as info:
        read_frames(FileSource(notes))
    assert info.value.permanent
    assert "not a video file" in info.value.reason
    lyrics = tmp_path / "song.lrc"  # FFmpeg opens this as subtitles
    lyrics.write_text("[ar:someone]\n[00:01.00]la la\n[00:02.00]la\n")
    with pytest.raises(SourceError, match="no video stream"):
        read_frames(FileSource(lyrics))

    statuses = StatusLog()
    supervisor = CameraSupervisor("file", lambda: open_source(str(notes)), on_status=statuses)
    supervisor.start()
    wait_for(lambda: statuses.statuses == ["offline"], "offline with a reason", 5)
    supervisor.stop()
    assert "not a video file" in statuses.events[0][2]
    assert supervisor.stats == {**supervisor.stats, "errors": 1, "reconnects": 0}
    assert not no_thread_crash


# Watchdog and frame size, with a scripted stand-in for a camera.


class HangingSource:
    """Yields one frame, then goes silent like a camera whose encoder froze."""

    live = True

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size
        self.interrupted = threading.Event()

    def frames(self) -> Iterator[Frame]:
        width, height = self.size
        yield Frame(np.zeros((height, width, 3), np.uint8), int(time.time() * 1000), 0, True)
        while not self.interrupted.wait(0.05):
            pass

    def interrupt(self) -> None:
        self.interrupted.set()

    def close(self) -> None:
        pass


def test_watchdog_restarts_a_stalled_stream_and_reports_a_new_frame_size():
    sizes = iter([(640, 360), (320, 240), (320, 240)])
    opened: list[HangingSource] = []

    def open_camera() -> HangingSource:
        opened.append(HangingSource(next(sizes)))
        return opened[-1]

    statuses = StatusLog()
    supervisor = CameraSupervisor(
        "frozen", open_camera, on_status=statuses, stall_timeout_s=0.4,
        backoff=Backoff(0.05, 0.1, random.Random(3)),
    )  # fmt: skip
    supervisor.start()
    wait_for(lambda: len(opened) >= 2 and supervisor.status == "online", "second stream", 5)
    supervisor.stop()
    assert opened[0].interrupted.is_set()
    assert supervisor.stats["stalls"] >= 1
    assert supervisor.stats["size_changes"] == 1
    assert statuses.statuses[:3] == ["online", "reconnecting", "online"]
    assert statuses.events[1][2].startswith("stalled")
    assert "frame size now 320x240 (was 640x360)" in statuses.events[2][2]
    shapes = [frame.image.shape for frame in iter(lambda: supervisor.get(timeout=0), None)]
    assert shapes[-1] == (240, 320, 3)  # frames of the new size are passed on


# Small parts.


def test_drop_oldest_queue_keeps_the_newest():
    queue: DropOldestQueue[int] = DropOldestQueue(2)
    dropped = [queue.put(item) for item in range(5)]
    assert dropped == [False, False, True, True, True]
    assert (queue.get(0), queue.get(0), queue.get(0)) == (3, 4, None)
    assert queue.dropped == 3


def test_sampler_keeps_the_rate_whatever_the_source_rate():
    at_25fps = Sampler(1.0)
    taken = [i / 25 for i in range(2500) if at_25fps.take(i / 25)]
    # 100 s of 25 fps: 100 samples (101 with both ends), not 100 / 0.92 from drifting.
    assert len(taken) == 101
    assert all(0.88 < gap < 1.001 for gap in np.diff(taken))
    keyframes = Sampler(1.0)
    taken = [i / 3 for i in range(30) if keyframes.take(i / 3)]
    assert np.allclose(np.diff(taken), 1.0)


# ONVIF.


class FakeOnvifCamera:
    """A fake ONVIF device service: no camera's ONVIF service can run here, so this loopback
    HTTP server answers the SOAP calls onvif-zeep makes (GetCapabilities, GetProfiles,
    GetStreamUri, GetSnapshotUri) with canned responses.

    It checks the WS-Security UsernameToken digest as a camera does, so a wrong password
    gets the ``ter:NotAuthorized`` fault, and it records the requests it answered.
    """

    NS: ClassVar[dict[str, str]] = {
        "s": "http://www.w3.org/2003/05/soap-envelope",
        "tds": "http://www.onvif.org/ver10/device/wsdl",
        "trt": "http://www.onvif.org/ver10/media/wsdl",
        "tt": "http://www.onvif.org/ver10/schema",
        "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
        "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    }

    def __init__(self, user: str, password: str, profiles: dict[str, str]) -> None:
        self.user, self.password, self.profiles = user, password, profiles
        self.requests: list[tuple[str, ET.Element]] = []
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, reply = camera.answer(ET.fromstring(body))
                data = reply.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOnvifCamera:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, envelope: ET.Element) -> tuple[int, str]:
        request = next(iter(envelope.find("s:Body", self.NS)))
        name = request.tag.rpartition("}")[2]
        self.requests.append((name, request))
        if not self._authorised(envelope):
            return 400, self._fault("ter:NotAuthorized", "Sender not Authorized")
        token = request.findtext("trt:ProfileToken", "", self.NS)
        if name == "GetCapabilities":
            return 200, self._envelope(
                "<tds:GetCapabilitiesResponse><tds:Capabilities>"
                f"<tt:Device><tt:XAddr>{self.base}/onvif/device_service</tt:XAddr></tt:Device>"
                f"<tt:Media><tt:XAddr>{self.base}/onvif/media_service</tt:XAddr>"
                "<tt:StreamingCapabilities><tt:RTPMulticast>false</tt:RTPMulticast>"
                "<tt:RTP_TCP>true</tt:RTP_TCP><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP>"
                "</tt:StreamingCapabilities></tt:Media>"
                "</tds:Capabilities></tds:GetCapabilitiesResponse>"
            )
        if name == "GetProfiles":
            profiles = "".join(
                f'<trt:Profiles token="{token}" fixed="true"><tt:Name>{token}</tt:Name>'
                "</trt:Profiles>"
                for token in self.profiles
            )
            return 200, self._envelope(
                f"<trt:GetProfilesResponse>{profiles}</trt:GetProfilesResponse>"
            )
        if name == "GetStreamUri" and token in self.profiles:
            uri = self._media_uri(self.profiles[token])
            return 200, self._envelope(
                f"<trt:GetStreamUriResponse>{uri}</trt:GetStreamUriResponse>"
            )
        if name == "GetSnapshotUri" and token in self.profiles:
            uri = self._media_uri(f"{self.base}/snapshot/{token}.jpg")
            return 200, self._envelope(
                f"<trt:GetSnapshotUriResponse>{uri}</trt:GetSnapshotUriResponse>"
            )
        return 400, self._fault("ter:ActionNotSupported", f"{name} is not supported")

    def _authorised(self, envelope: ET.Element) -> bool:
        token = envelope.find("s:Header/wsse:Security/wsse:UsernameToken", self.NS)
        if token is None:
            return False
        nonce = base64.b64decode(token.findtext("wsse:Nonce", "", self.NS))
        created = token.findtext("wsu:Created", "", self.NS)
        digest = hashlib.sha1(nonce + created.encode() + self.password.encode()).digest()
        return (
            token.findtext("wsse:Username", "", self.NS) == self.user
            and token.findtext("wsse:Password", "", self.NS) == base64.b64encode(digest).decode()
        )

    @staticmethod
    def _media_uri(uri: str) -> str:
        return (
            f"<trt:MediaUri><tt:Uri>{uri}</tt:Uri><tt:InvalidAfterConnect>false"
            "</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot>"
            "<tt:Timeout>PT0S</tt:Timeout></trt:MediaUri>"
        )

    def _envelope(self, body: str) -> str:
        xmlns = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in self.NS.items())
        return f"<?xml version='1.0'?><s:Envelope {xmlns}><s:Body>{body}</s:Body></s:Envelope>"

    def _fault(self, subcode: str, reason: str) -> str:
        return self._envelope(
            '<s:Fault xmlns:ter="http://www.onvif.org/ver10/error">'
            "<s:Code><s:Value>s:Sender</s:Value>"
            f"<s:Subcode><s:Value>{subcode}</s:Value></s:Subcode></s:Code>"
            f'<s:Reason><s:Text xml:lang="en">{reason}</s:Text></s:Reason></s:Fault>'
        )


def test_onvif_resolves_stream_and_snapshot_uris_with_credentials():
    profiles = {"main": "rtsp://127.0.0.1:8554/main", "sub": "rtsp://127.0.0.1:8554/sub"}
    with FakeOnvifCamera(USER, PASSWORD, profiles) as camera:
        endpoints = resolve_onvif("127.0.0.1", camera.port, USER, PASSWORD, profile_index=1)
        assert endpoints.stream_uri == f"rtsp://{QUOTED}@127.0.0.1:8554/sub"
        assert endpoints.snapshot_uri == f"{camera.base}/snapshot/sub.jpg"
        assert endpoints.profile_token == "sub"
        setup = next(request for name, request in camera.requests if name == "GetStreamUri")
        assert setup.findtext(".//tt:Stream", None, camera.NS) == "RTP-Unicast"
        assert setup.findtext(".//tt:Protocol", None, camera.NS) == "RTSP"

        with pytest.raises(OnvifError, match="authentication failed") as info:
            resolve_onvif("127.0.0.1", camera.port, USER, "wrong")
        assert info.value.permanent
        with pytest.raises(OnvifError, match=r"profile 2 asked, the camera has 2 \(main, sub\)"):
            resolve_onvif("127.0.0.1", camera.port, USER, PASSWORD, profile_index=2)

    with (
        FakeOnvifCamera(USER, PASSWORD, {}) as empty,
        pytest.raises(OnvifError, match="no media profiles"),
    ):
        resolve_onvif("127.0.0.1", empty.port, USER, PASSWORD)
    with pytest.raises(OnvifError, match="unreachable") as info:
        resolve_onvif("127.0.0.1", free_port(), USER, PASSWORD, timeout_s=2)
    assert not info.value.permanent
    assert parse_onvif_url(f"onvif://{QUOTED}@10.0.0.7:8080/1") == (
        "10.0.0.7", 8080, USER, PASSWORD, 1,
    )  # fmt: skip
    assert parse_onvif_url("onvif://cam.local")[1:] == (80, "", "", 0)


@needs_rtsp
def test_onvif_camera_in_config_streams_through_its_resolved_uri(rtsp_server):
    profiles = {"main": rtsp_server.url("/cam2")}  # the camera returns it without credentials
    with FakeOnvifCamera(USER, PASSWORD, profiles) as camera:
        zone = ZoneSettings(
            id="z", type="hawker", polygon=[(0, 0), (1, 0), (1, 1)], lat=26, lon=119
        )
        settings = CameraSettings(
            id="onvif-cam", url=f"onvif://{QUOTED}@127.0.0.1:{camera.port}", zones=[zone]
        )
        supervisor = CameraSupervisor.from_settings(settings)
        supervisor.start()
        try:
            frame = supervisor.get(timeout=30)
        finally:
            supervisor.stop()
    assert frame is not None, supervisor.last_error
    assert frame.image.shape == (360, 640, 3)
    assert supervisor.status == "online"
