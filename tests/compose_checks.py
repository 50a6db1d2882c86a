"""Checks shared by the tests of the shipped compose files (docker-compose.yml,
docker-compose.cluster.yml): Debian's docker-compose validating one without an engine, the
mounts of a service, and config keys that name a secret instead of where to find one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.config_secrets import SECRET_WORDS

needs_docker_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not installed (Debian: apt-get install docker-compose)",
)


def compose_config(compose: Path, env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess:
    """``docker-compose config -q`` on ``compose`` with only ``env`` (and PATH) set: a
    developer's own environment or .env file must not make a test pass."""
    empty = tmp / "empty.env"
    empty.write_text("")
    command = ["docker-compose", "--env-file", str(empty), "-f", str(compose), "config", "-q"]
    return subprocess.run(
        command, env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def mounts(service: dict) -> dict[str, str]:
    """target → source of a service's bind mounts and volumes."""
    found = {}
    for volume in service.get("volumes", []):
        volume = volume.removesuffix(":ro")  # the source may hold ":" (${VAR:?message})
        source, target = volume.rsplit(":", 1)
        found[target] = source
    return found


def secrets_written_in(data: object, prefix: str = "") -> list[str]:
    """Dotted keys of a parsed config that name a secret and hold it, rather than saying
    where it is (``<name>_env`` / ``<name>_file``)."""
    if not isinstance(data, dict):
        return []
    found = []
    for key, value in data.items():
        found += secrets_written_in(value, f"{prefix}{key}.")
        if any(word in str(key) for word in SECRET_WORDS) and not str(key).endswith(
            ("_env", "_file")
        ):
            found.append(f"{prefix}{key}")
    return found


def write_server_certificate(folder: Path, name: str) -> Path:
    """A self-signed server.crt / server.key for 127.0.0.1 in ``folder`` (what a shipped
    broker's TLS folder holds); returns the certificate, the clients' CA."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "server.key", "-out", "server.crt", "-days", "1",
         "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1"],
        cwd=folder, check=True, capture_output=True,
    )  # fmt: skip
    return folder / "server.crt"


def secret_environment(services: dict) -> dict[tuple[str, str], str]:
    """(service, variable) → value of every environment variable named like a secret."""
    return {
        (name, key): value
        for name, service in services.items()
        for key, value in (service.get("environment") or {}).items()
        if any(word.upper() in key for word in SECRET_WORDS)
    }
