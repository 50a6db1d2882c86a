"""Serial scenario files: which simulated devices hang on which bus, and what they do.

A serial scenario is a *layout* that points at a *timeline*. The timeline is an ordinary
fleet scenario (``simulators.scenario``: registry, kind defaults, per-device changes,
expected cases), so levels, spikes, ramps and the truth format are shared, not re-invented;
it must stage no MQTT faults and send no unit tags (on serial the unit is the register
map's). The layout says how the devices are wired::

    name: serial_builtin
    timeline: serial_builtin/timeline.yaml   # relative to this file
    buses:
      - name: gauges                         # becomes <dir>/gauges/{gateway,devices}
        framing: modbus
        timeout_s: 0.1                       # the gateway's settings for this bus, in real
        retries: 1                           # seconds (written into its serial config)
        slaves:
          - unit: 1
            device: WL-101
            registers:                       # the gateway's own RegisterSettings
              - {field: level_cm, address: 0, function: input, type: uint16, scale: 0.1}
            dead: [{from: 300, to: 540}]     # event seconds it does not answer
      - name: street
        framing: line
        devices: [MH-101, BIN-101]
        faults:                              # each provokes one counted rejection
          - {at: 95, kind: garbage}                      # line noise -> garbage
          - {at: 125, kind: bad_checksum, device: BIN-101}
          - {at: 200, kind: cut, device: MH-101}         # half a sentence -> garbage

Every registered device must be on exactly one bus. Times are event seconds, compressed by
the timeline's ``time_scale`` like the fleet's.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.serial import RegisterSettings as Register
from simulators.fleet.contract import (
    BOOLEAN_FIELDS,
    KIND_FIELDS,
    REQUIRED_FIELDS,
    SEND_UNIT_FACTORS,
)
from simulators.fleet.signal import series
from simulators.scenario import DeviceBehaviour, Scenario, ScenarioError, load_scenario
from simulators.yaml_errors import Loc, describe_problems, load_yaml_model

WHAT = "serial scenario"
BUILTIN_SERIAL_SCENARIO = Path(__file__).parents[1] / "scenarios" / "serial_builtin.yaml"
# The rejection each line fault provokes at the gateway.
FAULT_REASON = {"garbage": "garbage", "cut": "garbage", "bad_checksum": "bad_checksum"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeadWindow(_Strict):
    start: float = Field(alias="from", ge=0)
    end: float = Field(alias="to", gt=0)


class Slave(_Strict):
    unit: int = Field(ge=1, le=247)
    device: str
    registers: list[Register] = Field(min_length=1)
    dead: list[DeadWindow] = Field(default_factory=list)


class LineFault(_Strict):
    at: float = Field(ge=0)
    kind: Literal["garbage", "bad_checksum", "cut"]
    device: str | None = None  # bad_checksum and cut: whose sentence is spoiled

    @model_validator(mode="after")
    def _device_when_needed(self) -> Self:
        if (self.device is None) != (self.kind == "garbage"):
            raise ValueError("bad_checksum and cut faults name a device, garbage does not")
        return self


class Bus(_Strict):
    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    framing: Literal["line", "modbus"]
    baudrate: int = Field(9600, gt=0)
    devices: list[str] = Field(default_factory=list)  # line
    faults: list[LineFault] = Field(default_factory=list)  # line
    slaves: list[Slave] = Field(default_factory=list)  # modbus
    # The gateway's settings for a modbus bus, in real (not event) seconds.
    timeout_s: float = Field(0.1, gt=0)
    retries: int = Field(1, ge=0)
    down_backoff_s: float = Field(1.0, gt=0)
    down_backoff_max_s: float = Field(4.0, gt=0)

    @model_validator(mode="after")
    def _fits_framing(self) -> Self:
        if self.framing == "line" and (self.slaves or not self.devices):
            raise ValueError("a line bus lists devices (and no slaves)")
        if self.framing == "modbus" and (self.devices or self.faults or not self.slaves):
            raise ValueError("a modbus bus lists slaves (and no devices or faults)")
        units = [s.unit for s in self.slaves]
        if len(units) != len(set(units)):
            raise ValueError("unit ids must be unique on a bus")
        return self


class LayoutSpec(_Strict):
    name: str
    description: str = ""
    timeline: str
    buses: list[Bus] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Samples:
    """What a device measured, one row of field values every ``interval_ms`` of event time
    (the fleet's signal model: baseline, changes, spikes, seeded noise)."""

    interval_ms: int
    rows: list[dict[str, float | bool]]

    def at(self, offset_ms: float) -> dict[str, float | bool]:
        """The latest sample at an event offset (held after the timeline ends)."""
        return self.rows[max(0, min(len(self.rows) - 1, int(offset_ms // self.interval_ms)))]


def device_samples(behaviour: DeviceBehaviour, duration_ms: int, seed: int) -> Samples:
    offsets = behaviour.reading_offsets_ms(duration_ms)
    times_s = [o / 1000 for o in offsets]
    columns = {
        name: series(spec, times_s, random.Random(f"{seed}/{behaviour.device_id}/{name}"))
        for name, spec in behaviour.fields.items()
    }
    rows = [{name: column[i] for name, column in columns.items()} for i in range(len(offsets))]
    return Samples(behaviour.interval_ms, rows)


@dataclass(frozen=True, slots=True)
class SerialScenario:
    spec: LayoutSpec
    path: Path
    timeline: Scenario

    def samples(self, seed: int) -> dict[str, Samples]:
        return {
            b.device_id: device_samples(b, self.timeline.duration_ms, seed)
            for b in self.timeline.behaviours
        }

    def expected_truth(self) -> dict[str, Any]:
        """The timeline's expected cases, and one rejection per staged line fault."""
        truth = self.timeline.expected_truth()
        staged = Counter(FAULT_REASON[f.kind] for bus in self.spec.buses for f in bus.faults)
        truth["expected_rejections"] = {**truth["expected_rejections"], **staged}
        return truth


def load_serial_scenario(path: str | Path) -> SerialScenario:
    """Load and check a layout and its timeline; every problem is named file:line: field."""
    path = Path(path)
    spec, tree = load_yaml_model(path, LayoutSpec, WHAT, ScenarioError)
    timeline = load_scenario(path.parent / spec.timeline)
    problems = _wiring_problems(spec, timeline)
    if problems:
        raise ScenarioError(describe_problems(str(path), WHAT, tree, problems))
    return SerialScenario(spec, path, timeline)


def _wiring_problems(spec: LayoutSpec, timeline: Scenario) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    if timeline.spec.faults:
        problems.append((("timeline",), "the timeline stages MQTT faults; use line faults"))
    behaviours = {b.device_id: b for b in timeline.behaviours}
    for device_id, behaviour in behaviours.items():
        if any(f.unit is not None for f in behaviour.fields.values()):
            problems.append(
                (("timeline",), f"{device_id}: no unit tags on serial; set units per register")
            )
    wired: Counter[str] = Counter()
    for b, bus in enumerate(spec.buses):
        wired.update(bus.devices)
        wired.update(s.device for s in bus.slaves)
        if bus.framing == "line":
            problems += _line_bus_problems(("buses", b), bus, timeline)
        else:
            problems += _modbus_bus_problems(("buses", b), bus, timeline)
    for device_id in behaviours:
        if wired[device_id] != 1:
            problems.append((("buses",), f"{device_id} is on {wired[device_id]} buses, not 1"))
    names = Counter(bus.name for bus in spec.buses)
    problems += [(("buses",), f"bus name {n!r} used twice") for n, c in names.items() if c > 1]
    return problems


def _line_bus_problems(loc: Loc, bus: Bus, timeline: Scenario) -> list[tuple[Loc, str]]:
    behaviours = {b.device_id: b for b in timeline.behaviours}
    problems: list[tuple[Loc, str]] = [
        ((*loc, "devices", d), f"{device_id} is not registered")
        for d, device_id in enumerate(bus.devices)
        if device_id not in behaviours
    ]
    last_ms = max(
        (
            behaviours[d].reading_offsets_ms(timeline.duration_ms)[-1]
            for d in bus.devices
            if d in behaviours
        ),
        default=0,
    )
    for f, fault in enumerate(bus.faults):
        where: Loc = (*loc, "faults", f)
        if fault.at >= timeline.spec.duration_s:
            problems.append(((*where, "at"), "past the end of the timeline"))
        elif fault.kind == "cut" and fault.at * 1000 >= last_ms:
            problems.append(((*where, "at"), "a cut sentence needs a later one to end it"))
        if fault.device is not None and fault.device not in bus.devices:
            problems.append(((*where, "device"), "not on this bus"))
    return problems


def _modbus_bus_problems(loc: Loc, bus: Bus, timeline: Scenario) -> list[tuple[Loc, str]]:
    kinds = {b.device_id: b.kind for b in timeline.behaviours}
    problems: list[tuple[Loc, str]] = []
    for s, slave in enumerate(bus.slaves):
        where: Loc = (*loc, "slaves", s)
        if slave.device not in kinds:
            problems.append(((*where, "device"), f"{slave.device} is not registered"))
            continue
        problems += _register_problems(where, kinds[slave.device], slave.registers)
        for w, window in enumerate(slave.dead):
            if not window.start < window.end <= timeline.spec.duration_s:
                problems.append(((*where, "dead", w), "needs from < to <= the duration"))
    return problems


def _register_problems(loc: Loc, kind: str, registers: list[Register]) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    fields = Counter(r.field for r in registers)
    for r, register in enumerate(registers):
        where: Loc = (*loc, "registers", r)
        if register.field not in KIND_FIELDS[kind]:
            problems.append(((*where, "field"), f"{kind} has no field {register.field!r}"))
        elif fields[register.field] > 1:
            problems.append(((*where, "field"), "mapped twice"))
        elif (register.field in BOOLEAN_FIELDS) and register.type == "float32":
            problems.append(((*where, "type"), f"{register.field} is a flag"))
        elif register.field not in BOOLEAN_FIELDS and register.type == "bool":
            problems.append(((*where, "type"), f"{register.field} is a number"))
        elif register.unit is not None and register.unit not in SEND_UNIT_FACTORS.get(
            register.field, {}
        ):
            problems.append(
                ((*where, "unit"), f"{register.field} cannot be sent in {register.unit!r}")
            )
    missing = REQUIRED_FIELDS[kind] - fields.keys()
    if missing:
        problems.append(((*loc, "registers"), f"missing field(s) {sorted(missing)}"))
    return problems
