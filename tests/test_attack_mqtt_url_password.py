"""An MQTT broker URL whose password holds an unescaped ``/``, ``?`` or ``#``.

``urlparse`` ends the URL's authority at the first of those, so the rest of the password is
read as a port. ``check-config`` must refuse such a URL (the gateway cannot start with it),
and neither it nor ``citygw run`` may print any part of the password.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from simulators.scenario import BUILTIN_SCENARIO, load_scenario

PASSWORD_HEAD = "ZQXSEC"


def _config(tmp_path: Path, separator: str) -> Path:
    registry = BUILTIN_SCENARIO.parent / load_scenario(BUILTIN_SCENARIO).spec.registry
    config = {
        "gateway_id": "test",
        "mqtt": {
            "url": f"mqtt://citygw:{PASSWORD_HEAD}{separator}RET42@127.0.0.1:1",
            "client_id": "c",
        },
        "devices": {"registry": str(registry)},
        "store": {"path": str(tmp_path / "gateway.db")},
        "case_platform": {"url": "http://127.0.0.1:1", "token": "platform-token"},
        "api": {"enabled": False},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _citygw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=20
    )


@pytest.mark.parametrize("separator", ["/", "#", "?"])
def test_check_config_refuses_the_url_without_showing_the_password(tmp_path, separator):
    checked = _citygw("check-config", str(_config(tmp_path, separator)))
    output = checked.stdout + checked.stderr
    assert checked.returncode == 2, output
    assert PASSWORD_HEAD not in output
    assert "Traceback" not in output


def test_run_refuses_the_url_without_a_traceback_or_the_password(tmp_path):
    run = _citygw("run", "-c", str(_config(tmp_path, "/")))
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert PASSWORD_HEAD not in output, output
    assert "Traceback" not in output, output
