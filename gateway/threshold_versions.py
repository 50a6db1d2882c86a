"""Threshold versions: every state of the rule settings the gateway has run with, kept with
who changed it, why, when, and what changed.

One row of ``threshold_versions`` in the store is one whole ``RuleSettings`` document
(rules/settings.py), so any version can be shown, compared or rolled back to without
replaying the ones before it; ``diff_json`` is what changed from the version before. The
latest row is what the engines run with, after a restart too.

- **Version 1** is the settings the config and the registry give (``settings_from_config``),
  recorded at the first start.
- **A config edit** (YAML or registry CSV changed between two starts) is merged three ways
  at start (``reconcile``): the change from the config the latest ``config`` version was
  made from (its ``config_json``) to today's config is applied on top of the latest
  version, and recorded as a new ``config`` version. So the operator's live changes
  survive a config edit, and the edit is not ignored. Devices and zones gone from the
  registry or the config lose their overrides. When the merge does not validate (a live
  change and the edit contradict each other, e.g. a live clear level above the new fire
  level), today's config wins whole and the version's reason says why: a gateway must start,
  and the history shows what was replaced.
- **set** and **rollback** (the API) make a new version from the latest; a rollback's
  settings are those of the version named (with devices and zones that no longer exist
  dropped). A change that changes nothing records nothing: a retried request does not
  make versions.

Applying: ``set``/``rollback`` take the caller's ``apply(settings)`` and call it inside the
transaction that inserts the version, after the insert. If it raises, the transaction rolls
back and nothing is stored; and whether it raised part-way (one engine reconfigured, the next
refused) or the commit failed after it, ``apply`` is called again with the settings the
store still holds, so the engines run with the stored version. ``apply`` must
be synchronous: an ``await`` inside the transaction would let a batch's commit run in the
middle of it. (A process killed between the insert and the commit leaves no row: SQLite's
transaction, tested with a real kill.) Their ``audit(recorded)``, when given, runs in the
same transaction after the insert and before ``apply``, for a version made only: the audit
entry (gateway/audit.py) commits with the version, and if it raises nothing is stored or
applied.

Bounds: author 1–64 and reason 1–500 printable characters; at most ``MAX_CHANGES`` paths
per change, each at most ``MAX_PATH_CHARS``, each value at most ``MAX_VALUE_JSON_CHARS`` as
JSON; a settings document at most ``MAX_SETTINGS_JSON_BYTES``; history pages at most
``MAX_PAGE`` versions.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.store import in_transaction
from rules.settings import RuleSettings, SettingsError, apply_changes, diff

SCHEMA = """
CREATE TABLE IF NOT EXISTS threshold_versions (
    version INTEGER PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    author TEXT NOT NULL,
    reason TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('config', 'set', 'rollback')),
    settings_json TEXT NOT NULL,
    -- [{path, old, new}] from the version before; [] for version 1
    diff_json TEXT NOT NULL,
    -- 'config' rows: the config-derived settings this version was made from (the base of
    -- the next start's three-way merge); NULL otherwise
    config_json TEXT,
    -- 'rollback' rows: the version whose settings were restored
    rollback_to INTEGER
);
"""

ACTIONS = ("config", "set", "rollback")
CONFIG_AUTHOR = "config"
MAX_AUTHOR_CHARS = 64
MAX_REASON_CHARS = 500
MAX_CHANGES = 100
MAX_PATH_CHARS = 300
MAX_VALUE_JSON_CHARS = 4096
MAX_SETTINGS_JSON_BYTES = 8 * 1024 * 1024
MAX_PAGE = 100

Apply = Callable[[RuleSettings], None]


class VersionInputError(ValueError):
    """A request field out of bounds; the message names the field."""


class VersionConflict(Exception):
    """``expected_version`` is not the latest: someone changed the settings in between."""


class VersionNotFound(LookupError):
    """No such version."""


@dataclass(frozen=True)
class ThresholdVersion:
    version: int
    created_ms: int
    author: str
    reason: str
    action: str
    settings_json: str
    diff: list[dict[str, Any]]
    rollback_to: int | None

    @property
    def settings(self) -> RuleSettings:
        return RuleSettings.model_validate_json(self.settings_json)

    def summary(self) -> dict[str, Any]:
        """What the history shows of it: everything but the settings document."""
        return {
            "version": self.version,
            "created_ms": self.created_ms,
            "author": self.author,
            "reason": self.reason,
            "action": self.action,
            "rollback_to": self.rollback_to,
            "diff": self.diff,
        }


@dataclass(frozen=True)
class Recorded:
    """The outcome of ``set``/``rollback``/``reconcile``: the latest version afterwards,
    and whether this call made it (False: nothing changed, nothing stored)."""

    latest: ThresholdVersion
    changed: bool


# A new version's audit entry, made inside the transaction that inserts it.
Audit = Callable[[Recorded], object]


@dataclass(frozen=True)
class HistoryPage:
    versions: list[ThresholdVersion]
    next_cursor: int | None


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def canonical_json(settings: RuleSettings) -> str:
    """One text per settings document, so equal settings compare equal as stored text."""
    return json.dumps(
        settings.model_dump(mode="json"), ensure_ascii=False, sort_keys=True, separators=(",", ":")
    )


class ThresholdVersions:
    """The versions in one store, checked against the gateway's devices (id → kind) and
    camera zones ("camera/zone"): a change may only name those that exist."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        devices: Mapping[str, str],
        zones: Collection[str],
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        settle: Callable[[], None] = lambda: None,
    ) -> None:
        """``settle`` runs before a version's transaction opens: the gateway commits the
        batches its pipeline holds (gateway/commit_queue.py), whose rule state is older
        than what ``apply`` writes inside the transaction, and which could not commit
        while the transaction holds the store's write lock."""
        self._conn = conn
        self._devices = dict(devices)
        self._zones = frozenset(zones)
        self._clock_ms = clock_ms
        self._settle = settle
        ensure_schema(conn)

    @property
    def devices(self) -> Mapping[str, str]:
        """The devices a change may name: id → kind."""
        return self._devices

    # -- reading ------------------------------------------------------------------------------

    def latest(self) -> ThresholdVersion | None:
        row = self._conn.execute(f"{_SELECT} ORDER BY version DESC LIMIT 1").fetchone()
        return _version(row) if row else None

    def current(self) -> ThresholdVersion:
        """The latest version; ``reconcile`` at start guarantees there is one."""
        latest = self.latest()
        if latest is None:
            raise RuntimeError("no threshold version yet: reconcile() runs at start")
        return latest

    def get(self, version: int) -> ThresholdVersion:
        row = self._conn.execute(f"{_SELECT} WHERE version = ?", (version,)).fetchone()
        if row is None:
            raise VersionNotFound(f"version {version} does not exist")
        return _version(row)

    def history(self, limit: int, cursor: int | None = None) -> HistoryPage:
        """Newest first, keyset-paged: pass ``next_cursor`` back as ``cursor``."""
        if not 1 <= limit <= MAX_PAGE:
            raise VersionInputError(f"limit: must be 1 to {MAX_PAGE}")
        query, args = _SELECT, [limit + 1]
        if cursor is not None:
            query += " WHERE version < ?"
            args.insert(0, cursor)
        rows = self._conn.execute(f"{query} ORDER BY version DESC LIMIT ?", args).fetchall()
        versions = [_version(row) for row in rows[:limit]]
        return HistoryPage(versions, versions[-1].version if len(rows) > limit else None)

    # -- writing ------------------------------------------------------------------------------

    def reconcile(self, from_config: RuleSettings, source: str) -> Recorded:
        """At start: version 1 in an empty table, else the three-way merge of a config
        edit (module docstring); ``source`` (the config file) goes into the reason."""

        def work() -> Recorded:
            latest = self.latest()
            config_json = canonical_json(from_config)
            if latest is None:
                reason = f"version 1: {source} and its registry"
                return self._insert(None, from_config, [], CONFIG_AUTHOR, reason, "config",
                                    config_json=config_json)  # fmt: skip
            base = self._conn.execute(
                "SELECT config_json FROM threshold_versions WHERE action = 'config'"
                " ORDER BY version DESC LIMIT 1"
            ).fetchone()[0]  # version 1 is a 'config' row
            if base == config_json:
                return Recorded(latest, changed=False)
            merged, reason = self._merge(latest, base, from_config, source)
            return self._insert(latest, merged, None, CONFIG_AUTHOR, reason, "config",
                                config_json=config_json)  # fmt: skip

        return in_transaction(self._conn, work)

    def set(
        self,
        changes: Mapping[str, Any],
        author: str,
        reason: str,
        expected_version: int | None,
        apply: Apply,
        audit: Audit | None = None,
    ) -> Recorded:
        """A new version with ``changes`` ({path: value}) made to the latest, applied.
        ``SettingsError`` names the path of a change that does not validate."""
        _check_changes(changes)
        author, reason = (
            _checked_text("author", author, MAX_AUTHOR_CHARS),
            _checked_text("reason", reason, MAX_REASON_CHARS),
        )

        def make(latest: ThresholdVersion) -> tuple[RuleSettings, int | None]:
            return apply_changes(latest.settings, changes, self._devices, self._zones), None

        return self._change(make, author, reason, "set", expected_version, apply, audit)

    def rollback(
        self,
        version: int,
        author: str,
        reason: str,
        expected_version: int | None,
        apply: Apply,
        audit: Audit | None = None,
    ) -> Recorded:
        """A new version whose settings are those of ``version``, applied."""
        author, reason = (
            _checked_text("author", author, MAX_AUTHOR_CHARS),
            _checked_text("reason", reason, MAX_REASON_CHARS),
        )

        def make(latest: ThresholdVersion) -> tuple[RuleSettings, int | None]:
            target = self.get(version)
            try:
                settings = target.settings
            except ValueError as exc:
                raise SettingsError(f"version {version} can no longer be loaded: {exc}") from None
            return self._known_only(settings), version

        return self._change(make, author, reason, "rollback", expected_version, apply, audit)

    # -- inside ---------------------------------------------------------------------------

    def _change(
        self,
        make: Callable[[ThresholdVersion], tuple[RuleSettings, int | None]],
        author: str,
        reason: str,
        action: str,
        expected_version: int | None,
        apply: Apply,
        audit: Audit | None,
    ) -> Recorded:
        previous: list[RuleSettings] = []  # what the engines ran with, once apply was called

        def work() -> Recorded:
            latest = self.current()
            if expected_version is not None and expected_version != latest.version:
                raise VersionConflict(
                    f"expected_version {expected_version} is not the current version"
                    f" {latest.version}: read the settings again and retry"
                )
            settings, rollback_to = make(latest)
            recorded = self._insert(latest, settings, None, author, reason, action,
                                    rollback_to=rollback_to)  # fmt: skip
            if recorded.changed:
                if audit is not None:
                    audit(recorded)
                previous.append(latest.settings)
                apply(settings)
            return recorded

        self._settle()
        try:
            return in_transaction(self._conn, work)
        except BaseException:
            if previous:  # apply failed part-way, or the commit after it: back to the store's
                apply(previous[0])
            raise

    def _insert(
        self,
        latest: ThresholdVersion | None,
        settings: RuleSettings,
        changes: list[dict[str, Any]] | None,
        author: str,
        reason: str,
        action: str,
        config_json: str | None = None,
        rollback_to: int | None = None,
    ) -> Recorded:
        """Insert the version after ``latest`` unless it changes nothing (a 'config' row
        always goes in: it moves the merge base). ``changes`` None: diff from ``latest``."""
        if changes is None:
            changes = diff(latest.settings, settings) if latest is not None else []
        if latest is not None and not changes and action != "config":
            return Recorded(latest, changed=False)
        settings_json = canonical_json(settings)
        if len(settings_json.encode()) > MAX_SETTINGS_JSON_BYTES:
            raise SettingsError(
                f"the settings would be larger than {MAX_SETTINGS_JSON_BYTES} bytes as JSON"
            )
        row = (
            (latest.version if latest else 0) + 1,
            self._clock_ms(),
            author,
            reason,
            action,
            settings_json,
            json.dumps(changes, ensure_ascii=False),
            config_json,
            rollback_to,
        )
        self._conn.execute(
            "INSERT INTO threshold_versions (version, created_ms, author, reason, action,"
            " settings_json, diff_json, config_json, rollback_to)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )
        return Recorded(_version(row[:7] + row[8:]), changed=True)

    def _merge(
        self, latest: ThresholdVersion, base_json: str, from_config: RuleSettings, source: str
    ) -> tuple[RuleSettings, str]:
        """Today's config change applied on top of ``latest``, and the reason to record."""
        try:
            base = RuleSettings.model_validate_json(base_json)
            live = self._known_only(latest.settings)
            edit = {
                change["path"]: change["new"]
                for change in diff(base, from_config)
                if self._names_known(change["path"])
            }
            merged = apply_changes(live, edit, self._devices, self._zones) if edit else live
        except ValueError as exc:  # SettingsError, or a stored document this code cannot load
            return from_config, (
                f"{source} edited; merging it with the live changes failed"
                f" ({str(exc)[:MAX_REASON_CHARS]}),"
                " so the config's settings replace them"
            )
        return merged, f"{source} edited: {len(edit)} parameter(s) changed in the config"

    def _known_only(self, settings: RuleSettings) -> RuleSettings:
        """``settings`` without the overrides of devices and zones that no longer exist."""
        return settings.model_copy(
            update={
                "devices": {k: v for k, v in settings.devices.items() if k in self._devices},
                "zones": {k: v for k, v in settings.zones.items() if k in self._zones},
            }
        )

    def _names_known(self, path: str) -> bool:
        """False for a device or zone path whose device or zone no longer exists."""
        top, _, rest = path.partition(".")
        name = rest.rpartition(".")[0]
        if top == "devices":
            return name in self._devices
        if top == "zones":
            return name in self._zones
        return True


_SELECT = (
    "SELECT version, created_ms, author, reason, action, settings_json, diff_json, rollback_to"
    " FROM threshold_versions"
)


def _version(row: tuple) -> ThresholdVersion:
    version, created_ms, author, reason, action, settings_json, diff_json, rollback_to = row
    return ThresholdVersion(
        version, created_ms, author, reason, action, settings_json, json.loads(diff_json),
        rollback_to,
    )  # fmt: skip


def _checked_text(field: str, text: str, limit: int) -> str:
    text = text.strip() if isinstance(text, str) else ""
    if not text:
        raise VersionInputError(f"{field}: required (who changed it, and why)")
    if len(text) > limit:
        raise VersionInputError(f"{field}: at most {limit} characters")
    if not text.isprintable():
        raise VersionInputError(f"{field}: control characters are not allowed")
    return text


def _check_changes(changes: Mapping[str, Any]) -> None:
    if not changes:
        raise VersionInputError("changes: at least one PATH=VALUE")
    if len(changes) > MAX_CHANGES:
        raise VersionInputError(f"changes: at most {MAX_CHANGES} at once")
    for path, value in changes.items():
        if not (isinstance(path, str) and 0 < len(path) <= MAX_PATH_CHARS):
            raise VersionInputError(f"changes: a path must be 1 to {MAX_PATH_CHARS} characters")
        if not path.isprintable():
            raise VersionInputError(f"changes: path {path!r} has control characters")
        try:
            size = len(json.dumps(value, ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError):
            raise VersionInputError(f"{path}: not a JSON value") from None
        if size > MAX_VALUE_JSON_CHARS:
            raise VersionInputError(f"{path}: value longer than {MAX_VALUE_JSON_CHARS} characters")
