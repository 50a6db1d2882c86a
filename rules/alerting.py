"""The operators' alerting settings: inhibition rules, area (parent) conditions, silence bounds.

Mounted by the gateway's config under a top-level ``alerting:`` section, and read by
:class:`rules.flow.AlertFlow`. Everything here matches alerts on their labels
(``Alert.labels``: device, kind, grid, class, zone, rule, priority, origin) by exact
equality, every matcher holding, at least one matcher: a matcher set can never be empty,
because an empty one would match every alert of the city.

Inhibition has Alertmanager's shape (``source_match`` → ``target_match``, ``equal`` on
labels) with an ``action``: ``mute`` holds the target (stored, no case) while a source
fires; ``absorb`` attaches the target to the source's incident instead of filing its own,
which is how an area-wide flood alarm gathers the single gauges of its grid into one case.
A label named in ``equal`` that is empty on the source never matches: devices without a
grid code are not one area.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from domain import Priority

Label = Literal["device", "kind", "grid", "class", "zone", "rule", "priority", "origin"]
LABELS: tuple[str, ...] = Label.__args__  # type: ignore[attr-defined]
MAX_VALUE_CHARS = 128
MAX_RULES = 100
NAME = r"^[A-Za-z0-9_.-]{1,64}$"

LabelValue = Annotated[str, StringConstraints(min_length=1, max_length=MAX_VALUE_CHARS)]
# One value per label at most (a dict), so at most len(LABELS) matchers.
Matchers = Annotated[dict[Label, LabelValue], Field(min_length=1)]


def matches(matchers: dict[str, str], labels: dict[str, str]) -> bool:
    """Every matcher holds (exact equality)."""
    return all(labels.get(name) == value for name, value in matchers.items())


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InhibitRule(_Model):
    """While an alert matching ``source_match`` fires, alerts matching ``target_match``
    with the same ``equal`` labels are muted (held, no case) or absorbed (attached to the
    source's incident). The target waits while the source is itself held."""

    name: str = Field(pattern=NAME)
    source_match: Matchers
    target_match: Matchers
    equal: list[Label] = Field(default_factory=list, max_length=len(LABELS))
    action: Literal["mute", "absorb"] = "mute"


class AreaCondition(_Model):
    """At least ``min_count`` alerts matching ``match`` fire with equal ``group_by``
    labels → one parent alert (rule id = ``name``, kind ``area``) for the group, cleared
    when fewer than ``min_count`` fire. A member with an empty ``group_by`` label is not
    counted. Parents never count as members."""

    name: str = Field(pattern=NAME)
    match: Matchers
    group_by: list[Label] = Field(default_factory=lambda: ["grid"], min_length=1, max_length=8)
    min_count: int = Field(ge=2, le=10_000)
    class_code: str = Field(pattern=r"^\d{5}$")
    priority: Priority = Priority.URGENT


class SilenceLimits(_Model):
    """Bounds on what operators may silence: how many silences are in force (active or
    pending) at once, and how long one may last."""

    max_in_force: int = Field(1000, ge=1, le=100_000)
    max_duration_s: int = Field(30 * 86_400, ge=60, le=366 * 86_400)


class AlertingConfig(_Model):
    """The top-level ``alerting:`` section of the gateway config."""

    inhibit_rules: list[InhibitRule] = Field(default_factory=list, max_length=MAX_RULES)
    area_conditions: list[AreaCondition] = Field(default_factory=list, max_length=MAX_RULES)
    silences: SilenceLimits = Field(default_factory=SilenceLimits)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        for what, items in (("inhibit_rules", self.inhibit_rules),
                            ("area_conditions", self.area_conditions)):  # fmt: skip
            names = [item.name for item in items]
            duplicate = next((n for n in names if names.count(n) > 1), None)
            if duplicate is not None:
                raise ValueError(f"{what}: name {duplicate!r} is used twice")
        return self
