"""Settings of the case platform: which adapter, and how hard the bridge may press it.

Kept apart from ``settings`` because the adapters' own settings build on the case model,
which itself needs ``settings``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from case_bridge.guarded_platform import DeliverySettings
from case_bridge.mapped_rest_settings import MappedRestSettings
from case_bridge.open311 import Open311Settings
from case_bridge.settings import RetryPolicy
from case_bridge.webhook_settings import WebhookSettings


class CasePlatformSettings(BaseModel):
    """Which workflow platform cases go to, and how hard the bridge may press it.

    ``adapter``: ``bundled`` (the project's platform: ``url`` and ``token`` here), or a
    city's own system, described in its section: ``open311`` (GeoReport v2) or
    ``mapped_rest`` (a REST intake described field by field, e.g. eGova). Retry, status
    sync, the circuit breaker and the rate limit apply to whichever is chosen. ``webhook``
    (off when absent) lets a platform that offers status webhooks push changes as well, in
    the gateway's own format or in the platform's (``format: mapped``).
    """

    model_config = ConfigDict(extra="forbid")
    adapter: Literal["bundled", "open311", "mapped_rest"] = "bundled"
    url: HttpUrl | None = Field(None, validate_default=True)
    token: SecretStr | None = Field(None, min_length=1, validate_default=True)  # never shown
    timeout_s: float = Field(5.0, gt=0)
    retry: RetryPolicy = RetryPolicy()
    status_sync_s: float = Field(10.0, gt=0)
    delivery: DeliverySettings = DeliverySettings()
    open311: Open311Settings | None = None
    mapped_rest: MappedRestSettings | None = None
    webhook: WebhookSettings | None = None

    @field_validator("url", "token")
    @classmethod
    def _bundled_needs_it(cls, value: object, info: ValidationInfo) -> object:
        if value is None and info.data.get("adapter", "bundled") == "bundled":
            raise PydanticCustomError("missing", "Field required")
        return value

    @model_validator(mode="after")
    def _adapter_has_its_section(self) -> CasePlatformSettings:
        if self.adapter != "bundled" and getattr(self, self.adapter) is None:
            raise ValueError(
                f"adapter {self.adapter} needs its section case_platform.{self.adapter}"
            )
        return self
