"""ONVIF: ask a camera for its RTSP stream and snapshot URIs (Profile S media service).

Cameras are configured as ``onvif://user:pass@host:port[/profile_index]``; the stream
address is asked of the camera at each connection instead of being typed in, since it
differs per vendor, firmware and profile.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from detectors.sources.frame import SourceError
from detectors.sources.urls import with_credentials


class OnvifError(SourceError):
    """The camera's ONVIF service could not give a stream URI; ``reason`` says why."""


@dataclass(frozen=True, slots=True)
class OnvifEndpoints:
    stream_uri: str  # rtsp://, with the ONVIF credentials added when it carries none
    snapshot_uri: str | None  # HTTP JPEG snapshot; None when the camera has none
    profile_token: str


def parse_onvif_url(url: str) -> tuple[str, int, str, str, int]:
    """``onvif://user:pass@host:port/1`` → (host, port, user, password, profile index)."""
    parts = urlsplit(url)
    if parts.scheme != "onvif" or not parts.hostname:
        raise OnvifError(f"not an onvif://user:pass@host[:port][/profile] URL: {url!r}", True)
    index_text = parts.path.strip("/") or "0"
    if not index_text.isdigit():
        raise OnvifError(f"ONVIF profile must be a number, got {index_text!r}", permanent=True)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    return parts.hostname, parts.port or 80, user, password, int(index_text)


def resolve_onvif(
    host: str,
    port: int,
    user: str,
    password: str,
    profile_index: int = 0,
    timeout_s: float = 10.0,
) -> OnvifEndpoints:
    """Asks the camera's media service for the stream of one profile (RTP unicast, RTSP).

    Raises ``OnvifError``: transient when the camera is unreachable; permanent on an
    authentication failure (retrying can lock the account on many cameras) or when the
    camera has no such profile.
    """
    where = f"ONVIF {host}:{port}"
    try:
        media = _media_service(host, port, user, password, timeout_s)
        profiles = media.GetProfiles()
        if not profiles:
            raise OnvifError(f"{where}: the camera has no media profiles", permanent=True)
        if profile_index >= len(profiles):
            tokens = ", ".join(str(profile.token) for profile in profiles)
            raise OnvifError(
                f"{where}: profile {profile_index} asked, the camera has {len(profiles)} "
                f"({tokens})",
                permanent=True,
            )
        token = profiles[profile_index].token
        setup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
        stream = media.GetStreamUri({"StreamSetup": setup, "ProfileToken": token})
        snapshot_uri = _snapshot_uri(media, token)
    except OnvifError:
        raise
    except Exception as err:
        raise _classify(err, where) from err
    return OnvifEndpoints(with_credentials(str(stream.Uri), user, password), snapshot_uri, token)


def _snapshot_uri(media: Any, token: str) -> str | None:
    """Snapshots are optional in Profile S: a camera without them still streams."""
    from onvif.exceptions import ONVIFError

    try:
        return str(media.GetSnapshotUri({"ProfileToken": token}).Uri) or None
    except ONVIFError:
        return None


def _media_service(host: str, port: int, user: str, password: str, timeout_s: float) -> Any:
    onvif_camera = _import_onvif_camera()
    from zeep.transports import Transport

    camera = onvif_camera(
        host, port, user, password, wsdl_dir=str(wsdl_dir()), no_cache=True,
        transport=Transport(timeout=timeout_s, operation_timeout=timeout_s),
    )  # fmt: skip
    return camera.create_media_service()


def _import_onvif_camera() -> Any:
    """Imports onvif-zeep without letting it take over logging.

    onvif-zeep calls ``logging.basicConfig(level=INFO)`` at import; a NullHandler on the
    root logger during the import makes that a no-op when the application has none yet.
    """
    root = logging.getLogger()
    guard = None if root.handlers else logging.NullHandler()
    if guard:
        root.addHandler(guard)
    try:
        from onvif import ONVIFCamera
    finally:
        if guard:
            root.removeHandler(guard)
    return ONVIFCamera


def wsdl_dir() -> Path:
    """The WSDL files onvif-zeep needs: its wheel installs them beside the package."""
    spec = importlib.util.find_spec("onvif")  # not imported: see _import_onvif_camera
    if spec is None or spec.origin is None:
        raise OnvifError("onvif-zeep is not installed (pip install onvif-zeep)", permanent=True)
    package = Path(spec.origin).parent
    for candidate in (package.parent / "wsdl", package / "wsdl"):
        if (candidate / "devicemgmt.wsdl").is_file():
            return candidate
    raise OnvifError(f"onvif-zeep's WSDL files are missing (looked beside {package})", True)


def _classify(err: Exception, where: str) -> OnvifError:
    """onvif-zeep wraps every failure in ONVIFError("Unknown error: ..."): find the cause."""
    import requests
    from zeep.exceptions import Fault, TransportError

    chain: list[BaseException] = []
    cause: BaseException | None = err
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for cause in chain:
        if isinstance(cause, requests.exceptions.Timeout):
            return OnvifError(f"{where}: no answer (timed out)")
        if isinstance(cause, requests.exceptions.ConnectionError):
            refused = "refused" in str(cause).lower()
            return OnvifError(f"{where}: unreachable{' (connection refused)' if refused else ''}")
        if isinstance(cause, TransportError) and cause.status_code == 401:
            return OnvifError(f"{where}: authentication failed (HTTP 401)", permanent=True)
        if isinstance(cause, Fault):
            text = f"{cause.message} {cause.code} {cause.subcodes}"
            if "NotAuthorized" in text or "not authorized" in text.lower():
                return OnvifError(f"{where}: authentication failed ({cause.message})", True)
            return OnvifError(f"{where}: the camera answered a fault: {cause.message}")
    return OnvifError(f"{where}: {err}")
