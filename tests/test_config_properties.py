"""Property tests of the config loader: whatever file it is given, ``load_config`` returns a
config or raises ``ConfigError`` (never a traceback), and no error text ever holds a secret
from the file, wherever in the config the secret sits and whatever else is wrong."""

from __future__ import annotations

import copy
import shutil
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, load_config
from simulators.scenario import BUILTIN_SCENARIO

FAST = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# A config that loads, with every section that carries a secret.
VALID: dict[str, Any] = {
    "gateway_id": "prop",
    "mqtt": {"url": "mqtts://127.0.0.1:8883", "username": "gw", "password": "mqtt-pass",
             "tls": {"cert_file": "c.pem", "key_file": "k.pem", "key_password": "key-pass"}},
    "devices": {"registry": "devices.csv"},
    "store": {"path": "var/gw.db"},
    "case_platform": {"url": "http://127.0.0.1:8081", "token": "platform-token"},
    "rules": {"bin": {"fire_for_s": 300}},
    "api": {"port": 8080, "metrics_public": False},
    "history": {"influxdb": {"url": "http://127.0.0.1:8086", "org": "city", "bucket": "t",
                             "token": "influx-token"}},
    "video": {
        "detector": {"model": "model.onnx"},
        "cameras": [{"id": "CAM-A", "url": "rtsp://admin:cam-pass@10.0.0.2/stream",
                     "zones": [{"id": "z1", "type": "no_dumping", "lat": 26.0, "lon": 119.3,
                                "polygon": [[0, 0], [1, 0], [1, 1]]}]}],
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("config")
    shutil.copy(BUILTIN_SCENARIO.parent / "devices.csv", folder / "devices.csv")
    return folder


def load_text(folder: Path, content: str | bytes) -> str | None:
    """The ConfigError's text, or None when the file loaded."""
    path = folder / "gw.yaml"
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    try:
        load_config(path)
    except ConfigError as exc:
        return str(exc)
    return None


def test_the_valid_config_loads(folder):
    assert load_text(folder, yaml.safe_dump(VALID)) is None


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


def _set(data: Any, path: tuple, value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


YAML_ALPHABET = st.sampled_from(list(":-[]{}&*!|>'\"%@`#,?\n \t\\") + list("ab0é9.") + ["\x00"])
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@FAST
@given(text=st.text(YAML_ALPHABET, max_size=200))
def test_yaml_ish_text_gives_a_config_or_a_config_error(folder, text):
    load_text(folder, text)


@FAST
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_give_a_config_or_a_config_error(folder, raw):
    load_text(folder, raw)


@FAST
@given(path=st.sampled_from(_paths(VALID)), value=JUNK)
def test_any_value_anywhere_gives_a_config_or_a_config_error(folder, path, value):
    data = copy.deepcopy(VALID)
    _set(data, path, value)
    load_text(folder, yaml.safe_dump(data, allow_unicode=True))


@FAST
@given(
    path=st.sampled_from(_paths(VALID)),
    text=st.text(YAML_ALPHABET, min_size=1, max_size=20),
    offset=st.integers(0, 10_000),
)
def test_yaml_syntax_broken_anywhere_gives_a_config_or_a_config_error(folder, path, text, offset):
    valid = yaml.safe_dump(VALID, allow_unicode=True)
    at = offset % len(valid)
    load_text(folder, valid[:at] + text + valid[at:])


# -- secrets ---------------------------------------------------------------------------------

# Secrets as real ones look: 12+ characters mixing letters and digits. A plain word such as
# "expected" is part of PyYAML's own messages, so finding it there says nothing.
SECRETS = st.text(
    string.ascii_letters + string.digits + "-_.~+/=", min_size=12, max_size=40
).filter(lambda s: any(c.isdigit() for c in s) and any(c.isalpha() for c in s))


def _platform_token(data: dict, secret: str) -> None:
    data["case_platform"]["token"] = secret


def _mqtt_password(data: dict, secret: str) -> None:
    data["mqtt"]["password"] = secret


def _key_password(data: dict, secret: str) -> None:
    data["mqtt"]["tls"]["key_password"] = secret


def _influx_token(data: dict, secret: str) -> None:
    data["history"]["influxdb"]["token"] = secret


def _camera_url(data: dict, secret: str) -> None:
    data["video"]["cameras"][0]["url"] = f"rtsp://admin:{secret}@10.0.0.2/stream"


def _mqtt_url(data: dict, secret: str) -> None:
    data["mqtt"] = {"url": f"mqtt://gw:{secret}@127.0.0.1:1883"}


def _token_in_a_list(data: dict, secret: str) -> None:
    data["case_platform"]["token"] = [secret]


def _password_as_mapping(data: dict, secret: str) -> None:
    data["mqtt"]["password"] = {"value": secret}


PLACES: list[Callable[[dict, str], None]] = [
    _platform_token, _mqtt_password, _key_password, _influx_token, _camera_url, _mqtt_url,
    _token_in_a_list, _password_as_mapping,
]  # fmt: skip


def _no_username(data: dict) -> None:
    data["mqtt"].pop("username", None)
    data["mqtt"].setdefault("password", "another-password")


def _bad_platform_url(data: dict) -> None:
    data["case_platform"]["url"] = "not a url"


def _unknown_key_in_each_secret_section(data: dict) -> None:
    for section in (data["mqtt"], data["case_platform"], data["history"]["influxdb"]):
        section["tokn"] = 1


def _bad_mqtt_scheme(data: dict) -> None:
    url = data["mqtt"]["url"]
    data["mqtt"]["url"] = "http" + url[url.index(":") :]


def _bad_camera(data: dict) -> None:
    data["video"]["cameras"][0]["analyse_fps"] = "fast"
    data["video"]["cameras"][0]["id"] = "no spaces allowed"


def _secret_sections_wrong_type(data: dict) -> None:
    data["history"]["influxdb"]["batch_size"] = -1
    data["case_platform"]["timeout_s"] = "soon"


def _missing_store(data: dict) -> None:
    del data["store"]


BREAKAGES = [
    _no_username, _bad_platform_url, _unknown_key_in_each_secret_section, _bad_mqtt_scheme,
    _bad_camera, _secret_sections_wrong_type, _missing_store,
]  # fmt: skip


@FAST
@given(secret=SECRETS, place=st.sampled_from(PLACES), breakage=st.sampled_from(BREAKAGES))
def test_no_error_shows_a_secret(folder, secret, place, breakage):
    data = copy.deepcopy(VALID)
    place(data, secret)
    breakage(data)
    message = load_text(folder, yaml.safe_dump(data, allow_unicode=True))
    assert message is not None, "every breakage makes the config invalid"
    assert secret not in message


@FAST
@given(secret=SECRETS, place=st.sampled_from(PLACES), cut=st.integers(0, 10_000))
def test_no_yaml_syntax_error_shows_a_secret(folder, secret, place, cut):
    """A file cut anywhere (an editor's half-saved file), or with a stray quote after the
    secret: PyYAML's own messages quote the line they stopped at."""
    data = copy.deepcopy(VALID)
    place(data, secret)
    text = yaml.safe_dump(data, allow_unicode=True, default_flow_style=False)
    at = text.index(secret) + len(secret)
    for broken in (text[: cut % len(text)], text[:at] + '"\n  : [' + text[at:]):
        message = load_text(folder, broken)
        assert message is None or secret not in message
