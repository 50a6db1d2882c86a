"""An audited write and its audit entry are one transaction, on a real store over real
loopback HTTP: while the store refuses audit entries (a trigger aborts each insert, as a
full disk would), every audited write is answered 503 and leaves the store as it was; once
it takes them again, each write made has exactly one entry. The stores' hooks directly
too: a refused entry never reaches the alert flow (silences) or the engines (thresholds)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_principals import ADMIN, PASSWORD, Deployments, add_user

from gateway import audit, store
from gateway.principals import Principal
from gateway.silences import SilenceStore
from gateway.threshold_versions import ThresholdVersions
from rules.alerting import SilenceLimits
from rules.params import RulesConfig, VideoRuleParams
from rules.settings import RuleSettings, settings_from_config
from rules.silences import NewSilence, Silence

REFUSE = (
    "CREATE TEMP TRIGGER audit_refused BEFORE INSERT ON audit"
    " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
)
OPS = Principal("ops", "operator", "session")
TABLES = ("silences", "threshold_versions", "audit")


@pytest.fixture
def deployments(tmp_path: Path) -> Iterator[Deployments]:
    made = Deployments(tmp_path)
    yield made
    made.close()


def snapshot(conn: sqlite3.Connection, tables: tuple[str, ...] = TABLES) -> dict[str, list]:
    return {table: conn.execute(f"SELECT * FROM {table}").fetchall() for table in tables}


def test_a_refused_audit_entry_undoes_its_write_and_a_taken_one_comes_once(deployments):
    served = deployments.serve()
    http, conn = served.http, served.gateway.conn
    silence = {"matchers": {"device": "BIN-001"}, "author": "ops", "reason": "pump",
               "duration_s": 3600}  # fmt: skip
    assert http.post("/api/v1/silences", headers=ADMIN, json=silence).status_code == 201
    change = {"changes": {"bin.fill_fire_pct": 85}, "author": "ops", "reason": "summer"}
    assert http.put("/api/v1/thresholds", headers=ADMIN, json=change).status_code == 200
    now_ms = int(time.time() * 1000)
    writes = [
        ("POST", "/api/v1/silences", {"json": silence}, 201, "silence.create", "silence:2"),
        ("PATCH", "/api/v1/silences/1",
         {"json": {"author": "ops", "reason": "longer", "duration_s": 7200}}, 200,
         "silence.extend", "silence:1"),
        ("DELETE", "/api/v1/silences/1", {"params": {"author": "ops"}}, 200, "silence.remove",
         "silence:1"),
        ("PUT", "/api/v1/thresholds",
         {"json": {**change, "changes": {"bin.fill_fire_pct": 80}}}, 200, "thresholds.set",
         "thresholds:v3"),
        ("POST", "/api/v1/thresholds/rollback",
         {"json": {"version": 1, "author": "ops", "reason": "too many"}}, 200,
         "thresholds.rollback", "thresholds:v4"),
        ("POST", "/api/v1/backtests",
         {"json": {"since_ms": now_ms - 60_000, "until_ms": now_ms, "warm_up_s": 0,
                  "changes": {"bin.fill_fire_pct": 80}}}, 202,
         "backtest.run", None),
    ]  # fmt: skip
    before = snapshot(conn)
    assert len(before["audit"]) == 2
    conn.execute(REFUSE)
    for method, path, body, _, _, _ in writes:
        answer = http.request(method, path, headers=ADMIN, **body)
        assert answer.status_code == 503, (method, path, answer.text)
        assert answer.json()["detail"] == (
            "the store refused the audit entry: nothing was changed; retry"
        )
        assert snapshot(conn) == before, (method, path)
    current = http.get("/api/v1/thresholds/kinds.bin.fill_fire_pct", headers=ADMIN).json()
    assert (current["version"], current["value"]) == (2, 85.0)

    conn.execute("DROP TRIGGER audit_refused")
    for method, path, body, status, _, _ in writes:
        answer = http.request(method, path, headers=ADMIN, **body)
        assert answer.status_code == status, (method, path, answer.text)
    found = http.get("/api/v1/audit", headers=ADMIN).json()["entries"]
    made = [(e["action"], e["target"]) for e in reversed(found)][2:]
    job = answer.json()["id"]
    assert made == [(action, target or f"backtest:{job}") for *_, action, target in writes]
    assert len(snapshot(conn)["threshold_versions"]) == 4


def test_user_token_session_and_requeue_writes_are_undone_with_a_refused_entry(deployments):
    """The routes open the transaction; the users', tokens' and sessions' stores join it."""
    served = deployments.serve()
    http, conn = served.http, served.gateway.conn
    add_user(served, "ana", "operator")
    ana = deployments.browser(served)
    assert ana.sign_in("ana").status_code == 200
    assert http.post("/api/v1/tokens", headers=ADMIN,
                     json={"name": "grafana", "role": "viewer"}).status_code == 201  # fmt: skip
    conn.execute(
        "INSERT INTO outbox (command_id, incident_id, kind, body, state, created_ms)"
        " VALUES ('cmd-1', 'INC-1', 'open', '{}', 'parked', 0)"
    )
    writes = [
        ("POST", "/api/v1/users", {"json": {"name": "bob", "role": "viewer",
                                            "password": PASSWORD}}, 201, "user.create"),
        ("PUT", "/api/v1/users/ana/role", {"json": {"role": "viewer"}}, 200, "user.role"),
        ("PUT", "/api/v1/users/ana/password", {"json": {"password": "another long password"}},
         200, "user.password"),
        ("PUT", "/api/v1/users/ana/disabled", {"json": {"disabled": True}}, 200,
         "user.disable"),
        ("POST", "/api/v1/tokens", {"json": {"name": "ci", "role": "viewer"}}, 201,
         "token.create"),
        ("DELETE", "/api/v1/tokens/1", {}, 200, "token.revoke"),
        ("POST", "/api/v1/outbox/requeue", {}, 200, "outbox.requeue"),
    ]  # fmt: skip
    tables = ("users", "client_tokens", "sessions", "outbox", "audit")
    before = snapshot(conn, tables)
    conn.execute(REFUSE)
    bea = deployments.browser(served)
    assert bea.sign_in("ana").status_code == 503
    assert ana.request("DELETE", "/api/v1/session").status_code == 503
    for method, path, body, _, _ in writes:
        answer = http.request(method, path, headers=ADMIN, **body)
        assert answer.status_code == 503, (method, path, answer.text)
    assert snapshot(conn, tables) == before
    assert ana.request("GET", "/api/v1/session").status_code == 200  # still signed in

    conn.execute("DROP TRIGGER audit_refused")
    assert ana.request("DELETE", "/api/v1/session").status_code == 204
    assert bea.sign_in("ana").status_code == 200
    for method, path, body, status, _ in writes:
        answer = http.request(method, path, headers=ADMIN, **body)
        assert answer.status_code == status, (method, path, answer.text)
    assert answer.json() == {"requeued": 1}
    found = http.get("/api/v1/audit", headers=ADMIN).json()["entries"]
    made = [e["action"] for e in reversed(found)][len(before["audit"]) :]
    assert made == ["session.sign_out", "session.sign_in", *(w[-1] for w in writes)]


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    opened = store.connect(tmp_path / "gateway.db")
    yield opened
    opened.close()


def test_a_silence_whose_entry_is_refused_is_not_stored_nor_handed_on(conn):
    handed: list[Silence] = []
    silences = SilenceStore(conn, SilenceLimits(), lambda silence, now_ms: handed.append(silence))
    request = NewSilence(matchers={"device": "BIN-001"}, author="ops", reason="r", duration_s=60)

    def entry(made: Silence) -> None:
        audit.insert(conn, OPS, "silence.create", f"silence:{made.id}", None, {"id": made.id})

    conn.execute(REFUSE)
    with pytest.raises(sqlite3.IntegrityError, match="database or disk is full"):
        silences.create(request, 1_000, entry)
    tables = ("silences", "audit")
    assert (snapshot(conn, tables), handed, conn.in_transaction) == (
        {"silences": [], "audit": []}, [], False,
    )  # fmt: skip
    conn.execute("DROP TRIGGER audit_refused")
    made = silences.create(request, 2_000, entry)
    assert handed == [made]
    [row] = conn.execute("SELECT actor, action, target FROM audit").fetchall()
    assert row == ("ops", "silence.create", f"silence:{made.id}")


def test_a_threshold_version_whose_entry_is_refused_is_neither_stored_nor_applied(conn):
    devices = {"BIN-001": "bin"}
    versions = ThresholdVersions(conn, devices, set())
    versions.reconcile(settings_from_config(RulesConfig(), VideoRuleParams(), {}, {}, devices), "x")
    applied: list[RuleSettings] = []

    def entry(recorded) -> None:
        audit.insert(conn, OPS, "thresholds.set", f"thresholds:v{recorded.latest.version}")

    conn.execute(REFUSE)
    change = {"bin.fill_fire_pct": 80}
    with pytest.raises(sqlite3.IntegrityError, match="database or disk is full"):
        versions.set(change, "ops", "summer", None, applied.append, entry)
    assert (versions.current().version, applied, conn.in_transaction) == (1, [], False)
    conn.execute("DROP TRIGGER audit_refused")
    assert versions.set(change, "ops", "summer", None, applied.append, entry).latest.version == 2
    assert len(applied) == 1
    assert conn.execute("SELECT target FROM audit").fetchall() == [("thresholds:v2",)]


def test_an_entry_is_refused_outside_a_transaction(conn):
    with pytest.raises(RuntimeError, match="inside its write's transaction"):
        audit.insert(conn, OPS, "silence.create", "silence:1")
    inserted = store.in_transaction(conn, lambda: audit.insert(conn, OPS, "backtest.run", "b:1"))
    assert inserted == 1
