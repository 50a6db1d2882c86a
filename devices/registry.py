"""The device registry: which devices exist, what they are, where they stand.

Loaded from a CSV (one row per device) so that a city's asset list can be exported from
its GIS or 部件 inventory without code. Any column beyond the fixed ones is a per-device
override of a rule parameter (e.g. ``fire_for_s`` or ``fill_fire_pct``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from devices.kinds import KINDS
from domain import Location

FIXED_COLUMNS = ("device_id", "kind", "lat", "lon", "address", "grid_code", "part_code")
# Columns every water-level gauge carries (its own warning and alarm levels).
WATER_LEVEL_COLUMNS = ("warning_cm", "alarm_cm")


class RegistryError(ValueError):
    """A registry file that cannot be used; the message names file, line and column."""


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    kind: str
    location: Location
    part_code: str = ""
    # Per-device rule parameter overrides, as text from the file; the rules package
    # validates them against its own typed models.
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def part_type(self) -> str:
        """The 5-digit part type inside a 17-digit part id (area 6 + type 5 + serial 6)."""
        return self.part_code[6:11] if len(self.part_code) == 17 else ""


def load_registry(path: str | Path) -> dict[str, Device]:
    """Read the registry CSV; refuse the whole file on the first bad row, naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read device registry: {exc.strerror}") from exc
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in FIXED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise RegistryError(f"{path}:1: missing column(s) {', '.join(missing)}")
    devices: dict[str, Device] = {}
    for line_no, row in enumerate(reader, start=2):
        device = _parse_row(path, line_no, row)
        if device.device_id in devices:
            raise RegistryError(f"{path}:{line_no}: duplicate device_id {device.device_id!r}")
        devices[device.device_id] = device
    return devices


def _parse_row(path: Path, line_no: int, row: dict[str, str]) -> Device:
    where = f"{path}:{line_no}"
    device_id = (row.get("device_id") or "").strip()
    if not device_id or "/" in device_id or "+" in device_id or "#" in device_id:
        raise RegistryError(f"{where}: device_id must be non-empty, without / + #")
    kind = (row.get("kind") or "").strip()
    if kind not in KINDS:
        raise RegistryError(f"{where}: kind {kind!r} is not one of {', '.join(sorted(KINDS))}")
    lat = _number(where, "lat", row.get("lat"), -90, 90)
    lon = _number(where, "lon", row.get("lon"), -180, 180)
    part_code = (row.get("part_code") or "").strip()
    if part_code and not (part_code.isdigit() and len(part_code) in (16, 17)):
        raise RegistryError(f"{where}: part_code must be 16 or 17 digits, got {part_code!r}")
    grid_code = (row.get("grid_code") or "").strip()
    if grid_code and not (grid_code.isdigit() and len(grid_code) == 15):
        raise RegistryError(f"{where}: grid_code must be 15 digits, got {grid_code!r}")
    overrides = {
        k.strip(): v.strip()
        for k, v in row.items()
        if k and k not in FIXED_COLUMNS and v is not None and v.strip()
    }
    if kind == "water_level":
        for column in WATER_LEVEL_COLUMNS:
            if column not in overrides:
                raise RegistryError(f"{where}: water_level device needs column {column}")
    return Device(
        device_id=device_id,
        kind=kind,
        location=Location(lat, lon, (row.get("address") or "").strip(), grid_code),
        part_code=part_code,
        overrides=overrides,
    )


def _number(where: str, column: str, text: str | None, low: float, high: float) -> float:
    try:
        value = float((text or "").strip())
    except ValueError:
        raise RegistryError(f"{where}: column {column} must be a number, got {text!r}") from None
    if not low <= value <= high:
        raise RegistryError(f"{where}: column {column} must be within {low}..{high}")
    return value
