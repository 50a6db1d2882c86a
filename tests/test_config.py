"""Config and registry validation: each error names the file, the line and the key."""

import textwrap

import pytest

from devices.registry import RegistryError, load_registry
from gateway.config import ConfigError, load_config
from gateway.rule_settings import settings_from_files
from rules.engine import RuleEngine
from rules.settings import SettingsError

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


def test_the_time_zone_is_a_setting_checked_at_load(tmp_path):
    assert str(load_config(write(tmp_path, GOOD)).tz) == "Asia/Shanghai"
    assert str(load_config(write(tmp_path, "timezone: Asia/Urumqi\n" + GOOD)).tz) == "Asia/Urumqi"
    message = error_of(tmp_path, "timezone: Asia/Beijing\n" + GOOD)
    assert ":1: timezone: Value error, unknown time zone 'Asia/Beijing'" in message


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
    devices = load_registry(config.devices.registry)
    mh = devices["MH-1"]
    engine = RuleEngine(settings_from_files(config, {"MH-1": mh}), config.tz)
    engine.add_source(mh.device_id, mh.kind, mh.location, mh.part_code)
    with pytest.raises(SettingsError, match=r"devices\.WL-1\.clear_for_s: Input should be greater"):
        settings_from_files(config, devices)


DEPLOY_SECRETS = {
    "CITYGW_API_TOKEN": "deploy-api-token-0123456789",
    "CITYGW_PLATFORM_TOKEN": "deploy-platform-token",
    "CITYGW_MQTT_PASSWORD": "deploy-mqtt-password",
    "CITYGW_INFLUX_TOKEN": "deploy-influx-token",
}


def test_the_shipped_deployment_config_loads(monkeypatch):
    """docker-compose runs deploy/gateway.yaml with its secrets in the environment: it must
    stay valid as the config grows, and hold no secret of its own."""
    from pathlib import Path

    for name, value in DEPLOY_SECRETS.items():
        monkeypatch.setenv(name, value)
    config = load_config(Path(__file__).resolve().parents[1] / "deploy" / "gateway.yaml")
    assert config.history.influxdb is not None and config.history.influxdb.bucket == "telemetry"
    assert {"99101", "99201", "99301"} <= set(config.cases.local_classes)
    assert config.case_platform.token.get_secret_value() == DEPLOY_SECRETS["CITYGW_PLATFORM_TOKEN"]
    assert config.history.influxdb.token.get_secret_value() == DEPLOY_SECRETS["CITYGW_INFLUX_TOKEN"]
    assert (config.mqtt.username, config.mqtt.secret()) == ("citygw", "deploy-mqtt-password")
    assert config.api.token() == DEPLOY_SECRETS["CITYGW_API_TOKEN"]
    assert [rule.name for rule in config.alerting.inhibit_rules] == ["flood_gathers_gauges"]
    assert config.rules.water_level.rise_cm == 10 and config.rules.bin.repeat_count == 3


def test_the_shipped_deployment_config_refuses_to_load_without_its_secrets(monkeypatch):
    from pathlib import Path

    for name in DEPLOY_SECRETS:
        monkeypatch.delenv(name, raising=False)
    path = Path(__file__).resolve().parents[1] / "deploy" / "gateway.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}:11: mqtt.password_env: environment variable CITYGW_MQTT_PASSWORD is not set"
        " or empty"
    )


# -- hostile and broken files: a ConfigError naming the file, never a traceback ------------


def test_deep_nesting_is_refused_with_the_line(tmp_path):
    message = error_of(tmp_path, GOOD + "x: " + "[" * 5000 + "]" * 5000 + "\n")
    assert message == f"{tmp_path / 'gw.yaml'}:13: nested deeper than 64 levels"


def test_a_file_that_is_not_utf8_is_named_with_its_line(tmp_path):
    path = write(tmp_path, GOOD)
    path.write_bytes(GOOD.encode() + "rules: {name: 'caf\xe9'}\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    byte = len(GOOD) + len("rules: {name: 'caf")
    assert str(info.value) == f"{path}:13: not UTF-8 (byte {byte}); save the file as UTF-8"


def test_a_huge_file_is_refused_unread(tmp_path):
    message = error_of(tmp_path, GOOD + "# padding\n" * 110_000)
    assert message == f"{tmp_path / 'gw.yaml'}: larger than 1048576 bytes; is this the right file?"


def test_an_alias_bomb_is_refused(tmp_path):
    bomb = "lol: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level, name in enumerate("bcdefgh"):
        previous = "abcdefgh"[level]
        bomb += f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]\n"
    message = error_of(tmp_path, bomb)
    assert message == f"{tmp_path / 'gw.yaml'}:5: more than 100000 values once aliases are expanded"


def test_aliases_of_modest_size_still_work(tmp_path):
    text = GOOD.replace("rules:\n  bin:\n", "rules:\n  bin: &bin\n") + "  water_level: {}\n"
    text += "shared: &retry {initial_s: 1}\n"
    assert "unknown key" in error_of(tmp_path, text)  # "shared" is not a section
    ok = GOOD.replace("  token: t\n", "  token: t\n  retry: &r {initial_s: 1, max_s: 9}\n")
    config = load_config(write(tmp_path, ok))
    assert config.case_platform.retry.max_s == 9


def test_a_recursive_alias_is_refused(tmp_path):
    message = error_of(tmp_path, GOOD + "loop: &x [1, *x]\n")
    assert message == f"{tmp_path / 'gw.yaml'}:13: an alias refers to a collection containing it"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("9" * 5000, "Exceeds the limit (4300 digits) for integer string conversion"),
        ("2024-13-45", "month must be in 1..12"),
    ],
)
def test_values_python_cannot_hold_are_refused(tmp_path, value, reason):
    message = error_of(tmp_path, GOOD.replace("fire_for_s: 300", f"fire_for_s: {value}"))
    assert message.startswith(f"{tmp_path / 'gw.yaml'}: a number or date cannot be read: ")
    assert reason in message and "set_int_max_str_digits" not in message


def test_a_folder_is_not_a_config(tmp_path):
    with pytest.raises(ConfigError, match=r": not a regular file$"):
        load_config(tmp_path)


def test_a_yaml_syntax_error_gives_the_position_but_not_the_line(tmp_path):
    message = error_of(tmp_path, GOOD.replace("token: t", 'token: "s3cret-platform-token'))
    assert message == f"{tmp_path / 'gw.yaml'}:13:1: not valid YAML: found unexpected end of stream"


# -- secrets: from files and the environment, and never in an error ------------------------

PASSWORD = "hunter2-the-mqtt-password"


def check_config_output(path, capsys) -> tuple[int, str]:
    from gateway.cli import main

    code = main(["check-config", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_check_config_names_a_bad_secret_but_never_shows_it(tmp_path, capsys):
    text = GOOD.replace(
        "  url: mqtt://127.0.0.1:1883\n", f"  url: mqtt://127.0.0.1:1883\n  password: {PASSWORD}\n"
    )
    code, output = check_config_output(write(tmp_path, text), capsys)
    assert code == 2
    assert "gw.yaml:1: mqtt: Value error, a password needs a username" in output
    assert PASSWORD not in output
    wrong_type = GOOD.replace("  token: t\n", f"  token: [{PASSWORD}]\n")
    code, output = check_config_output(write(tmp_path, wrong_type), capsys)
    assert (code, PASSWORD in output) == (2, False)
    assert "gw.yaml:9: case_platform.token: Input should be a valid string\n" in output


def test_credentials_in_a_url_are_masked(tmp_path):
    text = GOOD.replace("url: mqtt://127.0.0.1:1883", f"url: tcp://gw:{PASSWORD}@127.0.0.1")
    message = error_of(tmp_path, text)
    assert (
        "mqtt.url: String should match pattern '^mqtts?://' (got 'tcp://***@127.0.0.1')" in message
    )
    assert PASSWORD not in message


def test_the_platform_token_from_a_file_or_the_environment(tmp_path, monkeypatch):
    (tmp_path / "platform-token").write_text("token-from-a-file\n")
    from_file = GOOD.replace("  token: t\n", "  token_file: platform-token\n")
    token = load_config(write(tmp_path, from_file)).case_platform.token
    assert token.get_secret_value() == "token-from-a-file"
    monkeypatch.setenv("CITY_PLATFORM_TOKEN", "token-from-the-environment")
    from_env = GOOD.replace("  token: t\n", "  token_env: CITY_PLATFORM_TOKEN\n")
    config = load_config(write(tmp_path, from_env))
    assert config.case_platform.token.get_secret_value() == "token-from-the-environment"


SOURCE_PROBLEMS = {
    "  token_env: NOT_SET_ANYWHERE\n": ":9: case_platform.token_env: environment variable"
    " NOT_SET_ANYWHERE is not set or empty",
    "  token_file: missing-file\n": ":9: case_platform.token_file: {dir}/missing-file: cannot"
    " read: No such file or directory",
    "  token: t\n  token_env: X\n": ":7: case_platform: give one of token, token_env, not several",
    "  token_env: [X]\n": ":9: case_platform.token_env: must be a file path or a variable name",
}


@pytest.mark.parametrize(("lines", "problem"), SOURCE_PROBLEMS.items())
def test_secret_sources_that_cannot_be_used_are_named(tmp_path, monkeypatch, lines, problem):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    message = error_of(tmp_path, GOOD.replace("  token: t\n", lines))
    assert message == f"{tmp_path / 'gw.yaml'}{problem.format(dir=tmp_path)}"


def test_the_api_token_is_checked_at_load_and_never_shown(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CITYGW_API_TOKEN", "change-me")
    message = error_of(tmp_path, GOOD)
    assert message == (
        f"{tmp_path / 'gw.yaml'}: environment variable CITYGW_API_TOKEN (api.token_env): the API"
        " token must be 16 to 512 characters of A-Z a-z 0-9 -._~+/= (make one with"
        " `openssl rand -hex 32`)"
    )
    monkeypatch.setenv("CITYGW_API_TOKEN", "a" * 32)
    path = write(tmp_path, GOOD)
    assert check_config_output(path, capsys) == (
        0,
        f"{path}: OK (2 devices)\napi: 127.0.0.1:8080, token from $CITYGW_API_TOKEN\n",
    )
    monkeypatch.delenv("CITYGW_API_TOKEN")
    (tmp_path / "api-token").write_text("short\n")
    message = error_of(tmp_path, GOOD + "api:\n  token_file: api-token\n")
    assert message.startswith(f"{tmp_path / 'gw.yaml'}: api.token_file {tmp_path / 'api-token'}:")
    assert "short" not in message
    path = write(tmp_path, GOOD)
    assert check_config_output(path, capsys)[1].endswith(
        "api: 127.0.0.1:8080, NO TOKEN (api.token_file or $CITYGW_API_TOKEN):"
        " only /healthz is served\n"
    )


def test_an_api_token_cannot_be_inline(tmp_path):
    message = error_of(tmp_path, GOOD + "api:\n  token: abcdefghijklmnop-inline\n")
    assert "api.token: unknown key" in message
    assert "abcdefghijklmnop-inline" not in message


def test_a_secret_written_where_its_source_belongs_is_not_echoed(tmp_path, capsys):
    """A password pasted into ``*_env``, or a token in a URL's query: errors get pasted
    into tickets, so neither may appear in them."""
    careless = GOOD.replace("  token: t\n", "  token_env: ZQXSECRET42\n")
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, careless))
    assert "ZQXSECRET42" not in str(caught.value)
    in_query = GOOD.replace("url: http://127.0.0.1:8081", "url: htp://h/?token=ZQXSECRET43")
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, in_query))
    assert "case_platform.url" in str(caught.value)
    assert "ZQXSECRET43" not in str(caught.value)
