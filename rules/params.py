"""Rule parameters per device kind: typed, with defaults from the city's rules.

The same models validate the YAML config (per-kind defaults) and the registry's per-device
override columns, so a typo in either is reported the same way.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from domain import Schedule

CLASS_CODE = r"^\d{5}$"
DAY_S = 86_400.0
MAX_FIELDS = 32  # fields a health check names per kind (stuck, change per minute, slack)

# A name (a reading field, a detector label) is short. Per-field health params are bounded
# in count, their values positive: a zero or negative stuck time would make every repeated
# value "stuck", and the device's rules would get no readings.
Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]
PerField = Annotated[dict[Name, Annotated[float, Field(gt=0, le=1e6)]],
                     Field(max_length=MAX_FIELDS)]  # fmt: skip
SlackPerField = Annotated[dict[Name, Annotated[float, Field(ge=0, le=1e6)]],
                          Field(max_length=MAX_FIELDS)]  # fmt: skip


class _Params(BaseModel):
    # No NaN or ±Infinity anywhere ("inf" arrives as a string from the CLI and the API, .inf
    # from YAML): NaN fails every comparison and Infinity passes every ``gt``, so either
    # would silently switch a check off, and neither survives the JSON of a version.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ManholeCoverParams(_Params):
    """Lid opened → at once; tilt ≥ fire for the hold → case; clears closed and flat."""

    tilt_fire_deg: float = Field(15.0, gt=0, le=180)
    tilt_fire_for_s: float = Field(5.0, ge=0, le=DAY_S)
    tilt_clear_deg: float = Field(5.0, ge=0, le=180)
    clear_for_s: float = Field(60.0, ge=0, le=DAY_S)
    # Default: the cover's own "<part> 异常" matter code, i.e. its part type (01001–01023).
    class_code: str | None = Field(None, pattern=CLASS_CODE)
    # Outside it a reading can neither start nor advance a condition; a firing one clears.
    schedule: Schedule = Schedule()

    @model_validator(mode="after")
    def _hysteresis(self) -> Self:
        if self.tilt_clear_deg >= self.tilt_fire_deg:
            raise ValueError("tilt_clear_deg must be below tilt_fire_deg (hysteresis)")
        return self


class BinParams(_Params):
    """Fill ≥ fire for the hold → 垃圾站（箱）满溢; a single spike is not a case.

    A bin that passes ``fill_fire_pct`` ``repeat_count`` times within ``repeat_window_s``,
    compacted in between, is full too (rule ``bin_repeat``; off while ``repeat_count`` is
    unset)."""

    fill_fire_pct: float = Field(90.0, gt=0, le=100)
    fire_for_s: float = Field(600.0, ge=0, le=DAY_S)
    fill_clear_pct: float = Field(60.0, ge=0, le=100)
    clear_for_s: float = Field(0.0, ge=0, le=DAY_S)
    repeat_count: int | None = Field(None, ge=2, le=20)
    repeat_window_s: float = Field(3600.0, gt=0, le=7 * DAY_S)
    class_code: str = Field("06042", pattern=CLASS_CODE)
    schedule: Schedule = Schedule()

    @model_validator(mode="after")
    def _hysteresis(self) -> Self:
        if self.fill_clear_pct >= self.fill_fire_pct:
            raise ValueError("fill_clear_pct must be below fill_fire_pct (hysteresis)")
        return self


class WaterLevelParams(_Params):
    """Level ≥ warning for the hold → urgent case; ≥ alarm escalates the same case.

    Water rising by ``rise_cm`` or more within ``rise_window_s`` is an early warning (rule
    ``water_rise``, same class, so a later level alarm escalates the same case); off while
    ``rise_cm`` is unset."""

    warning_cm: float | None = Field(None, gt=0, le=10_000)
    alarm_cm: float | None = Field(None, gt=0, le=10_000)
    warning_for_s: float = Field(60.0, ge=0, le=DAY_S)
    alarm_for_s: float = Field(10.0, ge=0, le=DAY_S)
    clear_margin_cm: float = Field(5.0, ge=0, le=10_000)
    clear_for_s: float = Field(300.0, ge=0, le=DAY_S)
    rise_cm: float | None = Field(None, gt=0, le=10_000)
    rise_window_s: float = Field(300.0, gt=0, le=DAY_S)
    # Road water-logging has no GB/T 47678.5 matter code: a local code, set per city.
    class_code: str = Field("99101", pattern=CLASS_CODE)
    schedule: Schedule = Schedule()

    @model_validator(mode="after")
    def _levels(self) -> Self:
        warning, alarm = self.warning_cm, self.alarm_cm
        if warning is not None and alarm is not None and alarm <= warning:
            raise ValueError("alarm_cm must be above warning_cm")
        return self


class KindHealthParams(_Params):
    """When a device of one kind counts as offline, flat-battery or lying (suspect)."""

    # How often the device reports when all is well; silence for heartbeat × offline_factor
    # is offline. A registry column ``heartbeat_s`` overrides it per device.
    heartbeat_s: float = Field(gt=0, le=30 * DAY_S)
    offline_factor: float = Field(3.0, ge=1, le=1000)
    battery_low_pct: float = Field(20.0, ge=0, le=100)
    battery_clear_pct: float = Field(30.0, ge=0, le=100)
    # field → seconds: the exact same value this long on a field that always jitters is a
    # frozen sensor.
    stuck_after_s: PerField = {}
    # field → largest physically possible change per minute, and a slack for noise.
    max_change_per_min: PerField = {}
    change_slack: SlackPerField = {}

    @model_validator(mode="after")
    def _battery_hysteresis(self) -> Self:
        if self.battery_clear_pct <= self.battery_low_pct:
            raise ValueError("battery_clear_pct must be above battery_low_pct (hysteresis)")
        return self


class HealthConfig(_Params):
    """Device health: a sensor that lies must not file cases; a dead one must be found."""

    manhole_cover: KindHealthParams = KindHealthParams(heartbeat_s=3600)
    bin: KindHealthParams = KindHealthParams(heartbeat_s=3600)
    water_level: KindHealthParams = KindHealthParams(
        heartbeat_s=600,
        stuck_after_s={"level_cm": 6 * 3600.0},
        max_change_per_min={"level_cm": 50.0},
        change_slack={"level_cm": 10.0},
    )
    # A device whose Last Will said "offline" is offline this long after it, unless it
    # reports again (a sleeping NB-IoT device reconnects within its heartbeat).
    lwt_grace_s: float = Field(300.0, ge=0, le=DAY_S)
    # A suspect device is believed again after this many plausible readings in a row.
    plausible_to_clear: int = Field(3, ge=1, le=10_000)
    # Implausible readings in a row before a maintenance case: one glitch is only muted.
    implausible_to_report: int = Field(3, ge=1, le=10_000)
    check_every_s: float = Field(10.0, gt=0, le=3600)  # how often silence is looked for
    # An offline or suspect spell that ends within this files no case (the alert flow holds
    # the firing alert this long; a 30-second glitch is stored but is not a repair job).
    confirm_s: float = Field(600.0, ge=0, le=DAY_S)
    # Offline, flat battery, suspect: a local maintenance code (物联网感知设备异常);
    # covers use their own part's 异常 class for offline instead.
    maintenance_class: str = Field("99301", pattern=CLASS_CODE)


class VideoRuleParams(_Params):
    """Camera zone rules (stall, dumping): per kind in config, per zone in the settings."""

    stall_dwell_s: float = Field(300.0, ge=0, le=DAY_S)
    rubbish_dwell_s: float = Field(600.0, ge=0, le=DAY_S)
    gap_tolerance_s: float = Field(20.0, ge=0, le=DAY_S)
    clear_after_s: float = Field(120.0, ge=0, le=DAY_S)
    # Analysed frames further apart than this mean the camera was blind (stream down,
    # reconnecting): that stretch counts neither as presence nor as absence, so an outage
    # longer than clear_after_s does not clear a case whose rubbish is still there.
    blind_gap_s: float = Field(5.0, gt=0, le=DAY_S)
    # An object counts once it has stood still this long (filters people pausing in step).
    stationary_s: float = Field(10.0, gt=0, le=DAY_S)
    # "Near" = bottom-centres within this many box heights (the taller of the two boxes).
    near_heights: float = Field(1.5, gt=0, le=100)
    # A dumping candidate covered more than this by a person/vehicle box is that object.
    max_covered: float = Field(0.5, gt=0, le=1)
    # Labels that count alone; other labels of the category are proxies.
    stall_labels: list[Name] = Field(["stall"], max_length=64)
    rubbish_labels: list[Name] = Field(["rubbish"], max_length=64)
    # When the zone's rule is in force (frames outside count as absent). A zone's schedule
    # in the camera config is its per-zone value in the settings.
    schedule: Schedule = Schedule()


class RulesConfig(_Params):
    manhole_cover: ManholeCoverParams = ManholeCoverParams()
    bin: BinParams = BinParams()
    water_level: WaterLevelParams = WaterLevelParams()
    health: HealthConfig = HealthConfig()


# Registry columns read by device health, not by the kind's threshold rules.
HEALTH_COLUMNS = ("heartbeat_s",)

PARAMS_BY_KIND: dict[str, type[_Params]] = {
    "manhole_cover": ManholeCoverParams,
    "bin": BinParams,
    "water_level": WaterLevelParams,
}
