"""Config of existing fleets' MQTT formats: where the device id, the time and each value
are in their messages, and how to turn them into our fields and units.

Everything that can be checked without a message is checked at load — field names against
the device kind, units against the field's accepted units, map values against the field's
type, topic levels against the filter — so that a config mistake is one error at start with
its line, not a stream of rejections later.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from devices.fleet.jsonpath import JsonPath
from devices.fleet.topics import check_filter, level_is_variable
from devices.kinds import KINDS, FieldSpec

TopicFilter = Annotated[str, AfterValidator(check_filter)]
ByteOrder = Literal["big", "little"]
BinaryType = Literal["u8", "i8", "u16", "i16", "u32", "i32", "f32"]
STRUCT_CODES: dict[str, str] = {
    "u8": "B", "i8": "b", "u16": "H", "i16": "h", "u32": "I", "i32": "i", "f32": "f",
}  # fmt: skip
CRC_SIZES = {"crc16_modbus": 2, "crc16_ccitt": 2, "crc32": 4}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _text_keys(cls: type, raw: Any) -> Any:
    """Map keys are matched as text. YAML reads unquoted on/off/yes/no/true/false as
    booleans, which would silently never match a device's "ON": refuse them."""
    if not isinstance(raw, dict):
        return raw
    keys: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise ValueError(f"map key {key!r} must be text or an integer: quote it in YAML")
        keys[str(key)] = value
    return keys


class DeviceIdSpec(_Model):
    """Where the device id is: a topic level (0-based) or a JSON path. ``prefix`` and
    ``suffix`` are added to make the registry id (``0042`` → ``WL-0042``)."""

    topic: int | None = Field(None, ge=0)
    path: JsonPath | None = None
    prefix: str = ""
    suffix: str = ""

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.topic is None) == (self.path is None):
            raise ValueError("give exactly one of topic (a level index) or path (a JSON path)")
        return self


class TsSpec(_Model):
    """The event time. No default format: mixing up seconds and milliseconds is the classic
    fleet-integration bug, so the config must say which."""

    path: JsonPath
    format: Literal["epoch_s", "epoch_ms", "iso8601"]
    # When the message lacks it, use the time it was received instead of refusing it.
    optional: bool = False


class ValueMapping(_Model):
    """How one raw value becomes our field's value: ``map`` first (enums, booleans), then
    ``raw * scale + offset`` in ``unit``, then the unit conversion to our canonical unit."""

    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    map: dict[str, bool | float] | None = None

    _keys = field_validator("map", mode="before")(_text_keys)

    def check_against(self, spec: FieldSpec, raw_is_integer: bool) -> None:
        """Raise ValueError when this mapping can never produce a valid value of ``spec``.
        ``raw_is_integer``: the raw value is a number (binary), so a boolean needs a map."""
        outputs = list(self.map.values()) if self.map is not None else []
        if spec.boolean:
            if not all(isinstance(v, bool) for v in outputs):
                raise ValueError(f"{spec.name} is true/false: map values must be true/false")
            if raw_is_integer and self.map is None:
                raise ValueError(f"{spec.name} is true/false: map the integer to true/false")
            if self.unit or self.scale != 1.0 or self.offset:
                raise ValueError(f"{spec.name} is true/false: unit, scale, offset do not apply")
            return
        if any(isinstance(v, bool) for v in outputs):
            raise ValueError(f"{spec.name} is a number: map values must be numbers")
        if self.unit is not None and self.unit not in dict(spec.units):
            accepted = ", ".join(u for u, _ in spec.units) or "none"
            raise ValueError(f"{spec.name} cannot take unit {self.unit!r} (accepted: {accepted})")


class JsonField(ValueMapping):
    path: JsonPath

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, raw: Any) -> Any:
        """``level_cm: $.data.wl`` is short for ``level_cm: {path: $.data.wl}``."""
        return {"path": raw} if isinstance(raw, str) else raw


class JsonCodec(_Model):
    type: Literal["json"]
    ts: TsSpec | None = None  # none: the time the message was received
    seq: JsonPath | None = None
    fields: dict[str, JsonField] = Field(min_length=1)


class BinaryField(ValueMapping):
    """One value in the fixed layout; without a name it is reserved bytes, skipped.
    ``ts`` (u32 epoch seconds) and ``seq`` (unsigned) are the reserved names."""

    name: str | None = None
    type: BinaryType

    @model_validator(mode="after")
    def _reserved_names(self) -> Self:
        plain = self.map is None and self.unit is None and self.scale == 1.0 and not self.offset
        if self.name == "ts" and (self.type != "u32" or not plain):
            raise ValueError("ts is u32 epoch seconds, without map, unit, scale or offset")
        if self.name == "seq" and (self.type[0] != "u" or not plain):
            raise ValueError("seq is an unsigned integer, without map, unit, scale or offset")
        if self.type == "f32" and self.map is not None:
            raise ValueError("an f32 value cannot be mapped: map needs exact integers")
        return self


class Crc(_Model):
    """A checksum over every byte before it, at the end of the payload."""

    algorithm: Literal["crc16_modbus", "crc16_ccitt", "crc32"]
    # Default: the layout's byte order. Modbus RTU frames carry their CRC little-endian.
    byte_order: ByteOrder | None = None


class Envelope(_Model):
    """The binary payload arrives as text inside a JSON message (LoRaWAN network servers,
    NB-IoT platforms): where it is and how it is encoded."""

    path: JsonPath
    encoding: Literal["base64", "hex"]


@dataclass(frozen=True, slots=True)
class Layout:
    """A binary codec compiled once at load: what decoding needs per message, as plain
    attributes (a pydantic private attribute costs a lookup chain on every access)."""

    struct: struct.Struct
    fields: tuple[BinaryField, ...]  # what struct.unpack returns, in order
    length: int  # bytes a payload must have: the layout plus its checksum
    crc: Crc | None
    crc_order: ByteOrder


class BinaryCodec(_Model):
    type: Literal["binary"]
    byte_order: ByteOrder
    fields: list[BinaryField] = Field(min_length=1)
    crc: Crc | None = None
    envelope: Envelope | None = None
    _layout: Layout = PrivateAttr()

    @model_validator(mode="after")
    def _compile(self) -> Self:
        named = tuple(f for f in self.fields if f.name is not None)
        names = [f.name for f in named]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"field name(s) used twice: {', '.join(duplicates)}")
        codes = "".join(
            STRUCT_CODES[f.type] if f.name is not None else f"{_size(f.type)}x" for f in self.fields
        )
        layout = struct.Struct((">" if self.byte_order == "big" else "<") + codes)
        crc_size = CRC_SIZES[self.crc.algorithm] if self.crc else 0
        crc_order = (self.crc.byte_order if self.crc else None) or self.byte_order
        self._layout = Layout(layout, named, layout.size + crc_size, self.crc, crc_order)
        return self

    @property
    def layout(self) -> Layout:
        return self._layout


class StatusSpec(_Model):
    """A fleet's online/offline messages (often its Last Will): topic, device id and which
    payloads mean what, e.g. ``{Online: true, Offline: false}``. With ``path`` the payload is
    JSON and the state is the value there; without, it is the payload text."""

    topic: TopicFilter
    device_id: DeviceIdSpec
    path: JsonPath | None = None
    map: dict[str, bool] = Field(min_length=1)
    _keys = field_validator("map", mode="before")(_text_keys)

    @model_validator(mode="after")
    def _id_source(self) -> Self:
        _check_id_level(self.topic, self.device_id)
        if self.device_id.path is not None and self.path is None:
            raise ValueError("device_id.path needs a JSON status payload: give path too")
        return self


class FleetSettings(_Model):
    """One existing fleet: its telemetry topic and format, optionally its status topic."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    topic: TopicFilter
    device_id: DeviceIdSpec
    # The kind of every device in the fleet; none: each device's kind from the registry.
    kind: str | None = None
    codec: JsonCodec | BinaryCodec = Field(discriminator="type")
    status: StatusSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_id_level(self.topic, self.device_id)
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} is not one of {', '.join(sorted(KINDS))}")
        codec = self.codec
        if isinstance(codec, BinaryCodec):
            if self.device_id.path is not None and codec.envelope is None:
                raise ValueError("a binary payload has no JSON paths: take device_id.topic")
            mappings = {f.name: f for f in codec.layout.fields if f.name not in ("ts", "seq")}
        else:
            mappings = dict(codec.fields)
        _check_fields(self.kind, mappings, isinstance(codec, BinaryCodec))
        return self


def _check_id_level(topic: str, device_id: DeviceIdSpec) -> None:
    if device_id.topic is not None and not level_is_variable(topic, device_id.topic):
        raise ValueError(
            f"device_id.topic {device_id.topic} is not a + or # level of {topic!r}"
            " (levels count from 0)"
        )


def _check_fields(kind: str | None, mappings: dict[str, Any], raw_is_integer: bool) -> None:
    """Field names, units and maps against the kind, or against every kind that has the
    field when the kind comes from the registry."""
    if kind is not None:
        specs = KINDS[kind]
        for name, mapping in mappings.items():
            if name not in specs:
                raise ValueError(f"kind {kind} has no field {name} (fields: {', '.join(specs)})")
            mapping.check_against(specs[name], raw_is_integer)
        missing = [n for n, s in specs.items() if s.required and n not in mappings]
        if missing:
            raise ValueError(f"kind {kind} needs field(s) {', '.join(missing)}")
        return
    for name, mapping in mappings.items():
        candidates = [specs[name] for specs in KINDS.values() if name in specs]
        if not candidates:
            raise ValueError(f"no device kind has a field {name}")
        errors = []
        for spec in candidates:
            try:
                mapping.check_against(spec, raw_is_integer)
            except ValueError as exc:
                errors.append(str(exc))
        if len(errors) == len(candidates):
            raise ValueError(errors[0])


def _size(binary_type: str) -> int:
    return struct.calcsize(STRUCT_CODES[binary_type])


def _unique(fleets: list[FleetSettings]) -> list[FleetSettings]:
    names = [f.name for f in fleets]
    if len(names) != len(set(names)):
        raise ValueError("fleet names must be unique")
    topics = [f.topic for f in fleets] + [f.status.topic for f in fleets if f.status]
    repeated = sorted({t for t in topics if topics.count(t) > 1})
    if repeated:
        raise ValueError(f"topic filter(s) used twice: {', '.join(repeated)}")
    return fleets


# The type of a config list of fleets (e.g. ``devices.fleets``), checked as a whole.
Fleets = Annotated[list[FleetSettings], AfterValidator(_unique)]
