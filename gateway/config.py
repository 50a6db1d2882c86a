"""The gateway's one YAML config, validated by typed models.

Errors name the file, the line and the dotted key, and say what was expected, so that an
operator can fix a typo without reading code. Relative paths are resolved against the
config file's folder, so a config directory can be moved as a whole.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from case_bridge.dispatch import CaseDispatch, DispatchFileError, load_dispatch
from case_bridge.platform_settings import CasePlatformSettings
from case_bridge.settings import CaseSettings
from detectors.config import STALL_CLASS_BY_ZONE, CameraSettings, DetectorSettings
from devices.fleet import Fleets
from devices.limits import InputLimits
from devices.mqtt_ingest import parse_broker_url
from devices.mqtt_settings import MqttSecurity
from devices.serial import SerialSettings
from gateway.bounded_yaml import YamlFileError, load_yaml_file
from gateway.cluster_settings import ClusterSettings
from gateway.config_secrets import (
    SecretSourceError,
    fill_secret_sources,
    is_secret_key,
    mask_url_credentials,
    scrub,
    secret_values,
)
from gateway.evidence_settings import EvidenceSettings
from gateway.history import HistorySettings
from gateway.retention import RetentionSettings
from rules.alerting import AlertingConfig
from rules.merge_settings import MergeSettings
from rules.params import RulesConfig
from rules.video_rules import VideoRuleParams

# RFC 6750's token characters, long enough not to be guessed ("change-me" is refused).
API_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}")


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

    @field_validator("url")
    @classmethod
    def _parses(cls, url: str) -> str:
        """Refused at load (and by check-config), not when the gateway connects."""
        parse_broker_url(url)
        return url


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
    # Bounds on every message from a device (size, JSON depth, topic and id length).
    limits: InputLimits = InputLimits()


class ApiSettings(_Section):
    """The HTTP API: on loopback, and every route but ``/healthz`` behind a bearer token or
    a console session (users and client tokens: ``citygw users``, gateway/api_users.py).

    The machine token comes from a file (a Docker or Kubernetes secret) or an environment
    variable, never from this YAML, which is shared, copied and committed. With no token and
    no users the API serves ``/healthz`` alone (and ``/metrics`` if public): a gateway whose
    operator forgot the token keeps ingesting and filing cases, and its API stays closed.
    """

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    enabled: bool = True
    # Read at start; wins over token_env when set. Relative to this file's folder.
    token_file: Path | None = None
    token_env: str = Field("CITYGW_API_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    # Prometheus can send a bearer token (authorization.credentials_file); open it only
    # where the network is trusted.
    metrics_public: bool = False
    # /docs, /redoc and /openapi.json: served without a token when on (they describe the
    # API and hold no data, and Swagger UI cannot send one), so off by default.
    docs: bool = False
    # Larger requests are refused (413 / 414) before they reach a handler.
    max_body_bytes: int = Field(64 * 1024, ge=0, le=16 * 1024 * 1024)
    max_url_bytes: int = Field(4096, ge=256, le=65_536)
    # A console session ends this long after sign-in (5 minutes to 7 days; default a shift).
    session_lifetime_s: int = Field(8 * 3600, ge=300, le=7 * 86_400)
    # The session cookie is sent over HTTPS only. Browsers treat http://127.0.0.1 and
    # http://localhost as secure, so this stays on unless the console is reached over plain
    # HTTP on another address (then put a TLS proxy in front rather than turning it off).
    cookie_secure: bool = True

    def token(self) -> str | None:
        """The bearer token, or None when neither the file nor the variable is set.
        Errors name the source, never the value."""
        if self.token_file is not None:
            source = f"api.token_file {self.token_file}"
            try:
                token = self.token_file.read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or "not UTF-8"
                raise ValueError(f"{source}: cannot read: {reason}") from None
        else:
            source = f"environment variable {self.token_env} (api.token_env)"
            token = os.environ.get(self.token_env, "")
            if not token:
                return None
        if not API_TOKEN.fullmatch(token):
            raise ValueError(
                f"{source}: the API token must be 16 to 512 characters of A-Z a-z 0-9 -._~+/="
                " (make one with `openssl rand -hex 32`)"
            )
        return token


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
    # The city's time zone (IANA name): schedules of camera zones and sensor rules are
    # written in local hours ("07:00-22:00"), and a city is rarely on the server's zone.
    timezone: str = Field("Asia/Shanghai", max_length=64)
    mqtt: MqttSettings
    devices: DevicesSettings
    store: StoreSettings
    case_platform: CasePlatformSettings
    cases: CaseSettings = CaseSettings()
    merge: MergeSettings = MergeSettings()
    rules: RulesConfig = RulesConfig()
    # Between rule alerts and cases: inhibition, area (parent) conditions, silence limits.
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    ingest: IngestSettings = IngestSettings()
    api: ApiSettings = ApiSettings()
    video: VideoSettings = VideoSettings()
    history: HistorySettings = HistorySettings()
    # Age and size limits for alerts, dead letters, delivered commands, closed incidents
    # and evidence pictures.
    retention: RetentionSettings = RetentionSettings()
    evidence: EvidenceSettings = EvidenceSettings()
    # RS-485 / USB serial ports: Modbus RTU slaves and line-protocol sensors.
    serial: SerialSettings = SerialSettings()
    # Several replicas on NATS JetStream and PostgreSQL (`citygw replica`); without it, one
    # process on its SQLite file.
    cluster: ClusterSettings | None = None

    # The case dispatch data of ``cases``' files (grids, units, class policy, calendar),
    # loaded once: by ``load_config``, which reports a broken file as a ConfigError.
    _dispatch: CaseDispatch | None = PrivateAttr(None)

    def dispatch(self) -> CaseDispatch:
        """The loaded dispatch data (loaded now for a config not made by ``load_config``)."""
        if self._dispatch is None:
            self._dispatch = load_dispatch(self.cases, self.timezone)
        return self._dispatch

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {name!r} (an IANA name such as Asia/Shanghai)"
            ) from None
        return name

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @field_validator("cases")
    @classmethod
    def _local_codes(cls, cases: CaseSettings) -> CaseSettings:
        for code in cases.local_classes:
            if not (len(code) == 5 and code.isdigit()):
                raise ValueError(f"local class code {code!r} must be 5 digits")
        return cases


def load_config(path: str | Path) -> GatewayConfig:
    """The validated config. Any file, however broken or hostile, gives a ``ConfigError``
    that names the file, and, where it can, the line and the key, and never shows a secret."""
    path = Path(path)
    base = path.resolve().parent
    try:
        root, data = load_yaml_file(path)
    except YamlFileError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    try:
        fill_secret_sources(data, base)
    except SecretSourceError as exc:
        line = _line_of(root, exc.loc)
        raise ConfigError(f"{path}:{line}: {exc}" if line else f"{path}: {exc}") from None
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(path, root, exc, secret_values(data))) from None
    config.devices.registry = base / config.devices.registry
    config.mqtt = config.mqtt.resolved(base)
    config.store.path = base / config.store.path
    if config.video.detector is not None:
        config.video.detector.model = base / config.video.detector.model
    if config.api.token_file is not None:
        config.api.token_file = base / config.api.token_file
    if config.evidence.link_secret_file is not None:
        config.evidence.link_secret_file = base / config.evidence.link_secret_file
    if config.evidence.dir is not None:
        config.evidence.dir = base / config.evidence.dir
    config.cases = config.cases.resolved(base)
    _check_classes(path, config)
    try:  # the data files load at start-up: a broken one names its file and line now
        config.dispatch()
    except DispatchFileError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if config.api.enabled:
        try:
            config.api.token()
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return config


def _check_classes(path: Path, config: GatewayConfig) -> None:
    from case_bridge.codes import ClassCatalog

    catalog = ClassCatalog(config.cases.local_classes)
    codes = {
        f"rules.{kind}.class_code": getattr(config.rules, kind).class_code
        for kind in ("bin", "water_level")
    }
    if config.rules.manhole_cover.class_code is not None:
        codes["rules.manhole_cover.class_code"] = config.rules.manhole_cover.class_code
    codes["video.camera_offline_class"] = config.video.camera_offline_class
    for index, area in enumerate(config.alerting.area_conditions):
        codes[f"alerting.area_conditions.{index}.class_code"] = area.class_code
    for c, camera in enumerate(config.video.cameras):
        for z, zone in enumerate(camera.zones):
            code = STALL_CLASS_BY_ZONE.get(zone.type, zone.rubbish_class)
            codes[f"video.cameras.{c}.zones.{z}.type"] = code
    for key, code in codes.items():
        if code not in catalog:
            raise ConfigError(
                f"{path}: {key}: {code} is neither a GB/T 47678.5 matter code"
                " nor listed in cases.local_classes"
            )
    _check_platform_classes(path, config.case_platform, codes)


def _check_platform_classes(
    path: Path, platform: CasePlatformSettings, codes: dict[str, str]
) -> None:
    """Every class code the gateway may file must be one the chosen platform can take
    (a service for Open311, an entry in each code table for mapped REST): otherwise its
    cases could only be parked, found out on the day one is filed."""
    if platform.adapter == "mapped_rest" and platform.mapped_rest is not None:
        try:
            platform.mapped_rest.check_class_codes(codes)
        except ValueError as exc:
            raise ConfigError(f"{path}: case_platform.mapped_rest: {exc}") from None
    if platform.adapter == "open311" and platform.open311 is not None:
        services = platform.open311.services
        missing = [f"{key}: {code}" for key, code in codes.items() if code not in services]
        if missing:
            raise ConfigError(
                f"{path}: case_platform.open311.services has no service_code for "
                + "; ".join(missing)
            )


def _explain(path: Path, root: yaml.Node | None, exc: ValidationError, secrets: set[str]) -> str:
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
        shown = ""
        if error["type"] not in ("missing", "extra_forbidden"):
            shown = _shown(loc, error.get("input"))
        lines.append(f"  {where}: {key}: {message}{shown}")
    return scrub("\n".join(lines), secrets)


def _shown(loc: tuple[Any, ...], value: Any) -> str:
    """The offending value for the operator, if it is a short scalar and not a secret:
    whole sections would repeat the file (and the passwords in it)."""
    if is_secret_key(loc) or isinstance(value, dict | list):
        return ""
    text = repr(mask_url_credentials(value) if isinstance(value, str) else value)
    return f" (got {text[:80]}{'...' if len(text) > 80 else ''})"


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest YAML node on the error's path."""
    line = None
    for part in loc:
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
            continue
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
