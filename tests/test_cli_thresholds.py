"""``citygw thresholds`` against a real thresholds API on loopback: what the operator
types, what is printed, and the exit codes (0 done, 1 refused by the API, 2 bad usage)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest
from served_app import write_gateway_config
from test_api_thresholds import TOKEN, Served, close, serve

from gateway.cli_thresholds import register
from rules.settings import settings_get


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Served]:
    served = serve(tmp_path)
    yield served
    close(served)


@pytest.fixture
def citygw(api: Served, tmp_path: Path, capsys):
    """citygw(*argv) -> (exit code, stdout, stderr) of `citygw thresholds ARGV -c CONFIG`."""
    (tmp_path / "token").write_text(TOKEN)
    config = write_gateway_config(tmp_path, {"port": api.server.port, "token_file": "token"})
    parser = argparse.ArgumentParser(prog="citygw")
    register(parser.add_subparsers(required=True))

    def run(*argv: str) -> tuple[int, str, str]:
        args = parser.parse_args(["thresholds", *argv, "-c", str(config)])
        code = args.handler(args)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def headline(out: str) -> str:
    """The first line without its local time (which depends on the machine's zone)."""
    first = out.split("\n")[0].split("  ")
    return "  ".join([first[0], *first[2:]])


def test_list_shows_every_parameter_with_its_path(citygw):
    code, out, err = citygw("list", "bin.fill")
    assert (code, err) == (0, "")
    assert headline(out) == "v1  config  config: version 1: gateway.yaml and its registry"
    assert out.split("\n")[1:] == [
        "PATH                      VALUE",
        "kinds.bin.fill_fire_pct   90.0",
        "kinds.bin.fill_clear_pct  60.0",
        "",
    ]
    code, out, _ = citygw("list", "devices.")
    assert out.split("\n")[2:] == [
        "devices.WL-001.alarm_cm    50.0",
        "devices.WL-001.warning_cm  30.0",
        "",
    ]


def test_set_history_and_rollback(citygw, api: Served):
    code, out, err = citygw(
        "set", "bin.fill_fire_pct=85", "devices.MH-001.tilt_fire_deg=30",
        "--author", "王工", "--reason", "summer",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert headline(out) == "v2  set  王工: summer"
    assert out.split("\n")[1:] == [
        "    devices.MH-001.tilt_fire_deg        30.0",
        "    kinds.bin.fill_fire_pct       90.0  85.0",
        "",
    ]
    assert settings_get(api.applied[-1], "kinds.bin.fill_fire_pct") == 85.0

    code, out, _ = citygw("set", "bin.fill_fire_pct=85", "--author", "a", "--reason", "again")
    assert (code, out) == (0, "nothing changed: version 2 already has these values\n")

    code, out, err = citygw(
        "rollback", "1", "--author", "李工", "--reason", "too many", "--expected-version", "2"
    )
    assert (code, err) == (0, "")
    assert headline(out) == "v3  rollback to v1  李工: too many"

    code, out, _ = citygw("history", "--limit", "2")
    lines = out.split("\n")
    assert [headline(line) for line in lines if line.startswith("v")] == [
        "v3  rollback to v1  李工: too many",
        "v2  set  王工: summer",
    ]
    assert lines[-2:] == ["(more: --cursor 2)", ""]
    code, out, _ = citygw("history", "--cursor", "2", "--json")
    assert '"version": 1' in out and '"next_cursor": null' in out


def test_refusals_are_one_line_and_exit_1(citygw, api: Served):
    code, out, err = citygw("set", "devices.NOPE.x=1", "--author", "a", "--reason", "r")
    assert (code, out) == (1, "")
    assert (
        err == "citygw: PUT /api/v1/thresholds: HTTP 400: devices.NOPE.x: unknown device 'NOPE'\n"
    )
    code, _, err = citygw(
        "set", "bin.fill_fire_pct=80", "--author", "a", "--reason", "r", "--expected-version", "7"
    )
    assert (code, err) == (
        1,
        "citygw: PUT /api/v1/thresholds: HTTP 409: expected_version 7 is not the current"
        " version 1: read the settings again and retry\n",
    )
    code, _, err = citygw("rollback", "9", "--author", "a", "--reason", "r")
    assert (code, err) == (1, "citygw: POST /api/v1/thresholds/rollback: HTTP 404: version 9"
                              " does not exist\n")  # fmt: skip
    code, _, err = citygw("set", "bin.fire_for_s=1", "bin.fire_for_s=2", "--author", "a",
                          "--reason", "r")  # fmt: skip
    assert (code, err) == (2, "citygw: bin.fire_for_s is given twice\n")
    assert api.versions.current().version == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["set", "no-equals-sign", "--author", "a", "--reason", "r"],
        ["set", "bin.fill_fire_pct=80", "--reason", "r"],
        ["rollback", "0", "--author", "a", "--reason", "r"],
        ["history", "--limit", "101"],
        ["history", "--cursor", "-1"],
    ],
)
def test_bad_usage_is_refused_before_any_request(citygw, argv: list[str]):
    with pytest.raises(SystemExit) as caught:
        citygw(*argv)
    assert caught.value.code == 2
