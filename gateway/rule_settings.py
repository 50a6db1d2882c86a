"""Version 1 of the rule settings, as the config file and the device registry give them.

The gateway starts from it (merged with the stored versions, gateway/threshold_versions.py)
and ``citygw check-config`` validates it, so both refuse the same files with the same
messages.
"""

from __future__ import annotations

from collections.abc import Mapping

from devices.registry import Device
from gateway.config import GatewayConfig
from rules.settings import RuleSettings, settings_from_config


def zone_keys(config: GatewayConfig) -> set[str]:
    """Every camera zone, as the settings name it: ``<camera>/<zone>``."""
    return {f"{c.id}/{z.id}" for c in config.video.cameras for z in c.zones}


def settings_from_files(config: GatewayConfig, registry: Mapping[str, Device]) -> RuleSettings:
    """The YAML's per-kind rules and video params, the registry's override columns, and the
    camera zones' schedules; raises ``SettingsError`` naming the device or zone and param."""
    zone_schedules = {
        f"{c.id}/{z.id}": {"schedule": z.schedule.model_dump(mode="json")}
        for c in config.video.cameras
        for z in c.zones
        if not z.schedule.always
    }
    overrides = {d.device_id: d.overrides for d in registry.values()}
    kinds = {d.device_id: d.kind for d in registry.values()}
    return settings_from_config(config.rules, config.video.rules, overrides, zone_schedules, kinds)
