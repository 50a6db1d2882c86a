"""Settings of the case bridge: deadlines, retry policy, local classes (the platform's are
in ``platform_settings``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from domain import Priority


class RetryPolicy(BaseModel):
    """Exponential backoff with jitter (``domain.retry.Backoff``); a peer's ``Retry-After``
    wins when it is longer."""

    model_config = ConfigDict(extra="forbid")
    initial_s: float = Field(0.5, gt=0)
    max_s: float = Field(15.0, gt=0)


class CaseSettings(BaseModel):
    """How cases are shaped: deadline per priority (hours; local rules, Fuzhou's defaults),
    and the city's local class codes with their names."""

    model_config = ConfigDict(extra="forbid")
    deadlines_h: dict[Priority, float] = {
        Priority.CRITICAL: 2,
        Priority.URGENT: 12,
        Priority.NORMAL: 24,
        Priority.LOW: 48,
    }
    local_classes: dict[str, str] = {
        "99101": "道路积水",
        "99201": "视频监控设备离线",
        "99301": "物联网感知设备异常",
    }
