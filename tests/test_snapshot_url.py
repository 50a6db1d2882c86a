"""A camera's configured ``snapshot_url`` (Hikvision ISAPI, Dahua snapshot.cgi and the like):
validated at load without ever quoting its password, fetched over real HTTP on loopback
(a FAKE camera's snapshot service, tests/fake_onvif_device.py) with Digest or Basic only
when challenged, refused bodies counted by kind, and, end to end, the snapshot as the
evidence of a plain rtsp:// camera whose stream is down."""

from __future__ import annotations

import textwrap
from urllib.parse import quote, urlsplit

import cv2
import httpx
import numpy as np
import pytest
from fake_onvif_device import FakeSnapshotServer
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from test_snapshot_evidence import (
    JPEG,
    PICTURE,
    ZONE,
    CameraWithSnapshots,
    NoDetections,
    assert_zone_drawn_on_the_snapshot,
    street_picture,
    with_size,
)
from test_video_sources import PASSWORD, QUOTED, USER

from detectors.config import CameraSettings
from detectors.sources.snapshot import fetch_snapshot
from detectors.sources.snapshot_keeper import SnapshotKeeper, stream_credentials
from detectors.sources.urls import redact_url, split_credentials
from gateway.config import ConfigError, load_config
from gateway.video import VideoRuntime
from simulators.mosquitto import free_port

from harness import wait_until


def camera(url: str, snapshot_url: str | None, camera_id: str = "cam") -> CameraSettings:
    return CameraSettings(id=camera_id, url=url, zones=[ZONE], snapshot_url=snapshot_url)


def refused_rtsp(credentials: str = QUOTED) -> str:
    """A stream nobody serves: the camera's stream is down from the start."""
    return f"rtsp://{credentials}@127.0.0.1:{free_port()}/Streaming/Channels/101"


# Validation: any text is a usable http(s) URL or an error naming snapshot_url.


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=80)
    | st.builds(
        lambda scheme, rest: f"{scheme}://{rest}",
        st.sampled_from(["http", "https", "HTTP", "ftp", "rtsp", "onvif", ""]),
        st.text(st.characters(codec="ascii"), max_size=40),
    )
)
def test_any_snapshot_url_is_usable_or_an_error_that_does_not_repeat_it(text):
    try:
        settings_ = camera("rtsp://10.0.0.5/1", text)
    except ValidationError as err:
        (error,) = err.errors()
        assert error["loc"] == ("snapshot_url",)
        assert "input_value" not in str(err)
    else:
        bare, _user, _password = split_credentials(settings_.snapshot_url)
        url = httpx.URL(bare)
        assert url.scheme in ("http", "https") and url.host
        assert "@" not in urlsplit(bare).netloc


@settings(max_examples=150, deadline=None)
@given(
    user=st.text(min_size=1, max_size=12),
    password=st.text(min_size=1, max_size=12).map(lambda p: "\u00a7" + p),
    host=st.sampled_from(["cam-7.street.local", "10.0.0.5", "[fe80::1]"]),
    port=st.none() | st.integers(1, 65535),
)
def test_credentials_in_a_snapshot_url_round_trip_and_are_never_shown(user, password, host, port):
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (
        f":{port}" if port else ""
    )
    url = f"http://{netloc}/ISAPI/Streaming/channels/101/picture"
    assert camera("rtsp://10.0.0.5/1", url).snapshot_url == url
    bare = f"http://{host}{f':{port}' if port else ''}/ISAPI/Streaming/channels/101/picture"
    assert split_credentials(url) == (bare, user, password)
    assert quote(password, safe="") not in redact_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://admin:Secr3t-pw@cam/x",
         "Value error, must be an http:// or https:// URL (got 'ftp://***@cam/x')"),
        ("http://admin:Secr3t-pw@cam:99999/x",
         "Value error, is not a valid URL (got 'http://***@cam:99999/x')"),
        ("http://admin:Secr3t-pw@/x", "Value error, has no host (got 'http://***@/x')"),
        ("http://admin:Secr3t-pw@cam/a b", "Value error, must be printable ASCII without "
         "spaces (percent-encode the rest) (got 'http://***@cam/a b')"),
        ("http://admin:Secr3t-pw@cam/" + "x" * 2048, "String should have at most 2048 "
         "characters (got 'http://***@cam/" + "x" * 64 + "...)"),
    ],
)  # fmt: skip
def test_a_bad_snapshot_url_in_the_config_names_the_key_and_hides_the_password(
    tmp_path, url, message
):
    (tmp_path / "devices.csv").write_text(
        "device_id,kind,lat,lon,address,grid_code,part_code,warning_cm,alarm_cm\n", "utf-8"
    )
    path = tmp_path / "gw.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        mqtt: {{url: "mqtt://127.0.0.1:1883"}}
        devices: {{registry: devices.csv}}
        store: {{path: var/gw.db}}
        case_platform: {{url: "http://127.0.0.1:8081", token: t}}
        video:
          detector: {{model: m.onnx}}
          cameras:
            - id: gate
              url: rtsp://admin:Secr3t-pw@cam/Streaming/Channels/101
              snapshot_url: "{url}"
              zones:
                - {{id: z, type: no_dumping, polygon: [[0, 0], [1, 0], [1, 1]], lat: 26, lon: 119}}
        """),
        "utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (
        str(info.value).splitlines()[1] == f"  {path}:10: video.cameras.0.snapshot_url: {message}"
    )
    assert "Secr3t-pw" not in str(info.value)


def test_a_snapshot_url_without_credentials_borrows_the_streams_on_the_same_host_only():
    stream = "rtsp://admin:p%40ss@10.0.0.5:554/Streaming/Channels/101"
    assert stream_credentials(camera(stream, "http://10.0.0.5/pic")) == ("admin", "p@ss")
    assert stream_credentials(camera(stream, "http://10.0.0.6/pic")) == ("", "")
    assert stream_credentials(camera(stream, "http://viewer:v@10.0.0.5/pic")) == ("", "")
    assert stream_credentials(camera("/footage/gate.mp4", "http://10.0.0.5/pic")) == ("", "")


# Fetching over real HTTP.


def test_credentials_in_the_url_answer_a_digest_challenge_and_never_go_as_basic():
    with FakeSnapshotServer(USER, PASSWORD, JPEG) as server:
        picture = fetch_snapshot(server.uri.replace("http://", f"http://{QUOTED}@"))
    assert np.abs(picture.astype(int) - PICTURE).mean() < 2
    first, *answers = server.authorizations
    assert first == ""  # httpx would have sent the URL's credentials as Basic, unasked
    assert answers and all(a.startswith('Digest username="admin"') for a in answers)


def test_keeper_takes_a_plain_rtsp_cameras_snapshot_url_and_counts_refused_bodies():
    other = street_picture(160, 120)
    with (
        FakeSnapshotServer(USER, PASSWORD, JPEG) as digest,
        FakeSnapshotServer(USER, PASSWORD, cv2.imencode(".jpg", other)[1].tobytes(),
                           auth="basic") as basic,
        FakeSnapshotServer(USER, PASSWORD, b"<html>please log in</html>") as login_page,
        FakeSnapshotServer(USER, PASSWORD, with_size(JPEG, 60000, 60000)) as huge,
    ):  # fmt: skip
        cameras = [
            camera(refused_rtsp(), digest.uri, "borrowed"),  # stream's credentials, same host
            camera(refused_rtsp("x:y"), basic.uri.replace("http://", f"http://{QUOTED}@"), "basic"),
            camera(refused_rtsp(), login_page.uri, "login"),
            camera(refused_rtsp(), huge.uri, "huge"),
            camera(refused_rtsp(), f"http://127.0.0.1:{free_port()}/cgi-bin/snapshot.cgi", "gone"),
            camera(refused_rtsp(), None, "plain"),  # no snapshot: the keeper leaves it alone
        ]
        keeper = SnapshotKeeper(cameras, refresh_s=5.0, timeout_s=2.0)
        keeper.start()
        try:
            for settings_ in cameras:
                keeper.stream_status(settings_.id, "reconnecting")
            wait_until(
                lambda: keeper.stats["snapshots"] == 2 and keeper.stats["snapshot_errors"] == 3,
                "two snapshots taken and three refusals recorded",
                15,
            )
            pictures = {c.id: keeper.latest(c.id) for c in cameras}
        finally:
            keeper.stop()
    assert pictures["borrowed"].shape == (240, 320, 3)
    assert pictures["basic"].shape == (120, 160, 3)
    assert pictures["login"] is pictures["huge"] is pictures["gone"] is pictures["plain"] is None
    assert basic.authorizations == ["", "Basic YWRtaW46cEBzczp3"]
    assert keeper.stats == {
        "snapshots": 2,
        "snapshot_errors": 3,
        "snapshots_refused_not_jpeg": 1,
        "snapshots_refused_too_large": 1,
    }
    assert keeper.last_error["login"] == f"snapshot {login_page.uri}: not a JPEG"
    assert keeper.last_error["huge"].endswith(": 60000x60000 is larger than 33177600 px")
    assert keeper.last_error["gone"].endswith("/cgi-bin/snapshot.cgi: ConnectError")
    everything = repr(keeper.last_error) + repr(digest.authorizations + basic.authorizations)
    assert PASSWORD not in everything and QUOTED not in everything


def test_a_configured_snapshot_url_wins_over_the_onvif_one():
    other = street_picture(160, 120)
    with (
        FakeSnapshotServer(USER, PASSWORD, JPEG) as looked_up,
        FakeSnapshotServer(USER, PASSWORD, cv2.imencode(".jpg", other)[1].tobytes()) as configured,
        CameraWithSnapshots({"main": "rtsp://127.0.0.1:1/main"}, looked_up.uri) as onvif,
    ):
        keeper = SnapshotKeeper(
            [camera(f"onvif://{QUOTED}@127.0.0.1:{onvif.port}", configured.uri)], refresh_s=5.0
        )
        keeper.start()
        try:
            keeper.stream_status("cam", "offline")
            wait_until(lambda: keeper.latest("cam") is not None, "a snapshot taken", 15)
        finally:
            keeper.stop()
    assert keeper.latest("cam").shape == (120, 160, 3)
    assert looked_up.authorizations == [] and onvif.requests == []


# End to end: a plain rtsp:// camera's stream is refused, its snapshot_url answers.


def test_a_plain_rtsp_camera_with_its_stream_down_gives_its_snapshot_as_evidence():
    statuses: list[tuple[str, str]] = []
    with FakeSnapshotServer(USER, PASSWORD, JPEG) as snapshots:
        runtime = VideoRuntime(
            [camera(refused_rtsp(), snapshots.uri.replace("http://", f"http://{QUOTED}@"))],
            NoDetections(), {}, deliver=lambda *_: None,
            on_status=lambda camera_id, status, *_: statuses.append((camera_id, status)),
            snapshot_refresh_s=5.0,
        )  # fmt: skip
        runtime.start()
        try:
            wait_until(lambda: runtime.snapshots.latest("cam") is not None, "a snapshot taken", 15)
            drawn, before = runtime.evidence("cam", "gate", [])
            stats = runtime.snapshot()
        finally:
            runtime.stop()
    assert ("cam", "reconnecting") in statuses
    assert before is None
    assert_zone_drawn_on_the_snapshot(drawn)
    assert stats["snapshots"] >= 1 and stats.get("snapshot_errors", 0) == 0
    assert PASSWORD not in repr(stats) and QUOTED not in repr(stats)
