"""The backtest's report, charts, CLI and API on a small hand-computed store.

The store is written by the real pipeline: BIN-001 reports every 5 minutes; its fill
stands at 88 % for 30 minutes (steps 12–17) and at 95 % for 30 minutes (steps 30–35),
10 % otherwise. The config's bin rule fires at 90 % held 10 minutes, so it files one case
(at step 32); lowered to 85 % it files two (steps 14 and 32): one added, none removed,
the one in both detected at the same time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import httpx
import pytest
from embedded_config import write_embedded_config
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from served_app import ServedApp

from domain import Reading
from gateway.api_backtests import backtests_router
from gateway.api_guard import ApiGuard
from gateway.backtest import BacktestError, BacktestRequest, backtest_from_config
from gateway.cli_backtest import register
from gateway.config import load_config
from gateway.service import Gateway

START = 1_700_000_000_000
STEP_MS = 300_000
STEPS = 48
TOKEN = "backtest-token"


def fill(step: int) -> float:
    if 12 <= step <= 17:
        return 88.0
    if 30 <= step <= 35:
        return 95.0
    return 10.0


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    path = write_embedded_config(tmp_path_factory.mktemp("backtest"))
    gateway = Gateway(load_config(path))
    for step in range(STEPS):
        ts = START + step * STEP_MS
        reading = Reading("BIN-001", "bin", ts, {"fill_pct": fill(step)}, seq=step)
        gateway.pipeline.process_decoded([("t", b"", reading)], ts)
    gateway.conn.close()
    return path


def request(**changes) -> BacktestRequest:
    return BacktestRequest(START, START + STEPS * STEP_MS, changes, ("BIN-001",), warm_up_ms=0)


def test_the_report_counts_the_cases_each_version_files_and_draws_a_png_per_class(
    config_path, tmp_path
):
    backtest = backtest_from_config(load_config(config_path))
    report = backtest.run(request(**{"bin.fill_fire_pct": "85"}), out_dir=tmp_path)
    grid = "350102001002003"
    assert report["current"]["cases"] == 1
    assert report["proposed"]["cases"] == 2
    assert report["current"]["by_grid"] == {grid: 1}
    assert [c["opened_ms"] for c in report["added"]] == [START + 14 * STEP_MS]
    assert report["added_by_class"] == {"06042": 1}
    assert report["removed"] == []
    assert report["time_to_detect"] == {
        "matched": 1, "earlier": 0, "later": 0, "mean_delta_s": 0.0, "median_delta_s": 0.0,
    }  # fmt: skip
    assert report["changes"] == [{"path": "kinds.bin.fill_fire_pct", "old": 90.0, "new": 85.0}]
    assert report["replay"]["readings"] == STEPS
    assert report["charts"] == ["backtest-bin.png"]
    assert (tmp_path / "backtest-bin.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        "cases: current 1, proposed 2 (+1 added, -0 removed)"
        in (tmp_path / "summary.txt").read_text()
    )


def test_a_change_the_settings_refuse_is_an_error_naming_the_path(config_path):
    backtest = backtest_from_config(load_config(config_path))
    with pytest.raises(BacktestError, match=r"bin\.fill_fire_pct"):
        backtest.run(request(**{"bin.fill_fire_pct": "50"}))  # below the clear level


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="citygw")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.handler(args)


def test_the_cli_writes_the_report_and_prints_the_summary(config_path, tmp_path, capsys):
    rc = cli("backtest", "-c", str(config_path), "--since", str(START),
             "--until", str(START + STEPS * STEP_MS), "--set", "bin.fill_fire_pct=85",
             "--devices", "BIN-001", "--warm-up-s", "0", "--out", str(tmp_path))  # fmt: skip
    assert rc == 0
    assert "cases: current 1, proposed 2" in capsys.readouterr().out
    assert {p.name for p in tmp_path.iterdir()} == {
        "report.json",
        "summary.txt",
        "backtest-bin.png",
    }


def test_the_cli_refuses_bad_input_in_one_line_naming_it(config_path, tmp_path, capsys):
    rc = cli("backtest", "-c", str(config_path), "--since", "yesterday", "--until", "1",
             "--out", str(tmp_path))  # fmt: skip
    assert rc == 2
    assert capsys.readouterr().err == (
        "citygw backtest: since: 'yesterday' is neither an ISO date/time nor epoch ms\n"
    )
    rc = cli("backtest", "-c", str(config_path), "--since", "1", "--until", "2",
             "--devices", "NOPE", "--out", str(tmp_path))  # fmt: skip
    assert rc == 2
    assert "devices: unknown device 'NOPE'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def api(config_path):
    app = FastAPI()
    app.add_middleware(ApiGuard, token=TOKEN, public_paths=set(), max_url_bytes=4096,
                       max_body_bytes=4 * 1024 * 1024)  # fmt: skip
    app.include_router(backtests_router(backtest_from_config(load_config(config_path))))
    with ServedApp(app) as server:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=10) as http:
            yield http


def test_the_api_runs_a_backtest_in_the_background_and_gives_its_report(api):
    body = {"since_ms": START, "until_ms": START + STEPS * STEP_MS, "devices": ["BIN-001"],
            "changes": {"bin.fill_fire_pct": 85}, "warm_up_s": 0}  # fmt: skip
    answer = api.post("/api/v1/backtests", json=body)
    assert answer.status_code == 202
    job_id = answer.json()["id"]
    deadline = time.monotonic() + 30
    while (shown := api.get(f"/api/v1/backtests/{job_id}").json())["status"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert shown["status"] == "done", shown
    assert (shown["report"]["current"]["cases"], shown["report"]["proposed"]["cases"]) == (1, 2)
    assert api.get("/api/v1/backtests/" + "0" * 32).status_code == 404


def test_the_api_answers_400_naming_the_field(api):
    body = {"since_ms": START, "until_ms": START + 1, "changes": {"bin.fill_fire_pct": 50}}
    answer = api.post("/api/v1/backtests", json=body)
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith("changes: ")
    assert "fill" in answer.json()["detail"]
    answer = api.post("/api/v1/backtests", json={"since_ms": -1, "until_ms": 5})
    assert (answer.status_code, answer.json()["detail"]) == (
        400, "since_ms: Input should be greater than or equal to 0",
    )  # fmt: skip
    answer = api.post("/api/v1/backtests", json={"since_ms": 0, "until_ms": 40 * 86_400_000})
    assert (answer.status_code, answer.json()["detail"]) == (
        400,
        "until_ms: a window is at most 31 days",
    )


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ("since_ms", "until_ms", "changes", "devices", "grids", "warm_up_s")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.dictionaries(st.sampled_from([*FIELDS, "other"]), JSON, max_size=6) | JSON)
def test_no_body_makes_the_api_fail_and_a_refusal_names_what_is_wrong(api, body):
    answer = api.post("/api/v1/backtests", json=body)
    assert answer.status_code in (202, 400, 429), answer.text
    if answer.status_code == 400:
        assert answer.json()["detail"].split(":")[0].split(".")[0] in (
            *FIELDS,
            "other",
            "body",
            "set",
        )
