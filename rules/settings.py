"""The rule settings document: everything the operations team tunes, as one typed value.

One version of the thresholds is one :class:`RuleSettings`: per-kind parameters
(``kinds``), per-device overrides (``devices``, the registry's override columns) and
per-zone video overrides (``zones``). It is plain JSON (``model_dump(mode="json")``), so a
version can be stored, diffed, rolled back, and replayed by the backtest; the engines are
built from it and reconfigured with it.

A setting is named by a path:

- ``kinds.<kind>.<param>``, nested where the kind nests (``kinds.health.water_level.heartbeat_s``,
  ``kinds.health.confirm_s``, ``kinds.video.stall_dwell_s``);
- ``devices.<device_id>.<param>`` and ``zones.<camera>/<zone>.<param>``: the id is
  everything between the first and the last dot (ids may hold dots, params never do);
- a path whose first segment is none of ``kinds``/``devices``/``zones`` means ``kinds.`` +
  path, so ``bin.fill_fire_pct`` is ``kinds.bin.fill_fire_pct``.

A param's value is a leaf even when it is a mapping or a schedule
(``kinds.bin.schedule``, ``kinds.health.water_level.stuck_after_s``).

Changes are validated like the config: the merged per-device and per-zone parameters must
validate too (a kind's new fire level must not break a device's own clear level), and a
:class:`SettingsError` names the path and the problem. Values may come as strings (the
CLI) or JSON values (the API): strings are coerced by the param's type, and a string that
starts with ``{`` or ``[`` is read as JSON. ``null`` on a device or zone param removes the
override (the kind's value applies again).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from rules.params import (
    HEALTH_COLUMNS,
    PARAMS_BY_KIND,
    BinParams,
    HealthConfig,
    KindHealthParams,
    ManholeCoverParams,
    RulesConfig,
    VideoRuleParams,
    WaterLevelParams,
)

SECTIONS = ("kinds", "devices", "zones")
MAX_PATH_CHARS = 300
MAX_CHANGES = 1000


class SettingsError(ValueError):
    """A change or a document that cannot be used; the message names the path."""


class KindSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    manhole_cover: ManholeCoverParams = ManholeCoverParams()
    bin: BinParams = BinParams()
    water_level: WaterLevelParams = WaterLevelParams()
    health: HealthConfig = HealthConfig()
    video: VideoRuleParams = VideoRuleParams()


class RuleSettings(BaseModel):
    """One version of the thresholds. ``devices``/``zones`` hold only overridden params,
    typed (numbers as numbers, schedules as mappings)."""

    model_config = ConfigDict(extra="forbid")

    kinds: KindSettings = KindSettings()
    devices: dict[str, dict[str, Any]] = Field(default_factory=dict)
    zones: dict[str, dict[str, Any]] = Field(default_factory=dict)


# --- version 1 ---------------------------------------------------------------------------


def settings_from_config(
    rules: RulesConfig,
    video: VideoRuleParams,
    device_overrides: Mapping[str, Mapping[str, str]],
    zone_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    kinds: Mapping[str, str] | None = None,
) -> RuleSettings:
    """Version 1: the YAML's per-kind rules and video params, the registry's override
    columns (text, typed here), and per-zone params from the camera config (its zones'
    schedules: ``{"cam/zone": {"schedule": ...}}``). With ``kinds`` (device id → kind) each
    device's overrides are checked against its own kind, as the engines will."""
    settings = RuleSettings(
        kinds=KindSettings(
            manhole_cover=rules.manhole_cover,
            bin=rules.bin,
            water_level=rules.water_level,
            health=rules.health,
            video=video,
        )
    )
    for device_id, columns in device_overrides.items():
        if not columns:
            continue
        kind = kinds.get(device_id) if kinds is not None else None
        settings.devices[device_id] = typed_device_overrides(
            settings, device_id, kind, dict(columns)
        )
    for zone_key, params in (zone_overrides or {}).items():
        if params:
            settings.zones[zone_key] = _typed_zone(settings, zone_key, dict(params))
    return settings


# --- effective parameters (what the engines run with) ------------------------------------


def device_params(settings: RuleSettings, device_id: str, kind: str) -> BaseModel:
    """The device's rule params: its kind's, overridden by its own (health columns aside)."""
    base = getattr(settings.kinds, kind)
    mine = {k: v for k, v in settings.devices.get(device_id, {}).items() if k not in HEALTH_COLUMNS}
    if not mine:
        return base
    return _merged(PARAMS_BY_KIND[kind], base, mine, f"devices.{device_id}")


def device_health_params(settings: RuleSettings, device_id: str, kind: str) -> KindHealthParams:
    """The device's health params: its kind's, with its own health columns."""
    base: KindHealthParams = getattr(settings.kinds.health, kind)
    mine = {k: v for k, v in settings.devices.get(device_id, {}).items() if k in HEALTH_COLUMNS}
    if not mine:
        return base
    merged = _merged(KindHealthParams, base, mine, f"devices.{device_id}")
    assert isinstance(merged, KindHealthParams)
    return merged


def zone_params(settings: RuleSettings, zone_key: str) -> VideoRuleParams:
    """A camera zone's video params: the video kind's, overridden by the zone's own."""
    mine = settings.zones.get(zone_key)
    if not mine:
        return settings.kinds.video
    merged = _merged(VideoRuleParams, settings.kinds.video, mine, f"zones.{zone_key}")
    assert isinstance(merged, VideoRuleParams)
    return merged


def _merged(model: type[BaseModel], base: BaseModel, mine: dict[str, Any], where: str) -> BaseModel:
    try:
        return model.model_validate({**base.model_dump(), **mine})
    except ValidationError as exc:
        raise SettingsError(_problems(exc, where)) from None


# --- paths -------------------------------------------------------------------------------


def parse_path(path: str) -> tuple[str, str, tuple[str, ...]]:
    """``(section, id, param segments)``: for kinds the id is "" and the segments are the
    nested names; for devices and zones the one param. Raises SettingsError."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS:
        raise SettingsError(f"path {str(path)[:40]!r}: must be 1 to {MAX_PATH_CHARS} characters")
    head, _, rest = path.partition(".")
    if head not in SECTIONS:
        head, rest = "kinds", path
    if head == "kinds":
        segments = tuple(rest.split("."))
        if not rest or "" in segments:
            raise SettingsError(f"{path}: a kinds path is kinds.<kind>.<param>")
        return head, "", segments
    ident, dot, param = rest.rpartition(".")
    if not dot or not ident or not param:
        raise SettingsError(f"{path}: a {head} path is {head}.<id>.<param>")
    return head, ident, (param,)


def _kind_model(segments: tuple[str, ...], path: str) -> tuple[type[BaseModel], str]:
    """The params model holding the param the kinds path names, and that param's name."""
    model: type[BaseModel] = KindSettings
    for depth, name in enumerate(segments):
        field = model.model_fields.get(name)
        if field is None:
            where = ".".join(("kinds", *segments[:depth])) or "kinds"
            raise SettingsError(f"{path}: {where} has no {name!r}")
        if _is_container(field.annotation):
            model = field.annotation  # type: ignore[assignment]
            continue
        if depth != len(segments) - 1:
            raise SettingsError(f"{path}: {name} is a param, it has no parts")
        return model, name
    raise SettingsError(f"{path}: names a group of params, not one param")


def _is_container(annotation: Any) -> bool:
    """Params models nest (kinds → health → water_level); a param's value never does."""
    return isinstance(annotation, type) and annotation in _CONTAINERS


_CONTAINERS = frozenset(
    {
        KindSettings,
        HealthConfig,
        KindHealthParams,
        VideoRuleParams,
        *PARAMS_BY_KIND.values(),
    }
)


def _params_of_kind(kind: str) -> set[str]:
    return set(PARAMS_BY_KIND[kind].model_fields) | set(HEALTH_COLUMNS)


# --- changes -----------------------------------------------------------------------------


def apply_changes(
    settings: RuleSettings,
    changes: Mapping[str, Any],
    devices: Mapping[str, str],
    zones: Collection[str],
) -> RuleSettings:
    """A new settings document with ``changes`` ({path: value}) applied and validated.

    ``devices`` (device id → kind) and ``zones`` ("camera/zone" keys) are what exists: a
    change for anything else is refused. The whole result is checked, so a kind change
    that would break one device's own params is refused naming both."""
    if len(changes) > MAX_CHANGES:
        raise SettingsError(f"changes: at most {MAX_CHANGES} at once, got {len(changes)}")
    if not changes:
        raise SettingsError("changes: nothing to change")
    data = settings.model_dump(mode="json")
    # Changed paths per kind / device / zone, to name the cause of a problem found later.
    kind_paths: dict[str, list[str]] = {}
    own_paths: dict[str, list[str]] = {}
    for path, raw in changes.items():
        section, ident, segments = parse_path(path)
        value = _decoded(raw)
        if section == "kinds":
            _model, name = _kind_model(segments, path)
            node = data["kinds"]
            for name_ in segments[:-1]:
                node = node[name_]
            node[name] = value
            kind_paths.setdefault(segments[0], []).append(".".join(("kinds", *segments)))
        elif section == "devices":
            kind = devices.get(ident)
            if kind is None:
                raise SettingsError(f"{path}: unknown device {ident!r}")
            if segments[0] not in _params_of_kind(kind):
                raise SettingsError(f"{path}: a {kind} device has no param {segments[0]!r}")
            _set_override(data["devices"], ident, segments[0], value)
            own_paths.setdefault(f"devices.{ident}", []).append(path)
        else:
            if ident not in zones:
                raise SettingsError(f"{path}: unknown zone {ident!r} (camera/zone)")
            if segments[0] not in VideoRuleParams.model_fields:
                raise SettingsError(f"{path}: a zone has no param {segments[0]!r}")
            _set_override(data["zones"], ident, segments[0], value)
            own_paths.setdefault(f"zones.{ident}", []).append(path)
    try:
        kinds_model = KindSettings.model_validate(data["kinds"])
    except ValidationError as exc:
        blame = [p for paths in kind_paths.values() for p in paths]
        raise SettingsError(_problems(exc, "kinds", blame)) from None
    new = RuleSettings(kinds=kinds_model)
    for device_id, params in data["devices"].items():
        kind = devices.get(device_id)
        if kind is None:  # a device gone from the registry keeps its overrides, unchecked
            new.devices[device_id] = params
            continue
        blame = [
            *own_paths.get(f"devices.{device_id}", ()),
            *kind_paths.get(kind, ()),
            *kind_paths.get("health", ()),
        ]
        new.devices[device_id] = typed_device_overrides(new, device_id, kind, params, blame)
    for zone_key, params in data["zones"].items():
        blame = [*own_paths.get(f"zones.{zone_key}", ()), *kind_paths.get("video", ())]
        new.zones[zone_key] = _typed_zone(new, zone_key, params, blame)
    _check_water_levels(new, devices, kind_paths.get("water_level", []))
    return new


def _decoded(value: Any) -> Any:
    if value == "null":
        return None
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deep
            return value  # the param's own validation names the problem
    return value


def _set_override(section: dict[str, dict[str, Any]], ident: str, param: str, value: Any) -> None:
    if value is None:
        params = section.get(ident, {})
        params.pop(param, None)
        if not params:
            section.pop(ident, None)
        return
    section.setdefault(ident, {})[param] = value


def typed_device_overrides(
    settings: RuleSettings,
    device_id: str,
    kind: str | None,
    params: dict[str, Any],
    blame: list[str] | None = None,
) -> dict[str, Any]:
    """The device's overrides, typed by its kind's models (or by name when its kind is not
    known): raises SettingsError naming the device's path."""
    where = f"devices.{device_id}"
    if kind is None:
        typed = {}
        for name, value in params.items():
            adapter = _BY_NAME.get(name)
            if adapter is None:
                raise SettingsError(f"{where}.{name}: no device param of that name")
            try:
                typed[name] = adapter.dump_python(adapter.validate_python(value), mode="json")
            except ValidationError as exc:
                raise SettingsError(_problems(exc, f"{where}.{name}", blame)) from None
        return typed
    unknown = set(params) - _params_of_kind(kind)
    if unknown:
        raise SettingsError(f"{where}.{sorted(unknown)[0]}: a {kind} device has no such param")
    rules = {k: v for k, v in params.items() if k not in HEALTH_COLUMNS}
    health = {k: v for k, v in params.items() if k in HEALTH_COLUMNS}
    typed = {}
    for model, base, mine in (
        (PARAMS_BY_KIND[kind], getattr(settings.kinds, kind), rules),
        (KindHealthParams, getattr(settings.kinds.health, kind), health),
    ):
        if not mine:
            continue
        try:
            merged = model.model_validate({**base.model_dump(), **mine})
        except ValidationError as exc:
            raise SettingsError(_problems(exc, where, blame)) from None
        dumped = merged.model_dump(mode="json")
        typed.update({name: dumped[name] for name in mine})
    return typed


def _typed_zone(
    settings: RuleSettings, zone_key: str, params: dict[str, Any], blame: list[str] | None = None
) -> dict[str, Any]:
    where = f"zones.{zone_key}"
    unknown = set(params) - set(VideoRuleParams.model_fields)
    if unknown:
        raise SettingsError(f"{where}.{sorted(unknown)[0]}: a zone has no such param")
    try:
        merged = VideoRuleParams.model_validate({**settings.kinds.video.model_dump(), **params})
    except ValidationError as exc:
        raise SettingsError(_problems(exc, where, blame)) from None
    dumped = merged.model_dump(mode="json")
    return {name: dumped[name] for name in params}


def _check_water_levels(
    settings: RuleSettings, devices: Mapping[str, str], blame: list[str]
) -> None:
    """A gauge without both levels has no rule: refused, not silently unwatched."""
    kind_levels = settings.kinds.water_level
    for device_id, kind in devices.items():
        if kind != "water_level":
            continue
        mine = settings.devices.get(device_id, {})
        for level in ("warning_cm", "alarm_cm"):
            if mine.get(level, getattr(kind_levels, level)) is None:
                where = ", ".join(blame) or f"devices.{device_id}.{level}"
                raise SettingsError(f"{where}: water_level device {device_id} needs {level}")


def _by_name() -> dict[str, TypeAdapter]:
    """Device param name → its type, across kinds (a name means the same in every kind)."""
    adapters: dict[str, TypeAdapter] = {}
    for model in (*PARAMS_BY_KIND.values(), KindHealthParams):
        for name, field in model.model_fields.items():
            if model is KindHealthParams and name not in HEALTH_COLUMNS:
                continue
            if name not in adapters:
                adapters[name] = TypeAdapter(_annotated(field))
    return adapters


def _annotated(field: Any) -> Any:
    return Annotated[field.annotation, field]


_BY_NAME = _by_name()


def _problems(exc: ValidationError, where: str, blame: list[str] | None = None) -> str:
    """One line per problem, naming the changed path that caused it where there is one (a
    kind's new level breaking a device's own is named by the kind's path, with the device
    it breaks), else the path of the value at fault."""
    lines = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"])
        path = f"{where}.{loc}" if loc else where
        message = error["msg"].removeprefix("Value error, ")
        matching = [b for b in blame or () if b == path or b.startswith(path + ".")]
        if matching:
            lines.append(f"{', '.join(matching)}: {message}")
        elif blame:
            lines.append(f"{', '.join(blame)}: {message} (at {path})")
        else:
            lines.append(f"{path}: {message}")
    return "; ".join(lines)


# --- reading and comparing ---------------------------------------------------------------


def settings_get(
    settings: RuleSettings, path: str, devices: Mapping[str, str] | None = None
) -> Any:
    """The JSON value at ``path``: a kinds param or group of params, a device's or zone's
    override. With ``devices`` (id → kind), a device param that is not overridden gives
    the kind's value (what the device runs with) and an unknown device is an error."""
    if path in SECTIONS:
        return settings.model_dump(mode="json")[path]
    section, ident, segments = parse_path(path)
    if section == "kinds":
        node: Any = settings.kinds.model_dump(mode="json")
        for depth, name in enumerate(segments):
            if not isinstance(node, dict) or name not in node:
                where = ".".join(("kinds", *segments[:depth]))
                raise SettingsError(f"{path}: {where} has no {name!r}")
            node = node[name]
        return node
    param = segments[0]
    stored = getattr(settings, section).get(ident, {})
    if param in stored:
        return stored[param]
    if section == "devices" and devices is not None:
        kind = devices.get(ident)
        if kind is None:
            raise SettingsError(f"{path}: unknown device {ident!r}")
        if param not in _params_of_kind(kind):
            raise SettingsError(f"{path}: a {kind} device has no param {param!r}")
        base = settings.kinds.health if param in HEALTH_COLUMNS else settings.kinds
        return getattr(base, kind).model_dump(mode="json")[param]
    raise SettingsError(f"{path}: not set")


def diff(old: RuleSettings, new: RuleSettings) -> list[dict[str, Any]]:
    """Every param whose value differs, as ``{path, old, new}`` (None where a device or
    zone override is absent), in path order."""
    before = dict(leaves(old))
    after = dict(leaves(new))
    changed = []
    for path in sorted(before.keys() | after.keys()):
        was, now = before.get(path), after.get(path)
        if was != now:
            changed.append({"path": path, "old": was, "new": now})
    return changed


def leaves(settings: RuleSettings) -> Iterator[tuple[str, Any]]:
    """Every param as ``(path, value)``, kinds first in model order: what
    ``citygw thresholds list`` shows, and what ``diff`` compares."""
    yield from _model_leaves("kinds", KindSettings, settings.kinds.model_dump(mode="json"))
    for section in ("devices", "zones"):
        for ident, params in getattr(settings, section).items():
            for name, value in params.items():
                yield f"{section}.{ident}.{name}", value


def _model_leaves(
    prefix: str, model: type[BaseModel], data: dict[str, Any]
) -> Iterator[tuple[str, Any]]:
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}"
        if _is_container(field.annotation):
            yield from _model_leaves(path, field.annotation, data[name])
        else:
            yield path, data[name]
