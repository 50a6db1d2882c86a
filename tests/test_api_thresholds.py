"""The thresholds API over real HTTP: a FastAPI app with the router behind the gateway's own
ApiGuard, served by uvicorn on loopback, on a real SQLite store. The token on every route,
errors that name the parameter (400), a stale expected_version (409), rollback and paged
history, an apply that fails storing nothing, and no body or path answering 5xx."""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from served_app import ServedApp, write_gateway_config

from gateway import store
from gateway.api_client import ApiClient, ApiError
from gateway.api_guard import ApiGuard
from gateway.api_thresholds import thresholds_router
from gateway.threshold_versions import ThresholdVersions
from rules.params import RulesConfig, VideoRuleParams
from rules.settings import RuleSettings, settings_from_config, settings_get

TOKEN = "0123456789abcdef-thresholds"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEVICES = {"MH-001": "manhole_cover", "BIN-001": "bin", "WL-001": "water_level"}
ZONES = {"cam1/entrance"}
BASE = "/api/v1/thresholds"


@dataclass
class Served:
    http: httpx.Client
    conn: store.sqlite3.Connection
    versions: ThresholdVersions
    applied: list[RuleSettings]
    server: ServedApp


def serve(folder: Path, refuse: bool = False) -> Served:
    conn = store.connect(folder / "gateway.db")
    versions = ThresholdVersions(conn, DEVICES, ZONES)
    overrides = {"WL-001": {"warning_cm": "30", "alarm_cm": "50"}}
    config = settings_from_config(RulesConfig(), VideoRuleParams(), overrides, {}, DEVICES)
    versions.reconcile(config, "gateway.yaml")
    applied: list[RuleSettings] = []

    def apply(settings: RuleSettings) -> None:
        if refuse:
            raise RuntimeError("the engine refused")
        applied.append(settings)

    app = FastAPI()
    app.add_middleware(
        ApiGuard, token=TOKEN, public_paths={"/healthz"}, max_url_bytes=4096,
        max_body_bytes=64 * 1024,
    )  # fmt: skip
    app.include_router(thresholds_router(versions, apply))
    server = ServedApp(app)
    http = httpx.Client(base_url=server.url, headers=AUTH, timeout=10)
    return Served(http, conn, versions, applied, server)


def close(served: Served) -> None:
    served.http.close()
    served.server.close()
    served.conn.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Served]:
    served = serve(tmp_path)
    yield served
    close(served)


def put(api: Served, changes: dict, expected: int | None = None, **extra) -> httpx.Response:
    body = {"changes": changes, "author": "王工", "reason": "summer", **extra}
    if expected is not None:
        body["expected_version"] = expected
    return api.http.put(BASE, json=body)


def test_every_route_needs_the_token(api: Served):
    anonymous = httpx.Client(base_url=api.server.url, timeout=10)
    calls = [
        ("GET", BASE, None),
        ("GET", f"{BASE}/history", None),
        ("GET", f"{BASE}/bin.fill_fire_pct", None),
        ("PUT", BASE, {"changes": {"bin.fill_fire_pct": 50}, "author": "a", "reason": "r"}),
        ("POST", f"{BASE}/rollback", {"version": 1, "author": "a", "reason": "r"}),
    ]
    for method, url, body in calls:
        response = anonymous.request(method, url, json=body)
        assert response.status_code == 401, (method, url)
        assert response.json() == {"detail": "a bearer token is required"}
    anonymous.close()
    assert api.versions.current().version == 1 and api.applied == []


def test_read_all_and_one(api: Served):
    answer = api.http.get(BASE).json()
    assert (answer["version"], answer["action"], answer["author"]) == (1, "config", "config")
    assert answer["settings"]["kinds"]["bin"]["fill_fire_pct"] == 90.0
    assert answer["settings"]["devices"] == {"WL-001": {"warning_cm": 30.0, "alarm_cm": 50.0}}
    one = api.http.get(f"{BASE}/bin.fill_fire_pct")
    assert one.json() == {"version": 1, "path": "bin.fill_fire_pct", "value": 90.0}
    device = api.http.get(f"{BASE}/devices.MH-001.tilt_fire_deg").json()
    assert device["value"] == 15.0  # no override: the kind's value, what it runs with
    assert api.http.get(f"{BASE}/devices.WL-001.warning_cm").json()["value"] == 30.0
    missing = api.http.get(f"{BASE}/devices.NOPE.tilt_fire_deg")
    assert missing.status_code == 404
    assert missing.json()["detail"].startswith("devices.NOPE.tilt_fire_deg: ")


def test_put_stores_applies_and_answers_the_version(api: Served):
    response = put(api, {"bin.fill_fire_pct": 85, "devices.MH-001.tilt_fire_deg": "30"}, 1)
    assert response.status_code == 200
    answer = response.json()
    assert (answer["version"], answer["changed"], answer["action"]) == (2, True, "set")
    assert (answer["author"], answer["reason"]) == ("王工", "summer")
    assert answer["diff"] == [
        {"path": "devices.MH-001.tilt_fire_deg", "old": None, "new": 30.0},
        {"path": "kinds.bin.fill_fire_pct", "old": 90.0, "new": 85.0},
    ]
    assert [settings_get(s, "kinds.bin.fill_fire_pct") for s in api.applied] == [85.0]
    assert api.http.get(f"{BASE}/bin.fill_fire_pct").json() == {
        "version": 2, "path": "bin.fill_fire_pct", "value": 85.0,
    }  # fmt: skip
    again = put(api, {"bin.fill_fire_pct": 85})
    assert again.status_code == 200 and again.json()["changed"] is False
    assert again.json()["version"] == 2 and len(api.applied) == 1


def test_a_bad_change_is_400_naming_the_parameter(api: Served):
    response = put(api, {"bin.fill_clear_pct": 95})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("kinds.bin.fill_clear_pct: ")
    assert "hysteresis" in response.json()["detail"]
    response = put(api, {"bin.no_such_param": 1})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("bin.no_such_param: ")
    assert api.versions.current().version == 1 and api.applied == []


def test_a_malformed_body_is_422_naming_the_field(api: Served):
    response = api.http.put(BASE, json={"changes": {"bin.fill_fire_pct": 85}, "reason": "r"})
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "author"]]
    response = put(api, {"bin.fill_fire_pct": 85}, author="x" * 65)
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "author"]]
    response = put(api, {"bin.fill_fire_pct": 85}, surprise=1)
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "surprise"]]
    response = put(api, {})
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "changes"]]


def test_a_stale_expected_version_is_409(api: Served):
    assert put(api, {"bin.fill_fire_pct": 85}, 1).status_code == 200
    response = put(api, {"bin.fill_fire_pct": 80}, 1)
    assert response.status_code == 409
    assert response.json() == {
        "detail": "expected_version 1 is not the current version 2: read the settings again"
        " and retry"
    }
    rollback = {"version": 1, "author": "a", "reason": "r", "expected_version": 1}
    assert api.http.post(f"{BASE}/rollback", json=rollback).status_code == 409
    assert api.versions.current().version == 2


def test_rollback_and_history(api: Served):
    for pct in (85, 80, 75):
        assert put(api, {"bin.fill_fire_pct": pct}).status_code == 200
    response = api.http.post(
        f"{BASE}/rollback", json={"version": 2, "author": "李工", "reason": "too many cases"}
    )
    assert response.status_code == 200
    answer = response.json()
    assert (answer["version"], answer["action"], answer["rollback_to"]) == (5, "rollback", 2)
    assert answer["diff"] == [{"path": "kinds.bin.fill_fire_pct", "old": 75.0, "new": 85.0}]
    assert settings_get(api.applied[-1], "kinds.bin.fill_fire_pct") == 85.0
    missing = api.http.post(f"{BASE}/rollback", json={"version": 99, "author": "a", "reason": "r"})
    assert (missing.status_code, missing.json()) == (404, {"detail": "version 99 does not exist"})

    first = api.http.get(f"{BASE}/history", params={"limit": 2}).json()
    assert [v["version"] for v in first["versions"]] == [5, 4]
    assert (first["count"], first["next_cursor"]) == (2, 4)
    rest = api.http.get(f"{BASE}/history", params={"limit": 10, "cursor": 4}).json()
    assert [v["version"] for v in rest["versions"]] == [3, 2, 1]
    assert rest["next_cursor"] is None
    assert rest["versions"][0]["diff"] == [
        {"path": "kinds.bin.fill_fire_pct", "old": 85.0, "new": 80.0}
    ]
    bad = api.http.get(f"{BASE}/history", params={"limit": 101})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "limit"]


def test_an_apply_that_fails_stores_nothing(tmp_path: Path):
    served = serve(tmp_path, refuse=True)
    try:
        response = put(served, {"bin.fill_fire_pct": 85})
        assert response.status_code == 500
        assert response.json() == {
            "detail": "applying the new settings failed (RuntimeError); nothing was stored"
        }
        assert served.http.get(BASE).json()["version"] == 1
        assert served.http.get(f"{BASE}/history").json()["count"] == 1
    finally:
        close(served)


def test_the_cli_client_shows_the_refusal_in_one_line(api: Served, tmp_path: Path):
    (tmp_path / "token").write_text(TOKEN)
    config = write_gateway_config(tmp_path, {"port": api.server.port, "token_file": "token"})
    with ApiClient.from_config(str(config)) as client, pytest.raises(ApiError) as caught:
        client.put(BASE, {"changes": {"devices.NOPE.x": 1}, "author": "a", "reason": "r"})
    assert str(caught.value) == (
        "PUT /api/v1/thresholds: HTTP 400: devices.NOPE.x: unknown device 'NOPE'"
    )


# -- properties: no body and no path answers 5xx --------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10,
)  # fmt: skip
known_paths = st.sampled_from(["bin.fill_fire_pct", "bin.fill_clear_pct",
    "kinds.health.confirm_s", "devices.BIN-001.fill_fire_pct", "devices.WL-001.warning_cm",
    "zones.cam1/entrance.stall_dwell_s", "kinds.bin.schedule", "video.x"])  # fmt: skip
paths = st.one_of(
    known_paths, st.text(string.ascii_letters + "./-_", max_size=30), st.text(max_size=30)
)
# Bodies of the right shape (they reach the store: 200, 400, 404, 409) and any JSON at all.
names = st.sampled_from(["王工", "ops"]) | st.text(min_size=1, max_size=64)
values = st.integers(0, 120) | st.sampled_from(["70", "null", "[]"]) | json_values
change_bodies = st.fixed_dictionaries(
    {"changes": st.dictionaries(known_paths | paths, values, min_size=1, max_size=3),
     "author": names,
     "reason": names},
    optional={"expected_version": st.integers(1, 12)},
) | st.dictionaries(st.sampled_from(["changes", "author", "reason", "expected_version", "x"]),
                    json_values)  # fmt: skip
rollback_bodies = st.fixed_dictionaries(
    {"version": st.integers(1, 12), "author": names, "reason": names},
    optional={"expected_version": st.integers(1, 12)},
) | st.dictionaries(st.sampled_from(["version", "author", "reason", "expected_version", "x"]),
                    json_values)  # fmt: skip


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Iterator[Served]:
    served = serve(tmp_path_factory.mktemp("thresholds"))
    yield served
    close(served)


def check_no_5xx(shared: Served, method: str, url: str, body) -> int:
    before = shared.versions.current().version
    response = shared.http.request(method, url, json=body)
    assert response.status_code in (200, 400, 404, 409, 422), response.text
    after = shared.versions.current().version
    if response.status_code == 200:
        assert response.json()["version"] == after
        assert after == before + int(response.json()["changed"])
    else:
        assert after == before
    assert len(shared.applied) == after - 1
    return response.status_code


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(change_bodies, json_values))
def test_no_change_body_answers_5xx(shared: Served, body):
    check_no_5xx(shared, "PUT", BASE, body)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(rollback_bodies, json_values))
def test_no_rollback_body_answers_5xx(shared: Served, body):
    check_no_5xx(shared, "POST", f"{BASE}/rollback", body)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=paths)
def test_no_path_answers_5xx(shared: Served, path: str):
    response = shared.http.get(f"{BASE}/{quote(path, safe='')}")
    assert response.status_code in (200, 400, 404), response.text
