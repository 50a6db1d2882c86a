"""Scenario files: what a simulated device fleet does over an event-time window, and what the
tester expects the gateway to make of it.

A scenario is YAML, validated here with pydantic; every problem is reported with the file,
the line and the field, so a tester editing a timeline gets told exactly what is wrong. The
format, in short (times are event-time seconds from the start of the window)::

    name: builtin
    duration_s: 1800
    time_scale: 60                  # event seconds per real second, unless overridden
    registry: devices.csv           # the device registry, relative to this file
    kinds:                          # per device kind: publish interval and field defaults
      bin:
        interval_s: 10
        fields:
          fill_pct: {baseline: 40, noise: 2, min: 0, max: 100}
    devices:                        # per device: overrides of the kind defaults
      BIN-001:
        silent: [[900, 1200]]       # sends nothing in [from, to): a dead modem
        fields:
          fill_pct:
            changes:
              - {at: 300, spike: 95}              # one reading only
              - {at: 600, ramp_to: 96, over: 120} # linear, then held
              - {at: 1500, set: 5}                # step, then held
    faults:                         # bad input, each staged to provoke one rejection
      - {reason: stale, device: BIN-001, at: 405, back_s: 30}
    expected:
      cases:
        - {label: bins, class_code: "06042", priority: urgent, devices: [BIN-001]}
      rejections: {stale: 1}

A field's level starts at ``baseline`` and follows its ``changes``; ``noise`` adds uniform
noise of that amplitude to numeric readings (not to spikes), clamped to ``min``/``max``.
``unit`` sends the field unit-tagged (``{"value": .., "unit": ..}``) in that unit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from simulators.fleet.contract import (
    BOOLEAN_FIELDS,
    KIND_FIELDS,
    REJECTION_REASONS,
    REQUIRED_FIELDS,
    SEND_UNIT_FACTORS,
    Reason,
)
from simulators.fleet.faults import CARRIES_OWN_TS, fault_problem
from simulators.fleet.registry import RegisteredDevice, RegistryError, load_registry
from simulators.yaml_errors import Loc, describe_problems, load_yaml_model

BUILTIN_SCENARIO = Path(__file__).parent / "scenarios" / "builtin" / "scenario.yaml"

Kind = Literal["manhole_cover", "bin", "water_level"]


class ScenarioError(ValueError):
    """A scenario that cannot be run; the message lists every problem as file:line: field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Change(_Strict):
    """One change of a field's level at an event-time offset: a step, a ramp or a spike."""

    at: float = Field(ge=0)
    set: float | bool | None = None
    ramp_to: float | None = None
    over: float | None = Field(default=None, gt=0)
    spike: float | bool | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Change:
        actions = [a for a in ("set", "ramp_to", "spike") if getattr(self, a) is not None]
        if len(actions) != 1:
            raise ValueError("a change needs exactly one of set, ramp_to, spike")
        if (self.ramp_to is None) != (self.over is None):
            raise ValueError("ramp_to and over go together")
        return self


class FieldSpec(_Strict):
    """How one telemetry field behaves. Kind defaults and device overrides are merged key by
    key, so a device usually only lists its ``changes``."""

    baseline: float | bool | None = None
    noise: float = Field(default=0.0, ge=0)
    min: float | None = None
    max: float | None = None
    decimals: int = Field(default=1, ge=0, le=6)
    unit: str | None = None
    changes: list[Change] = Field(default_factory=list)


class KindSpec(_Strict):
    interval_s: float = Field(gt=0)
    fields: dict[str, FieldSpec]


class DeviceSpec(_Strict):
    interval_s: float | None = Field(default=None, gt=0)
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    # [from_s, to_s) windows in which the device sends nothing (dead modem, flat battery).
    silent: list[tuple[float, float]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _windows(self) -> DeviceSpec:
        for start, end in self.silent:
            if not 0 <= start < end:
                raise ValueError(f"silent window [{start:g}, {end:g}) must have 0 <= from < to")
        return self


class Fault(_Strict):
    """One bad message, sent at ``at`` on ``device``'s topic, built to provoke ``reason``."""

    reason: Reason
    device: str
    at: float = Field(ge=0)
    back_s: float | None = Field(default=None, gt=0)  # stale: how far behind the last reading
    ahead_s: float | None = Field(default=None, gt=0)  # future_timestamp: ahead of wall clock
    copy_of: str | None = None  # unknown_device: the registered device whose reading it copies

    @model_validator(mode="after")
    def _options_fit_reason(self) -> Fault:
        owner = {"back_s": "stale", "ahead_s": "future_timestamp", "copy_of": "unknown_device"}
        for option, reason in owner.items():
            if (getattr(self, option) is not None) != (self.reason == reason):
                raise ValueError(f"{option} is required for {reason} faults and only for them")
        return self


class ExpectedCase(_Strict):
    label: str
    class_code: str = Field(pattern=r"^\d{5}$")
    priority: Literal["critical", "urgent", "normal", "low"]
    devices: list[str] = Field(min_length=1)


class Expected(_Strict):
    cases: list[ExpectedCase]
    rejections: dict[Reason, int] = Field(default_factory=dict)


class ScenarioSpec(_Strict):
    name: str
    description: str = ""
    duration_s: float = Field(gt=0)
    time_scale: float = Field(gt=0)
    registry: str
    kinds: dict[Kind, KindSpec]
    devices: dict[str, DeviceSpec] = Field(default_factory=dict)
    faults: list[Fault] = Field(default_factory=list)
    expected: Expected


@dataclass(frozen=True, slots=True)
class DeviceBehaviour:
    """A registered device with its kind defaults and overrides resolved."""

    device_id: str
    kind: str
    interval_ms: int
    fields: dict[str, FieldSpec]
    silent_ms: tuple[tuple[int, int], ...] = ()

    def reading_offsets_ms(self, duration_ms: int) -> list[int]:
        return [
            offset
            for offset in range(0, duration_ms, self.interval_ms)
            if not any(start <= offset < end for start, end in self.silent_ms)
        ]


@dataclass(frozen=True, slots=True)
class Scenario:
    spec: ScenarioSpec
    path: Path
    registry: dict[str, RegisteredDevice]
    behaviours: list[DeviceBehaviour]

    @property
    def duration_ms(self) -> int:
        return round(self.spec.duration_s * 1000)

    def expected_truth(self) -> dict[str, Any]:
        """The tester's statement of what was staged, in the truth file's shape."""
        return {
            "expected_cases": [
                {
                    "label": c.label,
                    "class_code": c.class_code,
                    "priority": c.priority,
                    "devices": sorted(c.devices),
                }
                for c in self.spec.expected.cases
            ],
            "expected_rejections": {
                reason: self.spec.expected.rejections.get(reason, 0) for reason in REJECTION_REASONS
            },
        }


def load_scenario(path: str | Path) -> Scenario:
    """Load, validate and resolve a scenario file and the registry it names."""
    path = Path(path)
    spec, tree = load_yaml_model(path, ScenarioSpec, "scenario", ScenarioError)
    try:
        registry = load_registry(path.parent / spec.registry)
    except RegistryError as exc:
        raise ScenarioError(f"{path}: registry: {exc}") from None
    behaviours, problems = _resolve(spec, registry)
    problems += _check_faults(spec, registry, {b.device_id: b for b in behaviours})
    problems += _check_expected(spec, registry)
    if problems:
        # A bad kind default shows up once per device of that kind; report it once.
        raise ScenarioError(
            describe_problems(str(path), "scenario", tree, list(dict.fromkeys(problems)))
        )
    return Scenario(spec, path, registry, behaviours)


def _resolve(
    spec: ScenarioSpec, registry: dict[str, RegisteredDevice]
) -> tuple[list[DeviceBehaviour], list[tuple[Loc, str]]]:
    problems: list[tuple[Loc, str]] = []
    for device_id in spec.devices:
        if device_id not in registry:
            problems.append((("devices", device_id), "device is not in the registry"))
    behaviours = []
    for device in registry.values():
        kind = spec.kinds.get(device.kind)
        if kind is None:
            problems.append((("kinds",), f"no defaults for kind {device.kind!r}"))
            continue
        override = spec.devices.get(device.device_id, DeviceSpec())
        fields = {}
        for name in {**kind.fields, **override.fields}:
            loc: Loc = ("devices", device.device_id, "fields", name)
            if name not in override.fields:
                loc = ("kinds", device.kind, "fields", name)
            merged = {
                **_set_fields(kind.fields.get(name)),
                **_set_fields(override.fields.get(name)),
            }
            fields[name] = FieldSpec.model_validate(merged)
            problems += [
                (loc, p) for p in _field_problems(device.kind, name, fields[name], spec.duration_s)
            ]
        missing = REQUIRED_FIELDS[device.kind] - fields.keys()
        if missing:
            problems.append((("kinds", device.kind), f"missing field(s) {sorted(missing)}"))
        interval_s = override.interval_s or kind.interval_s
        silent = tuple((round(a * 1000), round(b * 1000)) for a, b in override.silent)
        behaviours.append(
            DeviceBehaviour(device.device_id, device.kind, round(interval_s * 1000), fields, silent)
        )
    return behaviours, problems


def _set_fields(spec: FieldSpec | None) -> dict[str, Any]:
    return {} if spec is None else spec.model_dump(exclude_unset=True)


def _field_problems(kind: str, name: str, spec: FieldSpec, duration_s: float) -> list[str]:
    if name not in KIND_FIELDS[kind]:
        return [f"{kind} devices have no field {name!r} (allowed: {sorted(KIND_FIELDS[kind])})"]
    if spec.baseline is None:
        return ["baseline is required"]
    problems = []
    boolean = name in BOOLEAN_FIELDS
    values = [spec.baseline] + [c.set if c.set is not None else c.spike for c in spec.changes]
    if any(isinstance(v, bool) != boolean for v in values if v is not None):
        problems.append(f"values must all be {'booleans' if boolean else 'numbers'}")
    if boolean and (spec.noise or any(c.ramp_to is not None for c in spec.changes)):
        problems.append("a boolean field cannot have noise or ramps")
    if spec.unit is not None and spec.unit not in SEND_UNIT_FACTORS.get(name, {}):
        problems.append(f"{name} cannot be sent in unit {spec.unit!r}")
    free_from = 0.0
    for change in spec.changes:
        if change.at < free_from:
            problems.append(f"change at {change.at:g} s overlaps the change before it")
        if change.at >= duration_s:
            problems.append(f"change at {change.at:g} s is past the end ({duration_s:g} s)")
        free_from = change.at + (change.over or 0)
    return problems


def _check_faults(
    spec: ScenarioSpec,
    registry: dict[str, RegisteredDevice],
    behaviours: dict[str, DeviceBehaviour],
) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    for i, fault in enumerate(spec.faults):
        loc: Loc = ("faults", i)
        if fault.at >= spec.duration_s:
            problems.append(((*loc, "at"), f"{fault.at:g} s is past the end"))
        if fault.reason == "unknown_device":
            if fault.device in registry:
                problems.append(((*loc, "device"), "must NOT be in the registry"))
            if fault.copy_of not in registry:
                problems.append(((*loc, "copy_of"), "must be a registered device"))
            continue
        behaviour = behaviours.get(fault.device)
        if behaviour is None:
            problems.append(((*loc, "device"), "device is not in the registry"))
            continue
        problem = fault_problem(fault.reason, behaviour.kind)
        if problem:
            problems.append((loc, problem))
        at_ms = round(fault.at * 1000)
        if fault.reason in CARRIES_OWN_TS and at_ms % behaviour.interval_ms == 0:
            # Same ts as a good reading: the gateway could rightly call it stale instead.
            problems.append(((*loc, "at"), "falls on a reading; pick a time between readings"))
    return problems


def _check_expected(
    spec: ScenarioSpec, registry: dict[str, RegisteredDevice]
) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    for i, case in enumerate(spec.expected.cases):
        for device_id in case.devices:
            if device_id not in registry:
                problems.append(
                    (("expected", "cases", i, "devices"), f"{device_id} is not registered")
                )
    staged = Counter(f.reason for f in spec.faults)
    for reason in REJECTION_REASONS:
        declared = spec.expected.rejections.get(reason, 0)
        if declared != staged[reason]:
            problems.append(
                (
                    ("expected", "rejections"),
                    f"{reason}: declares {declared} but {staged[reason]} fault(s) staged",
                )
            )
    return problems
