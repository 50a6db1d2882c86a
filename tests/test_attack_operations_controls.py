"""Attacks on the operations team's controls, each a break found and fixed: hostile input to
/api/v1/thresholds and /api/v1/silences through the real gateway app in uvicorn behind the
token guard (never a 5xx, never a hang, nothing stored on a refusal), and hostile values in
the config's alerting section and health params."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from api_server import ServedApi, gateway_for_api
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from served_app import write_gateway_config

from gateway.config import ConfigError, load_config

TOKEN = "0123456789abcdef-attack-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
THRESHOLDS = "/api/v1/thresholds"
SILENCES = "/api/v1/silences"
FIXTURE = HealthCheck.function_scoped_fixture  # the module's server: requests only
WHO = {"author": "attacker", "reason": "probing"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    folder = tmp_path_factory.mktemp("attack")
    (folder / "api-token").write_text(TOKEN)
    served = ServedApi(gateway_for_api(folder, {"token_file": "api-token"}), AUTH)
    yield served
    served.close()
    served.gateway.conn.close()


def versions(api: ServedApi) -> int:
    """How many threshold versions the store holds (what a refusal must not change)."""
    return api.gateway.conn.execute("SELECT count(*) FROM threshold_versions").fetchone()[0]


def silences_count(api: ServedApi) -> int:
    return api.gateway.conn.execute("SELECT count(*) FROM silences").fetchone()[0]


def put(api: ServedApi, changes: dict[str, Any], **extra: Any) -> httpx.Response:
    return api.http.put(THRESHOLDS, json={"changes": changes, **WHO, **extra})


def put_raw(api: ServedApi, body: bytes) -> httpx.Response:
    return api.http.put(THRESHOLDS, content=body, headers={"content-type": "application/json"})


# -- values no engine can run with -----------------------------------------------------------

# Each was stored as a new version before the fix: NaN and Infinity pass pydantic's float
# as strings, and "Infinity" passes every lower bound. A NaN or negative max change per
# minute made every reading of every gauge a jump: all gauges suspect, their level rules
# getting no readings (cases lost); the answer showed the stored Infinity as null.
NON_FINITE = [
    ("kinds.health.bin.heartbeat_s", "Infinity", "finite"),
    ("kinds.health.bin.offline_factor", 1e308, "less than or equal to 1000"),
    ("kinds.health.water_level.stuck_after_s", {"level_cm": "NaN"}, "finite"),
    ("kinds.health.water_level.stuck_after_s", {"level_cm": -5}, "greater than 0"),
    ("kinds.health.water_level.max_change_per_min", {"level_cm": "-Infinity"}, "finite"),
    ("kinds.health.water_level.max_change_per_min", {"level_cm": "nan"}, "finite"),
    ("kinds.health.water_level.change_slack", {"level_cm": "inf"}, "finite"),
    ("kinds.health.water_level.stuck_after_s", {f"f{i}": 1 for i in range(33)}, "at most 32"),
    ("kinds.health.lwt_grace_s", "inf", "finite"),
    ("kinds.health.check_every_s", "1e308", "less than or equal to 3600"),
    ("kinds.health.implausible_to_report", 2**64, "less than or equal to 10000"),
    ("kinds.health.plausible_to_clear", 2**70, "less than or equal to 10000"),
    ("devices.BIN-001.heartbeat_s", "inf", "finite"),
    ("kinds.video.stall_labels", ["x" * 65], "at most 64 characters"),
    ("bin.fire_for_s", "Infinity", "finite"),
    ("water_level.rise_cm", "NaN", "finite"),
]


@pytest.mark.parametrize(("path", "value", "problem"), NON_FINITE)
def test_non_finite_or_unbounded_values_are_refused_naming_the_path(api, path, value, problem):
    before = versions(api)
    response = put(api, {path: value})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    shown = path if path.startswith(("kinds.", "devices.")) else f"kinds.{path}"
    assert detail.startswith(f"{shown}: ") and problem in detail, detail
    assert versions(api) == before


def test_a_value_nested_deeper_than_json_can_read_is_a_400_not_a_500(api):
    """A string value that looks like JSON is read as JSON: nested 1,500 deep it raised
    RecursionError past the refusal (500 'applying the new settings failed')."""
    before = versions(api)
    response = put(api, {"bin.schedule": "[" * 1500 + "]" * 1500})
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == (
        "kinds.bin.schedule: schedule is not valid JSON: nested too deep"
    )
    body = b'{"changes":{"bin.schedule":' + b"[" * 2000 + b"]" * 2000 + b"},"
    response = put_raw(api, body + b'"author":"a","reason":"r"}')
    assert response.status_code == 400, response.text
    assert response.json() == {"detail": "There was an error parsing the body"}
    assert versions(api) == before


@pytest.mark.parametrize(
    ("route", "body"),
    [(f"POST {SILENCES}", b'{"starts_ms": Infinity}'),
     (f"POST {SILENCES}", b'{"matchers": {"device": NaN}, "author": "a", "reason": "r"}'),
     (f"PATCH {SILENCES}/1", b'{"ends_ms": -Infinity, "author": "a", "reason": "r"}'),
     (f"PUT {THRESHOLDS}", b'{"changes": {"bin.fill_fire_pct": 1}, "author": "a", "reason": "r",'
                           b' "expected_version": NaN}'),
     (f"POST {THRESHOLDS}/rollback", b'{"version": Infinity, "author": "a", "reason": "r"}')],
)  # fmt: skip
def test_a_body_with_nan_or_infinity_gets_a_422_not_a_500(api, route, body):
    """Python's JSON reader takes NaN and Infinity; FastAPI's 422 echoed them back and could
    not be written: a 500 and a dropped connection."""
    method, url = route.split(" ")
    before = (versions(api), silences_count(api))
    response = api.http.request(method, url, content=body,
                                headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code == 422, response.text
    inputs = [error.get("input") for error in response.json()["detail"]]
    assert {"nan", "inf", "-inf"} & {str(i) for i in inputs}, inputs
    assert (versions(api), silences_count(api)) == before


# -- hostile bodies, property-tested ---------------------------------------------------------

PATHS = st.one_of(
    st.sampled_from([
        "bin.fill_fire_pct", "kinds.bin.schedule", "devices.BIN-001.fill_fire_pct",
        "devices.BIN-001.schedule", "kinds.health.water_level.stuck_after_s",
        "kinds.health.confirm_s", "devices.NOPE.fill_fire_pct", "zones.cam/zone.schedule",
        "devices..", "..", ".", "kinds", "devices.BIN-001．fill_fire_pct", "ｂｉｎ.fill_fire_pct",
        "devices.BIN-001/../x.fill_fire_pct", "bin.fill_fire_pct.", "devices.\u202eBIN.x",
    ]),
    st.text(min_size=1, max_size=40),
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e308", "-0", "0x10", "08:00-09:00",
                     "{", "[", "null", '{"windows": ["22:00-06:00"]}', "٣", "1_000"]),
    st.text(max_size=20),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[FIXTURE])
@given(changes=st.dictionaries(PATHS, VALUES, min_size=1, max_size=4))
def test_no_change_request_answers_5xx_and_a_refusal_stores_nothing(api, changes):
    before = versions(api)
    response = put(api, changes)
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code != 200:
        assert versions(api) == before
        assert isinstance(response.json()["detail"], str | list)
    current = api.http.get(THRESHOLDS)
    assert current.status_code == 200, current.text
    assert current.json()["version"] == api.gateway.threshold_versions.current().version
    # What was stored is what the answer and the document say: no Infinity shown as null.
    stored = api.gateway.threshold_versions.current().settings_json
    assert "Infinity" not in stored and "NaN" not in stored


def test_thousands_of_changes_are_refused_whole(api):
    before = versions(api)
    changes = {f"devices.BIN-001.p{i}": i for i in range(5000)}
    response = put(api, changes)
    assert response.status_code in (413, 422), response.text
    changes = {f"devices.BIN-001.p{i}": i for i in range(101)}
    response = put(api, changes)
    assert response.status_code == 422
    assert versions(api) == before


def test_overrides_for_unknown_devices_never_grow_the_document(api):
    before = versions(api)
    for i in range(50):
        response = put(api, {f"devices.GHOST-{i}.fill_fire_pct": 80})
        assert response.status_code == 400
        assert response.json()["detail"] == (
            f"devices.GHOST-{i}.fill_fire_pct: unknown device 'GHOST-{i}'"
        )
    assert versions(api) == before
    assert "GHOST" not in api.gateway.threshold_versions.current().settings_json


@pytest.mark.parametrize(
    "path", ["bin..x", "devices..x", "..", "devices.%2e%2e.x", "%EF%BD%82in.fill_fire_pct",
             "devices.%E2%80%AEBIN.x", "zones.a%2Fb.schedule", "x" * 301, "kinds.%00"],
)  # fmt: skip
def test_odd_paths_read_are_4xx(api, path):
    response = api.http.get(f"{THRESHOLDS}/{path}")
    assert 400 <= response.status_code < 500, response.text


def test_concurrent_puts_on_one_expected_version_make_exactly_one_version(api):
    start = api.gateway.threshold_versions.current().version
    results: list[int] = []
    barrier = threading.Barrier(8)

    def one(level: int) -> None:
        with httpx.Client(base_url=api.url, headers=AUTH, timeout=10) as http:
            barrier.wait()
            body = {"changes": {"bin.fill_fire_pct": level}, "expected_version": start, **WHO}
            results.append(http.put(THRESHOLDS, json=body).status_code)

    threads = [threading.Thread(target=one, args=(71 + i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(results) == [200] + [409] * 7
    assert api.gateway.threshold_versions.current().version == start + 1


@pytest.mark.parametrize("version", [0, -1, 2**62 + 1, 2**63, 2**64, "1e3", 1.5, "٣"])
def test_rollback_to_a_version_out_of_range_is_a_4xx(api, version):
    before = versions(api)
    response = api.http.post(f"{THRESHOLDS}/rollback", json={"version": version, **WHO})
    assert response.status_code == 422, response.text
    assert versions(api) == before


# -- silences ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cursor", ["9223372036854775808", "9999999999999999999"])
def test_a_silence_cursor_beyond_sqlite_integers_is_a_400(api, cursor):
    """It raised OverflowError in the query (500), and uvicorn dropped the connection."""
    response = api.http.get(SILENCES, params={"cursor": cursor})
    assert response.status_code == 400, response.text
    assert response.json() == {"detail": "cursor: not one this API handed out"}
    assert api.http.get(SILENCES, params={"cursor": "9223372036854775807"}).status_code == 200


@pytest.mark.parametrize("silence_id", ["0", "-1", "9223372036854775808", "18446744073709551616",
                                        "1e3", "%D9%A3", "1.0", "%20"])  # fmt: skip
def test_silence_ids_out_of_range_are_4xx(api, silence_id):
    before = silences_count(api)
    expected = 404 if silence_id == "1.0" else 422  # "1.0" is id 1, which does not exist
    assert api.http.get(f"{SILENCES}/{silence_id}").status_code == expected
    patch = api.http.patch(f"{SILENCES}/{silence_id}", json={"duration_s": 60, **WHO})
    assert patch.status_code == expected
    delete = api.http.delete(f"{SILENCES}/{silence_id}", params={"author": "a"})
    assert delete.status_code == expected
    assert silences_count(api) == before


MATCHER_VALUES = st.one_of(st.text(max_size=140), st.integers(), st.none(), st.floats())
SILENCE_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "matchers": st.dictionaries(
            st.sampled_from(["device", "grid", "class", "zone", "kind", "rule", "x", ""]),
            MATCHER_VALUES, max_size=3,
        ),
        "author": st.one_of(st.text(max_size=70), st.integers()),
        "reason": st.text(max_size=10),
        "starts_ms": st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats()),
        "ends_ms": st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats()),
        "duration_s": st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats()),
    },
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[FIXTURE])
@given(body=SILENCE_BODIES)
def test_no_silence_body_answers_5xx_and_a_refusal_stores_nothing(api, body):
    before = silences_count(api)
    response = api.http.post(SILENCES, content=json.dumps(body),
                             headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code in (201, 400, 409, 422), response.text
    assert silences_count(api) == before + (response.status_code == 201)
    if response.status_code == 201:
        made = response.json()
        assert made["ends_ms"] > made["starts_ms"]
        api.http.delete(f"{SILENCES}/{made['id']}", params={"author": "attacker"})


# -- config: the alerting section --------------------------------------------------------------


def config_with(tmp_path: Path, alerting: Any) -> Path:
    path = write_gateway_config(tmp_path, {})
    config = yaml.safe_load(path.read_text())
    config["alerting"] = alerting
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


HOSTILE_ALERTING = [
    ({"inhibit_rules": [{"name": "x", "source_match": {}, "target_match": {"kind": "bin"}}]},
     "source_match"),
    ({"inhibit_rules": [{"name": "../x", "source_match": {"kind": "bin"},
                         "target_match": {"kind": "bin"}}]}, "name"),
    ({"inhibit_rules": [{"name": "x", "source_match": {"devicе": "a"},
                         "target_match": {"kind": "bin"}}]}, "source_match"),
    ({"inhibit_rules": [{"name": "x", "source_match": {"kind": "b" * 129},
                         "target_match": {"kind": "bin"}}]}, "source_match"),
    ({"inhibit_rules": [{"name": "x", "source_match": {"kind": "bin"},
                         "target_match": {"kind": "bin"}, "action": "drop"}]}, "action"),
    ({"area_conditions": [{"name": "f", "match": {"kind": "water_level"}, "min_count": 1,
                           "class_code": "99101"}]}, "min_count"),
    ({"area_conditions": [{"name": "f", "match": {"kind": "water_level"}, "min_count": 2**70,
                           "class_code": "99101"}]}, "min_count"),
    ({"area_conditions": [{"name": "f", "match": {"kind": "water_level"}, "min_count": ".inf",
                           "class_code": "99101"}]}, "min_count"),
    ({"area_conditions": [{"name": "f", "match": {"kind": "water_level"}, "min_count": 2,
                           "class_code": "99101", "group_by": []}]}, "group_by"),
    ({"area_conditions": [{"name": "f", "match": {"kind": "water_level"}, "min_count": 2,
                           "class_code": "9910１"}]}, "class_code"),
    ({"inhibit_rules": [{"name": f"r{i}", "source_match": {"kind": "bin"},
                         "target_match": {"kind": "bin"}} for i in range(101)]}, "inhibit_rules"),
    ({"silences": {"max_in_force": 0}}, "max_in_force"),
    ({"silences": {"max_duration_s": 1e308}}, "max_duration_s"),
    ([1, 2], "alerting"),
    ("yes", "alerting"),
]  # fmt: skip


@pytest.mark.parametrize(("alerting", "field"), HOSTILE_ALERTING)
def test_hostile_alerting_config_is_refused_naming_the_field(tmp_path, alerting, field):
    with pytest.raises(ConfigError) as refused:
        load_config(config_with(tmp_path, alerting))
    assert field in str(refused.value)


@pytest.mark.parametrize(
    ("health", "field"),
    [({"water_level": {"heartbeat_s": 600, "stuck_after_s": {"level_cm": ".nan"}}},
      "stuck_after_s"),
     ({"lwt_grace_s": ".inf"}, "lwt_grace_s"),
     ({"bin": {"heartbeat_s": ".inf"}}, "heartbeat_s")],
)  # fmt: skip
def test_non_finite_health_config_is_refused_naming_the_field(tmp_path, health, field):
    path = write_gateway_config(tmp_path, {})
    config = yaml.safe_load(path.read_text())
    text = yaml.safe_dump({**config, "rules": {"health": health}})
    path.write_text(text.replace("'.nan'", ".nan").replace("'.inf'", ".inf"))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert field in str(refused.value) and "finite" in str(refused.value)


def test_a_rollback_to_version_true_is_refused_not_taken_for_version_1(api):
    answer = api.http.post(f"{THRESHOLDS}/rollback", json={"version": True, **WHO})
    assert answer.status_code == 422 and "version" in answer.text


@pytest.mark.parametrize("field", ["author", "reason"])
def test_a_silence_author_or_reason_with_control_characters_is_refused(api, field):
    before = silences_count(api)
    body = {"matchers": {"device": "BIN-001"}, "duration_s": 600, **WHO}
    body[field] = "ops\x1b[2J\nforged log line"
    answer = api.http.post(SILENCES, json=body)
    assert answer.status_code == 422 and field in answer.text
    assert silences_count(api) == before
