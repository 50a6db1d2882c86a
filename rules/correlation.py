"""Duplicate likelihood (智能判重): how sure we are that a new alert is the same problem as
an open incident, as a score in 0..1 with the reasons an operator can read.

The platform's 智能判重 compares a new report with open cases by place, time and class.
Ours does the same with what sensors and cameras add: we know which source saw what.

    score = source_factor × (1 − 0.4 · (d / radius) · (gap / window))

The intent: the radius and window (a family's, or the same-class ones) are the operator's
statement of what is one problem, so inside them an alert is taken for the same problem
unless it is both far and late. Distance and time count only together (their product):
at the radius's edge a minute later, or at the same spot near the end of the window, the
score stays high and the alert merges; only an alert far in the radius AND late in the
window (the corner takes 0.4 off) is uncertain enough for an operator's look. With the
deploy cut-offs (merge 0.8, suspect 0.5) everything within the radius and a quarter of
the window merges whatever its sources (0.9 × (1 − 0.4 × 0.25) = 0.81), and nothing
within radius and window falls below the suspected band (0.9 × 0.6 = 0.54).

- **class**: the same class, or another class of the incident's family, counts the same
  (1.0): a configured family is the operator saying those classes at one place are one
  problem. The relation is kept in the reasons. An unrelated class is never a candidate
  (the book looks only at incidents of the alert's class or family);
- **source**: the same source again under another rule (a bin that was full and now also
  smells) 1.0 — one device at one place is the likeliest duplicate; a camera and a sensor
  (one of each) 0.95 — two independent ways of seeing one place agree, never less than a
  second source of one kind; a second source of the same kind (a second bin, a second
  camera) 0.9 — two bins at one collection point may still be two problems. A key
  re-firing after its own clear never gets here: it is still bound to its open incident
  and is a repeat there.

Outside the radius or the window the score is 0: those were never candidates. Without a
``duplicates`` section everything within radius and window merges, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

FAR_AND_LATE_WEIGHT = 0.4  # taken off at the far edge of the radius at the window's end


class Relation(StrEnum):
    """How the alert's class relates to the incident's (both count the same; see above)."""

    SAME_CLASS = "same_class"
    SAME_FAMILY = "same_family"


class Sources(StrEnum):
    SAME_SOURCE = "same_source"
    CAMERA_AND_SENSOR = "camera_and_sensor"
    SAME_KIND = "same_kind"


_SOURCE_FACTOR = {Sources.SAME_SOURCE: 1.0, Sources.CAMERA_AND_SENSOR: 0.95, Sources.SAME_KIND: 0.9}


@dataclass(frozen=True, slots=True)
class Judgement:
    score: float | None  # None only for an operator's merge whose pair's score is not known
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
    if distance_m > radius_m or gap_ms > window_ms:
        return Judgement(0.0, ("outside radius or window",))
    near = distance_m / radius_m if radius_m > 0 else 0.0
    late = max(gap_ms, 0) / window_ms if window_ms > 0 else 0.0
    score = _SOURCE_FACTOR[sources] * (1.0 - FAR_AND_LATE_WEIGHT * near * late)
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
