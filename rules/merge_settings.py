"""The ``merge:`` section: how alerts become incidents (查重与并案), validated at load.

``radius_m`` and ``window_s`` are today's same-class merge (a drop-in replacement for the
gateway's earlier section: same names, defaults and bounds). ``families`` name classes that
are one problem at one place (a full bin, the rubbish beside it and the camera that sees
it); ``duplicates`` turns on the duplicate likelihood (智能判重, rules/correlation.py) and
its two cut-offs; ``storms`` groups a burst of new incidents of one class in one grid into
one storm incident (rules/storms.py). Everything a city writes here is bounded, and a
mistake (a class in two families, a lead outside its family, cut-offs in the wrong order)
is refused with the reason, not discovered when the first alert arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rules.params import CLASS_CODE

MAX_FAMILIES = 64
MAX_FAMILY_CLASSES = 32
FAMILY_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
MAX_RADIUS_M = 100_000.0  # 100 km: a family wider than a city is a mistake
MAX_WINDOW_S = 30 * 86_400.0
ClassCode = Annotated[str, Field(pattern=CLASS_CODE)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class MergePolicy:
    """Same-class merge bounds in the units the book works in (ms)."""

    radius_m: float = 50.0
    window_ms: int = 24 * 3600 * 1000


class Family(_Section):
    """Related classes: an alert of any of them joins an open incident of any of them
    within the family's radius and window (the global ones when not set here)."""

    name: str = Field(pattern=FAMILY_NAME)
    classes: list[ClassCode] = Field(min_length=2, max_length=MAX_FAMILY_CLASSES)
    lead: str = Field(pattern=CLASS_CODE)
    radius_m: float | None = Field(None, ge=0, le=MAX_RADIUS_M)
    window_s: float | None = Field(None, gt=0, le=MAX_WINDOW_S)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"family {self.name}: a class is listed twice")
        if self.lead not in self.classes:
            raise ValueError(f"family {self.name}: lead {self.lead} is not one of its classes")
        return self


class Duplicates(_Section):
    """Cut-offs on the duplicate likelihood: at or above ``merge_above`` an alert merges;
    from ``suspect_above`` it opens a new case recorded as a suspected duplicate (疑似重复)."""

    merge_above: float = Field(0.8, gt=0, le=1)
    suspect_above: float = Field(0.5, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.suspect_above > self.merge_above:
            raise ValueError("duplicates: suspect_above must not exceed merge_above")
        return self


class Storms(_Section):
    """Past ``per_hour`` new incidents of one class in one grid (or its parent grid), the
    next ones join one storm incident for that grid. Off by default."""

    enabled: bool = False
    per_hour: int = Field(10, ge=1, le=10_000)
    parent_grids: bool = True


class MergeSettings(_Section):
    radius_m: float = Field(50.0, ge=0, le=MAX_RADIUS_M)
    window_s: float = Field(24 * 3600.0, gt=0, le=MAX_WINDOW_S)
    families: list[Family] = Field(default_factory=list, max_length=MAX_FAMILIES)
    duplicates: Duplicates | None = None
    storms: Storms = Storms()

    @model_validator(mode="after")
    def _one_family_per_class(self) -> Self:
        seen: dict[str, str] = {}
        for family in self.families:
            for code in family.classes:
                if code in seen:
                    raise ValueError(
                        f"class {code} is in two families: {seen[code]} and {family.name}"
                    )
                seen[code] = family.name
        if len({f.name for f in self.families}) != len(self.families):
            raise ValueError("two families have the same name")
        return self

    def to_policy(self) -> MergePolicy:
        return MergePolicy(self.radius_m, int(self.window_s * 1000))

    def family_of(self, class_code: str) -> Family | None:
        for family in self.families:
            if class_code in family.classes:
                return family
        return None
