"""The serial line protocol as a device speaks it (``$WL,WL-101,42.5,91*24\\r\\n``).

Written out here rather than imported from ``devices/`` on purpose, like
``simulators.fleet.contract``: the simulated devices are independent clients, so a drift
between what the gateway parses and what a device sends fails a test instead of being
silently shared.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import reduce
from operator import xor

# Device kind -> (sentence type, fields in wire order).
SENTENCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "water_level": ("WL", ("level_cm", "battery_pct")),
    "manhole_cover": ("MH", ("tilt_deg", "lid_open", "battery_pct")),
    "bin": ("BN", ("fill_pct", "battery_pct")),
}


def sentence(
    kind: str, device_id: str, values: Mapping[str, float | bool], corrupt: bool = False
) -> bytes:
    """One sentence with its line end; a field missing from ``values`` is sent empty.
    ``corrupt`` sends a checksum that does not match (a bit flipped on the line)."""
    sentence_type, fields = SENTENCES[kind]
    body = ",".join([sentence_type, device_id, *(_text(values.get(f)) for f in fields)])
    check = reduce(xor, body.encode("ascii"), 0) ^ (0x5A if corrupt else 0)
    return f"${body}*{check:02X}\r\n".encode("ascii")


def _text(value: float | bool | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text
