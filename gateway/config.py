"""The gateway's one YAML config, validated by typed models.

Errors name the file, the line and the dotted key, and say what was expected, so that an
operator can fix a typo without reading code. Relative paths are resolved against the
config file's folder, so a config directory can be moved as a whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from case_bridge.settings import CasePlatformSettings, CaseSettings
from detectors.config import CameraSettings, DetectorSettings
from devices.fleet import Fleets
from devices.mqtt_settings import MqttSecurity
from devices.serial import SerialSettings
from gateway.history import HistorySettings
from rules.params import RulesConfig
from rules.video_rules import VideoRuleParams


class ConfigError(ValueError):
    """A config that cannot be used; ``str()`` is the full explanation for the operator."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttSettings(MqttSecurity):
    """Broker address, session, and (inherited) username/password and TLS files."""

    url: str = Field(pattern=r"^mqtts?://")
    client_id: str = "citygw"
    qos: int = Field(1, ge=0, le=1)
    keepalive_s: int = Field(30, ge=5)


class DevicesSettings(_Section):
    registry: Path
    # Existing fleets' topics and payloads mapped to Readings by config (devices/fleet).
    fleets: Fleets = []


class StoreSettings(_Section):
    path: Path
    # FULL survives power loss; NORMAL (WAL) survives a process crash and is faster.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"


class IngestSettings(_Section):
    max_future_skew_s: float = Field(300.0, ge=0)
    batch_max: int = Field(1000, ge=1)


class MergeSettings(_Section):
    radius_m: float = Field(50.0, ge=0)
    window_s: float = Field(24 * 3600.0, gt=0)


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    enabled: bool = True


class VideoSettings(_Section):
    """Cameras analysed live. Every camera needs the detector; zones carry the geo position
    that lets two cameras' alerts about one place merge into one case."""

    cameras: list[CameraSettings] = []
    detector: DetectorSettings | None = None
    rules: VideoRuleParams = VideoRuleParams()
    # Without motion the detector's last answer is reused, re-checked this often.
    recheck_s: float = Field(10.0, gt=0)
    camera_offline_class: str = Field("99201", pattern=r"^\d{5}$")

    @model_validator(mode="after")
    def _needs_detector(self) -> Self:
        if self.cameras and self.detector is None:
            raise ValueError("cameras are configured but no detector (video.detector.model)")
        ids = [c.id for c in self.cameras]
        if len(ids) != len(set(ids)):
            raise ValueError("camera ids must be unique")
        return self


class GatewayConfig(_Section):
    gateway_id: str = Field("citygw", pattern=r"^[A-Za-z0-9_.-]+$")
    mqtt: MqttSettings
    devices: DevicesSettings
    store: StoreSettings
    case_platform: CasePlatformSettings
    cases: CaseSettings = CaseSettings()
    merge: MergeSettings = MergeSettings()
    rules: RulesConfig = RulesConfig()
    ingest: IngestSettings = IngestSettings()
    api: ApiSettings = ApiSettings()
    video: VideoSettings = VideoSettings()
    history: HistorySettings = HistorySettings()
    # RS-485 / USB serial ports: Modbus RTU slaves and line-protocol sensors.
    serial: SerialSettings = SerialSettings()

    @field_validator("cases")
    @classmethod
    def _local_codes(cls, cases: CaseSettings) -> CaseSettings:
        for code in cases.local_classes:
            if not (len(code) == 5 and code.isdigit()):
                raise ValueError(f"local class code {code!r} must be 5 digits")
        return cases


def load_config(path: str | Path) -> GatewayConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(path, root, exc)) from None
    base = path.resolve().parent
    config.devices.registry = base / config.devices.registry
    config.mqtt = config.mqtt.resolved(base)
    config.store.path = base / config.store.path
    if config.video.detector is not None:
        config.video.detector.model = base / config.video.detector.model
    _check_classes(path, config)
    return config


def _check_classes(path: Path, config: GatewayConfig) -> None:
    from case_bridge.codes import ClassCatalog

    catalog = ClassCatalog(config.cases.local_classes)
    codes = {
        f"rules.{kind}.class_code": getattr(config.rules, kind).class_code
        for kind in ("bin", "water_level")
    }
    codes["video.camera_offline_class"] = config.video.camera_offline_class
    for key, code in codes.items():
        if code not in catalog:
            raise ConfigError(
                f"{path}: {key}: {code} is neither a GB/T 47678.5 matter code"
                " nor listed in cases.local_classes"
            )


def _explain(path: Path, root: yaml.Node | None, exc: ValidationError) -> str:
    lines = [f"{path}: {exc.error_count()} problem(s):"]
    for error in exc.errors():
        loc = error["loc"]
        key = ".".join(str(part) for part in loc) or "(top level)"
        line = _line_of(root, loc)
        where = f"{path}:{line}" if line else str(path)
        message = error["msg"]
        if error["type"] == "missing":
            message = "required key is missing"
        elif error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling)"
        got = error.get("input")
        shown = "" if error["type"] in ("missing", "extra_forbidden") else f" (got {got!r})"
        lines.append(f"  {where}: {key}: {message}{shown}")
    return "\n".join(lines)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest YAML node on the error's path."""
    line = None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for key_node, value_node in node.value:
            if key_node.value == str(part):
                line = key_node.start_mark.line + 1
                node = value_node
                break
        else:
            break
    if line is None and node is not None:
        line = node.start_mark.line + 1
    return line
