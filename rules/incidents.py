"""Incidents: one real-world problem behind one or more alerts — one incident, one case.

Dedup and merge (查重与并案) happen here:
- a repeat of an alert already bound to an open incident adds evidence, never a new case;
- an alert of the same class within ``merge_radius_m`` of an open incident's first alert,
  and within ``merge_window_ms`` of its last activity, joins that incident (three full bins
  at one collection point are one case);
- a higher-priority alert escalates the incident's case instead of opening another;
- a closed case (status synced back from the platform) closes the incident and re-arms its
  alerts, so the next occurrence files a new case;
- an alert may be absorbed into a given open incident (``absorb``: the alert flow's
  inhibition, e.g. a single gauge joining its grid's area-wide flood case) whatever its
  class or distance.

Each change yields CaseCommands whose ids are derived from the incident and a per-incident
counter: replaying the same alerts after a crash produces the same ids, which the case
bridge uses as idempotency keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from domain import Alert, AlertState, CaseCommand, CommandKind, Location, Priority


@dataclass(frozen=True, slots=True)
class MergePolicy:
    radius_m: float = 50.0
    window_ms: int = 24 * 3600 * 1000


class IncidentBook:
    def __init__(self, policy: MergePolicy) -> None:
        self._policy = policy
        self._incidents: dict[str, dict[str, Any]] = {}
        self._open_by_key: dict[str, str] = {}
        self._dirty: set[str] = set()

    def load(self, incident: dict[str, Any]) -> None:
        """Put back an open incident after a restart (closed ones are not kept in memory)."""
        if incident["status"] != "open":
            return
        self._incidents[incident["id"]] = incident
        for key in incident["alert_keys"]:
            self._open_by_key[key] = incident["id"]

    def handle(self, alert: Alert) -> list[CaseCommand]:
        incident_id = self._open_by_key.get(alert.key)
        if incident_id is None:
            if alert.state is AlertState.CLEARED:
                return []  # a clear for an alert whose case is already closed
            incident_id = self._find_merge_target(alert)
            if incident_id is None:
                return [self._open(alert)]
            self._bind(incident_id, alert.key)
        return [self._update(self._incidents[incident_id], alert)]

    def incident_of(self, key: str) -> str | None:
        """The open incident this alert key is bound to, if any."""
        return self._open_by_key.get(key)

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
        """Close an open incident; return its alert keys for the rule engine to re-arm."""
        incident = self._incidents.get(incident_id)
        if incident is None or incident["status"] != "open":
            return []
        incident["status"] = "closed"
        incident["closed_reason"] = reason
        for key in incident["alert_keys"]:
            self._open_by_key.pop(key, None)
        self._dirty.add(incident_id)
        return list(incident["alert_keys"])

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

    def _find_merge_target(self, alert: Alert) -> str | None:
        if not alert.merge:
            return None
        best: tuple[float, str] | None = None
        for incident_id in set(self._open_by_key.values()):
            incident = self._incidents[incident_id]
            if incident["class_code"] != alert.class_code or not incident.get("merge", True):
                continue
            if alert.ts - incident["last_ts"] > self._policy.window_ms:
                continue
            distance = Location(**incident["location"]).distance_m(alert.location)
            if distance <= self._policy.radius_m and (best is None or distance < best[0]):
                best = (distance, incident_id)
        return best[1] if best else None

    def _bind(self, incident_id: str, key: str) -> None:
        incident = self._incidents[incident_id]
        if key not in incident["alert_keys"]:
            incident["alert_keys"].append(key)
        self._open_by_key[key] = incident_id

    def _open(self, alert: Alert) -> CaseCommand:
        digest = hashlib.sha1(f"{alert.key}@{alert.ts}".encode()).hexdigest()[:12]
        incident = {
            "id": f"INC-{digest}",
            "status": "open",
            "class_code": alert.class_code,
            "priority": str(alert.priority),
            "location": {
                "lat": alert.location.lat,
                "lon": alert.location.lon,
                "address": alert.location.address,
                "grid_code": alert.location.grid_code,
            },
            "opened_ts": alert.ts,
            "last_ts": alert.ts,
            "alert_keys": [alert.key],
            "commands": 1,
            "closed_reason": "",
            "merge": alert.merge,
        }
        self._incidents[incident["id"]] = incident
        self._open_by_key[alert.key] = incident["id"]
        self._dirty.add(incident["id"])
        return CaseCommand(
            command_id=f"{incident['id']}/1",
            incident_id=incident["id"],
            kind=CommandKind.OPEN,
            alert=alert,
            priority=alert.priority,
        )

    def _update(self, incident: dict[str, Any], alert: Alert) -> CaseCommand:
        current = Priority(incident["priority"])
        kind = CommandKind.ATTACH
        if alert.state is not AlertState.CLEARED and alert.priority.rank > current.rank:
            kind = CommandKind.ESCALATE
            incident["priority"] = str(alert.priority)
        incident["last_ts"] = max(incident["last_ts"], alert.ts)
        incident["commands"] += 1
        self._dirty.add(incident["id"])
        return CaseCommand(
            command_id=f"{incident['id']}/{incident['commands']}",
            incident_id=incident["id"],
            kind=kind,
            alert=alert,
            priority=Priority(incident["priority"]),
        )
