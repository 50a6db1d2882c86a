"""Config and registry validation: each error names the file, the line and the key."""

import textwrap

import pytest

from devices.registry import RegistryError, load_registry
from gateway.config import ConfigError, load_config
from rules.device_rules import DeviceRuleError
from rules.engine import RuleEngine

REGISTRY = (
    "device_id,kind,lat,lon,address,grid_code,part_code,warning_cm,alarm_cm\n"
    "MH-1,manhole_cover,26.08,119.30,五四路,350102001001001,35010201003000001,,\n"
    "WL-1,water_level,26.08,119.30,五四路,350102001001001,35010201067000001,30,50\n"
)
GOOD = """\
mqtt:
  url: mqtt://127.0.0.1:1883
devices:
  registry: devices.csv
store:
  path: var/gw.db
case_platform:
  url: http://127.0.0.1:8081
  token: t
rules:
  bin:
    fire_for_s: 300
"""


def write(tmp_path, text, registry=REGISTRY):
    (tmp_path / "devices.csv").write_text(registry, encoding="utf-8")
    path = tmp_path / "gw.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(tmp_path, text):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return str(info.value)


def test_good_config_resolves_paths_next_to_the_file(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert config.devices.registry == tmp_path / "devices.csv"
    assert config.store.path == tmp_path / "var/gw.db"
    assert config.rules.bin.fire_for_s == 300
    assert config.rules.bin.fill_fire_pct == 90


def test_missing_key_is_named(tmp_path):
    message = error_of(tmp_path, GOOD.replace("  token: t\n", ""))
    assert f"{tmp_path / 'gw.yaml'}:7: case_platform.token: required key is missing" in message


def test_typo_names_the_line_of_the_unknown_key(tmp_path):
    message = error_of(tmp_path, GOOD.replace("fire_for_s", "fire_for_sec"))
    assert ":12: rules.bin.fire_for_sec: unknown key" in message


def test_wrong_type_says_what_was_expected(tmp_path):
    message = error_of(tmp_path, GOOD.replace("fire_for_s: 300", "fire_for_s: soon"))
    assert ":12: rules.bin.fire_for_s: Input should be a valid number" in message
    assert "'soon'" in message


def test_hysteresis_inverted_is_refused(tmp_path):
    message = error_of(tmp_path, GOOD + "    fill_clear_pct: 95\n")
    assert "rules.bin: Value error, fill_clear_pct must be below fill_fire_pct" in message


def test_unknown_class_code_is_refused(tmp_path):
    message = error_of(tmp_path, GOOD + "  water_level:\n    class_code: '99999'\n")
    assert "rules.water_level.class_code: 99999 is neither" in message


def test_not_yaml(tmp_path):
    assert "not valid YAML" in error_of(tmp_path, "mqtt: [unclosed\n")


def test_registry_errors_name_line_and_column(tmp_path):
    bad = REGISTRY.replace(
        "26.08,119.30,五四路,350102001001001,35010201067000001,30,50",
        "26.08,north,五四路,350102001001001,35010201067000001,30,50",
    )
    path = tmp_path / "bad.csv"
    path.write_text(bad, encoding="utf-8")
    with pytest.raises(RegistryError, match=r"bad.csv:3: column lon must be a number"):
        load_registry(path)


def test_registry_water_level_needs_its_levels(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(REGISTRY.replace(",30,50", ",30,"), encoding="utf-8")
    with pytest.raises(RegistryError, match=r"bad.csv:3: water_level device needs column alarm_cm"):
        load_registry(path)


def test_per_device_override_is_validated_like_config(tmp_path):
    registry_text = REGISTRY.replace("warning_cm,alarm_cm", "warning_cm,alarm_cm,clear_for_s")
    registry_text = registry_text.replace(",30,50", ",30,50,-3").replace(",,\n", ",,,\n")
    config = load_config(write(tmp_path, GOOD, registry_text))
    engine = RuleEngine(config.rules)
    devices = load_registry(config.devices.registry)
    mh = devices["MH-1"]
    engine.add_source(mh.device_id, mh.kind, mh.location, mh.part_code, mh.overrides)
    wl = devices["WL-1"]
    with pytest.raises(DeviceRuleError, match="device WL-1: clear_for_s: Input should be greater"):
        engine.add_source(wl.device_id, wl.kind, wl.location, wl.part_code, wl.overrides)


def test_the_shipped_deployment_config_loads():
    """docker-compose runs deploy/gateway.yaml: it must stay valid as the config grows."""
    from pathlib import Path

    config = load_config(Path(__file__).resolve().parents[1] / "deploy" / "gateway.yaml")
    assert config.history.influxdb is not None and config.history.influxdb.bucket == "telemetry"
    assert {"99101", "99201", "99301"} <= set(config.cases.local_classes)
