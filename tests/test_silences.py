"""Silences in the store, through the pipeline and over the API and CLI.

The gateway is built from a real config over a real SQLite file (not started) and its
pipeline given an alert flow; a "restart" is a second gateway on the same file. The API is
served by uvicorn on loopback behind the gateway's own token guard, the CLI talks to it.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from served_app import ServedApp, write_gateway_config

from domain import Alert, AlertState, Priority
from gateway import store
from gateway.api_guard import ApiGuard
from gateway.api_silences import silences_router
from gateway.cli_silences import register
from gateway.config import load_config
from gateway.pipeline import Pipeline, StoreUnavailable, restore
from gateway.service import Gateway
from gateway.silences import SilenceStore, overlapping
from rules.alerting import AlertingConfig, SilenceLimits
from rules.flow import AlertFlow
from rules.silences import Extension, NewSilence, SilenceError

NOW = 1_760_000_000_000
MIN = 60_000
TOKEN = "silences-test-token-0123456789"


def make_gateway(tmp_path, now_ms: int = NOW, confirm_ms: int = 0) -> Gateway:
    """A gateway on ``tmp_path``'s store whose pipeline has an alert flow, its state and the
    silences restored from the store as they would be at a start at ``now_ms``."""
    gw = Gateway(load_config(write_gateway_config(tmp_path, {})))
    flow = AlertFlow(gw.incidents, AlertingConfig(), confirm_ms)
    rule_states = {"rule": gw.engine.states, "video": gw.video_engine.states,
                   "health": gw.health.states}  # fmt: skip
    restore(gw.conn, gw.guard, gw.incidents, rule_states, flow, now_ms)
    gw.pipeline = Pipeline(gw.conn, gw.registry, gw.guard, gw.engine, gw.incidents, 5000,
                           rule_states, gw.health, gw.router, flow=flow)  # fmt: skip
    return gw


def silence_store(gw: Gateway, limits: SilenceLimits | None = None) -> SilenceStore:
    return SilenceStore(gw.conn, limits or SilenceLimits(), gw.pipeline.update_silence)


def full(gw: Gateway, state=AlertState.FIRING, ts=NOW, device="BIN-001") -> Alert:
    return Alert(f"{device}/full", device, "full", state, "06042", Priority.URGENT,
                 gw.registry[device].location, ts, kind="bin")  # fmt: skip


def alert_rows(gw: Gateway) -> list[tuple]:
    return gw.conn.execute(
        "SELECT alert_key, state, ts, incident_id IS NOT NULL, held_by FROM alerts ORDER BY id"
    ).fetchall()


def outbox_rows(gw: Gateway) -> list[tuple]:
    return gw.conn.execute("SELECT kind, command_id FROM outbox ORDER BY seq").fetchall()


def new(matchers=None, minutes=30, **extra) -> NewSilence:
    body = {"matchers": matchers or {"device": "BIN-001"}, "author": "王工",
            "reason": "井盖维修", "duration_s": minutes and minutes * 60, **extra}  # fmt: skip
    return NewSilence.model_validate(body)


# -- the store and the pipeline ----------------------------------------------------------------


def test_a_silenced_alert_is_stored_with_the_silence_and_files_its_case_when_it_ends(tmp_path):
    gw = make_gateway(tmp_path)
    silence = silence_store(gw).create(new(minutes=30), NOW)
    assert gw.pipeline.apply_alerts([full(gw, ts=NOW + MIN)], NOW + MIN) == []
    assert alert_rows(gw) == [("BIN-001/full", "firing", NOW + MIN, 0, f"silence:{silence.id}")]
    assert outbox_rows(gw) == []
    assert gw.pipeline.release_due(NOW + 29 * MIN) == []
    [command] = gw.pipeline.release_due(NOW + 31 * MIN)
    assert (command.kind, command.alert.ts) == ("open", NOW + 30 * MIN)
    assert alert_rows(gw)[1:] == [("BIN-001/full", "firing", NOW + 30 * MIN, 1, None)]
    assert outbox_rows(gw) == [("open", command.command_id)]


def test_silences_and_held_alerts_survive_a_restart_and_file_exactly_one_case(tmp_path):
    gw = make_gateway(tmp_path)
    silence_store(gw).create(new(minutes=30), NOW)
    gw.pipeline.apply_alerts([full(gw, ts=NOW + MIN)], NOW + MIN)
    gw.conn.close()  # the process dies

    again = make_gateway(tmp_path, now_ms=NOW + 2 * MIN)
    # Still silenced after the restart: a new alert of the device is held too.
    again.pipeline.apply_alerts([full(again, ts=NOW + 3 * MIN, device="BIN-001")], NOW)
    assert alert_rows(again)[-1][-1] == "silence:1"
    [command] = again.pipeline.release_due(NOW + 40 * MIN)
    assert command.alert.ts == NOW + 30 * MIN
    again.conn.close()

    third = make_gateway(tmp_path, now_ms=NOW + 41 * MIN)  # released and committed: once
    assert third.pipeline.release_due(NOW + 60 * MIN) == []
    assert [kind for kind, _ in outbox_rows(third)] == ["open"]


def test_a_silence_that_ended_while_the_gateway_was_down_files_at_its_end(tmp_path):
    gw = make_gateway(tmp_path)
    silence_store(gw).create(new(minutes=30), NOW)
    gw.pipeline.apply_alerts([full(gw, ts=NOW + MIN)], NOW + MIN)
    gw.conn.close()
    again = make_gateway(tmp_path, now_ms=NOW + 90 * MIN)
    [command] = again.pipeline.release_due(NOW + 90 * MIN)
    assert command.alert.ts == NOW + 30 * MIN


def test_a_release_whose_commit_fails_is_filed_once_after_a_crash(tmp_path):
    """The held state and the case commit together: when the outbox row cannot be written,
    the gate state is not written either, so the next process files the case, once."""
    gw = make_gateway(tmp_path)
    silence_store(gw).create(new(minutes=30), NOW)
    gw.pipeline.apply_alerts([full(gw, ts=NOW + MIN)], NOW + MIN)
    gw.conn.execute(
        "CREATE TEMP TRIGGER refuse BEFORE INSERT ON outbox BEGIN SELECT RAISE(FAIL, 'full'); END"
    )
    with pytest.raises(StoreUnavailable):
        gw.pipeline.release_due(NOW + 31 * MIN)
    gw.conn.close()  # crash before the kept batch is saved

    again = make_gateway(tmp_path, now_ms=NOW + 32 * MIN)
    [command] = again.pipeline.release_due(NOW + 32 * MIN)
    assert command.alert.ts == NOW + 30 * MIN
    assert [kind for kind, _ in outbox_rows(again)] == ["open"]
    [(held,)] = again.conn.execute("SELECT count(*) FROM state WHERE ns = 'gate'").fetchall()
    assert held == 0


def test_removing_a_silence_files_the_held_case_now_and_keeps_the_silence_in_history(tmp_path):
    gw = make_gateway(tmp_path)
    silences = silence_store(gw)
    silence = silences.create(new(minutes=30), NOW)
    gw.pipeline.apply_alerts([full(gw, ts=NOW + MIN)], NOW + MIN)
    removed = silences.remove(silence.id, "李工", "done early", NOW + 5 * MIN)
    assert removed.status(NOW + 5 * MIN) == "expired"
    assert (removed.ends_ms, removed.removed_ms) == (NOW + 5 * MIN, NOW + 5 * MIN)
    assert [kind for kind, _ in outbox_rows(gw)] == ["open"]
    assert alert_rows(gw)[-1] == ("BIN-001/full", "firing", NOW + 5 * MIN, 1, None)
    found, _ = silences.page("expired", 10, None, NOW + 5 * MIN)
    assert [s.changes[-1]["author"] for s in found] == ["李工"]
    with pytest.raises(SilenceError, match="already ended"):
        silences.remove(silence.id, "李工", "", NOW + 6 * MIN)
    # A replay of the hour sees it with the end its removal gave it; a start after, not.
    [replayed] = overlapping(gw.conn, NOW, NOW + 60 * MIN)
    assert (replayed.id, replayed.ends_ms) == (silence.id, NOW + 5 * MIN)
    assert list(overlapping(gw.conn, NOW + 5 * MIN)) == []


def test_clears_while_silenced_file_nothing_even_after_the_end(tmp_path):
    gw = make_gateway(tmp_path)
    silence_store(gw).create(new(minutes=30), NOW)
    gw.pipeline.apply_alerts([full(gw, ts=NOW + MIN)], NOW + MIN)
    gw.pipeline.apply_alerts([full(gw, AlertState.CLEARED, ts=NOW + 2 * MIN)], NOW + 2 * MIN)
    assert gw.pipeline.release_due(NOW + 60 * MIN) == []
    assert [row[-1] for row in alert_rows(gw)] == ["silence:1", "silence:1"]
    assert outbox_rows(gw) == []


def test_an_extension_is_recorded_and_holds_longer(tmp_path):
    gw = make_gateway(tmp_path)
    silences = silence_store(gw)
    silence = silences.create(new(minutes=30), NOW)
    gw.pipeline.apply_alerts([full(gw, ts=NOW + MIN)], NOW + MIN)
    longer = Extension(author="王工", reason="parts late", duration_s=3600)
    extended = silences.extend(silence.id, longer, NOW + 10 * MIN)
    assert extended.ends_ms == NOW + 70 * MIN
    assert gw.pipeline.release_due(NOW + 40 * MIN) == []
    assert [c.alert.ts for c in gw.pipeline.release_due(NOW + 70 * MIN)] == [NOW + 70 * MIN]
    assert silences.get(silence.id).changes[0]["reason"] == "parts late"
    shorter = Extension(author="王工", reason="x", ends_ms=NOW + 50 * MIN)
    with pytest.raises(SilenceError, match="ends_ms: an extension must end after"):
        silences.extend(silence.id, shorter, NOW + 11 * MIN)


def test_bounds_on_silences_are_named(tmp_path):
    gw = make_gateway(tmp_path)
    silences = silence_store(gw, SilenceLimits(max_in_force=2, max_duration_s=3600))
    silences.create(new(minutes=10), NOW)
    with pytest.raises(SilenceError, match="duration_s: a silence lasts at most 3600 s"):
        silences.create(new(minutes=61), NOW)
    with pytest.raises(SilenceError, match="ends_ms: the silence would end before now"):
        silences.create(new(minutes=None, ends_ms=NOW - 1, duration_s=None), NOW)
    silences.create(new(minutes=10), NOW)
    with pytest.raises(SilenceError, match="2 silences are in force"):
        silences.create(new(minutes=10), NOW)
    silences.create(new(minutes=10), NOW + 11 * MIN)  # the first two have ended


# -- the API and the CLI -------------------------------------------------------------------------


def make_app(silences: SilenceStore, clock) -> FastAPI:
    app = FastAPI()
    app.add_middleware(ApiGuard, token=TOKEN, public_paths=set(), max_url_bytes=4096,
                       max_body_bytes=16_384)  # fmt: skip
    app.include_router(silences_router(silences, clock))
    return app


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[Gateway, httpx.Client, list[int]]]:
    gw = make_gateway(tmp_path)
    clock = [NOW]
    with ServedApp(make_app(silence_store(gw), lambda: clock[0])) as server:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as http:
            yield gw, http, clock


def test_the_api_makes_lists_extends_and_removes_silences(served):
    _, http, clock = served
    body = {"matchers": {"grid": "350102001001001", "kind": "bin"}, "author": "王工",
            "reason": "street works", "duration_s": 1800}  # fmt: skip
    made = http.post("/api/v1/silences", json=body)
    assert made.status_code == 201
    silence = made.json()
    assert {k: silence[k] for k in ("id", "status", "starts_ms", "ends_ms", "author")} == {
        "id": 1, "status": "active", "starts_ms": NOW, "ends_ms": NOW + 30 * MIN,
        "author": "王工"}  # fmt: skip
    http.post("/api/v1/silences", json={**body, "starts_ms": NOW + 60 * MIN})
    listed = http.get("/api/v1/silences", params={"status": "pending"}).json()
    assert [s["id"] for s in listed["silences"]] == [2]
    page = http.get("/api/v1/silences", params={"limit": 1}).json()
    assert ([s["id"] for s in page["silences"]], page["next_cursor"]) == ([2], "2")
    rest = http.get("/api/v1/silences", params={"limit": 1, "cursor": "2"}).json()
    assert ([s["id"] for s in rest["silences"]], rest["next_cursor"]) == ([1], None)

    extended = http.patch("/api/v1/silences/1", json={"author": "王工", "reason": "more",
                                                      "duration_s": 3600})  # fmt: skip
    assert extended.json()["ends_ms"] == NOW + 60 * MIN
    clock[0] = NOW + 10 * MIN
    removed = http.request("DELETE", "/api/v1/silences/1", params={"author": "李工"})
    assert (removed.json()["status"], removed.json()["ends_ms"]) == ("expired", NOW + 10 * MIN)
    assert http.get("/api/v1/silences/1").json()["removed_ms"] == NOW + 10 * MIN


def test_the_api_refuses_with_the_field_named(served):
    _, http, _ = served
    good = {"matchers": {"device": "BIN-001"}, "author": "a", "reason": "r", "duration_s": 60}
    cases = [
        ({**good, "matchers": {}}, 422, "matchers"),
        ({**good, "matchers": {"colour": "red"}}, 422, "matchers"),
        ({**good, "author": ""}, 422, "author"),
        ({**good, "reason": "x" * 501}, 422, "reason"),
        ({**good, "ends_ms": NOW + 1}, 422, "exactly one of ends_ms and duration_s"),
        ({**good, "duration_s": 31 * 86_400}, 400, "duration_s: a silence lasts at most"),
    ]
    for body, status, named in cases:
        answer = http.post("/api/v1/silences", json=body)
        assert answer.status_code == status, body
        assert named in answer.text
    assert http.get("/api/v1/silences/99").status_code == 404
    assert http.get("/api/v1/silences/0").status_code == 422
    assert http.get("/api/v1/silences", params={"cursor": "x"}).status_code == 400
    assert http.request("DELETE", "/api/v1/silences/1").status_code == 422  # no author
    no_token = httpx.post(f"{http.base_url}/api/v1/silences", json=good)
    assert no_token.status_code == 401


ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=15,
)  # fmt: skip
BODIES = ANY_JSON | st.fixed_dictionaries(
    {"matchers": st.dictionaries(st.sampled_from(["device", "grid", "kind", "x"]),
                                 st.text(max_size=5), max_size=3),
     "author": st.text(max_size=70), "reason": st.text(max_size=5)},
    optional={"duration_s": st.integers(-5, 10**7), "ends_ms": st.integers(-5, 2**64),
              "starts_ms": st.integers(-5, 2**64)},
)  # fmt: skip
SEGMENTS = st.text(max_size=25) | st.integers(-(2**70), 2**70).map(str)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["POST", "PATCH", "DELETE", "GET"]),
    body=BODIES,
    segment=SEGMENTS,
    query=st.dictionaries(
        st.sampled_from(["status", "limit", "cursor", "author", "reason"]),
        st.text(max_size=12),
        max_size=3,
    ),
)
def test_no_input_to_the_routes_answers_5xx(served, method, body, segment, query):  # fmt: skip
    """Property: any body, id and query gets an answer below 500, and what is accepted is
    a valid silence."""
    _, http, _ = served
    path = "/api/v1/silences" if method == "POST" else f"/api/v1/silences/{segment}"
    if method == "GET" and not segment:
        path = "/api/v1/silences"
    try:
        answer = http.request(method, path, json=body, params=query)
    except httpx.InvalidURL:
        return
    assert answer.status_code < 500, answer.text
    if method == "POST" and answer.status_code == 201:
        made = answer.json()
        assert made["matchers"] and made["ends_ms"] > made["starts_ms"]
        assert made["ends_ms"] - made["starts_ms"] <= 30 * 86_400_000


def test_the_cli_adds_lists_extends_and_removes_through_the_api(served, tmp_path, capsys):
    gw, http, _ = served
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    port = http.base_url.port
    (tmp_path / "cli").mkdir()
    config = write_gateway_config(tmp_path / "cli", {"port": port, "token_file": str(token_file)})
    parser = argparse.ArgumentParser(prog="citygw")
    register(parser.add_subparsers(required=True))

    def run(*argv: str) -> int:
        args = parser.parse_args([*argv[:2], "-c", str(config), *argv[2:]])
        return args.handler(args)

    assert run("silences", "add", "--match", "device=BIN-001", "--match", "kind=bin",
               "--for", "2h", "--author", "王工", "--reason", "更换垃圾箱") == 0  # fmt: skip
    assert "device=BIN-001 kind=bin" in capsys.readouterr().out
    assert run("silences", "extend", "1", "--for", "3h", "--author", "王工",
               "--reason", "later", "--json") == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["ends_ms"] == NOW + 180 * MIN
    assert run("silences", "list", "--status", "active") == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["ID", "STATUS", "MATCHERS", "STARTS", "ENDS", "AUTHOR",
                                  "REASON"]  # fmt: skip
    assert listing[1].split()[:2] == ["1", "active"]
    assert run("silences", "remove", "1", "--author", "李工") == 0
    capsys.readouterr()
    assert run("silences", "remove", "1", "--author", "李工") == 1
    assert "HTTP 400: silence 1 has already ended" in capsys.readouterr().err
    assert run("silences", "add", "--match", "device=A", "--match", "device=B", "--for", "1h",
               "--author", "a", "--reason", "r") == 1  # fmt: skip
    assert "--match device is given twice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run("silences", "add", "--match", "colour=red", "--for", "1h", "--author", "a",
            "--reason", "r")  # fmt: skip
    assert "LABEL one of device" in capsys.readouterr().err
    assert store.count_rows(gw.conn, "alerts") == 0


def test_a_store_from_before_the_alert_flow_gets_the_held_by_column(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE alerts (id INTEGER PRIMARY KEY AUTOINCREMENT, alert_key TEXT NOT NULL,"
        " state TEXT NOT NULL, ts INTEGER NOT NULL, incident_id TEXT, body TEXT NOT NULL)"
    )
    old.execute("INSERT INTO alerts (alert_key, state, ts, body) VALUES ('k', 'firing', 1, '{}')")
    old.commit()
    old.close()
    conn = store.connect(path)
    batch = store.Batch()
    batch.alerts.append(("k", "cleared", 2, None, "{}", "confirm"))
    store.commit(conn, batch)
    rows = conn.execute("SELECT alert_key, state, held_by FROM alerts ORDER BY id").fetchall()
    assert rows == [("k", "firing", None), ("k", "cleared", "confirm")]
    conn.close()
