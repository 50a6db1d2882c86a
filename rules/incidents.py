"""Incidents: one real-world problem behind one or more alerts — one incident, one case.

Dedup and merge (查重与并案) happen here:
- a repeat of an alert already bound to an open incident adds evidence, never a new case;
- an alert within the radius of an open incident's first alert, and within the window of
  its last activity, joins that incident when their classes are the same or of one family
  (``merge.families``: a full bin, the rubbish beside it, the camera that sees it — one
  problem at one collection point); a family has its own radius and window when set, the
  global ``radius_m``/``window_s`` otherwise. One incident carries every source's
  evidence, cameras' and sensors' alike;
- an incident of a family is "one problem at one collection point", and a collection point
  is where sources of the family's ``lead`` class stand (``lead_sites``: ``(class,
  place)`` pairs; the gateway passes each registered device's conditions with the class
  they file under (rules/engine.py ``class_sites``), not cameras' zones, though any
  source's place may be given). A case's class cannot
  change once filed on most platforms, so it is decided when the incident opens, from
  where the sources stand: the lead class when the alert is of it or a lead-class site
  stands within the family's radius (a camera seeing bags 5 m from a registered bin files
  a bin overflow, 06042); the alert's own class otherwise (bags dumped in a lane far from
  any bin are exposed rubbish, 06010). The reason is kept on the incident
  (``class_reason``). Merging does not depend on it: a later alert of any family class
  within the radius joins the incident (a bin added after the camera's case opened joins
  that case). The sites are indexed once, at construction, by class and cell: a city has
  thousands, and every new incident asks;
- with ``merge.duplicates`` each candidate gets a duplicate likelihood
  (rules/correlation.py): at or above ``merge_above`` the alert merges; from
  ``suspect_above`` it opens a new incident and the pair is recorded as a suspected
  duplicate (``take_suspects``) for an operator to merge (``merge_duplicate``) or
  dismiss; below, a new incident. Without it, everything within radius and window merges,
  as before. Every decision is kept on the incident (``decisions``, latest last) with its
  score and reasons;
- with ``merge.storms`` on, past ``per_hour`` new incidents of one class in one grid (or
  its parent) within an hour, a would-be new incident joins that grid's storm incident
  (rules/storms.py), which lists every site; each site's key is bound to it, so its clear
  attaches there and the other sites stay as they are;
- a higher-priority alert escalates the incident's case instead of opening another;
- a closed case (status synced back from the platform) closes the incident and re-arms its
  alerts, so the next occurrence files a new case;
- each incident remembers the latest alert of each of its keys that has not cleared
  (``persisting``): what its sensors and cameras still see. The closure check
  (gateway/closure_check.py) asks it when the case reaches verification or is closed, and
  ``flag`` records the check on the incident and makes the evidence commands for its case;
- an alert may be absorbed into a given open incident (``absorb``: the alert flow's
  inhibition, e.g. a single gauge joining its grid's area-wide flood case) whatever its
  class or distance.

Everything the book knows about an incident is in its dict (the gateway persists it as
is), so ``load`` after a restart puts back families, decisions and storms.

The merge search looks only at open incidents of the alert's class, or of its family, near
it (:class:`_MergeIndex`, a grid of cells at least the radius wide, one index per radius in
use), not at every open incident: a city has thousands open at once, and a backtest feeds
a week of alerts. Of several incidents at the same smallest distance the one with the
smallest id is taken; with duplicates, of the same best score the nearest, then the one
active last (a third bin at one spot is judged against the latest case there), then the
smallest id.

Each change yields CaseCommands whose ids are derived from the incident and a per-incident
counter: replaying the same alerts after a crash produces the same ids, which the case
bridge uses as idempotency keys.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from domain import Alert, AlertState, CaseCommand, CommandKind, Location, Priority
from rules.correlation import Judgement, Relation, likelihood, sources_of
from rules.merge_settings import Family, MergePolicy, MergeSettings
from rules.storms import StormCounts

__all__ = ["IncidentBook", "MergePolicy"]

# Closure checks an incident keeps for operators (the API shows them), latest last.
MAX_CHECKS_KEPT = 10
MAX_DECISIONS_KEPT = 20  # merge decisions an incident keeps, latest last
MAX_SOURCES_KEPT = 64  # sources an incident remembers for the duplicate likelihood
MAX_CLASSES_KEPT = 32
MAX_STORM_SITES = 1000  # the newest sites a storm lists; older ones still clear there


@dataclass(frozen=True, slots=True)
class _Scope:
    """Where an alert of one class looks for incidents to merge with."""

    group: str  # the index key: the class code, or "family:<name>"
    radius_m: float
    window_ms: int
    family: Family | None


@dataclass(frozen=True, slots=True)
class _Decision:
    outcome: str  # "merged" | "suspected" | "new" | "storm" (joined a storm instead)
    other: str  # the incident merged into or compared with ("" when none)
    judgement: Judgement


_NO_CANDIDATE = Judgement(
    0.0, ("no open incident of its class or family within radius and window",)
)
_NOT_MERGED = Judgement(0.0, ("a problem of one device: never merged",))


class IncidentBook:
    """``policy`` is the same-class radius and window; ``settings`` adds families,
    duplicates and storms (its own radius and window are not read: pass
    ``settings.to_policy()`` as ``policy``); ``grid_parent`` gives a grid's parent grid
    ("" if none) for storms counted per parent grid; ``lead_sites`` are ``(class_code,
    Location)`` of sources (the gateway: its devices' conditions), of which those of a
    family's lead class decide
    whether a new incident of that family is filed under the lead (the others are not
    kept)."""

    _index_type: type[_MergeIndex]  # bench/incidents.py swaps in a scan as its baseline

    def __init__(
        self,
        policy: MergePolicy,
        settings: MergeSettings | None = None,
        grid_parent: Callable[[str], str] | None = None,
        lead_sites: Iterable[tuple[str, Location]] = (),
    ) -> None:
        self._policy = policy
        self._settings = settings or MergeSettings()
        self._incidents: dict[str, dict[str, Any]] = {}
        self._open_by_key: dict[str, str] = {}
        self._keys_bound: dict[str, int] = {}  # open incident id → keys in _open_by_key
        self._indexes: dict[float, _MergeIndex] = {}  # one per radius in use
        self._indexed_in: dict[str, _MergeIndex] = {}
        self._scopes: dict[str, _Scope] = {}
        self._families = {c: f for f in self._settings.families for c in f.classes}
        self._sites = self._index_sites(lead_sites)
        storms = self._settings.storms
        self._storm_counts = StormCounts(storms, grid_parent) if storms.enabled else None
        self._storms: dict[tuple[str, str], str] = {}  # (class, grid) → open storm id
        self._suspects: list[dict[str, Any]] = []
        self._dirty: set[str] = set()

    def load(self, incident: dict[str, Any]) -> None:
        """Put back an open incident after a restart (closed ones are not kept in memory);
        a storm is again the one of its class and grid, and the storm counts take the
        incident's opening (or its sites') back."""
        if incident["status"] != "open":
            return
        self._incidents[incident["id"]] = incident
        for key in incident["alert_keys"]:
            self._map_key(key, incident["id"])
        storm = incident.get("storm")
        if storm:
            self._storms[(storm["class_code"], storm["grid"])] = incident["id"]
        if self._storm_counts is None:
            return
        if storm:
            for site in storm["sites"]:
                grid = site["location"].get("grid_code", "")
                self._storm_counts.count(storm["class_code"], grid, site["ts"])
        elif incident.get("merge", True) and incident["location"]["grid_code"]:
            grid = incident["location"]["grid_code"]
            self._storm_counts.count(incident["class_code"], grid, incident["opened_ts"])

    def handle(self, alert: Alert) -> list[CaseCommand]:
        incident_id = self._open_by_key.get(alert.key)
        if incident_id is not None:
            return [self._update(self._incidents[incident_id], alert)]
        if alert.state is AlertState.CLEARED:
            return []  # a clear for an alert whose case is already closed
        decision = self._decide(alert)
        if decision.outcome == "merged":
            incident = self._incidents[decision.other]
            self._bind(decision.other, alert.key)
            _record(incident, alert, decision)
            return [self._update(incident, alert)]
        case_alert, class_reason = self._case_alert(alert)
        storm = self._join_storm(alert, case_alert, class_reason)
        if storm is not None:
            grid = self._incidents[storm.incident_id]["storm"]["grid"]
            why = f"past {self._settings.storms.per_hour} new an hour in grid {grid}"
            judged = Judgement(decision.judgement.score, (why, *decision.judgement.reasons))
            _record(self._incidents[storm.incident_id], alert, _Decision("storm", "", judged))
            return [storm]
        command = self._open(alert, case_alert, class_reason)
        incident = self._incidents[command.incident_id]
        _record(incident, alert, decision)
        if decision.outcome == "suspected":
            self._suspects.append(
                {"id": f"{incident['id']}~{decision.other}", "incident_id": incident["id"],
                 "other_incident_id": decision.other, "score": decision.judgement.score,
                 "reasons": list(decision.judgement.reasons), "ts": alert.ts}
            )  # fmt: skip
        return [command]

    def take_suspects(self) -> list[dict[str, Any]]:
        """Suspected-duplicate pairs found since the last call, for the caller to persist
        with the incidents (``id`` is "<new incident>~<other incident>")."""
        found, self._suspects = self._suspects, []
        return found

    def merge_duplicate(
        self, incident_id: str, into_id: str, at_ms: int, score: float | None = None
    ) -> list[CaseCommand]:
        """An operator merges the suspected duplicate ``incident_id`` into ``into_id``:
        every key of the duplicate is bound to ``into_id``, whose case gets the duplicate's
        latest alert as evidence (ATTACH; ESCALATE, raising its priority, when the
        duplicate's was higher: a critical case is never voided into a lesser one), and the
        duplicate's case is voided on the platform (VOID); the duplicate closes "merged
        into <into_id>". The merge is recorded on ``into_id`` as a decision with ``score``
        (the stored pair's), or, without it, the score of the duplicate's decision about
        ``into_id`` while it is among those kept; ``None`` when neither is known (never a
        made-up one). Raises ValueError (with the reason) unless both are open and
        distinct."""
        duplicate = self._incidents.get(incident_id)
        into = self._incidents.get(into_id)
        if incident_id == into_id:
            raise ValueError("an incident cannot be merged into itself")
        for name, found in ((incident_id, duplicate), (into_id, into)):
            if found is None or found["status"] != "open":
                raise ValueError(f"incident {name} is not open")
        assert duplicate is not None and into is not None
        latest = _latest(duplicate)
        for key in duplicate["alert_keys"]:
            if self._open_by_key.get(key) == incident_id:
                self._bind(into_id, key)
        for key, firing in duplicate.get("firing", {}).items():
            into.setdefault("firing", {})[key] = firing
        for source, origin in duplicate.get("sources", {}).items():
            _remember(into, alert_class="", source=source, origin=origin)
        for code in duplicate.get("classes", []):
            _remember(into, alert_class=code, source="", origin="")
        if score is None:
            decisions = reversed(duplicate.get("decisions", []))
            score = next((d["score"] for d in decisions if d["other"] == into_id), None)
        why = Judgement(score, (f"merged by an operator: duplicate {incident_id}",))
        _record(into, latest, _Decision("merged", incident_id, why))
        into["last_ts"] = max(into["last_ts"], at_ms)
        into["commands"] += 1
        kind = CommandKind.ATTACH
        if Priority(duplicate["priority"]).rank > Priority(into["priority"]).rank:
            kind = CommandKind.ESCALATE  # the kept case takes the duplicate's urgency
            into["priority"] = duplicate["priority"]
        attach = CaseCommand(
            f"{into_id}/{into['commands']}", into_id, kind,
            _summarised(latest, f"merged duplicate {incident_id}"), Priority(into["priority"]),
        )  # fmt: skip
        duplicate["commands"] += 1
        void = CaseCommand(
            f"{incident_id}/{duplicate['commands']}", incident_id, CommandKind.VOID,
            _summarised(latest, f"duplicate of {into_id}"),
            Priority(duplicate["priority"]),
        )  # fmt: skip
        self.close(incident_id, f"merged into {into_id}")
        self._dirty.add(into_id)
        return [attach, void]

    def open_ids(self) -> list[str]:
        """The ids of the open incidents."""
        return [i for i, incident in self._incidents.items() if incident["status"] == "open"]

    def incident_of(self, key: str) -> str | None:
        """The open incident this alert key is bound to, if any."""
        return self._open_by_key.get(key)

    def persisting(self, incident_id: str) -> list[Alert]:
        """The latest alert of each of the open incident's keys whose last transition was
        not a clear, in key order: what its sources still see. Empty for an incident that
        is not open, or one stored before the book kept this (its alerts count as cleared,
        as every closed case was taken before)."""
        incident = self._incidents.get(incident_id)
        if incident is None or incident["status"] != "open":
            return []
        firing = incident.get("firing", {})
        return [Alert.from_dict(firing[key]) for key in sorted(firing)]

    def flag_of(self, incident_id: str) -> str:
        """The case status at which the open incident's standing closure flag was raised
        ("" when none stands)."""
        incident = self._incidents.get(incident_id)
        if incident is None or incident["status"] != "open":
            return ""
        return incident.get("flag", "")

    def flag(
        self, incident_id: str, status: str, evidence: list[Alert], at_ms: int
    ) -> list[CaseCommand]:
        """Raise a closure flag on the open incident: its case reached ``status`` while
        ``evidence`` (one alert per source still seeing the problem) says it persists.
        Recorded on the incident (``flag`` and the latest ``closure_checks``); returns the
        evidence commands for its case, numbered like every other command of the incident,
        so the ids are stable idempotency keys."""
        incident = self._incidents.get(incident_id)
        if incident is None or incident["status"] != "open":
            return []
        incident["flag"] = status
        check = {"status": status, "at_ms": at_ms, "summaries": [a.summary for a in evidence]}
        incident["closure_checks"] = [*incident.get("closure_checks", []), check][-MAX_CHECKS_KEPT:]
        self._dirty.add(incident_id)
        priority = Priority(incident["priority"])
        commands = []
        for alert in evidence:
            incident["commands"] += 1
            commands.append(
                CaseCommand(f"{incident_id}/{incident['commands']}", incident_id,
                            CommandKind.ATTACH, alert, priority)
            )  # fmt: skip
        return commands

    def unflag(self, incident_id: str) -> bool:
        """Take the open incident's standing flag down (its case was sent back to be
        handled again: the next verification is checked afresh); whether one stood."""
        if not self.flag_of(incident_id):
            return False
        self._incidents[incident_id]["flag"] = ""
        self._dirty.add(incident_id)
        return True

    def absorb(self, alert: Alert, incident_id: str) -> list[CaseCommand]:
        """Bind ``alert`` to the open incident ``incident_id`` and add it there as evidence
        (escalating the case if the alert is worse); an alert already bound elsewhere, or
        an incident no longer open, is handled as usual."""
        incident = self._incidents.get(incident_id)
        if alert.key in self._open_by_key or incident is None or incident["status"] != "open":
            return self.handle(alert)
        self._bind(incident_id, alert.key)
        return [self._update(incident, alert)]

    def close(self, incident_id: str, reason: str) -> list[str]:
        """Close an open incident; return its alert keys still bound to it for the rule
        engine to re-arm (a merged duplicate's keys went to the other incident)."""
        incident = self._incidents.get(incident_id)
        if incident is None or incident["status"] != "open":
            return []
        incident["status"] = "closed"
        incident["closed_reason"] = reason
        rearm = [k for k in incident["alert_keys"] if self._open_by_key.get(k) == incident_id]
        for key in rearm:
            self._unmap_key(key)
        storm = incident.get("storm")
        if storm and self._storms.get((storm["class_code"], storm["grid"])) == incident_id:
            del self._storms[(storm["class_code"], storm["grid"])]
        self._dirty.add(incident_id)
        return rearm

    def take_dirty(self) -> dict[str, dict[str, Any]]:
        """Incidents changed since the last call, for the caller to persist. A closed
        incident is handed over one last time and then forgotten: it can take no more
        alerts, and memory must not grow with every case a city ever had."""
        changed = {i: self._incidents[i] for i in self._dirty}
        self._dirty.clear()
        for incident_id, incident in changed.items():
            if incident["status"] != "open":
                del self._incidents[incident_id]
        return changed

    def _scope(self, class_code: str) -> _Scope:
        scope = self._scopes.get(class_code)
        if scope is None:
            family = self._families.get(class_code)
            radius, window = self._policy.radius_m, self._policy.window_ms
            if family is None:
                scope = _Scope(class_code, radius, window, None)
            else:
                if family.radius_m is not None:
                    radius = family.radius_m
                if family.window_s is not None:
                    window = int(family.window_s * 1000)
                scope = _Scope(f"family:{family.name}", radius, window, family)
            self._scopes[class_code] = scope
        return scope

    def _decide(self, alert: Alert) -> _Decision:
        """Judge the alert against the open incidents of its class and family near it:
        without ``duplicates`` the nearest within radius and window (the smallest id of
        several) is merged into; with it, the best score decides."""
        if not alert.merge:
            return _Decision("new", "", _NOT_MERGED)
        scope = self._scope(alert.class_code)
        index = self._indexes.get(scope.radius_m)
        found: list[tuple[float, float, int, str, Judgement]] = []
        for incident_id, where in index.near(scope.group, alert.location) if index else ():
            incident = self._incidents[incident_id]
            gap = alert.ts - incident["last_ts"]
            distance = where.distance_m(alert.location)
            if not (gap <= scope.window_ms and distance <= scope.radius_m):
                continue  # (a distance that is not a number is never near)
            classes = incident.get("classes", [incident["class_code"]])
            relation = Relation.SAME_CLASS if alert.class_code in classes else Relation.SAME_FAMILY
            sources = sources_of(
                alert.source_id, alert.origin == "video", incident.get("sources", {})
            )
            family = scope.family.name if scope.family else ""
            judged = likelihood(
                distance, scope.radius_m, gap, scope.window_ms, relation, sources, family
            )
            found.append((-judged.score, distance, -incident["last_ts"], incident_id, judged))
        if not found:
            return _Decision("new", "", _NO_CANDIDATE)
        cutoffs = self._settings.duplicates
        if cutoffs is None:
            *_, other, judged = min(found, key=lambda f: (f[1], f[3]))
            return _Decision("merged", other, judged)
        *_, other, judged = min(found, key=lambda f: f[:4])
        if judged.score >= cutoffs.merge_above:
            return _Decision("merged", other, judged)
        if judged.score >= cutoffs.suspect_above:
            return _Decision("suspected", other, judged)
        return _Decision("new", other, judged)

    def _index_sites(self, sites: Iterable[tuple[str, Location]]) -> dict[str, _MergeIndex]:
        """The sites of each family's lead class, by lead (one index per family radius)."""
        indexes: dict[float, _MergeIndex] = {}
        by_lead: dict[str, _MergeIndex] = {}
        for family in self._settings.families:
            radius = self._scope(family.lead).radius_m
            if radius not in indexes:
                indexes[radius] = _MergeIndex(radius)
            by_lead[family.lead] = indexes[radius]
        for number, (class_code, where) in enumerate(sites):
            index = by_lead.get(class_code)
            if index is not None:
                index.add(str(number), class_code, {"lat": where.lat, "lon": where.lon})
        return by_lead

    def _case_alert(self, alert: Alert) -> tuple[Alert, str]:
        """The alert as a new incident's case is filed, and why that class: the family's
        lead when the alert is of it or a lead-class site is within the family's radius,
        its own class otherwise."""
        scope = self._scope(alert.class_code)
        family = scope.family
        if family is None:
            return alert, "own class: in no family"
        lead = family.lead
        if alert.class_code == lead:
            return alert, f"lead {lead}: the alert is of the lead class"
        index = self._sites.get(lead)
        nearest = min(
            (
                distance
                for _, where in (index.near(lead, alert.location) if index else ())
                if (distance := where.distance_m(alert.location)) <= scope.radius_m
            ),
            default=None,
        )  # (a distance that is not a number is never near)
        if nearest is None:
            return alert, f"own class: no {lead} site within {scope.radius_m:.0f} m"
        return replace(alert, class_code=lead), f"lead {lead}: a {lead} site {nearest:.0f} m away"

    def _join_storm(self, alert: Alert, case_alert: Alert, why: str) -> CaseCommand | None:
        """Count a would-be new incident (of ``case_alert``'s class, ``why`` that one);
        past the storm bound, bind the alert to the storm open for its class in its grid
        or its parent grid (so two storms never cover one site), or else open one for the
        grid past the bound, and return the command; else None."""
        grid = alert.location.grid_code
        if self._storm_counts is None or not alert.merge or not grid:
            return None
        class_code = case_alert.class_code
        scope = self._storm_counts.past(class_code, grid, alert.ts)
        self._storm_counts.count(class_code, grid, alert.ts)
        if scope is None:
            return None
        open_storms = (self._storms.get((class_code, g)) for g in self._storm_counts.scopes(grid))
        storm_id = next((s for s in open_storms if s is not None), None)
        if storm_id is None:
            summary = f"storm: more than {self._settings.storms.per_hour} new {class_code} " \
                      f"within an hour in grid {scope}; {alert.summary}"  # fmt: skip
            # The storm's grid decides its responsible unit: the case is filed there.
            where = replace(case_alert.location, grid_code=scope)
            storm_alert = replace(case_alert, summary=summary, location=where)
            command = self._open(alert, storm_alert, why, storm_grid=scope)
            self._storms[(class_code, scope)] = command.incident_id
            return command
        storm = self._incidents[storm_id]
        self._bind(storm_id, alert.key)
        return self._update(storm, alert)

    def _map_key(self, key: str, incident_id: str) -> None:
        """Bind ``key`` to an open incident; an incident with its first bound key becomes
        a merge candidate (an alert can only merge into an incident some key is bound to)."""
        was = self._open_by_key.get(key)
        if was == incident_id:
            return
        if was is not None:
            self._unmap_key(key)
        self._open_by_key[key] = incident_id
        count = self._keys_bound.get(incident_id, 0)
        self._keys_bound[incident_id] = count + 1
        incident = self._incidents[incident_id]
        if count == 0 and incident.get("merge", True):
            scope = self._scope(incident["class_code"])
            index = self._indexes.get(scope.radius_m)
            if index is None:
                index = self._indexes[scope.radius_m] = self._index_type(scope.radius_m)
            index.add(incident_id, scope.group, incident["location"])
            self._indexed_in[incident_id] = index

    def _unmap_key(self, key: str) -> None:
        incident_id = self._open_by_key.pop(key)
        count = self._keys_bound.pop(incident_id) - 1
        if count:
            self._keys_bound[incident_id] = count
        else:
            index = self._indexed_in.pop(incident_id, None)
            if index is not None:
                index.discard(incident_id)

    def _bind(self, incident_id: str, key: str) -> None:
        incident = self._incidents[incident_id]
        if key not in incident["alert_keys"]:
            incident["alert_keys"].append(key)
        self._map_key(key, incident_id)

    def _open(
        self, alert: Alert, case_alert: Alert, class_reason: str, storm_grid: str = ""
    ) -> CaseCommand:
        """Open an incident (a storm when ``storm_grid`` is set) for ``alert``; its case is
        filed with ``case_alert`` (the lead class, a storm's summary), whose class is
        there for ``class_reason``."""
        prefix = "STORM" if storm_grid else "INC"
        digest = hashlib.sha1(f"{alert.key}@{alert.ts}".encode()).hexdigest()[:12]
        where = alert.location
        incident: dict[str, Any] = {
            "id": f"{prefix}-{digest}",
            "status": "open",
            "class_code": case_alert.class_code,
            "class_reason": class_reason,
            "priority": str(alert.priority),
            "location": {
                "lat": where.lat,
                "lon": where.lon,
                "address": where.address,
                "grid_code": storm_grid or where.grid_code,
            },
            "opened_ts": alert.ts,
            "last_ts": alert.ts,
            "alert_keys": [alert.key],
            "commands": 1,
            "closed_reason": "",
            "merge": alert.merge and not storm_grid,
            "firing": {},
            "classes": [],
            "sources": {},
            "decisions": [],
        }
        if storm_grid:
            incident["storm"] = {"grid": storm_grid, "class_code": case_alert.class_code,
                                 "sites": []}  # fmt: skip
        _track(incident, alert)
        self._incidents[incident["id"]] = incident
        self._map_key(alert.key, incident["id"])
        self._dirty.add(incident["id"])
        return CaseCommand(
            command_id=f"{incident['id']}/1",
            incident_id=incident["id"],
            kind=CommandKind.OPEN,
            alert=case_alert,
            priority=alert.priority,
        )

    def _update(self, incident: dict[str, Any], alert: Alert) -> CaseCommand:
        current = Priority(incident["priority"])
        kind = CommandKind.ATTACH
        if alert.state is not AlertState.CLEARED and alert.priority.rank > current.rank:
            kind = CommandKind.ESCALATE
            incident["priority"] = str(alert.priority)
        incident["last_ts"] = max(incident["last_ts"], alert.ts)
        _track(incident, alert)
        incident["commands"] += 1
        self._dirty.add(incident["id"])
        return CaseCommand(
            command_id=f"{incident['id']}/{incident['commands']}",
            incident_id=incident["id"],
            kind=kind,
            alert=alert,
            priority=Priority(incident["priority"]),
        )


def _record(incident: dict[str, Any], alert: Alert, decision: _Decision) -> None:
    entry = {"alert_key": alert.key, "score": decision.judgement.score,
             "reasons": list(decision.judgement.reasons), "outcome": decision.outcome,
             "other": decision.other}  # fmt: skip
    incident["decisions"] = [*incident.get("decisions", []), entry][-MAX_DECISIONS_KEPT:]


def _summarised(alert: Alert, what: str) -> Alert:
    return replace(alert, summary=f"{what}: {alert.summary}" if alert.summary else what)


def _latest(incident: dict[str, Any]) -> Alert:
    """The incident's latest alert (one stored before the book kept it: its latest firing
    one); ValueError when it has none."""
    data = incident.get("latest") or max(
        incident.get("firing", {}).values(), key=lambda a: a["ts"], default=None
    )
    if data is None:
        raise ValueError(f"incident {incident['id']} keeps no alert to merge")
    return Alert.from_dict(data)


def _track(incident: dict[str, Any], alert: Alert) -> None:
    """Keep the alert as its key's latest while it fires; forget the key when it clears.
    Its pictures are left out: a closure check takes its own. Also kept: the latest alert,
    the classes and sources seen (bounded: what the duplicate likelihood asks), and a
    storm's site for the alert's key with its state."""
    kept = {**alert.to_dict(), "media": []}
    firing = incident.setdefault("firing", {})
    if alert.state is AlertState.CLEARED:
        firing.pop(alert.key, None)
    else:
        firing[alert.key] = kept
    incident["latest"] = kept
    _remember(incident, alert.class_code, alert.source_id, alert.origin)
    storm = incident.get("storm")
    if storm is not None:
        _track_site(storm["sites"], alert)


def _remember(incident: dict[str, Any], alert_class: str, source: str, origin: str) -> None:
    """Add a class and a source (each when given) to what the incident has seen, bounded."""
    classes = incident.setdefault("classes", [])
    if alert_class and alert_class not in classes and len(classes) < MAX_CLASSES_KEPT:
        classes.append(alert_class)
    sources = incident.setdefault("sources", {})
    if source and source not in sources and len(sources) < MAX_SOURCES_KEPT:
        sources[source] = origin


def _track_site(sites: list[dict[str, Any]], alert: Alert) -> None:
    """Update the site's state, or list a new site; past ``MAX_STORM_SITES`` the oldest
    listed one makes room (its key stays bound to the storm): the newest are what the desk
    looks at and what the storm counts are rebuilt from after a restart."""
    for site in sites:
        if site["key"] == alert.key:
            site["state"] = str(alert.state)
            return
    del sites[: max(len(sites) - MAX_STORM_SITES + 1, 0)]
    where = alert.location
    sites.append({"key": alert.key, "source_id": alert.source_id,
                  "location": {"lat": where.lat, "lon": where.lon,
                               "address": where.address, "grid_code": where.grid_code},
                  "state": str(alert.state), "ts": alert.ts})  # fmt: skip


_EARTH_RADIUS_M = 6_371_008.8  # as Location.distance_m
_MARGIN = 1.01  # cells a little wider than the bound: rounding never loses a neighbour
_MAX_CELL_DEG = 30.0  # wider longitude cells (near a pole, a huge radius): scan instead


class _MergeIndex:
    """Merge candidates (open incidents that take merges) by group (a class code, or a
    family of classes) and cell.

    A cell is ``lat_step`` high and, in its row, ``lon_step(row)`` wide, both at least the
    radius: two places within the radius of each other are in the same or neighbouring
    rows (the great-circle distance is at least R·|Δlat|), and with haversine's
    ``hav(d/R) ≥ cos φ1 cos φ2 hav(Δλ)`` a row's width is set from the smallest cosine of
    the rows either side of it, so they are in the same or neighbouring columns of the
    incident's row too. Where a cell cannot be exact — near a pole (the width would be
    huge), within a cell of the antimeridian (longitudes wrap), a coordinate that is not
    a finite WGS-84 one — the incident is kept aside and always looked at, and an alert
    there looks at every candidate of its group."""

    def __init__(self, radius_m: float) -> None:
        radius_deg = math.degrees(radius_m / _EARTH_RADIUS_M) if radius_m > 0 else 0.0
        self._radius_rad = radius_m / _EARTH_RADIUS_M if radius_m > 0 else 0.0
        self._lat_step = max(radius_deg * _MARGIN, 1e-9)
        self._usable = math.isfinite(radius_deg) and radius_deg * _MARGIN < _MAX_CELL_DEG
        self._cells: dict[tuple[str, int, int], dict[str, Location]] = {}
        self._aside: dict[str, dict[str, Location]] = {}  # group → incidents kept aside
        self._by_group: dict[str, dict[str, Location]] = {}
        self._where: dict[str, tuple[str, tuple[int, int] | None]] = {}
        self._widths: dict[int, float | None] = {}

    def add(self, incident_id: str, group: str, location: dict[str, Any]) -> None:
        where = Location(location["lat"], location["lon"])
        cell = self._cell(where.lat, where.lon)
        self._by_group.setdefault(group, {})[incident_id] = where
        if cell is None:
            self._aside.setdefault(group, {})[incident_id] = where
        else:
            self._cells.setdefault((group, *cell), {})[incident_id] = where
        self._where[incident_id] = (group, cell)

    def discard(self, incident_id: str) -> None:
        found = self._where.pop(incident_id, None)
        if found is None:
            return
        group, cell = found
        _drop(self._by_group, group, incident_id)
        if cell is None:
            _drop(self._aside, group, incident_id)
        else:
            _drop(self._cells, (group, *cell), incident_id)

    def near(self, group: str, location: Location) -> list[tuple[str, Location]]:
        """Every candidate of ``group`` (a class, or every class of a family) that may be
        within the radius of ``location`` (a superset of those that are; more where no
        cell is exact)."""
        cell = self._cell(location.lat, location.lon, neighbours=True)
        if cell is None:
            return list(self._by_group.get(group, {}).items())
        row, lon = cell
        found = list(self._aside.get(group, {}).items())
        for r in (row - 1, row, row + 1):
            width = self._width(r)  # not None: _cell checked the neighbouring rows
            column = math.floor(lon / width)
            for c in (column - 1, column, column + 1):
                found.extend(self._cells.get((group, r, c), {}).items())
        return found

    def _cell(self, lat: float, lon: float, neighbours: bool = False) -> tuple | None:
        """(row, column) of an incident; with ``neighbours``, (row, lon) of an alert whose
        neighbouring rows all have exact cells. None where the grid cannot be exact."""
        if not (self._usable and math.isfinite(lat) and math.isfinite(lon)):
            return None
        if abs(lat) > 90 or abs(lon) > 180:
            return None
        row = math.floor(lat / self._lat_step)
        rows = (row - 1, row, row + 1) if neighbours else (row,)
        widths = [self._width(r) for r in rows]
        if any(w is None or abs(lon) > 180 - w for w in widths):
            return None
        return (row, lon) if neighbours else (row, math.floor(lon / widths[0]))

    def _width(self, row: int) -> float | None:
        """The longitude step of ``row`` in degrees (None: too wide to be useful)."""
        if row in self._widths:
            return self._widths[row]
        step = self._lat_step
        highest = max(abs((row - 1) * step), abs((row + 2) * step)) + step
        width = None
        if highest < 90:
            sine = math.sin(self._radius_rad / 2) / math.cos(math.radians(highest))
            if sine < 1:
                width = math.degrees(2 * math.asin(sine)) * _MARGIN + 1e-9
                width = width if width < _MAX_CELL_DEG else None
        self._widths[row] = width
        return width


def _drop(table: dict, key: Any, incident_id: str) -> None:
    members = table.get(key)
    if members is not None:
        members.pop(incident_id, None)
        if not members:
            del table[key]


IncidentBook._index_type = _MergeIndex
