"""The smallest embedded gateway config: the builtin scenario's registry, a store in the
given folder, and a broker and platform that are never reached (the gateway is built, not
started, and its pipeline driven directly)."""

from __future__ import annotations

from pathlib import Path

import yaml

from simulators.scenario import BUILTIN_SCENARIO


def write_embedded_config(folder: Path) -> Path:
    """``folder/gateway.yaml``, its store ``folder/gateway.db``."""
    config = {
        "mqtt": {"url": "mqtt://127.0.0.1:1"},
        "devices": {"registry": str(BUILTIN_SCENARIO.parent / "devices.csv")},
        "store": {"path": str(folder / "gateway.db")},
        "case_platform": {"url": "http://127.0.0.1:1", "token": "unused"},
    }
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
