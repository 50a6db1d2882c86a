"""Duplicate likelihood (智能判重): how sure we are that a new alert is the same problem as
an open incident, as a score in 0..1 with the reasons an operator can read.

The platform's 智能判重 compares a new report with open cases by place, time and class.
Ours does the same with what sensors and cameras add: we know which source saw what.

    score = class_factor × source_factor × (1 − 0.5·d/radius − 0.3·gap/window)

- **distance** counts for half: at the same spot nothing is taken off, at the edge of the
  radius 0.5 is;
- **time** since the incident's last activity counts for 0.3: a repeat a minute later is
  likelier the same problem than one at the end of the window;
- **class**: the same class 1.0, another class of the same family 0.85 (related, not the
  same report); an unrelated class is never a duplicate (score 0);
- **source**: the same source again under another rule (a bin that was full and now also
  smells) 1.0 — one device at one place is the likeliest duplicate; a camera and a sensor
  (one of each) 0.95 — two independent ways of seeing one place agree; a second source of
  the same kind (a second bin, a second camera) 0.9 — two bins at one collection point may
  still be two problems. A key re-firing after its own clear never gets here: it is still
  bound to its open incident and is a repeat there.

Outside the radius or the window the score is 0: those were never candidates. At the far
edge of both, a same-class same-source alert still scores 0.2, so without a ``duplicates``
section (merge whatever is within radius and window, as before) nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DISTANCE_WEIGHT = 0.5
TIME_WEIGHT = 0.3
FAMILY_FACTOR = 0.85


class Relation(StrEnum):
    SAME_CLASS = "same_class"
    SAME_FAMILY = "same_family"
    UNRELATED = "unrelated"


class Sources(StrEnum):
    SAME_SOURCE = "same_source"
    CAMERA_AND_SENSOR = "camera_and_sensor"
    SAME_KIND = "same_kind"


_SOURCE_FACTOR = {Sources.SAME_SOURCE: 1.0, Sources.CAMERA_AND_SENSOR: 0.95, Sources.SAME_KIND: 0.9}


@dataclass(frozen=True, slots=True)
class Judgement:
    score: float
    reasons: tuple[str, ...]


def sources_of(source_id: str, is_camera: bool, seen: dict[str, str]) -> Sources:
    """How the new alert's source relates to the incident's (``seen``: source id → origin,
    "video" for a camera)."""
    if source_id in seen:
        return Sources.SAME_SOURCE
    if any((origin == "video") != is_camera for origin in seen.values()):
        return Sources.CAMERA_AND_SENSOR
    return Sources.SAME_KIND


def likelihood(
    distance_m: float,
    radius_m: float,
    gap_ms: int,
    window_ms: int,
    relation: Relation,
    sources: Sources,
    family: str = "",
) -> Judgement:
    """The duplicate likelihood and its reasons (pure: the same inputs, the same float)."""
    if relation is Relation.UNRELATED:
        return Judgement(0.0, ("unrelated class",))
    if distance_m > radius_m or gap_ms > window_ms:
        return Judgement(0.0, ("outside radius or window",))
    near = distance_m / radius_m if radius_m > 0 else 0.0
    late = max(gap_ms, 0) / window_ms if window_ms > 0 else 0.0
    class_factor = 1.0 if relation is Relation.SAME_CLASS else FAMILY_FACTOR
    closeness = 1.0 - DISTANCE_WEIGHT * near - TIME_WEIGHT * late
    score = class_factor * _SOURCE_FACTOR[sources] * closeness
    reasons = (
        f"{distance_m:.0f} m of {radius_m:.0f} m",
        f"{_span(max(gap_ms, 0))} after last activity (window {_span(window_ms)})",
        "same class" if relation is Relation.SAME_CLASS else f"same family {family}",
        sources.value.replace("_", " "),
    )
    return Judgement(min(max(score, 0.0), 1.0), reasons)


def _span(ms: int) -> str:
    seconds = ms // 1000
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
