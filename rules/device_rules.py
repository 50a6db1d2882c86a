"""Turn one device's kind, part code and parameters into its conditions."""

from __future__ import annotations

from pydantic import BaseModel

from domain import Priority
from rules.condition import Condition
from rules.conditions import RepeatRule, RiseRule
from rules.params import BinParams, ManholeCoverParams, WaterLevelParams
from rules.thresholds import Stage, ThresholdRule


class DeviceRuleError(ValueError):
    """A device whose rules cannot be built; the message names the device and parameter."""


def build_rules(source_id: str, part_code: str, params: BaseModel) -> list[Condition]:
    """The device's conditions from its effective params (kind's, overridden by its own:
    ``rules.settings.device_params``)."""
    if isinstance(params, ManholeCoverParams):
        return [_cover_rule(source_id, part_code, params)]
    if isinstance(params, BinParams):
        return _bin_rules(params)
    assert isinstance(params, WaterLevelParams)
    return _water_rules(source_id, params)


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


def _bin_rules(p: BinParams) -> list[Condition]:
    rules: list[Condition] = [
        ThresholdRule(
            rule_id="bin_overflow",
            metric="fill_pct",
            class_code=p.class_code,
            stages=(Stage(p.fill_fire_pct, _ms(p.fire_for_s), Priority.URGENT),),
            clear_below=p.fill_clear_pct,
            clear_hold_ms=_ms(p.clear_for_s),
        )
    ]
    if p.repeat_count is not None:
        rules.append(
            RepeatRule(
                rule_id="bin_repeat",
                metric="fill_pct",
                class_code=p.class_code,
                level=p.fill_fire_pct,
                count=p.repeat_count,
                window_ms=_ms(p.repeat_window_s),
                clear_below=p.fill_clear_pct,
                clear_hold_ms=_ms(p.clear_for_s),
                priority=Priority.URGENT,
            )
        )
    return rules


def _water_rules(source_id: str, p: WaterLevelParams) -> list[Condition]:
    if p.warning_cm is None or p.alarm_cm is None:
        raise DeviceRuleError(f"device {source_id}: water_level needs warning_cm and alarm_cm")
    rules: list[Condition] = [
        ThresholdRule(
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
    ]
    if p.rise_cm is not None:
        # An early warning: one grade below the level warning, so that the level rule
        # escalates the same case when the water gets there.
        rules.append(
            RiseRule(
                rule_id="water_rise",
                metric="level_cm",
                class_code=p.class_code,
                rise=p.rise_cm,
                window_ms=_ms(p.rise_window_s),
                clear_hold_ms=_ms(p.clear_for_s),
                priority=Priority.NORMAL,
            )
        )
    return rules
