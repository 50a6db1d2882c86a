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
  they file under, rules/engine.py ``class_sites``, not cameras' zones, though any
  source's place may be given). A case's class cannot change once filed on most platforms,
  so it is decided when the incident opens, from where the sources stand: the lead class
  when the alert is of it or a lead-class site stands within the family's radius (a camera
  seeing bags 5 m from a registered bin files a bin overflow, 06042); the alert's own
  class otherwise (bags dumped in a lane far from any bin are exposed rubbish, 06010). The
  reason is kept on the incident (``class_reason``). Merging does not depend on it: a
  later alert of any family class within the radius joins the incident (a bin added after
  the camera's case opened joins that case). The sites are indexed once, at construction,
  by class and cell: a city has thousands, and every new incident asks;
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
is; its format is rules/incident_record.py's), so ``load`` after a restart puts back
families, decisions and storms.

The merge search looks only at open incidents of the alert's class, or of its family, near
it (rules/merge_index.py: a grid of cells at least the radius wide, one index per radius
in use), not at every open incident: a city has thousands open at once, and a backtest feeds
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from domain import Alert, AlertState, CaseCommand, CommandKind, Location, Priority
from rules import incident_record as record
from rules.correlation import Judgement, Relation, likelihood, sources_of
from rules.merge_index import MergeIndex
from rules.merge_settings import Family, MergePolicy, MergeSettings
from rules.storms import StormDesk

__all__ = ["IncidentBook", "MergePolicy"]


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

    def keep(self, incident: dict[str, Any], alert_key: str) -> None:
        judged = self.judgement
        record.record(incident, alert_key, self.outcome, self.other, judged.score, judged.reasons)


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
    family's lead class decide whether a new incident of that family is filed under the
    lead (the others are not kept); ``index_type`` is the merge search's index
    (bench/incidents.py passes a scan as its baseline)."""

    def __init__(
        self,
        policy: MergePolicy,
        settings: MergeSettings | None = None,
        grid_parent: Callable[[str], str] | None = None,
        lead_sites: Iterable[tuple[str, Location]] = (),
        index_type: type[MergeIndex] = MergeIndex,
    ) -> None:
        self._policy = policy
        self._settings = settings or MergeSettings()
        self._index_type = index_type
        self._incidents: dict[str, dict[str, Any]] = {}
        self._open_by_key: dict[str, str] = {}
        self._keys_bound: dict[str, int] = {}  # open incident id → keys in _open_by_key
        self._indexes: dict[float, MergeIndex] = {}  # one per radius in use
        self._indexed_in: dict[str, MergeIndex] = {}
        self._scopes: dict[str, _Scope] = {}
        self._sites = self._index_sites(lead_sites)
        storms = self._settings.storms
        self._storms = StormDesk(storms, grid_parent) if storms.enabled else None
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
        if self._storms is not None:
            self._storms.load(incident)

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
            decision.keep(incident, alert.key)
            return [self._update(incident, alert)]
        case_alert, class_reason = self._case_alert(alert)
        storm = self._join_storm(alert, case_alert, class_reason, decision.judgement)
        if storm is not None:
            return [storm]
        command = self._open(alert, case_alert, class_reason)
        incident = self._incidents[command.incident_id]
        decision.keep(incident, alert.key)
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
        latest = record.latest(duplicate)
        for key in duplicate["alert_keys"]:
            if self._open_by_key.get(key) == incident_id:
                self._bind(into_id, key)
        record.take_over(into, duplicate)
        if score is None:
            decisions = reversed(duplicate.get("decisions", []))
            score = next((d["score"] for d in decisions if d["other"] == into_id), None)
        why = Judgement(score, (f"merged by an operator: duplicate {incident_id}",))
        _Decision("merged", incident_id, why).keep(into, latest.key)
        into["last_ts"] = max(into["last_ts"], at_ms)
        into["commands"] += 1
        kind = CommandKind.ATTACH
        if Priority(duplicate["priority"]).rank > Priority(into["priority"]).rank:
            kind = CommandKind.ESCALATE  # the kept case takes the duplicate's urgency
            into["priority"] = duplicate["priority"]
        attach = CaseCommand(
            f"{into_id}/{into['commands']}", into_id, kind,
            record.summarised(latest, f"merged duplicate {incident_id}"),
            Priority(into["priority"]), into["class_code"],
        )  # fmt: skip
        duplicate["commands"] += 1
        void = CaseCommand(
            f"{incident_id}/{duplicate['commands']}", incident_id, CommandKind.VOID,
            record.summarised(latest, f"duplicate of {into_id}"),
            Priority(duplicate["priority"]), duplicate["class_code"],
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
        record.check(incident, status, at_ms, [a.summary for a in evidence])
        self._dirty.add(incident_id)
        priority = Priority(incident["priority"])
        commands = []
        for alert in evidence:
            incident["commands"] += 1
            commands.append(
                CaseCommand(f"{incident_id}/{incident['commands']}", incident_id,
                            CommandKind.ATTACH, alert, priority, incident["class_code"])
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
        if self._storms is not None:
            self._storms.closed(incident)
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
            family = self._settings.family_of(class_code)
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

    def set_lead_sites(self, sites: Iterable[tuple[str, Location]]) -> None:
        """Where lead-class sources stand now (a threshold change may give a kind another
        class): incidents opened from here on are classed by these; open ones keep theirs."""
        self._sites = self._index_sites(sites)

    def _index_sites(self, sites: Iterable[tuple[str, Location]]) -> dict[str, MergeIndex]:
        """The sites of each family's lead class, by lead (one index per family radius)."""
        indexes: dict[float, MergeIndex] = {}
        by_lead: dict[str, MergeIndex] = {}
        for family in self._settings.families:
            radius = self._scope(family.lead).radius_m
            if radius not in indexes:
                indexes[radius] = self._index_type(radius)  # the bench's scan too
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

    def _join_storm(
        self, alert: Alert, case_alert: Alert, why: str, judged: Judgement
    ) -> CaseCommand | None:
        """Count a would-be new incident (of ``case_alert``'s class, ``why`` that one,
        ``judged`` against the incidents near it); past the storm bound, bind the alert to
        the storm open for its class in its grid or its parent grid (so two storms never
        cover one site), or else open one for the grid past the bound, record the decision
        there and return the command; else None."""
        grid = alert.location.grid_code
        if self._storms is None or not alert.merge or not grid:
            return None
        class_code = case_alert.class_code
        call = self._storms.call(class_code, grid, alert.ts)
        if call is None:
            return None
        past = f"past {self._storms.per_hour} new an hour in grid {call.grid}"
        decision = _Decision("storm", "", Judgement(judged.score, (past, *judged.reasons)))
        if call.storm_id:
            storm = self._incidents[call.storm_id]
            self._bind(call.storm_id, alert.key)
            decision.keep(storm, alert.key)
            return self._update(storm, alert)
        summary = f"storm: more than {self._storms.per_hour} new {class_code} " \
                  f"within an hour in grid {call.grid}; {alert.summary}"  # fmt: skip
        # The storm's grid decides its responsible unit: the case is filed there.
        where = replace(case_alert.location, grid_code=call.grid)
        storm_alert = replace(case_alert, summary=summary, location=where)
        command = self._open(alert, storm_alert, why, storm_grid=call.grid)
        self._storms.opened(class_code, call.grid, command.incident_id)
        decision.keep(self._incidents[command.incident_id], alert.key)
        return command

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
        incident = record.new_incident(
            f"{prefix}-{digest}", alert, case_alert.class_code, class_reason, storm_grid
        )
        self._incidents[incident["id"]] = incident
        self._map_key(alert.key, incident["id"])
        self._dirty.add(incident["id"])
        return CaseCommand(
            command_id=f"{incident['id']}/1",
            incident_id=incident["id"],
            kind=CommandKind.OPEN,
            alert=case_alert,
            priority=alert.priority,
            case_class=case_alert.class_code,
        )

    def _update(self, incident: dict[str, Any], alert: Alert) -> CaseCommand:
        current = Priority(incident["priority"])
        kind = CommandKind.ATTACH
        if alert.state is not AlertState.CLEARED and alert.priority.rank > current.rank:
            kind = CommandKind.ESCALATE
            incident["priority"] = str(alert.priority)
        incident["last_ts"] = max(incident["last_ts"], alert.ts)
        record.track(incident, alert)
        incident["commands"] += 1
        self._dirty.add(incident["id"])
        return CaseCommand(
            command_id=f"{incident['id']}/{incident['commands']}",
            incident_id=incident["id"],
            kind=kind,
            alert=alert,
            priority=Priority(incident["priority"]),
            case_class=incident["class_code"],
        )
