"""Secrets in the gateway's config: where they may come from, and keeping them out of errors.

Operators keep the YAML where many people read it (a repository, a shared folder, a ticket)
and the secrets elsewhere: a file mounted by Docker or Kubernetes, or an environment
variable set by the service manager. So each secret that other packages' settings take as a
plain value can also be given as ``<name>_file`` (the file's text, trailing newline dropped)
or ``<name>_env`` (the name of a variable); the loader reads it before validation, and the
settings never learn where it came from.

Whatever the source, an error about a config must not print a secret: ``check-config``
output is pasted into tickets and chats. Values under keys that look secret, and the
credentials in ``scheme://user:pass@host`` URLs (camera RTSP URLs carry them), are never
shown, and every secret value found in the config is scrubbed from the final text in case a
validator quoted one.

A key looks secret by its whole words (``names_a_secret``): ``password``, ``pwd``, ``sk``,
``api_key``, ``appSecret``, ``key_password`` do; ``item_key``, ``externalKey``,
``key_id_header``, ``token_poll_s`` do not. Matching parts of words instead ("key" in any
key) hid ordinary settings and, worse, put their values (``refuse``) among the secrets
scrubbed from every other string. Errors judge a value by every key on its path
(``is_secret_key``: a secret written as a mapping under ``password`` is still one); the
effective config, whose shape the models fixed, by its own key (``is_secret_leaf``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
CONVENTIONAL_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
# Parts of environment variables' names that mark a secret (the deployment checks).
SECRET_WORDS = ("password", "token", "secret", "key")
# A key's last word that names a secret, and last two words that do ("api_key").
SECRET_NAMES = frozenset(
    {"password", "passwd", "pwd", "passphrase", "sslpassword", "secret", "token",
     "credential", "sk", "ak", "apikey", "accesskey", "secretkey", "privatekey", "appkey"}
)  # fmt: skip
SECRET_PAIRS = frozenset({("api", "key"), ("access", "key"), ("secret", "key"),
                          ("private", "key"), ("app", "key")})  # fmt: skip
# Words that say where a secret is, after its name: token_file, secret_env.
SOURCE_WORDS = ("file", "env")
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# Secrets that their settings take as plain values; mqtt.password has its own password_file.
SECRET_SOURCES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("mqtt", "password"): ("env",),
    ("case_platform", "token"): ("file", "env"),
    ("case_platform", "open311", "api_key"): ("file", "env"),
    ("case_platform", "mapped_rest", "auth", "secret"): ("file", "env"),
    ("case_platform", "webhook", "secret"): ("file", "env"),
    ("history", "influxdb", "token"): ("file", "env"),
    ("cluster", "postgres_password"): ("file", "env"),
    ("cluster", "nats", "password"): ("file", "env"),
}
# Up to the last "@": a password may hold "/" or "@" unescaped; masking a path too is fine.
_URL_CREDENTIALS = re.compile(r"(?<=://)\S*@")
_URL_QUERY = re.compile(r"(?<=://)(\S*?)\?\S*")
# "host:<not a port>" right after the scheme: a URL cut before its "@" (a truncated line)
# leaves "user:password" looking like host and port.
_URL_NOT_A_PORT = re.compile(r"(?<=://)([^/\s:@?#'\"]*):(?!\d{1,5}(?:[/\s'\"?#]|$))[^/\s@?#'\"]+")
MAX_KEY_CHARS = 200  # longer keys are judged by their end: no config key is that long
SCRUB_MIN_CHARS = 4  # shorter values would blot out ordinary words; they are never shown


class SecretSourceError(ValueError):
    """A ``<name>_file`` or ``<name>_env`` that cannot be used; ``loc`` is its dotted path."""

    def __init__(self, loc: tuple[str, ...], message: str) -> None:
        super().__init__(f"{'.'.join(loc)}: {message}")
        self.loc = loc


def fill_secret_sources(data: dict[str, Any], base: Path) -> None:
    """Replaces each ``<name>_file`` / ``<name>_env`` of ``SECRET_SOURCES`` in ``data`` (the
    parsed YAML, changed in place) by ``<name>`` with the secret read from it."""
    for loc, sources in SECRET_SOURCES.items():
        section = data
        for part in loc[:-1]:
            section = section.get(part) if isinstance(section, dict) else None
        if not isinstance(section, dict):
            continue
        name = loc[-1]
        given = [key for key in (name, *(f"{name}_{s}" for s in sources)) if key in section]
        if len(given) > 1:
            raise SecretSourceError(loc[:-1], f"give one of {', '.join(given)}, not several")
        if given and given[0] != name:
            key = given[0]
            section[name] = _read_source((*loc[:-1], key), section.pop(key), base)


def _read_source(loc: tuple[str, ...], where: object, base: Path) -> str:
    if not isinstance(where, str) or not where:
        raise SecretSourceError(loc, "must be a file path or a variable name")
    if loc[-1].endswith("_env"):
        if not ENV_NAME.fullmatch(where):
            raise SecretSourceError(loc, "must be an environment variable name")
        value = os.environ.get(where)
        if not value:
            # Named only when it looks like a variable's name (CITYGW_MQTT_PASSWORD): an
            # operator may have written the secret itself here, and errors get pasted.
            named = where if CONVENTIONAL_ENV_NAME.fullmatch(where) else "it names"
            raise SecretSourceError(loc, f"environment variable {named} is not set or empty")
        return value
    file = base / where
    try:
        value = file.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise SecretSourceError(loc, f"{file}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SecretSourceError(loc, f"{file}: not UTF-8") from None
    except ValueError:  # a NUL or a lone surrogate in the path: no file can be named so
        raise SecretSourceError(loc, "must be a file path or a variable name") from None
    if not value:
        raise SecretSourceError(loc, f"{file} is empty")
    return value


def names_a_secret(key: str) -> bool:
    """Whether one key's last word (or two), its source word and number dropped, names a
    secret."""
    words = [word.lower() for word in _WORD.findall(key[-MAX_KEY_CHARS:])]
    while words and (words[-1] in SOURCE_WORDS or words[-1].isdigit()):  # password2_file
        words.pop()
    words = [_singular(word) for word in words]
    return bool(words) and (words[-1] in SECRET_NAMES or tuple(words[-2:]) in SECRET_PAIRS)


def _singular(word: str) -> str:
    """``tokens``, ``api_keys``: plurals of the words that matter (not ``access``)."""
    return word[:-1] if word.endswith("s") and word[:-1] in SECRET_NAMES | {"key"} else word


def is_secret_key(loc: tuple[Any, ...]) -> bool:
    """Any key on the path names a secret: for errors about raw YAML, where a secret may sit
    anywhere under its key."""
    return any(isinstance(part, str) and names_a_secret(part) for part in loc)


def is_secret_leaf(loc: tuple[Any, ...]) -> bool:
    """The last key on the path names a secret: for validated data, where secrets are
    scalars under their own keys."""
    last = next((part for part in reversed(loc) if isinstance(part, str)), None)
    return last is not None and names_a_secret(last)


def mask_url_credentials(text: str) -> str:
    """A URL as it may be shown: no user:password, and no query (``?token=`` is common)."""
    text = _URL_CREDENTIALS.sub("***@", text)
    return _URL_QUERY.sub(r"\1?***", _URL_NOT_A_PORT.sub(r"\1:***", text))


def secret_values(data: Any, judge: Callable[[tuple[Any, ...]], bool] = is_secret_key) -> set[str]:
    """Every value under a key ``judge`` calls secret, and every password in a URL, in
    ``data``."""
    found: set[str] = set()
    for loc, value in _leaves(data):
        if not isinstance(value, str):
            continue
        if judge(loc):
            found.add(value)
        for credentials in _URL_CREDENTIALS.findall(value):
            found.update(credentials[:-1].split(":", 1))
    return {value for value in found if len(value) >= SCRUB_MIN_CHARS}


def scrub(text: str, secrets: set[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return mask_url_credentials(text)


def _leaves(data: Any) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """(path, value) of every scalar; iterative, for data already bounded in size."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, dict):
            stack.extend(((*loc, str(k)), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*loc, i), v) for i, v in enumerate(value))
        else:
            yield loc, value
