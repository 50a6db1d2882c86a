"""One JPEG from a camera's snapshot URI, bounded and authenticated.

The URI is the camera's configured ``snapshot_url`` or its ONVIF ``GetSnapshotUri``.

The snapshot service is plain HTTP beside the RTSP stream and often still answers when the
stream does not (RTSP session limit reached, encoder restarting), so it gives a current
picture of the place when the stream is down. The camera is another machine on the street:
the body is capped at ``max_bytes``, the whole fetch at ``timeout_s``, and the picture's
dimensions are read from the JPEG header before it is decoded, so a small file claiming a
huge image cannot take the gateway's memory. Credentials go only where the camera asks for
them, Digest preferred, Basic only when that is the challenge it sends.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Generator

import cv2
import httpx
import numpy as np

from detectors.sources.frame import SourceError
from detectors.sources.urls import redact_url, split_credentials

MAX_SNAPSHOT_BYTES = 8 * 1024 * 1024
MAX_SNAPSHOT_PIXELS = 7680 * 4320  # 8K; a street camera's snapshot is at most 4K
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers, not DHT etc.


class SnapshotError(SourceError):
    """No picture from the snapshot URI; ``reason`` says why (never with the password).

    ``refusal`` names a body that came but was refused ("too_large", "not_jpeg"), so the
    keeper can count a camera that answers with a login page apart from one that is down."""

    def __init__(self, reason: str, permanent: bool = False, refusal: str | None = None) -> None:
        super().__init__(reason, permanent)
        self.refusal = refusal


class CameraAuth(httpx.Auth):
    """Answers the camera's 401 challenge: Digest (RFC 7616) or Basic, as it asks.

    Nothing is sent before the challenge, so a password never goes out in the clear to a
    camera that would have taken Digest."""

    def __init__(self, user: str, password: str) -> None:
        self._digest = httpx.DigestAuth(user, password)
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._basic_header = f"Basic {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        if response.status_code != 401:
            return
        scheme = response.headers.get("WWW-Authenticate", "").split(" ", 1)[0].lower()
        if scheme == "digest":  # DigestAuth's flow, handed the challenge already received
            digest = self._digest.auth_flow(request)
            next(digest)
            answered = yield digest.send(response)
            with contextlib.suppress(StopIteration):
                digest.send(answered)
        elif scheme == "basic":
            request.headers["Authorization"] = self._basic_header
            yield request


def fetch_snapshot(
    uri: str,
    user: str = "",
    password: str = "",
    timeout_s: float = 5.0,
    max_bytes: int = MAX_SNAPSHOT_BYTES,
) -> np.ndarray:
    """The BGR picture at ``uri``; raises ``SnapshotError`` (transient: the camera may answer
    later; permanent when the credentials are refused).

    ``user``/``password`` answer the camera's challenge; without them, those in ``uri``
    do. Credentials are never sent in the URL itself (httpx would send them as Basic,
    unasked)."""
    where = f"snapshot {redact_url(uri)}"
    deadline = time.monotonic() + timeout_s
    bare_uri, uri_user, uri_password = split_credentials(uri)
    if not user:
        user, password = uri_user, uri_password
    auth = CameraAuth(user, password) if user else None
    try:
        with (
            httpx.Client(timeout=timeout_s, auth=auth, follow_redirects=False) as client,
            client.stream("GET", bare_uri) as response,
        ):
            if response.status_code == 401:
                raise SnapshotError(f"{where}: authentication failed (HTTP 401)", permanent=True)
            if response.status_code != 200:
                raise SnapshotError(f"{where}: HTTP {response.status_code}")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise SnapshotError(
                    f"{where}: {declared} bytes, more than {max_bytes}", refusal="too_large"
                )
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise SnapshotError(
                        f"{where}: more than {max_bytes} bytes", refusal="too_large"
                    )
                if time.monotonic() > deadline:
                    raise SnapshotError(f"{where}: no complete picture in {timeout_s:g} s")
    except (httpx.HTTPError, httpx.InvalidURL) as err:
        raise SnapshotError(f"{where}: {type(err).__name__}") from None
    return decode_jpeg(bytes(body), where)


def decode_jpeg(data: bytes, where: str = "snapshot") -> np.ndarray:
    """Decodes a JPEG whose header declares at most ``MAX_SNAPSHOT_PIXELS``."""
    width, height = jpeg_size(data, where)
    if width * height > MAX_SNAPSHOT_PIXELS:
        raise SnapshotError(
            f"{where}: {width}x{height} is larger than {MAX_SNAPSHOT_PIXELS} px",
            refusal="too_large",
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise SnapshotError(f"{where}: the JPEG could not be decoded", refusal="not_jpeg")
    return image


def jpeg_size(data: bytes, where: str = "snapshot") -> tuple[int, int]:
    """(width, height) from the JPEG's frame header, without decoding it."""
    if data[:2] != b"\xff\xd8":
        raise SnapshotError(f"{where}: not a JPEG", refusal="not_jpeg")
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            break
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if marker in _SOF_MARKERS:
            height = int.from_bytes(data[at + 5 : at + 7], "big")
            width = int.from_bytes(data[at + 7 : at + 9], "big")
            if width and height:
                return width, height
            break
        if length < 2:
            break
        at += 2 + length
    raise SnapshotError(f"{where}: a JPEG without a readable frame header", refusal="not_jpeg")
