"""Signed, expiring links to evidence pictures: what a city platform fetches as ``media_url``.

A platform cannot hold the gateway's API token (it would then read every route), and a
picture of a street must not be readable by whoever guesses its name. So each link carries
its expiry and an HMAC-SHA256 over the picture's name and that expiry, keyed by a secret
only the gateway knows: ``/evidence/<name>?exp=<unix s>&sig=<64 hex>``. The route that
serves them (gateway/api_evidence.py) needs no token; a link nobody signed, or one past
its time, is refused with 403 before the name is even looked up.

The secret comes from a file or an environment variable, else is generated once into the
store's folder (mode 0600) so links stay valid across restarts — or, with ``evidence.dir``
set, into that folder as a hidden file (no link serves a name starting with a dot, and
retention deletes only evidence files), so the replicas sharing the folder share the
secret: a link one signed is checked, renewed and served by any. Replacing it revokes
every link handed out, so a gateway that sets ``evidence.dir`` later starts the folder
with the secret it generated beside its store. Either is created by a hard link from a
draft, which settles a race between replicas starting together on a shared folder.

A link is signed when its alert is recorded, but a case command may wait in the outbox far
longer than a link lives (a platform down for days; retention keeps commands for months).
So the case bridge asks for a fresh link when it sends (``refreshed``): the same picture,
its lifetime counted from the send. Only a link this gateway signed is renewed (its
signature checked, its expiry not), under the current ``base_url``: renewing grants
nothing that was not granted before, and a link signed with a replaced secret stays
revoked.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from gateway.evidence_settings import EvidenceSettings

SIGNED_PREFIX = "/evidence/"
GENERATED_SECRET_NAME = "evidence-link.key"
# Its name inside a shared evidence folder (``evidence.dir``): hidden, never served.
SHARED_SECRET_NAME = ".evidence-link.key"
MIN_SECRET_CHARS = 32
MAX_SECRET_CHARS = 512
_EXP = re.compile(r"[0-9]{1,12}")  # up to year 33658: no int() of a 5,000-digit string
_SIG = re.compile(r"[0-9a-f]{64}")
MAX_LINK_CHARS = 2000  # longer is no link of ours: not parsed

log = logging.getLogger(__name__)


class EvidenceLinks:
    """Signs and checks links; ``base_url`` ("" for a path) is put in front of each."""

    def __init__(self, secret: bytes, lifetime_s: int, base_url: str = "") -> None:
        self._secret = secret
        self.lifetime_s = lifetime_s
        self.base_url = base_url

    def url(self, name: str, now_s: int) -> str:
        exp = str(now_s + self.lifetime_s)
        path = SIGNED_PREFIX + quote(name, safe="")
        return f"{self.base_url}{path}?exp={exp}&sig={self._sig(name, exp)}"

    def valid(self, name: str, exp: str, sig: str, now_s: int) -> bool:
        """Whether ``sig`` signs ``name`` until ``exp`` and that time has not passed; the
        signature compared in constant time."""
        return self._signed(name, exp, sig) and now_s <= int(exp)

    def refreshed(self, url: str, now_s: int | None = None) -> str:
        """A link to the picture ``url`` names, valid for ``lifetime_s`` from ``now_s``
        (now by default), if ``url`` is a link this gateway signed, expired or not;
        ``url`` itself otherwise (someone else's link, or a forged or revoked one)."""
        if len(url) > MAX_LINK_CHARS:
            return url
        split = urlsplit(url)
        _, prefix, quoted = split.path.rpartition(SIGNED_PREFIX)
        query = parse_qs(split.query)
        exp, sig = query.get("exp", []), query.get("sig", [])
        if not prefix or "/" in quoted or len(exp) != 1 or len(sig) != 1:
            return url
        name = unquote(quoted)
        if not self._signed(name, exp[0], sig[0]):
            return url
        return self.url(name, int(time.time()) if now_s is None else now_s)

    def _signed(self, name: str, exp: str, sig: str) -> bool:
        if not (_EXP.fullmatch(exp) and _SIG.fullmatch(sig)):
            return False
        return hmac.compare_digest(sig, self._sig(name, exp))

    def _sig(self, name: str, exp: str) -> str:
        # A separator no name or exp can hold, so ("a_1", "2") and ("a_", "12") differ.
        message = name.encode("utf-8", "surrogateescape") + b"\n" + exp.encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()


def links_from_settings(settings: EvidenceSettings, store_folder: Path) -> EvidenceLinks:
    """The links of this config; errors name the secret's source, never its value."""
    return EvidenceLinks(
        load_link_secret(settings, store_folder),
        settings.link_lifetime_s,
        settings.public_url or "",
    )


def load_link_secret(settings: EvidenceSettings, store_folder: Path) -> bytes:
    """The secret from ``link_secret_file``, else ``$link_secret_env``, else the one
    generated into ``evidence.dir`` if set, else into ``store_folder`` (created there on
    first use)."""
    if settings.link_secret_file is not None:
        source = f"evidence.link_secret_file {settings.link_secret_file}"
        text = _read_text(settings.link_secret_file, source)
    elif os.environ.get(settings.link_secret_env):
        source = f"environment variable {settings.link_secret_env} (evidence.link_secret_env)"
        text = os.environ[settings.link_secret_env]
    else:
        path = (
            settings.dir / SHARED_SECRET_NAME
            if settings.dir is not None
            else store_folder / GENERATED_SECRET_NAME
        )
        source = f"generated evidence link secret {path}"
        if not path.exists():
            adopted = _adoptable(settings, store_folder)
            if _create_once(path, adopted or secrets.token_hex(32) + "\n") and adopted:
                log.info(
                    "evidence link secret: %s adopted into %s (links already issued stay valid)",
                    store_folder / GENERATED_SECRET_NAME,
                    path.parent,
                )
        text = _read_text(path, source)
    text = text.rstrip("\r\n")
    if not MIN_SECRET_CHARS <= len(text) <= MAX_SECRET_CHARS:
        raise ValueError(
            f"{source}: the secret must be {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters"
            " (make one with `openssl rand -hex 32`)"
        )
    return text.encode("utf-8", "surrogateescape")


def _adoptable(settings: EvidenceSettings, store_folder: Path) -> str | None:
    """The secret generated beside the store before ``evidence.dir`` was set, if any: the
    shared folder starts with it, so the links already handed out stay valid (a new one
    would revoke them all)."""
    if settings.dir is None:
        return None
    old = store_folder / GENERATED_SECRET_NAME
    if not old.exists():
        return None
    return _read_text(old, f"generated evidence link secret {old}")


def _create_once(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text``, readable by this user only: written whole beside
    it, then hard-linked into place, so a crash leaves no empty secret and of processes
    racing on a shared folder exactly one wins (True for it); an existing one is kept. A
    file system without hard links is refused by name: no race could be settled there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Random, not the pid alone: replicas in containers on one shared folder are each pid 1.
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.draft")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        return _link_once(draft, path)
    finally:
        draft.unlink()


def _link_once(draft: Path, path: Path) -> bool:
    try:
        os.link(draft, path)
    except FileExistsError:
        return False  # a restart, or another process that won the race: theirs is kept
    except OSError as exc:
        raise ValueError(
            f"{path.parent}: cannot create the evidence link secret there: the folder's file"
            f" system gives no hard links ({exc.strerror}); use a volume that does, or give"
            " the secret as evidence.link_secret_file or evidence.link_secret_env"
        ) from None
    return True


def _read_text(path: Path, source: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8"
        raise ValueError(f"{source}: cannot read: {reason}") from None
