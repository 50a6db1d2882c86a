"""Threshold versions in a real SQLite store: version 1 from the config, set, history with
diffs, rollback as a new version, the three-way merge of a config edit at start, bounds on
what operators send, and that a version is stored only if it was applied (an apply that
raises, a commit that fails, a process killed mid-transaction)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import store
from gateway.threshold_versions import (
    MAX_CHANGES,
    ThresholdVersions,
    VersionConflict,
    VersionInputError,
    VersionNotFound,
    canonical_json,
)
from rules.params import BinParams, ManholeCoverParams, RulesConfig, VideoRuleParams
from rules.settings import RuleSettings, SettingsError, diff, settings_from_config, settings_get

DEVICES = {"MH-001": "manhole_cover", "BIN-001": "bin", "WL-001": "water_level"}
ZONES = {"cam1/entrance"}
SOURCE = "gateway.yaml"


GAUGE = {"warning_cm": "30", "alarm_cm": "50"}  # a gauge without its levels has no rule


def from_config(
    rules: RulesConfig | None = None, overrides: dict[str, dict[str, str]] | None = None
) -> RuleSettings:
    overrides = {"WL-001": GAUGE} if overrides is None else overrides
    return settings_from_config(rules or RulesConfig(), VideoRuleParams(), overrides, {}, DEVICES)


class Applied:
    """The engines' side: every settings document applied, in order."""

    def __init__(self) -> None:
        self.seen: list[RuleSettings] = []

    def __call__(self, settings: RuleSettings) -> None:
        self.seen.append(settings)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "gateway.db"


@pytest.fixture
def conn(db: Path) -> Iterator[store.sqlite3.Connection]:
    opened = store.connect(db)
    yield opened
    opened.close()


@pytest.fixture
def versions(conn: store.sqlite3.Connection) -> ThresholdVersions:
    clock = iter(range(1000, 10**9, 1000)).__next__
    made = ThresholdVersions(conn, DEVICES, ZONES, clock_ms=clock)
    made.reconcile(from_config(), SOURCE)
    return made


def rows(db: Path) -> list[tuple]:
    conn = store.connect(db)
    try:
        return conn.execute(
            "SELECT version, author, reason, action, rollback_to FROM threshold_versions"
            " ORDER BY version"
        ).fetchall()
    finally:
        conn.close()


def test_version_one_is_the_config(versions: ThresholdVersions, db: Path):
    first = versions.current()
    assert (first.version, first.action, first.author, first.diff) == (1, "config", "config", [])
    assert first.reason == "version 1: gateway.yaml and its registry"
    assert first.created_ms == 1000
    assert canonical_json(first.settings) == canonical_json(from_config())
    assert not versions.reconcile(from_config(), SOURCE).changed
    assert rows(db) == [(1, "config", "version 1: gateway.yaml and its registry", "config", None)]


def test_set_stores_a_version_with_its_diff_and_applies_it(versions: ThresholdVersions, db):
    applied = Applied()
    recorded = versions.set({"bin.fill_fire_pct": "85"}, "王工", "summer heat", None, applied)
    assert recorded.changed
    assert recorded.latest.version == 2
    assert recorded.latest.diff == [{"path": "kinds.bin.fill_fire_pct", "old": 90.0, "new": 85.0}]
    assert [settings_get(s, "kinds.bin.fill_fire_pct") for s in applied.seen] == [85.0]
    assert settings_get(versions.current().settings, "kinds.bin.fill_fire_pct") == 85.0
    assert rows(db)[1] == (2, "王工", "summer heat", "set", None)


def test_a_change_that_changes_nothing_stores_nothing(versions: ThresholdVersions, db):
    applied = Applied()
    recorded = versions.set({"kinds.bin.fill_fire_pct": 90}, "ops", "retry", None, applied)
    assert (recorded.changed, recorded.latest.version, applied.seen) == (False, 1, [])
    assert len(rows(db)) == 1


def test_a_bad_change_names_its_path_and_stores_nothing(versions: ThresholdVersions, db):
    applied = Applied()
    with pytest.raises(SettingsError, match=r"kinds\.bin\.fill_clear_pct"):
        versions.set({"kinds.bin.fill_clear_pct": 95}, "ops", "too high", None, applied)
    with pytest.raises(SettingsError, match="NOPE-9"):
        versions.set({"devices.NOPE-9.fill_fire_pct": 80}, "ops", "typo", None, applied)
    assert (applied.seen, len(rows(db))) == ([], 1)


def test_a_stale_expected_version_is_a_conflict(versions: ThresholdVersions, db):
    applied = Applied()
    versions.set({"bin.fill_fire_pct": 85}, "a", "first", 1, applied)
    with pytest.raises(VersionConflict) as caught:
        versions.set({"bin.fill_fire_pct": 80}, "b", "second", 1, applied)
    assert str(caught.value) == (
        "expected_version 1 is not the current version 2: read the settings again and retry"
    )
    assert len(applied.seen) == 1 and len(rows(db)) == 2


def test_an_apply_that_raises_stores_nothing_and_puts_the_engines_back(versions, db):
    applied = Applied()

    def refuse_85(settings: RuleSettings) -> None:
        applied(settings)  # e.g. the rule engine took it, device health then refused
        if settings_get(settings, "kinds.bin.fill_fire_pct") == 85:
            raise RuntimeError("engine refused")

    with pytest.raises(RuntimeError, match="engine refused"):
        versions.set({"bin.fill_fire_pct": 85}, "ops", "x", None, refuse_85)
    assert [settings_get(s, "kinds.bin.fill_fire_pct") for s in applied.seen] == [85.0, 90.0]
    assert versions.current().version == 1 and len(rows(db)) == 1


def test_a_failed_commit_puts_the_stored_settings_back(versions: ThresholdVersions, conn, db):
    """A deferred foreign key makes the COMMIT itself fail, after apply took the settings."""
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    conn.execute(
        "CREATE TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
    )
    applied = Applied()

    def apply_then_break_the_commit(settings: RuleSettings) -> None:
        applied(settings)
        conn.execute("INSERT INTO child (p) VALUES (42)")

    with pytest.raises(store.sqlite3.IntegrityError):
        versions.set({"bin.fill_fire_pct": 85}, "ops", "x", None, apply_then_break_the_commit)
    assert [settings_get(s, "kinds.bin.fill_fire_pct") for s in applied.seen] == [85.0, 90.0]
    assert versions.current().version == 1 and len(rows(db)) == 1


def test_rollback_is_a_new_version_equal_to_the_old_one(versions: ThresholdVersions, db):
    applied = Applied()
    versions.set({"bin.fill_fire_pct": 85}, "a", "one", None, applied)
    versions.set({"devices.MH-001.tilt_fire_deg": 30, "bin.fire_for_s": 60}, "b", "two", None,
                 applied)  # fmt: skip
    recorded = versions.rollback(1, "c", "back to the config", 3, applied)
    latest = recorded.latest
    assert (latest.version, latest.action, latest.rollback_to) == (4, "rollback", 1)
    assert canonical_json(latest.settings) == canonical_json(versions.get(1).settings)
    assert canonical_json(applied.seen[-1]) == canonical_json(versions.get(1).settings)
    assert {c["path"] for c in latest.diff} == {
        "kinds.bin.fill_fire_pct", "kinds.bin.fire_for_s", "devices.MH-001.tilt_fire_deg",
    }  # fmt: skip
    assert rows(db)[-1] == (4, "c", "back to the config", "rollback", 1)
    assert not versions.rollback(4, "c", "again", None, applied).changed
    with pytest.raises(VersionNotFound, match="version 9 does not exist"):
        versions.rollback(9, "c", "nowhere", None, applied)
    assert len(rows(db)) == 4


def test_history_pages_newest_first(versions: ThresholdVersions):
    applied = Applied()
    for pct in range(81, 87):
        versions.set({"bin.fill_fire_pct": pct}, "ops", f"to {pct}", None, applied)
    seen, cursor, pages = [], None, 0
    while True:
        page = versions.history(3, cursor)
        seen += [v.version for v in page.versions]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert (seen, pages) == ([7, 6, 5, 4, 3, 2, 1], 3)
    top = versions.history(1).versions[0].summary()
    assert top == {
        "version": 7, "created_ms": 7000, "author": "ops", "reason": "to 86", "action": "set",
        "rollback_to": None,
        "diff": [{"path": "kinds.bin.fill_fire_pct", "old": 85.0, "new": 86.0}],
    }  # fmt: skip
    with pytest.raises(VersionInputError, match="limit"):
        versions.history(0)


# -- the config edited between two starts --------------------------------------------------


def restart(db: Path, config: RuleSettings, devices=DEVICES) -> tuple[ThresholdVersions, bool]:
    conn = store.connect(db)
    made = ThresholdVersions(conn, devices, ZONES)
    return made, made.reconcile(config, SOURCE).changed


def test_a_config_edit_and_live_changes_both_hold(versions: ThresholdVersions, db):
    versions.set({"bin.fill_fire_pct": 85}, "ops", "live", None, Applied())
    edited = from_config(RulesConfig(manhole_cover=ManholeCoverParams(tilt_fire_deg=20)))
    again, changed = restart(db, edited)
    latest = again.current()
    assert changed and (latest.version, latest.action, latest.author) == (3, "config", "config")
    assert latest.reason == "gateway.yaml edited: 1 parameter(s) changed in the config"
    assert latest.diff == [{"path": "kinds.manhole_cover.tilt_fire_deg", "old": 15.0, "new": 20.0}]
    assert settings_get(latest.settings, "kinds.bin.fill_fire_pct") == 85.0
    assert settings_get(latest.settings, "kinds.manhole_cover.tilt_fire_deg") == 20.0
    assert restart(db, edited)[1] is False  # the same config again: the latest holds
    assert again.current().version == 3


def test_the_latest_version_holds_across_a_restart(versions: ThresholdVersions, db):
    versions.set({"bin.fill_fire_pct": 85}, "ops", "live", None, Applied())
    again, changed = restart(db, from_config())
    assert not changed
    assert settings_get(again.current().settings, "kinds.bin.fill_fire_pct") == 85.0


def test_a_config_edit_of_a_live_changed_parameter_wins(versions: ThresholdVersions, db):
    versions.set({"bin.fill_fire_pct": 85}, "ops", "live", None, Applied())
    again, _ = restart(db, from_config(RulesConfig(bin=BinParams(fill_fire_pct=95))))
    assert settings_get(again.current().settings, "kinds.bin.fill_fire_pct") == 95.0


def test_a_contradicting_config_edit_replaces_the_live_settings(versions: ThresholdVersions, db):
    versions.set({"bin.fill_clear_pct": 80, "bin.fire_for_s": 60}, "ops", "live", None, Applied())
    edited = from_config(RulesConfig(bin=BinParams(fill_fire_pct=75)))  # live clear 80 > 75
    again, changed = restart(db, edited)
    latest = again.current()
    assert changed and canonical_json(latest.settings) == canonical_json(edited)
    assert latest.reason == (
        "gateway.yaml edited; merging it with the live changes failed (kinds.bin.fill_fire_pct:"
        " fill_clear_pct must be below fill_fire_pct (hysteresis)), so the config's settings"
        " replace them"
    )
    assert [c["path"] for c in latest.diff] == [
        "kinds.bin.fill_clear_pct", "kinds.bin.fill_fire_pct", "kinds.bin.fire_for_s",
    ]  # fmt: skip


def test_devices_gone_from_the_registry_lose_their_overrides(tmp_path: Path):
    db = tmp_path / "gateway.db"
    with_override = from_config(overrides={"WL-001": GAUGE, "MH-001": {"tilt_fire_deg": "20"}})
    first, _ = restart(db, with_override)
    first.set({"devices.MH-001.tilt_fire_deg": 30}, "ops", "live", None, Applied())
    fewer = {"BIN-001": "bin", "WL-001": "water_level"}
    edited = from_config(overrides={"WL-001": {**GAUGE, "warning_cm": "35"}})
    again, changed = restart(db, edited, fewer)
    latest = again.current()
    assert changed and latest.settings.devices == {"WL-001": {"warning_cm": 35.0, "alarm_cm": 50.0}}
    assert latest.reason == "gateway.yaml edited: 1 parameter(s) changed in the config"


# -- bounds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("author", "reason", "message"),
    [
        ("", "why", "author: required"),
        ("  ", "why", "author: required"),
        ("a" * 65, "why", "author: at most 64 characters"),
        ("ops", "", "reason: required"),
        ("ops", "r" * 501, "reason: at most 500 characters"),
        ("ops\x1b[2J", "why", "author: control characters are not allowed"),
        ("ops", "line\nbreak", "reason: control characters are not allowed"),
    ],
)
def test_author_and_reason_are_required_and_bounded(versions, author, reason, message):
    with pytest.raises(VersionInputError, match=message.replace("(", r"\(")):
        versions.set({"bin.fill_fire_pct": 85}, author, reason, None, Applied())
    with pytest.raises(VersionInputError, match=message):
        versions.rollback(1, author, reason, None, Applied())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, "changes: at least one PATH=VALUE"),
        ({f"devices.MH-001.p{i}": 1 for i in range(MAX_CHANGES + 1)}, "changes: at most 100"),
        ({"x" * 301: 1}, "changes: a path must be 1 to 300 characters"),
        ({"bin.class_code": "9" * 5000}, "bin.class_code: value longer than 4096 characters"),
        ({"bin.fill_fire_pct": float("nan")}, "bin.fill_fire_pct: not a JSON value"),
    ],
)
def test_changes_are_bounded(versions: ThresholdVersions, changes, message):
    with pytest.raises(VersionInputError, match=message):
        versions.set(changes, "ops", "why", None, Applied())


# -- crash: a process killed between the insert and the commit ------------------------------

KILLED_IN_APPLY = """
import os, sys
sys.path.insert(0, {tests!r})
from gateway import store
from gateway.threshold_versions import ThresholdVersions
conn = store.connect(__import__("pathlib").Path({db!r}))
versions = ThresholdVersions(conn, {devices!r}, {zones!r})
versions.set({{"bin.fill_fire_pct": 70}}, "ops", "dies", None, lambda settings: os._exit(9))
"""


def test_a_process_killed_while_applying_leaves_no_version(versions: ThresholdVersions, db):
    versions.set({"bin.fill_fire_pct": 85}, "ops", "before", None, Applied())
    script = KILLED_IN_APPLY.format(
        tests=str(Path(__file__).parent), db=str(db), devices=DEVICES, zones=sorted(ZONES)
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == 9, done.stderr.decode()
    again, changed = restart(db, from_config())
    assert not changed
    assert settings_get(again.current().settings, "kinds.bin.fill_fire_pct") == 85.0
    assert [r[0] for r in rows(db)] == [1, 2]


# -- property: any sequence of operations keeps the history consistent ----------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.sampled_from(["bin.fill_fire_pct", "bin.fill_clear_pct",
                  "devices.BIN-001.fill_fire_pct", "kinds.water_level.clear_margin_cm"]),
                  st.one_of(st.integers(-5, 120), st.none(), st.text(max_size=4))),
        st.tuples(st.just("rollback"), st.integers(0, 12), st.none()),
    ),
    max_size=12,
)  # fmt: skip


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_any_operations_keep_a_consistent_history(tmp_path_factory, ops):
    conn = store.connect(tmp_path_factory.mktemp("ops") / "gateway.db")
    versions = ThresholdVersions(conn, DEVICES, ZONES)
    versions.reconcile(from_config(), SOURCE)
    applied = Applied()
    for op, arg, value in ops:
        before = versions.current().version
        try:
            if op == "set":
                recorded = versions.set({arg: value}, "ops", "prop", None, applied)
            else:
                recorded = versions.rollback(arg, "ops", "prop", None, applied)
        except (SettingsError, VersionNotFound, VersionInputError):
            assert versions.current().version == before
            continue
        assert recorded.latest.version == before + int(recorded.changed)
    stored = [versions.get(n) for n in range(1, versions.current().version + 1)]
    assert [canonical_json(s) for s in applied.seen] == [v.settings_json for v in stored[1:]]
    for older, newer in itertools.pairwise(stored):
        assert newer.diff == json.loads(json.dumps(diff(older.settings, newer.settings)))
        assert newer.diff  # a version that changes nothing is never stored
        if newer.rollback_to is not None:
            assert newer.settings_json == versions.get(newer.rollback_to).settings_json
    conn.close()
