"""Settings of the case bridge: the platform, deadlines, retry policy, local classes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr

from domain import Priority


class RetryPolicy(BaseModel):
    """Exponential backoff with jitter (``domain.retry.Backoff``); a peer's ``Retry-After``
    wins when it is longer."""

    model_config = ConfigDict(extra="forbid")
    initial_s: float = Field(0.5, gt=0)
    max_s: float = Field(15.0, gt=0)


class CasePlatformSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: HttpUrl
    token: SecretStr = Field(min_length=1)  # never shown when the settings are printed
    adapter: str = Field("bundled", pattern="^bundled$")
    timeout_s: float = Field(5.0, gt=0)
    retry: RetryPolicy = RetryPolicy()
    status_sync_s: float = Field(10.0, gt=0)


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
