"""``GET /api/v1/config``: the config the gateway runs with, for admins, every secret redacted.

What an admin checks when the gateway does not do what the YAML seemed to say: the file as
the models read it, with every default filled in and every relative path resolved. The
rule parameters in it are the start-up ones; thresholds change live and are versioned
(``thresholds_version`` says which is in force; ``/api/v1/thresholds`` has its values).
Reloading the config is not offered: a new config takes a restart.

Redaction (gateway/config_secrets.py, as ``check-config``'s errors are scrubbed):

- a value whose own key names a secret by its words (``password``, ``pwd``, ``token``,
  ``secret``, ``api_key``, ``sk``, ``ak``, ``credential``…: ``names_a_secret``) is
  ``"***"``, except nothing (``null``), where the secret's file is (``<name>_file``: a
  path) and the name of its variable (``<name>_env``, when it looks like one:
  ``CITYGW_API_TOKEN``; an operator may have written the secret itself there). Keys that
  merely hold "key" (``item_key``, ``externalKey``, ``key_id_header``) are shown;
- every constant of a mapped REST platform (``case_platform.mapped_rest…const``) is
  ``"***"`` whatever its field's name: constants are where platforms put credentials
  (``query.ak``, ``body.appPwd``, a signature salt), and a field's name is the platform's
  choice, not ours;
- every other string has every secret value of the config (the values under secret keys,
  ``SecretStr`` fields' real values, passwords in URLs) replaced, and URL credentials and
  queries masked (an RTSP URL's ``user:pass@``, a snapshot URL's ``?token=``). Constants
  are not scrubbed from other strings: most are ordinary words (``json``, ``citygw``) that
  would blot out the rest.

Only an admin may read it: the path is one of the guard's admin paths
(gateway/api_guard.py ``ADMIN_PREFIXES``), so a request below admin is refused (403 with
``required_role``) before it reaches the route.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import SecretStr

from gateway.config_secrets import (
    CONVENTIONAL_ENV_NAME,
    is_secret_leaf,
    scrub,
    secret_values,
)

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

CONFIG_PATH = "/api/v1/config"
REDACTED = "***"
MAPPED_REST = ("case_platform", "mapped_rest")


def config_router(
    config: GatewayConfig, thresholds_version: Callable[[], int | None] = lambda: None
) -> APIRouter:
    """The route for ``config``; ``thresholds_version``: the threshold version in force."""
    router = APIRouter()

    @router.get(CONFIG_PATH)
    async def effective_config() -> Any:
        return {"config": redacted(config), "thresholds_version": thresholds_version()}

    return router


def redacted(config: GatewayConfig) -> dict[str, Any]:
    """``config`` as JSON data with every secret redacted (see the module docstring)."""
    secrets = secret_values(_revealed(config.model_dump(mode="python"), ()), is_secret_leaf)
    return _redact(config.model_dump(mode="json"), (), secrets)


def _revealed(value: Any, loc: tuple[Any, ...]) -> Any:
    """The python dump with each ``SecretStr`` as its value, so that its text is scrubbed
    wherever else it appears (a token pasted into a URL), and without what names a secret's
    source (a path is no secret, and scrubbing it would blot out where it is)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {
            key: _revealed(item, (*loc, str(key)))
            for key, item in value.items()
            if not _names_a_source((*loc, str(key)), item)
        }
    if isinstance(value, list | tuple):
        return [_revealed(item, (*loc, index)) for index, item in enumerate(value)]
    return value


def _redact(value: Any, loc: tuple[Any, ...], secrets: set[str]) -> Any:
    if isinstance(value, dict):
        return {key: _redact(item, (*loc, str(key)), secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact(item, (*loc, index), secrets) for index, item in enumerate(value)]
    if value is None or isinstance(value, bool):
        return value
    if is_secret_leaf(loc) and not _names_a_source(loc, value):
        return REDACTED
    if loc[: len(MAPPED_REST)] == MAPPED_REST and loc[-1] == "const":
        return REDACTED
    return scrub(value, secrets) if isinstance(value, str) else value


def _names_a_source(loc: tuple[Any, ...], value: Any) -> bool:
    """Whether ``value`` says where a secret is rather than what it is."""
    key = loc[-1] if loc else ""
    if not isinstance(key, str) or not isinstance(value, str | PurePath):
        return False
    value = str(value)
    if key.endswith("_file"):
        return True
    return key.endswith("_env") and CONVENTIONAL_ENV_NAME.fullmatch(value) is not None
