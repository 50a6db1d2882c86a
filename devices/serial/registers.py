"""Modbus register maps: which reads fetch a slave's fields, and how register words become
field values the codec can check.

Pure (no I/O) so the word order, sign and scaling rules are tested without a bus. A reply
that does not fit its request (fewer registers or bits than asked, a word beyond 16 bits) is
a Rejection, never an IndexError: a slave that answers short must cost a counted dead
letter, not the reading silently. Values that decode to NaN or infinity (a float32 sensor
error code, a scale that overflows) are left for the codec to refuse, like any other value.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from devices.kinds import KINDS
from devices.rejections import Reason, Rejection
from devices.serial.settings import RegisterSettings

# Most a single request may ask for (Modbus application protocol, FC 1-4).
MAX_READ = {"holding": 125, "input": 125, "coil": 2000, "discrete": 2000}

_STRUCT = {"uint16": ">H", "int16": ">h", "uint32": ">I", "int32": ">i", "float32": ">f"}


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One request: ``count`` registers (or bits) of ``function`` from ``address``."""

    function: str
    address: int
    count: int
    registers: tuple[RegisterSettings, ...]


def read_blocks(registers: Sequence[RegisterSettings]) -> list[ReadBlock]:
    """As few requests as possible without reading any address the map does not name: a
    device may answer an unmapped address with an exception, so only fields that touch or
    overlap are read together."""
    blocks: list[ReadBlock] = []
    for function in MAX_READ:
        start = end = -1
        group: list[RegisterSettings] = []
        for register in sorted(
            (r for r in registers if r.function == function), key=lambda r: r.address
        ):
            r_end = register.address + register.width
            if group and register.address <= end and r_end - start <= MAX_READ[function]:
                end = max(end, r_end)
                group.append(register)
                continue
            if group:
                blocks.append(ReadBlock(function, start, end - start, tuple(group)))
            start, end, group = register.address, r_end, [register]
        if group:
            blocks.append(ReadBlock(function, start, end - start, tuple(group)))
    return blocks


def block_values(
    kind: str, block: ReadBlock, data: Sequence[int] | Sequence[bool]
) -> dict[str, Any] | Rejection:
    """The block's fields as codec input: a flag, a number in the field's canonical unit, or
    a unit-tagged ``{"value", "unit"}`` the codec converts (and rejects as bad_unit); or
    ``bad_schema`` when the reply does not fit the request."""
    asked = f"{block.function} {block.address}+{block.count}"
    if len(data) < block.count:
        detail = f"the reply to {asked} holds {len(data)} of {block.count}"
        return Rejection(Reason.BAD_SCHEMA, detail)
    if block.function not in ("coil", "discrete") and not all(
        0 <= word <= 0xFFFF for word in data[: block.count]
    ):
        return Rejection(Reason.BAD_SCHEMA, f"the reply to {asked} holds a word beyond 16 bits")
    values: dict[str, Any] = {}
    for register in block.registers:
        at = register.address - block.address
        if register.type == "bool":
            values[register.field] = bool(data[at])
            continue
        number = _number(register, [int(w) for w in data[at : at + register.width]])
        if KINDS[kind][register.field].boolean:
            values[register.field] = number != 0
            continue
        value = round(number * register.scale + register.offset, 9)
        values[register.field] = (
            value if register.unit is None else {"value": value, "unit": register.unit}
        )
    return values


def _number(register: RegisterSettings, words: list[int]) -> float:
    if register.word_order == "little":
        words = words[::-1]
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    number = struct.unpack(_STRUCT[register.type], raw)[0]
    if register.type == "float32":  # keep the digits a float32 has, not its binary tail
        return float(f"{number:.7g}")
    return number
