"""A case's location as the platform expects it, from the gateway's WGS-84 degrees.

Chinese platforms rarely take WGS-84 as it is. Three kinds of system are in use:

- ``gcj02``: the datum every Chinese web map (Amap/Gaode, Tencent, Google China) draws in:
  WGS-84 shifted by a published, deliberately irregular function of position (offsets of a
  few hundred metres). Outside mainland China's bounding box (the one the map services and
  every implementation use) GCJ-02 is WGS-84 unchanged.
- ``bd09``: Baidu's further rotation-and-shift of GCJ-02.
- ``EPSG:<code>``: a projected system in metres, run through pyproj (PROJ and its EPSG
  tables), e.g. CGCS2000 / 3-degree Gauss-Kruger CM 120E (EPSG:4549; EPSG:4528 is the same
  zone with the zone number 40 prefixed to the easting) for Fuzhou at ~119.3°E, or UTM.
  CGCS2000 and WGS-84 differ by centimetres, below what a case location means; PROJ treats
  them as equal here. ``x`` is the easting and ``y`` the northing (GIS order, as ArcGIS and
  most 数字城管 GIS layers give them; a platform that uses survey order, X north, maps
  ``coordinate: y`` to its X field).

For ``wgs84``, ``gcj02`` and ``bd09``, ``x`` is the longitude and ``y`` the latitude.

Why GCJ-02 and BD-09 are computed here rather than by a library: the conversion is one
published function (the Krasovsky-ellipsoid offset polynomials below, and Baidu's
``x_pi`` rotation), and no maintained library fits. The maintained ``prcoords-typed`` needs
Python 3.14; ``coordTransform`` 0.2.1 (2026) is a native wheel whose single-point path is
this same function; ``eviltransform`` (2018), ``prcoords`` (2019) and ``coord-convert``
(2019, needs GDAL through fiona) are unmaintained. ``tests/test_coordinates.py`` holds
the function to published reference pairs (the map services' own conversion API and the
reference implementation's test points) to 1e-6 degrees.
"""

from __future__ import annotations

import math
import re

import pyproj

GEOGRAPHIC_SYSTEMS = ("wgs84", "gcj02", "bd09")
SYSTEM_PATTERN = re.compile(r"wgs84|gcj02|bd09|EPSG:[0-9]{4,6}")

# GCJ-02 is defined on the Krasovsky 1940 ellipsoid.
_KRASOVSKY_A = 6378245.0
_KRASOVSKY_EE = 0.00669342162296594323
# Baidu's rotation constant and shifts (degrees).
_BD_X_PI = math.pi * 3000.0 / 180.0
_BD_DLON = 0.0065
_BD_DLAT = 0.006


def in_china(lat: float, lon: float) -> bool:
    """Inside the box where GCJ-02 differs from WGS-84."""
    return 72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271


def wgs84_to_gcj02(lat: float, lon: float) -> tuple[float, float]:
    """(lat, lon) in GCJ-02; WGS-84 unchanged outside China."""
    if not in_china(lat, lon):
        return lat, lon
    x, y = lon - 105.0, lat - 35.0
    north_m = _north_offset_m(x, y)
    east_m = _east_offset_m(x, y)
    phi = math.radians(lat)
    w = 1.0 - _KRASOVSKY_EE * math.sin(phi) ** 2
    # Metres per degree of latitude (meridian radius) and of longitude (parallel radius).
    m_per_deg_lat = math.radians(_KRASOVSKY_A * (1.0 - _KRASOVSKY_EE) / (w * math.sqrt(w)))
    m_per_deg_lon = math.radians(_KRASOVSKY_A / math.sqrt(w) * math.cos(phi))
    return lat + north_m / m_per_deg_lat, lon + east_m / m_per_deg_lon


def gcj02_to_bd09(lat: float, lon: float) -> tuple[float, float]:
    """(lat, lon) in BD-09 from GCJ-02."""
    radius = math.hypot(lon, lat) + 0.00002 * math.sin(lat * _BD_X_PI)
    angle = math.atan2(lat, lon) + 0.000003 * math.cos(lon * _BD_X_PI)
    return radius * math.sin(angle) + _BD_DLAT, radius * math.cos(angle) + _BD_DLON


def _north_offset_m(x: float, y: float) -> float:
    waves = (
        20.0 * math.sin(6.0 * x * math.pi)
        + 20.0 * math.sin(2.0 * x * math.pi)
        + 20.0 * math.sin(y * math.pi)
        + 40.0 * math.sin(y / 3.0 * math.pi)
        + 160.0 * math.sin(y / 12.0 * math.pi)
        + 320.0 * math.sin(y / 30.0 * math.pi)
    )
    trend = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    return trend + waves * 2.0 / 3.0


def _east_offset_m(x: float, y: float) -> float:
    waves = (
        20.0 * math.sin(6.0 * x * math.pi)
        + 20.0 * math.sin(2.0 * x * math.pi)
        + 20.0 * math.sin(x * math.pi)
        + 40.0 * math.sin(x / 3.0 * math.pi)
        + 150.0 * math.sin(x / 12.0 * math.pi)
        + 300.0 * math.sin(x / 30.0 * math.pi)
    )
    trend = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    return trend + waves * 2.0 / 3.0


class PlatformCoordinates:
    """Converts WGS-84 (lat, lon) to a platform's (x, y) in one configured system.

    Built once per adapter: a projected system's pyproj transformer is made here, and an
    unknown or unsuitable EPSG code is a ``ValueError`` at configuration time.
    """

    def __init__(self, system: str) -> None:
        if not SYSTEM_PATTERN.fullmatch(system):
            raise ValueError(
                f"coordinate system must be one of {', '.join(GEOGRAPHIC_SYSTEMS)} or"
                f" 'EPSG:<code>' of a projected system in metres, got {system[:40]!r}"
            )
        self.system = system
        self._transformer: pyproj.Transformer | None = None
        if system.startswith("EPSG:"):
            self._transformer = _projection(system)

    def xy(self, lat: float, lon: float) -> tuple[float, float]:
        """(x, y): (lon, lat) in a geographic system, (easting, northing) in metres in a
        projected one. ``ValueError`` for a position that has no finite answer."""
        if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90):
            raise ValueError(f"not a WGS-84 position: lat {lat!r}, lon {lon!r}")
        if not -180 <= lon <= 180:
            raise ValueError(f"not a WGS-84 position: lat {lat!r}, lon {lon!r}")
        if self._transformer is not None:
            x, y = self._transformer.transform(lon, lat, errcheck=False)
        elif self.system == "wgs84":
            x, y = lon, lat
        else:
            lat, lon = wgs84_to_gcj02(lat, lon)
            if self.system == "bd09":
                lat, lon = gcj02_to_bd09(lat, lon)
            x, y = lon, lat
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"lat {lat}, lon {lon} has no position in {self.system}")
        return x, y


def _projection(system: str) -> pyproj.Transformer:
    try:
        crs = pyproj.CRS.from_user_input(system)
    except pyproj.exceptions.CRSError:
        raise ValueError(f"{system} is not a coordinate system in the EPSG tables") from None
    units = {axis.unit_name for axis in crs.axis_info}
    if not crs.is_projected or units != {"metre"}:
        raise ValueError(f"{system} ({crs.name}) is not a projected system in metres")
    return pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
