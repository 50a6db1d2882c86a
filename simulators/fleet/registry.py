"""Read the device registry CSV the scenario points at (the same file the gateway loads).

The fleet only needs each device's id and kind to know what to publish; the rest of the row
(location, grid, part code, water-level thresholds, per-device overrides such as
``heartbeat_s`` in further columns) is the gateway's business, but the leading columns are
checked exactly so a scenario cannot ship a registry the gateway would read differently.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from simulators.fleet.contract import KIND_FIELDS

HEADER = (
    "device_id",
    "kind",
    "lat",
    "lon",
    "address",
    "grid_code",
    "part_code",
    "warning_cm",
    "alarm_cm",
)


class RegistryError(ValueError):
    """A registry file the fleet cannot use; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class RegisteredDevice:
    device_id: str
    kind: str


def load_registry(path: Path) -> dict[str, RegisteredDevice]:
    """Devices by id, in file order (the order the fleet publishes simultaneous readings)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read device registry: {exc.strerror}") from exc
    rows = list(csv.reader(text.splitlines()))
    if not rows or tuple(rows[0][: len(HEADER)]) != HEADER:
        raise RegistryError(f"{path}:1: header must start with {','.join(HEADER)}")
    header = rows[0]
    devices: dict[str, RegisteredDevice] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise RegistryError(f"{path}:{line_no}: expected {len(header)} columns, got {len(row)}")
        device = _parse_row(dict(zip(header, row, strict=True)), f"{path}:{line_no}")
        if device.device_id in devices:
            raise RegistryError(f"{path}:{line_no}: duplicate device_id {device.device_id!r}")
        devices[device.device_id] = device
    return devices


def _parse_row(row: dict[str, str], where: str) -> RegisteredDevice:
    kind = row["kind"]
    if kind not in KIND_FIELDS:
        raise RegistryError(f"{where}: kind {kind!r} is not one of {', '.join(KIND_FIELDS)}")
    if not row["device_id"]:
        raise RegistryError(f"{where}: device_id is empty")
    return RegisteredDevice(row["device_id"], kind)
