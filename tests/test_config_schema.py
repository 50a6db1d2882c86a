"""``citygw config-schema``: the JSON Schema generated from the config's models accepts the
configs the project ships (deploy/, the demo's, the eGova platform example) and catches what
the gateway would refuse for its type or spelling, secrets given by file or variable
included."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gateway.bounded_yaml import load_yaml_file
from gateway.cli_config_schema import config_schema, register
from gateway.demo import demo_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = config_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def shipped(path: Path) -> dict[str, Any]:
    return load_yaml_file(path)[1]


def problems(config: dict[str, Any]) -> list[tuple[list, str]]:
    """(path, failed keyword) of each error, looking inside an optional section's ``anyOf``
    (the section's own schema, or null) at what its own schema said."""
    found: list[tuple[list, str]] = []
    errors = list(VALIDATOR.iter_errors(config))
    while errors:
        error = errors.pop(0)
        inner = [c for c in error.context or [] if c.schema != {"type": "null"}]
        if error.validator == "anyOf" and inner:
            errors[:0] = inner
        else:
            found.append((list(error.absolute_path), str(error.validator)))
    return found


DEPLOY = shipped(ROOT / "deploy" / "gateway.yaml")


def test_the_schema_is_valid_draft_2020_12_and_describes_every_section():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["required"] == ["mqtt", "devices", "store", "case_platform"]
    assert SCHEMA["additionalProperties"] is False
    assert {"api", "history", "video", "alerting", "serial"} <= set(SCHEMA["properties"])


def test_the_shipped_configs_are_valid(tmp_path):
    assert problems(DEPLOY) == []
    demo = shipped(demo_config(tmp_path, 1883, 8081, 8080, "demo-api-token-0123456789"))
    assert problems(demo) == []


def test_the_egova_example_is_a_valid_mapped_rest_section():
    egova = shipped(ROOT / "deploy" / "platforms" / "egova.yaml")
    assert egova["auth"]["secret_env"] == "CITYGW_EGOVA_SECRET"  # a secret source, not a value
    config = {**DEPLOY, "case_platform": {"adapter": "mapped_rest", "mapped_rest": egova}}
    assert problems(config) == []


def changed(path: str, value: Any) -> dict[str, Any]:
    """DEPLOY with the dotted ``path`` set to ``value``."""
    config = copy.deepcopy(DEPLOY)
    *parents, last = path.split(".")
    section = config
    for key in parents:
        section = section.setdefault(key, {})
    section[last] = value
    return config


@pytest.mark.parametrize(
    ("path", "value", "where", "rule"),
    [
        ("api.port", "eighty", ["api", "port"], "type"),
        ("api.port", 70_000, ["api", "port"], "maximum"),
        ("mqtt.qos", 2, ["mqtt", "qos"], "maximum"),
        ("mqtt.url", "http://broker:1883", ["mqtt", "url"], "pattern"),
        ("store.synchronous", "OFF", ["store", "synchronous"], "enum"),
        ("history.influxdb.batch_size", 1.5, ["history", "influxdb", "batch_size"], "type"),
        ("mqtt.passwrd_env", "X", ["mqtt"], "additionalProperties"),
        ("rules.bin.fill_fire_pct", "ninety", ["rules", "bin", "fill_fire_pct"], "type"),
    ],
)
def test_a_wrong_type_or_key_is_caught_where_it_is(path, value, where, rule):
    found = problems(changed(path, value))
    assert found and all(location[: len(where)] == where for location, _ in found), found
    assert rule in [validator for _, validator in found], found


def test_a_secret_is_given_once_by_value_file_or_variable():
    platform = DEPLOY["case_platform"]
    assert platform["token_env"] == "CITYGW_PLATFORM_TOKEN"
    both = changed("case_platform", {**platform, "token": "plain-token-value"})
    assert problems(both) == [(["case_platform"], "not")]
    by_file = {k: v for k, v in platform.items() if k != "token_env"} | {"token_file": "tok"}
    assert problems(changed("case_platform", by_file)) == []
    # The webhook's secret is required: one source of the three, not none and not two.
    assert problems(changed("case_platform.webhook", {"secret_file": "hook"})) == []
    assert problems(changed("case_platform.webhook", {})) == [
        (["case_platform", "webhook"], "oneOf")
    ]
    two = {"secret_file": "hook", "secret_env": "CITYGW_HOOK"}
    assert problems(changed("case_platform.webhook", two)) == [
        (["case_platform", "webhook"], "oneOf")
    ]


def test_the_command_writes_the_schema(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="citygw")
    register(parser.add_subparsers(required=True))
    args = parser.parse_args(["config-schema", "--out", str(tmp_path / "gateway.schema.json")])
    assert args.handler(args) == 0
    assert json.loads((tmp_path / "gateway.schema.json").read_text("utf-8")) == SCHEMA
    args = parser.parse_args(["config-schema"])
    capsys.readouterr()
    assert args.handler(args) == 0
    assert json.loads(capsys.readouterr().out) == SCHEMA
    unwritable = parser.parse_args(["config-schema", "--out", str(tmp_path / "no" / "x.json")])
    assert unwritable.handler(unwritable) == 2
    assert "cannot write" in capsys.readouterr().err
