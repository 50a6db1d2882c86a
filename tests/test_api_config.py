"""``GET /api/v1/config`` (gateway/api_config.py) over loopback HTTP: admins (a session, the
machine token, an admin client token) read the effective config, everyone else gets the
guard's 403; and, property-tested over configs with secrets in every place one may stand
(values, ``SecretStr`` fields, URLs' credentials and queries, read from a file, a mapped REST
platform's constants), no secret appears anywhere in the answer, while a mapped platform's
ordinary keys (``item_key``, ``externalKey``, ``if_missing: refuse``) are shown as they are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from api_principals import ADMIN, TOKEN, add_user, one_deployment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from served_app import write_gateway_config
from test_api_console import MODEL

from gateway.api_config import CONFIG_PATH, REDACTED, redacted
from gateway.api_guard import required_role
from gateway.config import load_config
from gateway.config_secrets import names_a_secret

CONFIG = "/api/v1/config"


@pytest.fixture
def served(tmp_path):
    with one_deployment(tmp_path) as api:
        yield api


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


def test_the_guard_asks_the_admin_role_for_the_config_however_it_is_asked():
    """The route does not check the role again: the guard's admin paths must hold it."""
    assert CONFIG_PATH == CONFIG
    for method in ("GET", "HEAD", "OPTIONS", "POST"):
        for path in (CONFIG, CONFIG + "/", CONFIG + "/x"):
            assert required_role(method, path) == "admin", (method, path)


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


# -- a mapped REST platform: its constants hidden, its ordinary keys shown --------------------

EGOVA = Path(__file__).resolve().parents[1] / "deploy" / "platforms" / "egova.yaml"


def _mapped_config_with(folder: Path, secrets: list[str]) -> Path:
    """The test config filing into the eGova mapping, with a secret in the HMAC secret, the
    webhook secret and four constants named as platforms name credentials."""
    hmac_secret, webhook_secret, ak, sk, pwd, credential = secrets
    path = write_gateway_config(folder, {"token_file": "api-token"})
    (folder / "api-token").write_text("0123456789abcdef-machine-token\n")
    data = yaml.safe_load(path.read_text())
    mapped = yaml.safe_load(EGOVA.read_text(encoding="utf-8"))
    mapped["auth"].pop("secret_env")
    mapped["auth"]["secret"] = hmac_secret * 3  # at least 16 characters
    mapped["open_case"]["query"] = {"ak": {"const": ak}, "sk": {"const": sk}}
    mapped["open_case"]["body"]["pwd"] = {"const": pwd}
    mapped["open_case"]["body"]["credential"] = {"const": credential}
    webhook = {"secret": webhook_secret * 3, "format": "citygw"}
    data["case_platform"] = {"adapter": "mapped_rest", "mapped_rest": mapped, "webhook": webhook}
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def _constants_hidden(value, loc=()):
    """``value`` (a mapped REST mapping as JSON data) with what the view must hide hidden:
    every constant but null and true/false, and the signing secret."""
    if isinstance(value, dict):
        return {key: _constants_hidden(item, (*loc, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_constants_hidden(item, loc) for item in value]
    hidden = loc[-1:] == ("const",) and value is not None and not isinstance(value, bool)
    return REDACTED if hidden or loc == ("auth", "secret") else value


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(secrets=st.lists(secret_text, min_size=6, max_size=6, unique=True))
def test_no_constant_of_a_mapped_platform_is_shown_and_nothing_else_of_it_is_hidden(
    tmp_path_factory, secrets
):
    folder = tmp_path_factory.mktemp("mapped")
    config = load_config(_mapped_config_with(folder, secrets))
    shown = json.dumps(redacted(config), ensure_ascii=False)
    assert [secret for secret in secrets if secret in shown] == []
    answer = json.loads(shown)["case_platform"]
    mapping = config.case_platform.mapped_rest.model_dump(mode="json")
    assert answer["mapped_rest"] == _constants_hidden(mapping)
    assert answer["webhook"]["secret"] == REDACTED
    query, body = (answer["mapped_rest"]["open_case"][part] for part in ("query", "body"))
    assert [query["ak"]["const"], query["sk"]["const"], body["pwd"]["const"],
            body["credential"]["const"], body["districtID"]["const"]] == [REDACTED] * 5  # fmt: skip
    # What merely holds "key" is shown as it is, and "refuse" is no secret scrubbed elsewhere.
    external = body["extInfo.externalKey"]
    assert (external["from_"], external["if_missing"]) == ("external_key", "refuse")
    assert answer["mapped_rest"]["find_case"]["item_key"] == "externalKey"
    assert answer["mapped_rest"]["auth"]["key_id_header"] == "X-Key-Id"
    assert answer["mapped_rest"]["auth"]["key_id"] == "citygw-gulou"


def test_a_key_names_a_secret_by_its_last_whole_words():
    secret = ["password", "key_password", "postgres_password", "pwd", "passwd", "sk", "AK",
              "token", "tokens", "api_key", "apiKey", "X-API-Key", "appSecret", "secret_env",
              "link_secret_file", "credential", "sslpassword", "accessKeySecret",
              "password2"]  # fmt: skip
    ordinary = ["item_key", "externalKey", "key_id", "key_id_header", "token_poll_s", "keyfile",
                "key_file", "signature_header", "if_missing", "access", "accessKeyId", "tasks",
                "desk_batch", "const"]  # fmt: skip
    assert [key for key in secret if not names_a_secret(key)] == []
    assert [key for key in ordinary if names_a_secret(key)] == []
