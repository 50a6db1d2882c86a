"""Fixed binary layouts: unwrap the payload, check its length and checksum, unpack it."""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any

from devices.fleet.jsonpath import MISSING
from devices.fleet.settings import BinaryCodec, Crc, Layout
from devices.json_doc import load_json
from devices.rejections import Reason, Rejection


def unwrap(
    codec: BinaryCodec, payload: bytes, max_json_depth: int
) -> tuple[bytes, Any] | Rejection:
    """The layout's bytes and the JSON envelope they came in (None for a raw payload)."""
    envelope = codec.envelope
    if envelope is None:
        return payload, None
    doc = load_json(payload, max_json_depth)
    if isinstance(doc, Rejection):
        return doc
    text = envelope.path.resolve(doc)
    if text is MISSING or not isinstance(text, str):
        return Rejection(Reason.BAD_SCHEMA, f"no {envelope.encoding} text at {envelope.path}")
    try:
        if envelope.encoding == "hex":
            return bytes.fromhex(text), doc
        return base64.b64decode(text, validate=True), doc
    except (ValueError, binascii.Error):
        return Rejection(Reason.BAD_SCHEMA, f"{envelope.path} is not valid {envelope.encoding}")


def unpack(layout: Layout, data: bytes) -> tuple[Any, ...] | Rejection:
    """The named fields' raw values in layout order, or why the bytes do not fit: a wrong
    length is a schema problem, a wrong CRC is corruption on the way (``bad_checksum``)."""
    if len(data) != layout.length:
        detail = f"payload is {len(data)} bytes, the layout expects {layout.length}"
        return Rejection(Reason.BAD_SCHEMA, detail)
    if layout.crc is not None:
        size = layout.struct.size
        sent = int.from_bytes(data[size:], layout.crc_order)
        computed = checksum(layout.crc, data[:size])
        if sent != computed:
            detail = f"{layout.crc.algorithm} is {sent:#x}, computed {computed:#x}"
            return Rejection(Reason.BAD_CHECKSUM, detail)
    return layout.struct.unpack_from(data)


def checksum(crc: Crc, data: bytes) -> int:
    if crc.algorithm == "crc32":
        return zlib.crc32(data)
    if crc.algorithm == "crc16_ccitt":  # CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF
        return binascii.crc_hqx(data, 0xFFFF)
    return crc16_modbus(data)


def _modbus_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_MODBUS = _modbus_table()


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), a table lookup per byte."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _MODBUS[(crc ^ byte) & 0xFF]
    return crc
