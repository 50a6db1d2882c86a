"""A camera that stays down is a maintenance problem of its own (视频设备异常).

The camera supervisor reports ``offline`` once a camera has been unreachable for its
``offline_after_s`` and ``online`` when frames flow again; each report becomes a firing or
clearing alert. Like a sensor's own faults, a camera's outage never merges with another
camera's: two cameras down on one street are two repairs, and merging them would clear one
case when the first camera comes back.
"""

from __future__ import annotations

from domain import Alert, AlertState, Location, Priority

RULE_ID = "camera_offline"


def camera_status_alert(
    camera_id: str, online: bool, detail: str, ts_ms: int, location: Location, class_code: str
) -> Alert:
    status = "online" if online else "offline"
    return Alert(
        key=f"{camera_id}/{RULE_ID}",
        source_id=camera_id,
        rule_id=RULE_ID,
        state=AlertState.CLEARED if online else AlertState.FIRING,
        class_code=class_code,
        priority=Priority.LOW,
        location=location,
        ts=ts_ms,
        summary=f"camera {status}: {detail}",
        origin="video",
        merge=False,
        kind="camera",
    )
