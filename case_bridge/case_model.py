"""What a CaseCommand becomes on the platform: the case body and evidence items.

With a ``CaseDispatch`` (``dispatch.py``) the deadline follows the class policy and the
working calendar, and the body names the responsible unit; without one (tools and tests
that build a body from settings alone) the deadline is the priority's plain hours and the
body has no ``responsible_unit``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from case_bridge.codes import ClassCatalog
from case_bridge.dispatch import CaseDispatch
from case_bridge.settings import CaseSettings
from domain import Alert, CaseCommand, Priority

_MEDIA_HASH = re.compile(r"sha256=(?P<sha256>[0-9a-f]{64})&bytes=(?P<bytes>[0-9]{1,12})")
ORIGIN_NAMES = {"iot": "物联网感知", "video": "视频智能识别"}
# An evidence item's ``flag`` when it is a closure check's (复核提示), not a new sighting.
CLOSURE_CHECK_FLAG = "closure_check"


def deadline_iso(alert_ts_ms: int, priority: Priority, settings: CaseSettings) -> str:
    """Deadline counts from when the problem was seen (event time), not when filed."""
    hours = settings.deadlines_h[priority]
    start = datetime.fromtimestamp(alert_ts_ms / 1000, tz=UTC)
    return (start + timedelta(hours=hours)).isoformat(timespec="seconds")


def evidence_item(alert: Alert) -> dict[str, Any]:
    """The alert as one evidence entry. ``media`` lists the pictures' URLs; ``media_files``
    gives each with the SHA-256 and size of its bytes (from the media entry's fragment,
    ``#sha256=<hex>&bytes=<n>``, see gateway/evidence.py) so the platform or an auditor
    can check the file; an entry without them (older alerts) has neither key.

    A closure check's evidence (``alert.closure_check``) is flagged: ``flag`` says so and
    ``checked_status`` names the case status it was checked at, so a platform can record it
    as a note, even on a closed case, rather than as a new sighting; other items have
    neither key."""
    files = [media_file(entry) for entry in alert.media]
    flag = {"flag": CLOSURE_CHECK_FLAG, "checked_status": alert.closure_check}
    return {
        "source_id": alert.source_id,
        "ts": alert.ts,
        "rule_id": alert.rule_id,
        "state": str(alert.state),
        "priority": str(alert.priority),
        "values": alert.values,
        "summary": alert.summary,
        "media": [file["url"] for file in files],
        "media_files": files,
        **(flag if alert.closure_check else {}),
    }


def media_file(entry: str) -> dict[str, Any]:
    """``{"url", "sha256", "bytes"}`` of one media entry; the URL alone if it has no hash."""
    url, _, fragment = entry.partition("#")
    if hashed := _MEDIA_HASH.fullmatch(fragment):
        return {"url": url, "sha256": hashed["sha256"], "bytes": int(hashed["bytes"])}
    return {"url": entry}


def _deadline(
    alert: Alert,
    priority: Priority,
    settings: CaseSettings,
    dispatch: CaseDispatch | None,
    class_code: str = "",
) -> str:
    """``class_code``: the class whose policy the deadline follows, the alert's by default."""
    if dispatch is None:
        return deadline_iso(alert.ts, priority, settings)
    return dispatch.deadline_iso(alert.ts, class_code or alert.class_code, priority)


def open_case_body(
    command: CaseCommand,
    catalog: ClassCatalog,
    settings: CaseSettings,
    dispatch: CaseDispatch | None = None,
) -> dict:
    alert = command.alert
    class_name = catalog.name(alert.class_code)
    where = alert.location.address or f"{alert.location.lat:.6f},{alert.location.lon:.6f}"
    return {
        "class_code": alert.class_code,
        "class_name": class_name,
        "part_code": alert.part_code,
        "priority": str(command.priority),
        "deadline": _deadline(alert, command.priority, settings, dispatch),
        "location": {
            "lat": alert.location.lat,
            "lon": alert.location.lon,
            "address": alert.location.address,
            "grid_code": alert.location.grid_code,
        },
        "description": f"{ORIGIN_NAMES.get(alert.origin, alert.origin)}: {class_name} — "
        f"{alert.source_id} @ {where}: {alert.summary}",
        "source": alert.origin,
        "evidence": [evidence_item(alert)],
        "external_key": command.incident_id,
        **_unit(alert, dispatch),
    }


def _unit(alert: Alert, dispatch: CaseDispatch | None) -> dict[str, str]:
    """``{"responsible_unit": ...}`` with a dispatch; nothing without one, so a body built
    from settings alone stays what platforms without the field accept."""
    if dispatch is None:
        return {}
    return {
        "responsible_unit": dispatch.responsible_unit(alert.class_code, alert.location.grid_code)
    }


def evidence_body(
    command: CaseCommand,
    settings: CaseSettings,
    dispatch: CaseDispatch | None = None,
    case_class: str = "",
) -> dict:
    """Evidence for a filed case; an escalation also carries the new priority and its
    deadline, by the policy of ``case_class``: the class the case was filed under, which
    for a family's incident may be its lead class, not the escalating alert's (the
    alert's own class when not given)."""
    body: dict[str, Any] = {"evidence": [evidence_item(command.alert)]}
    if command.kind == "escalate":
        body["priority"] = str(command.priority)
        body["deadline"] = _deadline(
            command.alert, command.priority, settings, dispatch, case_class
        )
    return body
