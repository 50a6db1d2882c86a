"""The ``serial`` section of the gateway config: which ports, how they are framed, and for
Modbus which slaves answer on the bus and where their values sit in the registers.

Shape checks live in the models (so pydantic reports them with the key path); checks that
need the device registry (does the device exist, does its kind have that field, can that
field take that unit) are ``registry_problems``, run once the registry is loaded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.kinds import KINDS
from devices.registry import Device

Loc = tuple[str | int, ...]

REGISTER_WIDTH = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2, "bool": 1}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterSettings(_Strict):
    """One field of a slave: read ``value = raw * scale + offset``, in ``unit`` (the
    field's canonical unit when left out). ``coil``/``discrete`` hold flags (type ``bool``);
    a flag in a register is 0 = false, anything else = true."""

    field: str
    address: int = Field(ge=0, le=65535)
    function: Literal["holding", "input", "coil", "discrete"] = "holding"
    type: Literal["uint16", "int16", "uint32", "int32", "float32", "bool"] = "uint16"
    # 32-bit values: "big" = high word first (the Modbus convention), "little" = low first.
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None

    @model_validator(mode="after")
    def _bits_are_bools(self) -> Self:
        if (self.function in ("coil", "discrete")) != (self.type == "bool"):
            raise ValueError("coil and discrete functions read type bool, registers do not")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self

    @property
    def width(self) -> int:
        return REGISTER_WIDTH[self.type]


class SlaveSettings(_Strict):
    unit: int = Field(ge=1, le=247)  # Modbus RTU slave address
    device: str
    poll_s: float = Field(10.0, gt=0)
    timeout_s: float = Field(0.5, gt=0)
    retries: int = Field(2, ge=0, le=10)  # immediate retries before the slave counts as down
    registers: list[RegisterSettings] = Field(min_length=1)

    @model_validator(mode="after")
    def _fields_once(self) -> Self:
        fields = Counter(r.field for r in self.registers)
        twice = sorted(f for f, n in fields.items() if n > 1)
        if twice:
            raise ValueError(f"field(s) mapped twice: {', '.join(twice)}")
        return self


class PortSettings(_Strict):
    path: str = Field(min_length=1)  # prefer a stable /dev/serial/by-id/... link
    framing: Literal["line", "modbus"]
    baudrate: int = Field(9600, gt=0)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: Literal[1, 1.5, 2] = 1
    slaves: list[SlaveSettings] = Field(default_factory=list)
    # Reopening a lost port (at once if its path reappears, else on this back-off).
    reconnect_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    # Probing a slave marked down: back-off from this, doubling up to the max.
    down_backoff_s: float = Field(5.0, gt=0)
    down_backoff_max_s: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _slaves_fit_framing(self) -> Self:
        if self.framing == "modbus" and not self.slaves:
            raise ValueError("a modbus port needs at least one slave")
        if self.framing == "line" and self.slaves:
            raise ValueError("a line port has no slaves (devices name themselves per line)")
        units = Counter(s.unit for s in self.slaves)
        twice = sorted(u for u, n in units.items() if n > 1)
        if twice:
            raise ValueError(f"unit id(s) used twice on one bus: {twice}")
        if self.reconnect_s > self.reconnect_max_s:
            raise ValueError("reconnect_s must not exceed reconnect_max_s")
        if self.down_backoff_s > self.down_backoff_max_s:
            raise ValueError("down_backoff_s must not exceed down_backoff_max_s")
        return self


class SimulatedClock(_Strict):
    """For simulations only: serial devices have no clock, so the gateway stamps readings;
    to replay a compressed scenario, its receive clock runs ``time_scale`` times faster than
    the wall clock, starting ``starts_s_ago`` in the past when the serial adapters start."""

    time_scale: float = Field(gt=0)
    starts_s_ago: float = Field(0.0, ge=0)


class SerialSettings(_Strict):
    ports: list[PortSettings] = Field(default_factory=list)
    simulated_clock: SimulatedClock | None = None

    @model_validator(mode="after")
    def _unique(self) -> Self:
        paths = Counter(p.path for p in self.ports)
        twice = sorted(p for p, n in paths.items() if n > 1)
        if twice:
            raise ValueError(f"port path(s) listed twice: {', '.join(twice)}")
        devices = Counter(s.device for p in self.ports for s in p.slaves)
        twice = sorted(d for d, n in devices.items() if n > 1)
        if twice:
            raise ValueError(f"device(s) polled by two slaves: {', '.join(twice)}")
        return self


def registry_problems(
    settings: SerialSettings, registry: Mapping[str, Device]
) -> list[tuple[Loc, str]]:
    """What the registry says is wrong with the slaves: (key path in the section, message)."""
    problems: list[tuple[Loc, str]] = []
    for p, port in enumerate(settings.ports):
        for s, slave in enumerate(port.slaves):
            loc: Loc = ("ports", p, "slaves", s)
            device = registry.get(slave.device)
            if device is None:
                problems.append(((*loc, "device"), f"{slave.device!r} is not in the registry"))
                continue
            specs = KINDS[device.kind]
            for r, register in enumerate(slave.registers):
                where: Loc = (*loc, "registers", r)
                spec = specs.get(register.field)
                if spec is None:
                    problems.append(
                        ((*where, "field"), f"{device.kind} has no field {register.field!r}")
                    )
                elif spec.boolean and register.type == "float32":
                    problems.append(((*where, "type"), f"{register.field} is a flag"))
                elif not spec.boolean and register.type == "bool":
                    problems.append(((*where, "type"), f"{register.field} is a number"))
                elif register.unit is not None and register.unit not in dict(spec.units):
                    accepted = ", ".join(u for u, _ in spec.units) or "none"
                    problems.append(((*where, "unit"), f"{register.field} takes units: {accepted}"))
            missing = sorted(
                n
                for n, spec in specs.items()
                if spec.required and n not in {r.field for r in slave.registers}
            )
            if missing:
                problems.append(((*loc, "registers"), f"missing field(s) {', '.join(missing)}"))
    return problems
