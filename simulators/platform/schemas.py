"""Request bodies and query parameters, validated by pydantic at the API edge.

Unknown top-level fields are refused so a client's misspelt field fails loudly instead of
being dropped; evidence items are free-form on purpose and keep every extra key verbatim.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr

from simulators.platform.clock import parse_iso
from simulators.platform.workflow import STATUS_NAMES, resolve_status

Priority = Literal["critical", "urgent", "normal", "low"]
Source = Literal["iot", "video", "manual"]

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


ClassCode = Annotated[StrictStr, AfterValidator(_check_class_code)]
PartCode = Annotated[StrictStr, AfterValidator(_check_part_code)]
# Kept as the client's string (not re-serialised) so a deadline reads back exactly as sent.
IsoTimestamp = Annotated[StrictStr, AfterValidator(_check_iso)]
# Accepts the machine value or the Chinese name and yields the machine value.
StatusName = Annotated[StrictStr, AfterValidator(_check_status)]


class Location(BaseModel):
    """WGS-84 degrees plus address and the 单元网格 code."""

    model_config = ConfigDict(extra="forbid")

    lat: float = Field(ge=-90, le=90, strict=True, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, strict=True, allow_inf_nan=False)
    address: StrictStr = ""
    grid_code: StrictStr = ""


class EvidenceItem(BaseModel):
    """One proof of the problem; only who saw it and when (epoch ms) are required."""

    model_config = ConfigDict(extra="allow")

    source_id: StrictStr = Field(min_length=1)
    ts: StrictInt = Field(ge=0)


class CaseCreate(BaseModel):
    """Body of ``POST /api/v1/cases``."""

    model_config = ConfigDict(extra="forbid")

    class_code: ClassCode
    class_name: StrictStr = ""
    part_code: PartCode = ""
    priority: Priority = "normal"
    deadline: IsoTimestamp
    location: Location
    description: StrictStr = ""
    source: Source
    evidence: list[EvidenceItem] = Field(default_factory=list)
    external_key: StrictStr | None = None


class TransitionRequest(BaseModel):
    """Body of ``POST /api/v1/cases/{id}/transition``."""

    model_config = ConfigDict(extra="forbid")

    to: StatusName
    note: StrictStr = ""


class EvidenceAppend(BaseModel):
    """Body of ``POST /api/v1/cases/{id}/evidence``: new proof, optionally an escalation."""

    model_config = ConfigDict(extra="forbid")

    evidence: list[EvidenceItem] = Field(min_length=1)
    priority: Priority | None = None
    deadline: IsoTimestamp | None = None


class CaseFilter(BaseModel):
    """Query parameters of ``GET /api/v1/cases``."""

    status: StatusName | None = None
    class_code: StrictStr | None = None
    since: IsoTimestamp | None = None
