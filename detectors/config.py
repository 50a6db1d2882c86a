"""Camera, zone and detector settings: typed, validated, shared by the video pipeline.

Zone polygons are in **normalised** image coordinates (0..1), so a camera that comes
back from a reconnect at another resolution keeps its zones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from domain import Category, Schedule

# Zone type → what a stall there is filed as (GB/T 47678.5 matter codes).
ZoneType = Literal["no_vending", "shop_front", "hawker", "no_dumping"]
STALL_CLASS_BY_ZONE = {"no_vending": "09006", "shop_front": "09005", "hawker": "09001"}


MAX_SNAPSHOT_URL_CHARS = 2048


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ZoneSettings(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    type: ZoneType
    polygon: list[tuple[float, float]] = Field(min_length=3)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    address: str = ""
    grid_code: str = Field("", pattern=r"^(\d{15})?$")
    # When the zone's rule is in force, in local time: a list of "HH:MM-HH:MM" windows, or
    # {windows, days}; empty = always. It is the zone's schedule in the rule settings.
    schedule: Schedule = Schedule()
    # no_dumping zones: 06010 暴露垃圾 by default, 06011 积存垃圾渣土 where configured.
    rubbish_class: Literal["06010", "06011"] = "06010"

    @model_validator(mode="after")
    def _normalised(self) -> Self:
        for x, y in self.polygon:
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError("polygon points are normalised image coordinates in 0..1")
        return self


class CameraSettings(_Strict):
    # Its URLs may carry passwords: a validation error's text never repeats its input.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    # rtsp://..., a video file path, or onvif://user:pass@host:port (stream URI looked up)
    url: str
    analyse_fps: float = Field(1.0, gt=0, le=30)
    # PyAV decodes only keyframes where the GOP allows; OpenCV is the fallback decoder.
    decoder: Literal["pyav", "opencv"] = "pyav"
    zones: list[ZoneSettings] = Field(min_length=1)
    offline_after_s: float = Field(60.0, gt=0)  # down this long → camera-offline alert
    stall_timeout_s: float = Field(10.0, gt=0)  # no frame this long → watchdog reconnects
    # http(s)://[user:pass@]host/path of one JPEG (Hikvision /ISAPI/Streaming/channels/101/
    # picture, Dahua /cgi-bin/snapshot.cgi): the evidence while the stream is down. Wins
    # over an ONVIF camera's looked-up snapshot URI. Without credentials it uses the stream
    # URL's, on the same host only.
    snapshot_url: str | None = Field(None, max_length=MAX_SNAPSHOT_URL_CHARS)

    @field_validator("snapshot_url")
    @classmethod
    def _http_snapshot_url(cls, url: str | None) -> str | None:
        """Checked whole at load, since a bad URL would otherwise only show on the day the
        stream fails; the messages never quote the URL, which may carry a password."""
        if url is None:
            return None
        if not all("!" <= char <= "~" for char in url):
            raise ValueError("must be printable ASCII without spaces (percent-encode the rest)")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- raises on a port that is not a number in 0..65535
            httpx.URL(url).host  # noqa: B018 -- the host is decoded (IDNA) only when read
        except (ValueError, httpx.InvalidURL):  # idna's IDNAError is a ValueError
            raise ValueError("is not a valid URL") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError("has no host")
        return url


class DetectorSettings(_Strict):
    model: Path
    backend: Literal["onnxruntime", "ultralytics"] = "onnxruntime"
    conf: float = Field(0.25, gt=0, lt=1)
    iou: float = Field(0.45, gt=0, lt=1)
    # Labels the model knows → what they count as. Unlisted labels are ignored.
    class_map: dict[str, Category] = {
        "person": Category.PERSON,
        "car": Category.VEHICLE,
        "bus": Category.VEHICLE,
        "truck": Category.VEHICLE,
        "motorcycle": Category.VEHICLE,
        "vehicle": Category.VEHICLE,
        "bicycle": Category.VEHICLE,
        "stall": Category.STALL_PART,
        "umbrella": Category.STALL_PART,
        "dining table": Category.STALL_PART,
        "chair": Category.STALL_PART,
        "rubbish": Category.RUBBISH,
        "suitcase": Category.RUBBISH,
        "backpack": Category.RUBBISH,
        "handbag": Category.RUBBISH,
    }
