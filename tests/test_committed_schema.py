"""The JSON Schema committed beside the shipped config (deploy/gateway.schema.json) is what
``citygw config-schema`` prints today, and the shipped config's first line points the YAML
language server at it: an editor opening deploy/gateway.yaml completes and checks it by the
gateway's own models. A change to the config's models fails here until the file is made
again (``citygw config-schema --out deploy/gateway.schema.json``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness import CLI

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_the_committed_schema_is_the_command_s_output():
    printed = subprocess.run(
        [*CLI, "config-schema"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    committed = (DEPLOY / "gateway.schema.json").read_text(encoding="utf-8")
    assert printed == committed, (
        "deploy/gateway.schema.json is stale: citygw config-schema --out deploy/gateway.schema.json"
    )


def test_the_shipped_config_names_the_schema_in_its_first_line():
    first = (DEPLOY / "gateway.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=gateway.schema.json"
    assert (DEPLOY / first.rsplit("=", 1)[1]).is_file()
