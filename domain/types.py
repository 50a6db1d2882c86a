"""The vocabulary every package shares: Reading → Alert → Incident → CaseCommand.

These are plain frozen dataclasses so that they cost nothing on the hot path and can be
serialised to the store as JSON (``to_dict`` / ``from_dict``). No package puts its own
internals here; if a type is used by one package only, it lives in that package.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

Value = float | bool


class Priority(StrEnum):
    """Case priority as 数字城管 platforms grade it: 特急 / 紧急 / 一般 / 低."""

    CRITICAL = "critical"  # 特急
    URGENT = "urgent"  # 紧急
    NORMAL = "normal"  # 一般
    LOW = "low"  # 低 (maintenance work)

    @property
    def rank(self) -> int:
        """Higher is more severe; used to decide whether an alert escalates a case."""
        return _PRIORITY_RANK[self]

    @property
    def chinese(self) -> str:
        return _PRIORITY_CHINESE[self]


_PRIORITY_RANK = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.URGENT: 2, Priority.CRITICAL: 3}
_PRIORITY_CHINESE = {
    Priority.LOW: "低",
    Priority.NORMAL: "一般",
    Priority.URGENT: "紧急",
    Priority.CRITICAL: "特急",
}


@dataclass(frozen=True, slots=True)
class Location:
    """Where a problem is: WGS-84 degrees plus the 数字城管 unit grid (单元网格) code."""

    lat: float
    lon: float
    address: str = ""
    grid_code: str = ""

    def distance_m(self, other: Location) -> float:
        """Great-circle distance in metres (haversine, the mean radius): exact enough for
        merge radii and nearby matches, to ~0.5 %. Near the antipode rounding takes the
        haversine a hair past 1 (1 + 2**-52 is seen; its square root still rounds to 1):
        the cap keeps ``asin`` in its domain whatever the rounding, for any two points."""
        r = 6_371_008.8
        p1, p2 = math.radians(self.lat), math.radians(other.lat)
        dp = p2 - p1
        dl = math.radians(other.lon - self.lon)
        a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
        return 2 * r * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True, slots=True)
class Reading:
    """One decoded, unit-checked sensor sample. ``ts`` is event time in epoch milliseconds."""

    device_id: str
    kind: str
    ts: int
    values: dict[str, Value]
    seq: int | None = None


class Category(StrEnum):
    """What a detected label counts as for city rules (set by the class map in config)."""

    PERSON = "person"
    VEHICLE = "vehicle"
    STALL_PART = "stall_part"  # a trained ``stall`` class, or proxies: umbrella, table, chair
    RUBBISH = "rubbish"  # a trained ``rubbish`` class, or bag-like COCO classes
    STATIC_OBJECT = "static_object"  # class-agnostic: a new static blob vs the background
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Observation:
    """What a camera saw of one tracked object in one analysed frame (event time, ms).

    ``box`` is pixel ``(x1, y1, x2, y2)`` in the analysed frame of ``frame_size``
    ``(width, height)``. ``zone_id`` is the zone holding the box's bottom-centre ("" when
    none). ``stationary_ms`` is how long the track has stayed put (0 while it moves).
    ``frame_ts`` names the analysed frame, so evidence can be fetched for it later.
    ``occluded``: the object is hidden behind something passing in this frame; its box is
    where it was last seen, and it is still there as far as anyone can tell.
    """

    camera_id: str
    zone_id: str
    label: str
    category: Category
    track_id: int
    box: tuple[float, float, float, float]
    score: float
    ts: int
    stationary_ms: int = 0
    frame_size: tuple[int, int] = (0, 0)
    occluded: bool = False


class AlertState(StrEnum):
    """Transitions of one alert key: it fires, may escalate to a higher stage, then clears."""

    FIRING = "firing"
    ESCALATED = "escalated"
    CLEARED = "cleared"


@dataclass(frozen=True, slots=True)
class Alert:
    """A condition that became true, worse, or false for one key (source + rule).

    ``key`` is stable for a source and rule, so an incident can tell a repeat of the same
    alert from a neighbour's. ``values`` carries the readings that proved the transition.
    """

    key: str
    source_id: str
    rule_id: str
    state: AlertState
    class_code: str
    priority: Priority
    location: Location
    ts: int
    values: dict[str, Value] = field(default_factory=dict)
    part_code: str = ""
    summary: str = ""
    # Evidence media (e.g. JPEG paths with boxes and zone drawn, the "before" frame).
    media: tuple[str, ...] = ()
    # How the problem was found, as platforms record it: "iot" (物联网感知) or "video"
    # (视频智能识别).
    origin: str = "iot"
    # False for a problem of one device (its battery, its silence, its lies): never merged
    # with a neighbour's alert, and nothing merges into its incident.
    merge: bool = True
    # The source's kind (a device kind such as "bin", or "camera") and, for a camera zone
    # rule, "<camera>/<zone>": what silences and inhibition rules match on.
    kind: str = ""
    zone: str = ""
    # Set on the evidence of a closure check (gateway/closure_check.py): the case status at
    # which the problem was found still there. Sent as a flag with the evidence, so that a
    # platform can tell it from a new sighting (the bundled one takes it on a closed case).
    closure_check: str = ""

    @property
    def labels(self) -> dict[str, str]:
        """The alert's labels, as silences and inhibition rules name them."""
        return {
            "device": self.source_id,
            "kind": self.kind,
            "grid": self.location.grid_code,
            "class": self.class_code,
            "zone": self.zone,
            "rule": self.rule_id,
            "priority": str(self.priority),
            "origin": self.origin,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        return cls(
            **{
                **data,
                "state": AlertState(data["state"]),
                "priority": Priority(data["priority"]),
                "location": Location(**data["location"]),
                "media": tuple(data.get("media", ())),
            }
        )


class CommandKind(StrEnum):
    """What the case bridge must do on the workflow platform for an incident."""

    OPEN = "open"  # file a new case
    ATTACH = "attach"  # add evidence (a repeat, a merged neighbour, a clear) to the open case
    ESCALATE = "escalate"  # raise the open case's priority, with the alert as evidence
    # void the incident's case: an operator merged it, a duplicate, into another case
    VOID = "void"


@dataclass(frozen=True, slots=True)
class CaseCommand:
    """One durable instruction for the case bridge.

    ``command_id`` is unique and stable: it doubles as the idempotency key on the platform,
    so a command re-sent after a crash or a timeout never files or attaches twice.
    """

    command_id: str
    incident_id: str
    kind: CommandKind
    alert: Alert
    priority: Priority
    # The class the incident's case is filed under (a family's lead class, which a later
    # alert of the family need not have): an escalation's deadline follows its policy.
    # "" on commands stored before it was kept: the alert's class then.
    case_class: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id,
            "incident_id": self.incident_id,
            "kind": str(self.kind),
            "alert": self.alert.to_dict(),
            "priority": str(self.priority),
            "case_class": self.case_class,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseCommand:
        return cls(
            command_id=data["command_id"],
            incident_id=data["incident_id"],
            kind=CommandKind(data["kind"]),
            alert=Alert.from_dict(data["alert"]),
            priority=Priority(data["priority"]),
            case_class=data.get("case_class", ""),
        )
