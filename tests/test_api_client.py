"""The operator CLIs' HTTP client against a real uvicorn on loopback, behind the gateway's
own ApiGuard: the address and token from a config file, one clear line per failure, the
token never shown, proxies in the environment ignored, and tables that line up in Chinese."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse, Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field
from served_app import ServedApp, write_gateway_config

from gateway.api_client import (
    ApiClient,
    ApiError,
    add_api_arguments,
    base_url,
    format_table,
    run_with_client,
    show,
    timeout_s,
    whole_number,
)
from gateway.api_guard import ApiGuard
from gateway.config import ApiSettings, ConfigError, load_config

TOKEN = "0123456789abcdef-client-token"


class Named(BaseModel):
    name: str = Field(max_length=5)
    count: int = Field(ge=0)


def make_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(
        ApiGuard, token=TOKEN, public_paths={"/healthz"}, max_url_bytes=4096,
        max_body_bytes=4096,
    )  # fmt: skip

    @app.get("/echo")
    async def echo(x: str | None = None) -> dict:
        return {"x": x}

    @app.put("/named")
    async def named(body: Named) -> dict:
        return body.model_dump()

    @app.get("/refuse")
    async def refuse(detail: str, times: int = 1) -> None:
        raise HTTPException(400, detail * times)

    @app.delete("/nothing")
    async def nothing() -> Response:
        return Response(status_code=204)

    @app.get("/not-json")
    async def not_json() -> PlainTextResponse:
        return PlainTextResponse("hello")

    @app.get("/plain-error")
    async def plain_error() -> PlainTextResponse:
        return PlainTextResponse("boom", status_code=502)

    return app


@pytest.fixture(scope="module")
def served() -> Iterator[ServedApp]:
    with ServedApp(make_app()) as server:
        yield server


@pytest.fixture
def config(tmp_path: Path, served: ServedApp) -> Path:
    (tmp_path / "api-token").write_text(TOKEN + "\n")
    return write_gateway_config(tmp_path, {"port": served.port, "token_file": "api-token"})


@pytest.fixture
def client(config: Path) -> Iterator[ApiClient]:
    with ApiClient.from_config(str(config)) as made:
        yield made


def test_base_url_reaches_every_interface_on_loopback():
    assert base_url(ApiSettings(host="0.0.0.0", port=8080)) == "http://127.0.0.1:8080"
    assert base_url(ApiSettings(host="::", port=8080)) == "http://127.0.0.1:8080"
    assert base_url(ApiSettings(host="::1", port=81)) == "http://[::1]:81"
    assert base_url(ApiSettings(host="10.0.0.5", port=9000)) == "http://10.0.0.5:9000"


def test_requests_carry_the_token_from_the_config(client: ApiClient):
    assert client.get("/echo", {"x": "井盖", "unset": None}) == {"x": "井盖"}
    assert client.put("/named", {"name": "abc", "count": 2}) == {"name": "abc", "count": 2}
    assert client.delete("/nothing") is None


def test_the_token_from_the_environment(tmp_path: Path, served: ServedApp, monkeypatch):
    monkeypatch.setenv("CITYGW_API_TOKEN", TOKEN)
    path = write_gateway_config(tmp_path, {"host": "0.0.0.0", "port": served.port})
    with ApiClient.from_config(str(path)) as made:
        assert made.url == f"http://127.0.0.1:{served.port}"
        assert made.get("/echo", {"x": "1"}) == {"x": "1"}


def test_a_wrong_token_is_one_line_without_the_token(tmp_path: Path, served: ServedApp):
    wrong = "wrong-token-0123456789"
    with ApiClient(served.url, wrong) as made, pytest.raises(ApiError) as caught:
        made.get("/echo")
    assert str(caught.value) == "GET /echo: HTTP 401: the bearer token is not valid"
    assert caught.value.status == 401
    assert wrong not in str(caught.value)


def test_the_api_detail_is_the_message(client: ApiClient):
    with pytest.raises(ApiError) as caught:
        client.get("/refuse", {"detail": "kinds.bin.fill_fire_pct: must be ≤ 100"})
    assert str(caught.value) == ("GET /refuse: HTTP 400: kinds.bin.fill_fire_pct: must be ≤ 100")


def test_field_errors_name_the_field(client: ApiClient):
    with pytest.raises(ApiError) as caught:
        client.put("/named", {"name": "too long", "count": -1})
    assert str(caught.value) == (
        "PUT /named: HTTP 422: name: String should have at most 5"
        " characters; count: Input should be greater than or equal to 0"
    )


def test_an_answer_without_json(client: ApiClient):
    with pytest.raises(ApiError) as caught:
        client.get("/plain-error")
    assert str(caught.value) == "GET /plain-error: HTTP 502: boom"
    with pytest.raises(ApiError) as caught:
        client.get("/not-json")
    assert str(caught.value) == "GET /not-json: the answer is not JSON"


def test_control_characters_from_the_server_are_escaped(client: ApiClient):
    with pytest.raises(ApiError) as caught:
        client.get("/refuse", {"detail": "a\x1b[31mred\nline"})
    assert str(caught.value) == r"GET /refuse: HTTP 400: a\x1b[31mred\nline"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(detail=st.text(min_size=1, max_size=200), times=st.integers(1, 20))
def test_any_detail_is_one_bounded_printable_line(client: ApiClient, detail: str, times: int):
    with pytest.raises(ApiError) as caught:
        client.get("/refuse", {"detail": detail, "times": times})
    message = str(caught.value)
    assert message.isprintable()
    assert len(message) <= len("GET /refuse: HTTP 400: ") + 501


def test_nobody_listening(tmp_path: Path):
    with socket.socket() as sock:  # a port that was free a moment ago, now closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with ApiClient(f"http://127.0.0.1:{port}", TOKEN) as made, pytest.raises(ApiError) as caught:
        made.get("/echo")
    message = str(caught.value)
    url = f"http://127.0.0.1:{port}"
    assert message.startswith(f"GET /echo: cannot reach the gateway API at {url} (")
    assert message.endswith("); is `citygw run` running with this config?")
    assert TOKEN not in message


def test_a_server_that_never_answers_times_out():
    with socket.socket() as listener:  # the kernel completes the handshake; nobody reads
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with ApiClient(url, TOKEN, timeout_s=0.3) as made, pytest.raises(ApiError) as caught:
            made.get("/echo")
    assert str(caught.value) == f"GET /echo: no answer from {url} within 0.3 s"


def test_proxies_in_the_environment_are_not_used(client: ApiClient, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{dead}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with ApiClient(client.url, TOKEN) as made:
        assert made.get("/echo", {"x": "direct"}) == {"x": "direct"}


def test_configs_that_give_no_way_in(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("CITYGW_API_TOKEN", raising=False)
    path = write_gateway_config(tmp_path, {"port": 8080})
    with pytest.raises(ConfigError) as caught:
        ApiClient.from_config(str(path))
    assert str(caught.value) == f"{path}: no API token: set api.token_file or $CITYGW_API_TOKEN"
    path = write_gateway_config(tmp_path, {"enabled": False})
    with pytest.raises(ConfigError) as caught:
        ApiClient.from_config(str(path))
    assert str(caught.value) == f"{path}: api.enabled is false: this gateway serves no API"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_api_arguments(parser)
    return parser.parse_args(argv)


def test_run_with_client_exit_codes_and_lines(config: Path, tmp_path: Path, capsys):
    def fine(made: ApiClient) -> None:
        show(made.get("/echo", {"x": "y"}), as_json=True)

    assert run_with_client(parse(["-c", str(config)]), fine) == 0
    assert capsys.readouterr().out == '{\n  "x": "y"\n}\n'

    def refused(made: ApiClient) -> None:
        made.get("/refuse", {"detail": "no"})

    assert run_with_client(parse(["-c", str(config), "--json"]), refused) == 1
    assert capsys.readouterr().err == "citygw: GET /refuse: HTTP 400: no\n"

    broken = tmp_path / "broken.yaml"
    broken.write_text("gateway_id: [\n")
    assert run_with_client(parse(["-c", str(broken)]), fine) == 2
    with pytest.raises(ConfigError) as expected:
        load_config(broken)
    assert capsys.readouterr().err == f"citygw: {expected.value}\n"


@pytest.mark.parametrize("text", ["0", "-1", "601", "soon", "nan"])
def test_timeout_argument_bounds(text: str, capsys):
    with pytest.raises(SystemExit):
        parse(["-c", "x", "--timeout", text])
    assert "--timeout" in capsys.readouterr().err


def test_tables_align_wide_characters():
    rows = [
        {"path": "kinds.bin.fill_fire_pct", "value": 90, "author": "王工"},
        {"path": "devices.MH-001.tilt_deg", "value": None, "author": "ops"},
        {"path": "zones.cam1/入口.dwell_s", "value": {"a": [1, 2]}, "author": "x" * 70},
    ]
    assert format_table(rows, ["path", "value", "author"]).split("\n") == [
        "PATH                     VALUE        AUTHOR",
        "kinds.bin.fill_fire_pct  90           王工",
        "devices.MH-001.tilt_deg               ops",
        'zones.cam1/入口.dwell_s  {"a":[1,2]}  ' + "x" * 59 + "…",
    ]
    assert format_table([], ["path"]) == "(none)"


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=30) | st.integers(-5, 10**25).map(str))
def test_argument_parsers_take_only_what_is_in_bounds(text: str):
    try:
        number = whole_number(1, 100)(text)
    except argparse.ArgumentTypeError as exc:
        assert str(exc) == "expected a whole number 1 to 100"
        assert not (text.isascii() and text.isdigit() and 1 <= int(text) <= 100)
    else:
        assert number == int(text) and 1 <= number <= 100
    try:
        seconds = timeout_s(text)
    except argparse.ArgumentTypeError:
        pass
    else:
        assert 0 < seconds <= 600
