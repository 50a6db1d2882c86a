"""Video rules: street stalls (占道经营 and kin) and dumped rubbish (暴露垃圾) per camera zone.

The detectors say what is in each analysed frame and how long each object has stood
still; these rules decide when that has become a case. Both rules are "something that
should not be there has stayed there":

- **stall**, in no_vending / shop_front / hawker zones: stall parts standing still. A
  trained ``stall`` label counts by itself; COCO proxies (umbrella, dining table, chair)
  count only with a stationary person near them in the zone — an umbrella carried past,
  or café chairs nobody tends, are not a vendor.
- **dumping**, in no_dumping zones: rubbish or new static objects standing still. A
  trained ``rubbish`` label counts by itself; bag-like proxies and static blobs do not
  count while a stationary person is near them (a bag beside its owner is not dumped),
  nor when mostly covered by a person or vehicle (the blob is that person or vehicle).

Presence is judged per zone, not per track: a vendor whose track is lost and found again
is still the same stall. It must last the dwell, counted from when the objects stood
still (the ``stationary_s`` they needed to count is part of it, so a case comes at the
dwell, not ``stationary_s`` after it), while the zone's schedule is in force (frames
outside it count as absent); gaps up to ``gap_tolerance_s`` do not restart it, and a firing
alert clears after ``clear_after_s`` without any qualifying object. A static object the
detector reports as occluded (hidden behind a passer-by) still counts: unknown is not
gone.

Params are the video kind's, overridden per zone (``RuleSettings.zones["cam/zone"]``),
the zone's schedule among them, judged in the engine's time zone. ``reconfigure`` swaps
them between frames; carry-over: each zone's state is kept and judged by the new params
from its next frame on — a presence under way is measured against the new dwell (a shorter
one can fire at once), a firing alert against the new ``clear_after_s``, and it clears
through the normal path.

Only event time (frame timestamps) is used, so replaying recorded observations gives the
same alerts. State is plain JSON per alert key, kept in ``KeyedStates`` exactly like the
sensor rule engine, so the gateway persists both the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from domain import DEFAULT_TZ, Alert, AlertState, Category, Location, Observation, Priority
from domain.schedule import ScheduleCheck
from rules.keyed_state import KeyedStates
from rules.params import VideoRuleParams
from rules.settings import RuleSettings, zone_params

STALL_ZONE_TYPES = frozenset({"no_vending", "shop_front", "hawker"})
DUMPING_ZONE_TYPES = frozenset({"no_dumping"})
_BLOCKERS = (Category.PERSON, Category.VEHICLE)


@dataclass(frozen=True, slots=True)
class _Zone:
    zone_id: str
    zone_type: str
    rule_id: str
    class_code: str
    location: Location
    params: VideoRuleParams
    in_force: ScheduleCheck | None  # None: always


def alert_key(camera_id: str, zone_id: str, rule_id: str) -> str:
    return f"{camera_id}/{zone_id}/{rule_id}"


def camera_and_zone(key: str) -> tuple[str, str]:
    """The camera and zone of a zone rule's alert key (``alert_key``'s inverse), so that
    evidence can be fetched for the alert."""
    camera_id, zone_id, _rule_id = key.rsplit("/", 2)
    return camera_id, zone_id


def initial_state() -> dict[str, Any]:
    """Nothing present: plain JSON so it can be stored as it is."""
    return {"since": None, "last_seen": None, "firing": False, "last_frame": None}


class VideoRuleEngine:
    def __init__(self, settings: RuleSettings, tz: tzinfo = DEFAULT_TZ) -> None:
        """Zone params from ``settings`` (``kinds.video`` and the zones' own); zone
        schedules judged in ``tz`` (event time)."""
        self._settings = settings
        self._tz = tz
        self._zones: dict[str, dict[str, _Zone]] = {}
        self.states = KeyedStates()

    def reconfigure(self, settings: RuleSettings) -> None:
        """Apply a new settings version (between frames); see the module docstring. All or
        nothing: a zone whose params do not validate raises before anything changed."""
        rebuilt = {
            camera_id: {
                zone_id: self._zone(
                    settings, camera_id, zone_id, z.zone_type, z.location, z.class_code
                )
                for zone_id, z in zones.items()
            }
            for camera_id, zones in self._zones.items()
        }
        self._settings = settings
        self._zones = rebuilt

    def add_zone(
        self,
        camera_id: str,
        zone_id: str,
        zone_type: str,
        location: Location,
        class_code: str,
    ) -> None:
        """Watch one zone of one camera. ``location`` is the zone's place on the map (not
        the camera's), so cameras sharing a zone raise alerts the incident book merges.
        Its params and schedule come from the settings' ``zones["<camera>/<zone>"]``."""
        zone = self._zone(self._settings, camera_id, zone_id, zone_type, location, class_code)
        self._zones.setdefault(camera_id, {})[zone_id] = zone

    def _zone(
        self,
        settings: RuleSettings,
        camera_id: str,
        zone_id: str,
        zone_type: str,
        location: Location,
        class_code: str,
    ) -> _Zone:
        if zone_type in STALL_ZONE_TYPES:
            rule_id = "stall"
        elif zone_type in DUMPING_ZONE_TYPES:
            rule_id = "dumping"
        else:
            raise ValueError(f"zone {camera_id}/{zone_id}: unknown zone type {zone_type!r}")
        params = zone_params(settings, f"{camera_id}/{zone_id}")
        in_force = None if params.schedule.always else params.schedule.checker(self._tz)
        return _Zone(zone_id, zone_type, rule_id, class_code, location, params, in_force)

    def process(self, camera_id: str, ts_ms: int, observations: list[Observation]) -> list[Alert]:
        """Advance every zone of the camera by one analysed frame (call it for empty
        frames too: that is how absence is timed)."""
        by_zone: dict[str, list[Observation]] = {}
        for obs in observations:
            by_zone.setdefault(obs.zone_id, []).append(obs)
        alerts: list[Alert] = []
        for zone in self._zones.get(camera_id, {}).values():
            seen = by_zone.get(zone.zone_id, [])
            evidence: list[Observation] = []
            attended = False
            if zone.in_force is None or zone.in_force(ts_ms):
                if zone.rule_id == "stall":
                    evidence = _stall_evidence(seen, zone.params)
                else:
                    evidence, attended = _dumping_evidence(seen, zone.params)
            key = alert_key(camera_id, zone.zone_id, zone.rule_id)
            state = self.states.get(key, initial_state)
            before = dict(state)
            if attended:
                state["attended"] = ts_ms
            lead_ms = _lead_in(zone, ts_ms, evidence, state.get("attended"))
            transition, dwell_ms = _advance(state, ts_ms, bool(evidence), zone, lead_ms)
            if state != before:
                self.states.touch(key)
            if transition is not None:
                alerts.append(
                    self._alert(camera_id, zone, key, transition, ts_ms, dwell_ms, evidence)
                )
        return alerts

    def _alert(
        self,
        camera_id: str,
        zone: _Zone,
        key: str,
        transition: AlertState,
        ts_ms: int,
        dwell_ms: int,
        evidence: list[Observation],
    ) -> Alert:
        dwell_s = round(dwell_ms / 1000, 3)
        if transition is AlertState.CLEARED:
            summary = f"{zone.rule_id} in {camera_id}/{zone.zone_id} cleared after {dwell_s:g} s"
        else:
            summary = (
                f"{zone.rule_id} in {camera_id}/{zone.zone_id}: {len(evidence)} object(s) "
                f"({', '.join(sorted({o.label for o in evidence}))}) for {dwell_s:g} s"
            )
        return Alert(
            key=key,
            source_id=camera_id,
            rule_id=zone.rule_id,
            state=transition,
            class_code=zone.class_code,
            priority=Priority.URGENT,
            location=zone.location,
            ts=ts_ms,
            values={
                "dwell_s": dwell_s,
                "objects": float(len(evidence)),
                "score": max((o.score for o in evidence), default=0.0),
            },
            summary=summary,
            origin="video",
            kind="camera",
            zone=f"{camera_id}/{zone.zone_id}",
        )


def _lead_in(zone: _Zone, ts_ms: int, evidence: list[Observation], attended_ms: int | None) -> int:
    """How far before ``ts_ms`` a presence that starts now began: evidence has stood still
    ``stationary_s`` by definition; a static object as long as the detector says it has
    stood (passers-by hid it while its stillness was confirmed, so it is first reported
    long after it arrived), but not from before the zone last saw one attended (a bag
    beside its owner is dumped from when the owner left, not from when it was put down).
    None of it counts from before the zone's rule was in force."""
    least_ms = int(zone.params.stationary_s * 1000)
    lead_ms = max(
        [least_ms] + [o.stationary_ms for o in evidence if o.category is Category.STATIC_OBJECT]
    )
    if attended_ms is not None:
        lead_ms = max(least_ms, min(lead_ms, ts_ms - attended_ms))
    if zone.in_force is not None and not zone.in_force(ts_ms - lead_ms):
        return 0
    return lead_ms


def _advance(
    state: dict[str, Any], ts_ms: int, present: bool, zone: _Zone, lead_ms: int
) -> tuple[AlertState | None, int]:
    """Move one key's state by one frame; return the transition and the dwell so far."""
    p = zone.params
    dwell_s = p.stall_dwell_s if zone.rule_id == "stall" else p.rubbish_dwell_s
    if state["since"] is not None:
        _skip_blind_stretch(state, ts_ms, p)
    transition, dwell_ms = _judge(state, ts_ms, present, dwell_s, p, lead_ms)
    if state["since"] is not None:
        state["last_frame"] = ts_ms
    return transition, dwell_ms


def _judge(
    state: dict[str, Any],
    ts_ms: int,
    present: bool,
    dwell_s: float,
    p: VideoRuleParams,
    lead_ms: int,
) -> tuple[AlertState | None, int]:
    gap_ms = p.gap_tolerance_s * 1000
    if present:
        stale = state["last_seen"] is not None and ts_ms - state["last_seen"] > gap_ms
        if state["since"] is None or (stale and not state["firing"]):
            state["since"] = ts_ms - lead_ms
        state["last_seen"] = ts_ms
        dwell_ms = ts_ms - state["since"]
        if not state["firing"] and dwell_ms >= dwell_s * 1000:
            state["firing"] = True
            return AlertState.FIRING, dwell_ms
        return None, dwell_ms
    if state["since"] is None:
        return None, 0
    dwell_ms = state["last_seen"] - state["since"]
    gone_ms = ts_ms - state["last_seen"]
    if state["firing"]:
        if gone_ms >= p.clear_after_s * 1000:
            state.update(initial_state())
            return AlertState.CLEARED, dwell_ms
    elif gone_ms > gap_ms:
        state.update(initial_state())
    return None, dwell_ms


def _skip_blind_stretch(state: dict[str, Any], ts_ms: int, p: VideoRuleParams) -> None:
    """Shift the watch past a stretch without analysed frames (see ``blind_gap_s``), so
    that dwell and absence are timed over frames the camera actually saw."""
    last_frame = state.get("last_frame")
    if last_frame is None:
        return
    blind_ms = ts_ms - last_frame
    if blind_ms > p.blind_gap_s * 1000:
        state["since"] += blind_ms
        state["last_seen"] += blind_ms


def _stall_evidence(seen: list[Observation], p: VideoRuleParams) -> list[Observation]:
    still = _stationary(seen, p)
    people = [o for o in still if o.category is Category.PERSON]
    return [
        o
        for o in still
        if o.category is Category.STALL_PART
        and (o.label in p.stall_labels or any(_near(o, q, p) for q in people))
    ]


def _dumping_evidence(
    seen: list[Observation], p: VideoRuleParams
) -> tuple[list[Observation], bool]:
    """The still rubbish and static objects that count, and whether one was attended (a
    stationary person near it)."""
    blockers = [o for o in seen if o.category in _BLOCKERS]
    still = _stationary(seen, p)
    people = [o for o in still if o.category is Category.PERSON]
    evidence = []
    attended = False
    for o in still:
        if o.category not in (Category.RUBBISH, Category.STATIC_OBJECT):
            continue
        # A static object the detector saw confirmed and now sees hidden is behind a
        # passer-by; an uncovered-looking blob covered by a person or vehicle box is it.
        hidden = o.occluded and o.category is Category.STATIC_OBJECT
        if not hidden and any(_covered(o, b) > p.max_covered for b in blockers):
            continue
        if o.label in p.rubbish_labels or not any(_near(o, q, p) for q in people):
            evidence.append(o)
        else:
            attended = True
    return evidence, attended


def _stationary(seen: list[Observation], p: VideoRuleParams) -> list[Observation]:
    least = p.stationary_s * 1000
    return [o for o in seen if o.stationary_ms >= least]


def _near(a: Observation, b: Observation, p: VideoRuleParams) -> bool:
    ax, ay = (a.box[0] + a.box[2]) / 2, a.box[3]
    bx, by = (b.box[0] + b.box[2]) / 2, b.box[3]
    reach = p.near_heights * max(a.box[3] - a.box[1], b.box[3] - b.box[1])
    return (ax - bx) ** 2 + (ay - by) ** 2 <= reach**2


def _covered(obj: Observation, by: Observation) -> float:
    """Fraction of ``obj``'s box inside ``by``'s box."""
    x1, y1 = max(obj.box[0], by.box[0]), max(obj.box[1], by.box[1])
    x2, y2 = min(obj.box[2], by.box[2]), min(obj.box[3], by.box[3])
    area = (obj.box[2] - obj.box[0]) * (obj.box[3] - obj.box[1])
    if area <= 0:
        return 0.0
    return max(0.0, x2 - x1) * max(0.0, y2 - y1) / area
