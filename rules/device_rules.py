"""Turn one device's kind, part code and parameters into its threshold rules."""

from __future__ import annotations

from pydantic import ValidationError

from domain import Priority
from rules.params import (
    HEALTH_COLUMNS,
    PARAMS_BY_KIND,
    BinParams,
    ManholeCoverParams,
    RulesConfig,
    WaterLevelParams,
)
from rules.thresholds import Stage, ThresholdRule


class DeviceRuleError(ValueError):
    """A device whose rules cannot be built; the message names the device and parameter."""


def build_rules(
    source_id: str, kind: str, part_code: str, overrides: dict[str, str], config: RulesConfig
) -> list[ThresholdRule]:
    """Per-kind defaults from config, overridden by the device's own registry columns."""
    defaults = getattr(config, kind).model_dump()
    mine = {k: v for k, v in overrides.items() if k not in HEALTH_COLUMNS}
    try:
        params = PARAMS_BY_KIND[kind].model_validate({**defaults, **mine})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
        )
        raise DeviceRuleError(f"device {source_id}: {problems}") from None
    if isinstance(params, ManholeCoverParams):
        return [_cover_rule(source_id, part_code, params)]
    if isinstance(params, BinParams):
        return [_bin_rule(params)]
    assert isinstance(params, WaterLevelParams)
    return [_water_rule(source_id, params)]


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _cover_rule(source_id: str, part_code: str, p: ManholeCoverParams) -> ThresholdRule:
    class_code = p.class_code or (part_code[6:11] if len(part_code) == 17 else "")
    if not class_code.startswith("010"):
        raise DeviceRuleError(
            f"device {source_id}: no cover class: give a 17-digit part_code whose part type "
            "is a cover (01001–01023) or a class_code column"
        )
    return ThresholdRule(
        rule_id="cover_anomaly",
        metric="tilt_deg",
        class_code=class_code,
        stages=(Stage(p.tilt_fire_deg, _ms(p.tilt_fire_for_s), Priority.CRITICAL),),
        clear_below=p.tilt_clear_deg,
        clear_hold_ms=_ms(p.clear_for_s),
        trip_flag="lid_open",
    )


def _bin_rule(p: BinParams) -> ThresholdRule:
    return ThresholdRule(
        rule_id="bin_overflow",
        metric="fill_pct",
        class_code=p.class_code,
        stages=(Stage(p.fill_fire_pct, _ms(p.fire_for_s), Priority.URGENT),),
        clear_below=p.fill_clear_pct,
        clear_hold_ms=_ms(p.clear_for_s),
    )


def _water_rule(source_id: str, p: WaterLevelParams) -> ThresholdRule:
    if p.warning_cm is None or p.alarm_cm is None:
        raise DeviceRuleError(f"device {source_id}: water_level needs warning_cm and alarm_cm")
    return ThresholdRule(
        rule_id="water_level",
        metric="level_cm",
        class_code=p.class_code,
        stages=(
            Stage(p.warning_cm, _ms(p.warning_for_s), Priority.URGENT),
            Stage(p.alarm_cm, _ms(p.alarm_for_s), Priority.CRITICAL),
        ),
        clear_below=p.warning_cm - p.clear_margin_cm,
        clear_hold_ms=_ms(p.clear_for_s),
    )
