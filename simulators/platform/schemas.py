"""Request bodies and query parameters, validated by pydantic at the API edge.

Unknown top-level fields are refused so a client's misspelt field fails loudly instead of
being dropped; evidence items are free-form on purpose and keep every extra key verbatim,
except the two that make an item a closure check's note (``flag``, ``checked_status``):
a closed case takes such notes, so they are checked exactly (known values, both or neither).

Everything has a bound, so that what one request stores, and what a listing returns, stays
small: string lengths, evidence items per request, and each evidence item's serialised size
and nesting depth (it is free-form, so it is measured as a whole).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    StringConstraints,
    model_validator,
)

from simulators.platform.clock import parse_iso
from simulators.platform.workflow import (
    CHECKED_STATUSES,
    CLOSURE_CHECK,
    STATUS_NAMES,
    resolve_status,
)

Priority = Literal["critical", "urgent", "normal", "low"]
Source = Literal["iot", "video", "manual"]

# Bounds of what one request may store (see the module docstring).
MAX_EVIDENCE_PER_REQUEST = 20
MAX_EVIDENCE_ITEM_BYTES = 4096
MAX_EVIDENCE_DEPTH = 6
MAX_PAGE_LIMIT = 500

_CLASS_CODE = re.compile(r"[0-9]{5}")
_PART_CODE = re.compile(r"(?:[0-9]{16,17})?")


def _check_class_code(value: str) -> str:
    if not _CLASS_CODE.fullmatch(value):
        raise ValueError("must be exactly 5 digits (GB/T matter or part type code)")
    return value


def _check_part_code(value: str) -> str:
    if not _PART_CODE.fullmatch(value):
        raise ValueError('must be "" or 16/17 digits')
    return value


def _check_iso(value: str) -> str:
    parse_iso(value)
    return value


def _check_status(value: str) -> str:
    status = resolve_status(value)
    if status is None:
        names = ", ".join(f"{v} ({n})" for v, n in STATUS_NAMES.items())
        raise ValueError(f"unknown status {value!r}; expected one of {names}")
    return status


def _check_checked_status(value: str) -> str:
    if value not in CHECKED_STATUSES:
        raise ValueError(f"must be one of {', '.join(sorted(CHECKED_STATUSES))}")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict | list):
            stack.extend((child, depth + 1) for child in children)
    return deepest


Name = Annotated[StrictStr, StringConstraints(max_length=64)]
Key = Annotated[StrictStr, StringConstraints(max_length=128)]
Address = Annotated[StrictStr, StringConstraints(max_length=200)]
GridCode = Annotated[StrictStr, StringConstraints(max_length=32)]
Note = Annotated[StrictStr, StringConstraints(max_length=500)]
Description = Annotated[StrictStr, StringConstraints(max_length=2000)]
ClassCode = Annotated[StrictStr, StringConstraints(max_length=5), AfterValidator(_check_class_code)]
PartCode = Annotated[StrictStr, StringConstraints(max_length=17), AfterValidator(_check_part_code)]
# Kept as the client's string (not re-serialised) so a deadline reads back exactly as sent.
IsoTimestamp = Annotated[StrictStr, StringConstraints(max_length=64), AfterValidator(_check_iso)]
# Accepts the machine value or the Chinese name and yields the machine value.
StatusName = Annotated[StrictStr, StringConstraints(max_length=32), AfterValidator(_check_status)]
# The status a closure check found the problem at: machine values only.
CheckedStatus = Annotated[
    StrictStr, StringConstraints(max_length=16), AfterValidator(_check_checked_status)
]


class Location(BaseModel):
    """WGS-84 degrees plus address and the 单元网格 code."""

    model_config = ConfigDict(extra="forbid")

    lat: float = Field(ge=-90, le=90, strict=True, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, strict=True, allow_inf_nan=False)
    address: Address = ""
    grid_code: GridCode = ""


class EvidenceItem(BaseModel):
    """One proof of the problem; only who saw it and when (epoch ms) are required. Any
    other keys are kept as sent, within a size and a nesting depth.

    ``flag`` ("closure_check") with ``checked_status`` makes the item a closure check's
    note (复核提示): the problem was still seen at that status. Both or neither; an item
    without them is stored without them (``model_dump(exclude_unset=True)``)."""

    model_config = ConfigDict(extra="allow")

    source_id: StrictStr = Field(min_length=1, max_length=128)
    ts: StrictInt = Field(ge=0, le=2**63 - 1)
    flag: Literal["closure_check"] | None = None  # workflow.CLOSURE_CHECK, the only flag
    checked_status: CheckedStatus | None = None

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if _depth(data) > MAX_EVIDENCE_DEPTH:
                raise ValueError(f"nested deeper than {MAX_EVIDENCE_DEPTH} levels")
            size = len(json.dumps(data, ensure_ascii=False).encode())
            if size > MAX_EVIDENCE_ITEM_BYTES:
                raise ValueError(f"larger than {MAX_EVIDENCE_ITEM_BYTES} bytes as JSON")
        return data

    @model_validator(mode="after")
    def _flag_whole(self) -> EvidenceItem:
        """A note names what it is and when it was checked, or the item is no note: half a
        flag, or a null, is refused rather than stored as a sighting."""
        given = {"flag", "checked_status"} & self.model_fields_set
        if given and (self.flag is None or self.checked_status is None):
            raise ValueError(
                f'a closure check note needs both "flag": "{CLOSURE_CHECK}" and "checked_status"'
            )
        return self


class CaseCreate(BaseModel):
    """Body of ``POST /api/v1/cases``."""

    model_config = ConfigDict(extra="forbid")

    class_code: ClassCode
    class_name: Name = ""
    part_code: PartCode = ""
    priority: Priority = "normal"
    deadline: IsoTimestamp
    responsible_unit: Name = ""  # 责任单位 the case is dispatched to
    location: Location
    description: Description = ""
    source: Source
    evidence: list[EvidenceItem] = Field(default_factory=list, max_length=MAX_EVIDENCE_PER_REQUEST)
    external_key: Key | None = None


class TransitionRequest(BaseModel):
    """Body of ``POST /api/v1/cases/{id}/transition``."""

    model_config = ConfigDict(extra="forbid")

    to: StatusName
    note: Note = ""


class EvidenceAppend(BaseModel):
    """Body of ``POST /api/v1/cases/{id}/evidence``: new proof, optionally an escalation."""

    model_config = ConfigDict(extra="forbid")

    evidence: list[EvidenceItem] = Field(min_length=1, max_length=MAX_EVIDENCE_PER_REQUEST)
    priority: Priority | None = None
    deadline: IsoTimestamp | None = None

    @property
    def notes_only(self) -> bool:
        """Closure check notes alone, escalating nothing: what a closed or void case still
        takes (``simulators/platform/workflow.py``)."""
        unescalated = self.priority is None and self.deadline is None
        return unescalated and all(item.flag is not None for item in self.evidence)


class CaseFilter(BaseModel):
    """Query parameters of ``GET /api/v1/cases``: filters, and the page (``after`` is the
    ``next`` of the previous page; ``limit`` cases at most)."""

    model_config = ConfigDict(extra="forbid")

    status: StatusName | None = None
    class_code: Name | None = None
    since: IsoTimestamp | None = None
    after: Name | None = None
    limit: int = Field(MAX_PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT)
