"""``GET /api/v1/config`` (gateway/api_config.py) over loopback HTTP: admins (a session, the
machine token, an admin client token) read the effective config, everyone else gets the
guard's 403; and, property-tested over configs with secrets in every place one may stand
(values, ``SecretStr`` fields, URLs' credentials and queries, read from a file), no secret
appears anywhere in the answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from api_principals import ADMIN, TOKEN, Deployments, add_user
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from served_app import write_gateway_config
from test_api_console import MODEL

from gateway.api_config import REDACTED, redacted
from gateway.config import load_config

CONFIG = "/api/v1/config"


@pytest.fixture
def served(tmp_path):
    made = Deployments(tmp_path)
    api = made.serve()
    api.deployments = made
    yield api
    made.close()


def test_only_admins_read_the_config_and_the_machine_token_is_not_in_it(served):
    for name, role in (("root", "admin"), ("ops", "operator"), ("watch", "viewer")):
        add_user(served, name, role)
    answers = {}
    for name in ("root", "ops", "watch"):
        browser = served.deployments.browser(served)
        assert browser.sign_in(name).status_code == 200
        answers[name] = browser.request("GET", CONFIG)
    for role in ("admin", "viewer"):
        made = served.http.post("/api/v1/tokens", headers=ADMIN,
                                json={"name": f"{role}-script", "role": role})  # fmt: skip
        bearer = {"Authorization": f"Bearer {made.json()['token']}"}
        answers[f"{role}-script"] = served.http.get(CONFIG, headers=bearer)
    answers["api-token"] = served.http.get(CONFIG, headers=ADMIN)
    answers["nobody"] = served.http.get(CONFIG)
    refused = {"detail": f"GET {CONFIG} needs the admin role", "required_role": "admin"}
    assert {who: a.status_code for who, a in answers.items()} == {
        "root": 200, "ops": 403, "watch": 403, "admin-script": 200, "viewer-script": 403,
        "api-token": 200, "nobody": 401,
    }  # fmt: skip
    assert answers["ops"].json() == answers["watch"].json() == refused
    shown = answers["root"].json()
    assert shown["thresholds_version"] == 1
    config = shown["config"]
    assert config["api"]["token_file"].endswith("api-token")  # where it is, not what
    assert config["case_platform"]["token"] == REDACTED
    assert config["mqtt"]["url"] == "mqtt://127.0.0.1:1"
    assert TOKEN not in answers["root"].text and TOKEN not in answers["api-token"].text


# -- no secret in the answer, whatever the config holds ---------------------------------------

secret_text = st.text("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789", min_size=6,
                      max_size=24).map(lambda body: f"Zq{body}qZ")  # fmt: skip


def _config_with(folder: Path, secrets: list[str]) -> Path:
    """The test config with a secret in each place one may be given."""
    mqtt_password, platform_token, url_password, query_token, influx_token, from_file = secrets
    path = write_gateway_config(folder, {"token_file": "api-token"})
    (folder / "api-token").write_text("0123456789abcdef-machine-token\n")
    (folder / "platform-token").write_text(from_file + "\n")
    data = yaml.safe_load(path.read_text())
    data["mqtt"].update(username="citygw", password=mqtt_password,
                        url=f"mqtt://citygw:{url_password}@127.0.0.1:1883")  # fmt: skip
    data["case_platform"] = {"url": f"http://127.0.0.1:9/?token={query_token}",
                             "token_file": "platform-token"}  # fmt: skip
    data["history"] = {"influxdb": {"url": "http://127.0.0.1:8086", "org": "city",
                                    "bucket": "telemetry", "token": influx_token}}  # fmt: skip
    camera = {"id": "CAM-1", "url": f"rtsp://admin:{url_password}@10.0.0.5:554/h264",
              "snapshot_url": f"http://10.0.0.5/snap.jpg?token={query_token}",
              "zones": [{"id": "Z1", "type": "no_vending", "lat": 26.08, "lon": 119.29,
                         "polygon": [[0.1, 0.5], [0.9, 0.5], [0.9, 0.9]]}]}  # fmt: skip
    data["video"] = {"cameras": [camera], "detector": {"model": str(MODEL)}}
    data["api"]["token_env"] = platform_token  # a secret written where a variable's name goes
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(secrets=st.lists(secret_text, min_size=6, max_size=6, unique=True))
def test_no_secret_of_the_config_is_anywhere_in_the_answer(tmp_path_factory, secrets):
    folder = tmp_path_factory.mktemp("config")
    config = load_config(_config_with(folder, secrets))
    shown = json.dumps(redacted(config), ensure_ascii=False)
    assert [secret for secret in secrets if secret in shown] == []
    answer = json.loads(shown)
    assert answer["mqtt"]["password"] == answer["history"]["influxdb"]["token"] == REDACTED
    assert answer["mqtt"]["url"] == "mqtt://***@127.0.0.1:1883"
    assert answer["video"]["cameras"][0]["url"] == "rtsp://***@10.0.0.5:554/h264"
    assert answer["api"]["token_env"] == REDACTED  # not a variable's name: maybe the secret
    assert answer["video"]["cameras"][0]["zones"][0]["id"] == "Z1"  # the rest shown as it is
