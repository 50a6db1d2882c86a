"""Evidence while a camera's stream is down: one JPEG from its ONVIF snapshot URI, over real
HTTP on loopback with Digest or Basic auth (a FAKE camera's snapshot service,
tests/fake_onvif_device.py), bounded in size, time and pixels; and the video runtime
drawing the zone on that snapshot when its stream is refused."""

from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np
import pytest
from fake_onvif_device import FakeSnapshotServer
from hypothesis import given, settings
from hypothesis import strategies as st
from test_video_sources import PASSWORD, QUOTED, USER, FakeOnvifCamera

from detectors.backends import Detection
from detectors.config import CameraSettings, ZoneSettings
from detectors.sources.snapshot import SnapshotError, decode_jpeg, fetch_snapshot, jpeg_size
from detectors.sources.snapshot_keeper import SnapshotKeeper
from gateway.video import VideoRuntime
from simulators.mosquitto import free_port

from harness import wait_until


def street_picture(width: int = 320, height: int = 240) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    picture = np.zeros((height, width, 3), np.uint8)
    picture[:, :, 0] = x
    picture[:, :, 1] = 255 - x
    picture[:, :, 2] = 128
    return picture


PICTURE = street_picture()
JPEG = cv2.imencode(".jpg", PICTURE, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header claiming another size."""
    at = jpeg.index(b"\xff\xc0")
    size = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return jpeg[: at + 5] + size + jpeg[at + 9 :]


def test_digest_camera_gives_its_picture_and_never_sees_the_password():
    with FakeSnapshotServer(USER, PASSWORD, JPEG) as camera:
        picture = fetch_snapshot(camera.uri, USER, PASSWORD)
    assert picture.shape == (240, 320, 3)
    assert np.abs(picture.astype(int) - PICTURE).mean() < 2
    first, *answers = camera.authorizations
    assert first == ""  # nothing before the challenge
    assert answers and all(a.startswith('Digest username="admin"') for a in answers)
    assert not any(PASSWORD in a for a in camera.authorizations)


def test_basic_camera_gets_basic_only_after_asking():
    with FakeSnapshotServer(USER, PASSWORD, JPEG, auth="basic") as camera:
        picture = fetch_snapshot(camera.uri, USER, PASSWORD)
    assert picture.shape == (240, 320, 3)
    assert camera.authorizations == ["", "Basic YWRtaW46cEBzczp3"]


def test_refused_password_is_permanent_and_the_message_has_no_password():
    with FakeSnapshotServer(USER, PASSWORD, JPEG) as camera:
        uri = camera.uri.replace("http://", f"http://{QUOTED}@")
        with pytest.raises(SnapshotError) as info:
            fetch_snapshot(uri, USER, "wrong")
    assert info.value.permanent
    assert info.value.reason == (
        f"snapshot {camera.uri.replace('http://', 'http://admin:***@')}: "
        "authentication failed (HTTP 401)"
    )
    assert PASSWORD not in info.value.reason


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_answer_over_the_size_limit_is_refused(chunked):
    with FakeSnapshotServer(USER, PASSWORD, JPEG + b"\0" * 300_000) as camera:
        camera.chunked = chunked
        with pytest.raises(SnapshotError, match=r"more than 100000") as info:
            fetch_snapshot(camera.uri, USER, PASSWORD, max_bytes=100_000)
    assert not info.value.permanent


def test_what_is_not_a_small_enough_jpeg_is_refused_before_decoding():
    with pytest.raises(SnapshotError, match=r"^snapshot: 60000x60000 is larger than 33177600 px$"):
        decode_jpeg(with_size(JPEG, 60000, 60000))
    with FakeSnapshotServer(USER, PASSWORD, b"<html>login</html>") as camera:
        with pytest.raises(SnapshotError, match=r": not a JPEG$"):
            fetch_snapshot(camera.uri, USER, PASSWORD)
        with pytest.raises(SnapshotError, match=r": HTTP 404$"):
            fetch_snapshot(camera.uri.replace("snapshot.jpg", "other.jpg"), USER, PASSWORD)
    with pytest.raises(SnapshotError, match=r": ConnectError$") as info:
        fetch_snapshot(f"http://127.0.0.1:{free_port()}/snap.jpg", USER, PASSWORD, 2)
    assert not info.value.permanent
    assert jpeg_size(JPEG) == (320, 240)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096) | st.binary(max_size=64).map(lambda tail: b"\xff\xd8" + tail))
def test_any_body_is_a_picture_or_a_snapshot_error(data):
    try:
        image = decode_jpeg(data)
    except SnapshotError as err:
        assert err.reason.startswith("snapshot: ")
    else:
        assert image.ndim == 3


# The video runtime: the stream is refused, the snapshot URI answers.


class CameraWithSnapshots(FakeOnvifCamera):
    """The fake ONVIF media service, its GetSnapshotUri naming a FakeSnapshotServer."""

    def __init__(self, profiles: dict[str, str], snapshot_uri: str) -> None:
        super().__init__(USER, PASSWORD, profiles)
        self.snapshot_uri = snapshot_uri

    def answer(self, envelope):
        status, reply = super().answer(envelope)
        return status, reply.replace(f"{self.base}/snapshot/main.jpg", self.snapshot_uri)


class NoDetections:
    """A detector that sees nothing: no frame reaches it while the stream is refused."""

    names: ClassVar[list[str]] = []
    input_size = (320, 320)

    def detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        return [[] for _ in frames]


ZONE = ZoneSettings(
    id="gate", type="no_dumping", polygon=[(0.1, 0.1), (0.9, 0.1), (0.9, 0.9), (0.1, 0.9)],
    lat=26.08, lon=119.3,
)  # fmt: skip


def test_a_camera_with_its_stream_down_gives_its_snapshot_as_evidence():
    refused = f"rtsp://127.0.0.1:{free_port()}/main"
    statuses: list[tuple[str, str]] = []
    with (
        FakeSnapshotServer(USER, PASSWORD, JPEG) as snapshots,
        CameraWithSnapshots({"main": refused}, snapshots.uri) as onvif,
    ):
        camera = CameraSettings(
            id="cam", url=f"onvif://{QUOTED}@127.0.0.1:{onvif.port}", zones=[ZONE]
        )
        runtime = VideoRuntime(
            [camera], NoDetections(), {}, deliver=lambda *_: None,
            on_status=lambda camera_id, status, *_: statuses.append((camera_id, status)),
            snapshot_refresh_s=5.0,
        )  # fmt: skip
        with pytest.raises(LookupError, match="analysed no frame yet"):
            runtime.evidence("cam", "gate", [])  # before the stream is known to be down
        runtime.start()
        try:
            wait_until(lambda: runtime.snapshots.latest("cam") is not None, "a snapshot taken", 15)
            drawn, before = runtime.evidence("cam", "gate", [])
            with pytest.raises(LookupError, match="camera cam has no zone 'nowhere'"):
                runtime.evidence("cam", "nowhere", [])
            stats = runtime.snapshot()
        finally:
            runtime.stop()
    assert ("cam", "reconnecting") in statuses
    assert before is None  # nothing was ever analysed, so no "before" picture
    assert drawn.shape == (240, 320, 3)
    assert_zone_drawn_on_the_snapshot(drawn)
    assert stats["snapshots"] >= 1 and stats.get("snapshot_errors", 0) == 0


def assert_zone_drawn_on_the_snapshot(drawn: np.ndarray) -> None:
    """``drawn`` is JPEG with ZONE's outline and the "stream down" note, nothing else."""
    plain = cv2.imdecode(np.frombuffer(JPEG, np.uint8), cv2.IMREAD_COLOR)
    changed = np.any(drawn != plain, axis=2)
    assert changed[24, 100:220].all()  # the zone's top edge, at y = 0.1 × 240
    assert changed[225:235, 8:100].any()  # "snapshot: stream down"
    assert not changed[100:140, 100:220].any()  # inside the zone, the picture as taken


def test_keeper_fetches_only_while_down_and_reports_a_refused_password():
    with (
        FakeSnapshotServer(USER, PASSWORD, JPEG) as snapshots,
        CameraWithSnapshots({"main": "rtsp://127.0.0.1:1/main"}, snapshots.uri) as onvif,
    ):
        good = CameraSettings(id="good", url=f"onvif://{QUOTED}@127.0.0.1:{onvif.port}",
                              zones=[ZONE])  # fmt: skip
        wrong = CameraSettings(id="wrong", url=f"onvif://admin:x@127.0.0.1:{onvif.port}",
                               zones=[ZONE])  # fmt: skip
        keeper = SnapshotKeeper([good, wrong], refresh_s=5.0)
        keeper.start()
        try:
            keeper.stream_status("good", "online")
            assert keeper.latest("good") is None and not snapshots.authorizations
            keeper.stream_status("good", "reconnecting")
            keeper.stream_status("wrong", "offline")
            wait_until(
                lambda: keeper.latest("good") is not None and "wrong" in keeper.last_error,
                "a snapshot taken and a refusal recorded",
                15,
            )
            assert keeper.latest("good").shape == (240, 320, 3)
            keeper.stream_status("good", "online")
            assert keeper.latest("good") is None
        finally:
            keeper.stop()
    assert keeper.stats == {"snapshots": 1, "snapshot_errors": 1}
    assert keeper.last_error == {"wrong": f"ONVIF 127.0.0.1:{onvif.port}: authentication "
                                 "failed (Sender not Authorized)"}  # fmt: skip
